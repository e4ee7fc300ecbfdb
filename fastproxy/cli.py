"""The command line: fastproxy serve | check | demo | reload | upgrade | stop | quit | reopen | status.

Exit status: 0 on success, 1 when the config is invalid, the server could not start or a command failed;
`status` exits 3 when no master runs (the LSB convention).
The control commands find the master through the pidfile ([server] pidfile of -c FILE, or --pid FILE) and
send it nginx's signals: reload HUP, stop TERM, quit QUIT, reopen USR1. `upgrade` runs the whole binary
upgrade (USR2, wait for the new master's workers, WINCH and QUIT the old master) and rolls back by itself
if the new master is not ready within [server] upgrade_timeout.
"""

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time
import tomllib

from fastproxy import __version__, config, pidfile
from fastproxy import control as control_backends
from fastproxy.errors import ConfigErrors

POLL = 0.05     # seconds between looks at pidfiles and /proc while a command waits


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
    return Master(cfg, argv=args.argv).run()


# --- control commands: signals through the pidfile ---------------------------------------------------------

class CommandError(Exception):
    pass


def pidfile_path(args):
    """--pid FILE, or [server] pidfile of -c FILE (read leniently, so stop works with a broken config)."""
    if args.pid:
        return args.pid
    if not args.config:
        raise CommandError("give -c FILE (its [server] pidfile) or --pid FILE")
    try:
        with open(args.config, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise CommandError(f"cannot read {args.config}: {e}") from None
    path = data.get("server", {}).get("pidfile") if isinstance(data.get("server"), dict) else None
    if not isinstance(path, str) or not path:
        raise CommandError(f"{args.config}: [server] pidfile is not set; use --pid FILE")
    return path


def running_master(path):
    pid = pidfile.read(path)
    if pid is None:
        raise CommandError(f"not running: no pidfile {path}")
    if not pidfile.is_master(pid):
        raise CommandError(f"not running: stale pidfile {path} (pid {pid} is not a fastproxy master)")
    return pid


def children(pid):
    """(pid, title) of the live children of pid, from /proc."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[1]) == pid:
            out.append((int(name), pidfile.process_title(int(name))))
    return sorted(out)


def workers_of(pid):
    return [(p, t) for p, t in children(pid) if t.startswith("fastproxy: worker")]


def send(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        raise CommandError(f"master {pid} is gone") from None


SIGNAL_COMMANDS = {
    "reload": (signal.SIGHUP, "reload"),
    "stop": (signal.SIGTERM, "fast shutdown"),
    "quit": (signal.SIGQUIT, "graceful shutdown"),
    "reopen": (signal.SIGUSR1, "reopen the logs"),
}


def cmd_signal(args):
    sig, what = SIGNAL_COMMANDS[args.command]
    if args.command == "reload" and args.config and load_or_report(args.config) is None:
        print("fastproxy reload: not sent: the config has errors", file=sys.stderr)
        return 1
    pid = running_master(pidfile_path(args))
    send(pid, sig)
    print(f"sent SIG{sig.name[3:]} ({what}) to master {pid}")
    return 0


def cmd_status(args):
    path = pidfile_path(args)
    found = False
    for label, p in (("master", path), ("old master", path + pidfile.OLDBIN)):
        pid = pidfile.read(p)
        if pid is None:
            continue
        if not pidfile.is_master(pid):
            print(f"{label}: stale pidfile {p} (pid {pid} is not running)")
            continue
        found = True
        title = pidfile.process_title(pid)
        print(f"{label} {pid} (pidfile {p}): {title}")
        for wpid, wtitle in workers_of(pid):
            print(f"  {wpid}: {wtitle}")
        for cpid, ctitle in children(pid):
            if ctitle.startswith("fastproxy: master"):
                print(f"  new master {cpid} (binary upgrade in progress): {ctitle}")
    if not found:
        print(f"not running (pidfile {path})")
        return 3
    return 0


def wait_until(predicate, deadline):
    """Poll predicate() until true (returns True) or the deadline passes (returns False)."""
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL)


def cmd_upgrade(args):
    """USR2 the master, wait until the new master's pidfile appears (its workers are ready), then WINCH and
    QUIT the old master. Rolls back (QUIT the new master; the old one takes its pidfile back) on timeout."""
    path = pidfile_path(args)
    timeout, drain = args.timeout, 30.0
    if args.config:
        cfg = load_or_report(args.config)
        if cfg is None:
            print("fastproxy upgrade: not started: the config has errors", file=sys.stderr)
            return 1
        timeout = timeout if timeout is not None else cfg.server.upgrade_timeout
        drain = cfg.server.drain_timeout
    timeout = timeout if timeout is not None else 30.0
    old = running_master(path)
    if pidfile.running_master(path + pidfile.OLDBIN):
        raise CommandError(f"an upgrade is already in progress ({path}{pidfile.OLDBIN} names a live master)")
    send(old, signal.SIGUSR2)
    print(f"sent SIGUSR2 to master {old}; waiting up to {timeout:g}s for the new master's workers")
    deadline = time.monotonic() + timeout
    # The old master renames its pidfile to .oldbin right after forking the new master. Waiting for that
    # is not bounded by --timeout: giving up before the USR2 is handled would leave two masters behind.
    acked = time.monotonic() + max(timeout, 10.0)
    if not wait_until(lambda: pidfile.read(path + pidfile.OLDBIN) == old or not pidfile.is_master(old), acked):
        raise CommandError(f"master {old} did not start a new master (see its error log)")
    if not pidfile.is_master(old):
        raise CommandError(f"the old master {old} is gone")
    started = [p for p, t in children(old) if not t.startswith("fastproxy: worker")]
    if len(started) != 1:
        raise CommandError(f"cannot tell the new master among the children of {old}: {started}")
    new = started[0]

    def alive(pid):
        return os.path.exists(f"/proc/{pid}") and pidfile.process_title(pid) != ""

    # The new master writes the pidfile once its workers are ready.
    wait_until(lambda: pidfile.read(path) == new or not alive(new), deadline)
    if not alive(new) or pidfile.read(path) != new:
        if alive(new):
            print(f"the new master {new} is not ready after {timeout:g}s: rolling back (SIGQUIT to it)",
                  file=sys.stderr)
            send(new, signal.SIGQUIT)
        else:
            print(f"the new master {new} exited before it was ready (see the error log): rolling back",
                  file=sys.stderr)
        if wait_until(lambda: pidfile.read(path) == old, time.monotonic() + drain + 10):
            print(f"rolled back: master {old} serves", file=sys.stderr)
        return 1
    print(f"new master {new} ready; sending SIGWINCH to the old master {old}")
    send(old, signal.SIGWINCH)
    gone = wait_until(lambda: not workers_of(old) or not pidfile.is_master(new), time.monotonic() + drain + 10)
    if not pidfile.is_master(new):
        send(old, signal.SIGHUP)
        print(f"the new master {new} died: rolled back, old master {old} starts its workers again",
              file=sys.stderr)
        return 1
    if not gone:
        print(f"old workers still draining after {drain + 10:g}s; quitting the old master anyway", file=sys.stderr)
    send(old, signal.SIGQUIT)
    wait_until(lambda: not pidfile.is_master(old), time.monotonic() + drain + 10)
    print(f"upgrade complete: master {new} serves")
    return 0


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


def cmd_stats(args):
    """Every worker's counters from the shared table, summed (or per worker), as text or JSON."""
    from fastproxy import counters
    path = os.path.abspath(args.config)
    try:
        if args.per_worker:
            data = {pid: counters.as_json(c) for pid, c in counters.per_worker(path).items()}
        else:
            data = counters.read(path)
    except (OSError, ValueError) as e:
        raise CommandError(f"no counters for {path} (is it running?): {e}") from None
    if args.json or args.per_worker:
        print(json.dumps(data if args.per_worker else counters.as_json(data), indent=1))
    else:
        print(counters.summary(data))
    return 0


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

    def control(name, help_text):
        s = sub.add_parser(name, help=help_text)
        where = s.add_mutually_exclusive_group()
        where.add_argument("-c", "--config", metavar="FILE", help="the config file (its [server] pidfile)")
        where.add_argument("--pid", metavar="FILE", help="the pidfile")
        return s

    for name, (sig, what) in SIGNAL_COMMANDS.items():
        s = control(name, f"{what}: send SIG{sig.name[3:]} to the running master")
        s.set_defaults(func=cmd_signal)
    s = control("upgrade", "binary upgrade with automatic rollback (USR2, WINCH and QUIT to the old master)")
    s.add_argument("--timeout", type=float, metavar="SECONDS",
                   help="how long the new master's workers get to be ready (default: [server] upgrade_timeout)")
    s.set_defaults(func=cmd_upgrade)
    s = control("status", "which masters and workers run, with their generation and config file")
    s.set_defaults(func=cmd_status)

    control_backends.add_commands(sub)     # backends, drain, enable, disable, weight (fastproxy/control.py)

    s = sub.add_parser("stats", help="the workers' counters (requests, responses, bytes, errors, latency)")
    s.add_argument("-c", "--config", required=True, metavar="FILE", help="the config file of the running proxy")
    s.add_argument("--json", action="store_true", help="as JSON")
    s.add_argument("--per-worker", action="store_true", help="one entry per live worker (JSON)")
    s.set_defaults(func=cmd_stats)

    s = sub.add_parser("demo", help="run the proxy in front of three built-in demo backends")
    s.add_argument("--port", type=int, default=8080, help="port of the proxy on 127.0.0.1 (default: 8080)")
    s.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    s.set_defaults(func=cmd_demo)
    return p


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv        # what a binary upgrade execs the new master with
    try:
        return args.func(args)
    except CommandError as e:
        print(f"fastproxy {args.command}: {e}", file=sys.stderr)
        return 1
