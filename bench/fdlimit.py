"""Out of descriptors: a proxy worker run with `ulimit -n 1024` meets 5,000 connection attempts.

    python bench/fdlimit.py                      # fastproxy, then nginx; 5,000 attempts, limit 1024, 5 s held
    python bench/fdlimit.py -n 3000 --limit 512 --proxies fastproxy

Per proxy (1 worker, in front of the benchmark's backend, bench/servers.py), started under
`setpriv` (no CAP_SYS_RESOURCE: the limit cannot be raised) and `prlimit --nofile=LIMIT:LIMIT`:
1. N client connections are opened as fast as the kernel takes them; each sends `GET /100` (keep-alive)
   and is then left open without reading: they take every descriptor the worker can have, and the rest
   wait in the listen queue (or are refused once it is full).
2. For --hold seconds: the worker's CPU time (schedstat, nanoseconds), and how many clients got an answer.
   A proxy that spins on a listener it cannot serve shows up here as ~100 % of a core.
   Each client is then classed: answered 200, answered otherwise (a 503 when the worker had the client
   but no descriptor left for a backend connection: our own shortage, not the server's), closed unanswered,
   or still waiting.
3. Every client is closed (RST); then how long until a new client is answered again, and whether the
   worker is still the same process.
Loopback only; every process started is stopped by its PID. Prints a table; --out writes it to a file.
"""

import argparse
import errno
import os
import resource
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

import servers

REQUEST = b"GET /100 HTTP/1.1\r\nHost: bench.local\r\n\r\n"


def worker_pid(proc):
    kids = [p for p in proc.tree() if p != proc.pid]
    return kids[0] if kids else proc.pid


def cpu_ns(pid):
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/schedstat") as f:
            total += int(f.read().split()[0])
    return total


def start(name, tmp, logdir, backend_port, limit):
    d = Path(tmp) / name
    d.mkdir()
    port = servers.free_port()
    jail = ["setpriv", "--bounding-set=-sys_resource", "--inh-caps=-sys_resource",
            "prlimit", f"--nofile={limit}:{limit}"]
    if name == "nginx":
        conf = servers.nginx_proxy_config(d, port, backend_port, 1, connections=20000)
        (d / "nginx.conf").write_text(conf)
        argv, env, cwd = [*jail, "nginx", "-p", str(d), "-c", str(d / "nginx.conf")], None, servers.REPO
    else:
        (d / "proxy.toml").write_text(servers.fastproxy_config(port, backend_port, 1))
        argv, env = servers.fastproxy_argv(servers.REPO, "serve", "-c", str(d / "proxy.toml"))
        argv, cwd = [*jail, *argv], servers.REPO
    proc = servers.start(name, argv, port, logdir, cwd=cwd, env=env)
    servers.wait_ready(proc)
    return proc


def attack(port, n):
    """Open n connections, each with a request sent; returns the sockets (refused ones are counted)."""
    socks, refused = [], 0
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))   # RST on close
        s.setblocking(False)
        rc = s.connect_ex(("127.0.0.1", port))
        if rc not in (0, errno.EINPROGRESS):
            refused += 1
            s.close()
            continue
        socks.append(s)
    time.sleep(0.2)
    sent = []
    for s in socks:
        try:
            s.send(REQUEST)
            sent.append(s)
        except OSError:
            refused += 1
            s.close()
    return sent, refused


def outcomes(socks):
    """(answered 200, answered with another status, closed without an answer) among the clients."""
    ok = other = closed = 0
    for s in socks:
        try:
            head = s.recv(12, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            continue                    # nothing yet: still waiting (queued, or accepted and pending)
        except OSError:
            closed += 1
            continue
        if not head:
            closed += 1
        elif head.startswith(b"HTTP/1.1 200"):
            ok += 1
        else:
            other += 1
    return ok, other, closed


def probe(port, timeout):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(REQUEST)
            return s.recv(100).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def measure(name, proc, n, hold):
    worker = worker_pid(proc)
    socks, refused = attack(proc.port, n)
    time.sleep(0.5)
    c0, t0 = cpu_ns(worker), time.monotonic()
    time.sleep(hold)
    cpu = (cpu_ns(worker) - c0) / 1e9 / (time.monotonic() - t0)
    ok, other, closed = outcomes(socks)
    for s in socks:
        s.close()
    start = time.monotonic()
    recovered = None
    while time.monotonic() - start < 30:
        if probe(proc.port, 1.0):
            recovered = time.monotonic() - start
            break
        time.sleep(0.05)
    return {"proxy": name, "attempts": n, "connected": len(socks), "refused": refused, "ok": ok,
            "other": other, "closed": closed,
            "cpu": cpu, "recovered": recovered, "same_worker": worker_pid(proc) == worker}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=5000, help="connection attempts (default 5000)")
    ap.add_argument("--limit", type=int, default=1024, help="the proxy's open-files limit (default 1024)")
    ap.add_argument("--hold", type=float, default=5.0, help="seconds the connections are held (default 5)")
    ap.add_argument("--proxies", default="fastproxy,nginx")
    ap.add_argument("--out", help="also write the table to this file")
    args = ap.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.n + 1000)), hard))
    rows = []
    with tempfile.TemporaryDirectory(prefix="fastproxy-fdlimit-") as tmp:
        logdir = Path(tmp) / "logs"
        logdir.mkdir()
        backend = servers.start_backend(tmp, logdir)
        try:
            for name in args.proxies.split(","):
                proc = start(name, tmp, logdir, backend.port, args.limit)
                try:
                    rows.append(measure(name, proc, args.n, args.hold))
                    print(f"{name}: {rows[-1]}", file=sys.stderr)
                finally:
                    servers.stop(proc)
        finally:
            servers.stop(backend)
    table = [f"ulimit -n {args.limit}, {args.n} connection attempts held {args.hold:g} s, 1 worker",
             "",
             "| proxy | attempts | connected | refused | 200 while held | other answer | closed unanswered |"
             " worker CPU while held | answering again after close | same worker |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        rec = f"{r['recovered'] * 1000:.0f} ms" if r["recovered"] is not None else "no (30 s)"
        table.append(f"| {r['proxy']} | {r['attempts']} | {r['connected']} | {r['refused']} | {r['ok']} |"
                     f" {r['other']} | {r['closed']} | {r['cpu'] * 100:.1f} % | {rec} |"
                     f" {'yes' if r['same_worker'] else 'no'} |")
    text = "\n".join(table)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
