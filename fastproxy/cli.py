"""The command line: fastproxy serve | check | demo | --version.

Exit status: 0 on success, 1 when the config is invalid or the server could not start.
Issue 3 adds reload, upgrade, stop, quit and status (signals sent through the pidfile).
"""

import argparse
import os
import select
import signal
import subprocess
import sys
import time

from fastproxy import __version__, config
from fastproxy.errors import ConfigErrors


def load_or_report(path):
    """The config, or None after printing every error, one per line."""
    try:
        return config.load(path)
    except ConfigErrors as e:
        for err in e.errors:
            print(err, file=sys.stderr)
        return None


def cmd_check(args):
    if load_or_report(args.config) is None:
        return 1
    print(f"{args.config}: ok")
    return 0


def cmd_serve(args):
    cfg = load_or_report(args.config)
    if cfg is None:
        return 1
    from fastproxy.master import Master
    return Master(cfg).run()


def start_backend(name, deadline):
    """Start one demo backend on a free port; returns (process, port) once it listens."""
    from fastproxy.worker import set_parent_death_signal
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastproxy.demo", "--name", name, "--port", "0"],
        stdout=subprocess.PIPE,
        preexec_fn=lambda: set_parent_death_signal(signal.SIGTERM),   # never outlive `fastproxy demo`
    )
    line = b""
    while not line.endswith(b"\n"):
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(proc.stdout.fileno(), 256) if ready else b""
        if not chunk:
            stop_backends([proc])
            raise RuntimeError(f"demo backend {name} did not start")
        line += chunk
    proc.stdout.close()
    return proc, int(line.rsplit(b":", 1)[1])


def stop_backends(procs):
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cmd_demo(args):
    procs = []
    try:
        deadline = time.monotonic() + 10
        ports = []
        for i in range(1, 4):
            proc, port = start_backend(f"demo-{i}", deadline)
            procs.append(proc)
            ports.append(port)
        cfg = config.builtin_demo(args.port, ports, args.workers)
        for i, (proc, port) in enumerate(zip(procs, ports, strict=True), 1):
            print(f"started demo-{i} on 127.0.0.1:{port} (pid {proc.pid})")
        print(f"starting fastproxy on http://127.0.0.1:{args.port}/ with {args.workers} worker(s), "
              f"round robin over the three; try:  curl -s http://127.0.0.1:{args.port}/")
        print("its config:\n\n" + config.demo_toml(args.port, ports, args.workers), flush=True)
        from fastproxy.master import Master
        return Master(cfg).run()
    except RuntimeError as e:
        print(f"fastproxy demo: {e}", file=sys.stderr)
        return 1
    except ConfigErrors as e:
        print(f"fastproxy demo: {e}", file=sys.stderr)
        return 1
    finally:
        stop_backends(procs)


def build_parser():
    p = argparse.ArgumentParser(prog="fastproxy",
                                description="A reverse proxy and load balancer for HTTP/1.1.")
    p.add_argument("--version", action="version", version=f"fastproxy {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("serve", help="run the proxy with a config file")
    s.add_argument("-c", "--config", required=True, metavar="FILE", help="the TOML config file")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("check", help="validate a config file and report every error")
    s.add_argument("-c", "--config", required=True, metavar="FILE", help="the TOML config file")
    s.set_defaults(func=cmd_check)

    s = sub.add_parser("demo", help="run the proxy in front of three built-in demo backends")
    s.add_argument("--port", type=int, default=8080, help="port of the proxy on 127.0.0.1 (default: 8080)")
    s.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    return args.func(args)
