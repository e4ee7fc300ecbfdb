"""Idle kept-alive client connections through one proxy worker: the memory each one costs, and the CPU the
worker spends on them while nothing happens.

    python bench/idle.py                          # 10,000 connections; fastproxy, then nginx; 10 s idle
    python bench/idle.py -n 2000 --idle 5         # fewer connections, shorter idle period
    python bench/idle.py --proxies fastproxy      # one proxy only

Per proxy, 1 worker, in front of the benchmark's backend (bench/servers.py: nginx serving /100):
1. Warm-up: --warmup-conns connections one after another, one request each, then closed: the first
   connection to the backend, lazily built state and the accept/close paths exist before the first
   reading. One at a time on purpose: many at once would leave freed heap memory behind that the idle
   connections then reuse without growing the RSS, hiding part of their cost. (Opened one after
   another, no connection needs a second buffer block, so fastproxy's cache of up to 256 spare blocks
   stays at one or two before and after.)
2. RSS before: VmRSS of the worker (/proc/PID/status).
3. N client connections, opened one after another from this process: each sends `GET /100` (HTTP/1.1,
   keep-alive), reads the whole answer and stays open. The proxy pools its backend connections, so the
   backend sees only a few of them (counted from /proc/net/tcp).
4. 1 s settle, then the idle period (--idle seconds, nothing sent): the worker's CPU time (the sum of
   /proc/PID/task/*/schedstat, nanoseconds, so not limited by the 10 ms tick) and context switches
   (voluntary + involuntary: wakeups) are read at its start and end.
5. RSS after, at the end of the idle period; per idle connection = (after - before) / N bytes. Every
   connection is checked to be still open (poll: no EOF, no data).
Then the client connections are closed with RST (SO_LINGER 0: no TIME_WAIT left behind), and the proxy
is stopped by its PID. Writes bench/results/idle.md (the table, the exact command, the machine).

RSS is user-space memory only: the kernel's socket structures and buffers are not in it (the same for
every proxy). nginx allocates its connection table (worker_connections entries) when the worker starts,
so that part of an nginx connection's cost is already in its RSS before.

Descriptors: this process holds N sockets and the worker N plus a few, so RLIMIT_NOFILE is raised here
first (to 2 N + 1024 and more: a fastproxy worker accepts only the clients its limit can serve with a
backend connection each, two descriptors per client); the proxies inherit it. nginx gets
worker_connections and worker_rlimit_nofile. The N
connections come from one address to one port, so N must fit in the ephemeral port range
(net.ipv4.ip_local_port_range, 28,232 ports by default).
"""

import argparse
import os
import resource
import select
import shlex
import shutil
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path

import report
import run
import servers

HERE = Path(__file__).resolve().parent
PROXIES = ("fastproxy", "nginx")
WORKER_TITLE = {"fastproxy": "fastproxy: worker", "nginx": "nginx: worker process"}
REQUEST = b"GET /100 HTTP/1.1\r\nHost: bench.local\r\n\r\n"
BODY = servers.BODIES["/100"]
SETTLE = 1.0          # seconds between the last connection's answer and the idle period
IO_TIMEOUT = 10.0     # seconds any single connect/send/receive may take


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", "--connections", type=int, default=10_000, help="idle connections (default 10000)")
    p.add_argument("--idle", type=float, default=10.0, help="seconds of the idle period (default 10)")
    p.add_argument("--proxies", default=",".join(PROXIES), help="comma list of fastproxy, nginx")
    p.add_argument("--warmup-conns", type=int, default=100,
                   help="connections opened one after another and closed before the first reading (default 100)")
    p.add_argument("--open-timeout", type=float, default=300.0,
                   help="seconds opening the N connections may take at most (default 300)")
    p.add_argument("--out", type=Path, default=HERE / "results", help="results directory (writes idle.md)")
    p.add_argument("--note", action="append", default=[], help="a line for idle.md's notes (repeatable)")
    args = p.parse_args(argv)
    args.proxies = [x for x in args.proxies.split(",") if x]
    bad = [x for x in args.proxies if x not in PROXIES]
    if bad:
        p.error(f"unknown proxies {bad}; choose from {', '.join(PROXIES)}")
    if args.connections < 1:
        p.error("-n must be at least 1")
    return args


# --- limits of this machine -------------------------------------------------------------------------

def raise_nofile(needed):
    """Raise this process's RLIMIT_NOFILE (soft, and hard if it must and may) to `needed`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, max(hard, needed)))
    except (ValueError, OSError) as e:
        raise SystemExit(f"RLIMIT_NOFILE is {soft}/{hard} (soft/hard) and cannot be raised to {needed}: {e}; "
                         f"use a smaller -n or raise the hard limit (ulimit -Hn)") from None
    return needed


def check_port_range(n):
    lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    if n > hi - lo + 1 - 1000:
        raise SystemExit(f"-n {n} does not fit the ephemeral port range {lo}-{hi} (minus 1000 for other "
                         "connections): use a smaller -n or widen net.ipv4.ip_local_port_range")


# --- reading a process from /proc -------------------------------------------------------------------

def rss_bytes(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for PID {pid}")


def cpu_ns_and_switches(pid):
    """(on-CPU nanoseconds, context switches) summed over the process's threads."""
    ns = switches = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            ns += int((task / "schedstat").read_text().split()[0])
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    switches += int(line.split()[1])
        except OSError:      # a thread that ended meanwhile
            continue
    return ns, switches


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def established_to(port):
    """ESTABLISHED TCP connections whose remote end is 127.0.0.1:port (the proxy's backend connections)."""
    count = 0
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "01" and int(cols[2].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def find_worker(proc, title, timeout=10.0):
    """The one worker under the master: its process title starts with `title`."""
    deadline = time.monotonic() + timeout
    found = []
    while time.monotonic() < deadline:
        found = []
        for pid in proc.tree():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cmdline.startswith(title):
                found.append(pid)
        if len(found) == 1:
            return found[0]
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name}: expected one process titled {title!r}, found {found}")


# --- client connections -----------------------------------------------------------------------------

def exchange(sock):
    """Send one keep-alive GET /100 on sock and read the whole answer."""
    sock.sendall(REQUEST)
    read_response(sock)


def read_response(sock):
    """Read one whole answer to GET /100; RuntimeError if it is not 200 with the file, kept alive."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError(f"connection closed before the response head ({data[:200]!r})")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"unexpected status line {lines[0]!r}")
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"connection" and b"close" in value.lower():
            raise RuntimeError("the proxy answered Connection: close; the connection would not stay open")
    if length is None:
        raise RuntimeError("no Content-Length in the response")
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise RuntimeError("connection closed in the response body")
        body += chunk
    if body != BODY:
        raise RuntimeError(f"unexpected body ({len(body)} bytes)")


def connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def close_rst(socks):
    """Close with RST (SO_LINGER on, 0 s): nothing is left in TIME_WAIT on either side."""
    linger = struct.pack("ii", 1, 0)
    for sock in socks:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        except OSError:
            pass
        sock.close()
    socks.clear()


def warm_up(port, count):
    for _ in range(count):
        socks = [connect(port)]
        try:
            exchange(socks[0])
        finally:
            close_rst(socks)


def still_open(socks):
    """How many of socks have nothing to read: neither EOF, nor a reset, nor unexpected bytes."""
    poller = select.poll()
    for sock in socks:
        poller.register(sock, select.POLLIN | select.POLLPRI)
    return len(socks) - len(poller.poll(0))


# --- one proxy --------------------------------------------------------------------------------------

def nginx_connections(n):
    """worker_connections for n clients: it counts the listening socket and the backend connections too."""
    return max(4096, n + 1024)


def nginx_limits(n):
    """The nginx directives nginx_connections(n) leads to (servers._nginx_main), as text for the report."""
    c = nginx_connections(n)
    return f"worker_connections {c};" + (f" worker_rlimit_nofile {c + 1024};" if c > 4096 else "")


def start(name, tmp, logdir, backend_port, n):
    d = Path(tmp) / f"{name}-idle"
    d.mkdir()
    port = servers.free_port()
    if name == "nginx":
        # keepalive_timeout is 300 s in the bench's nginx configs.
        (d / "nginx.conf").write_text(servers.nginx_proxy_config(d, port, backend_port, 1, nginx_connections(n)))
        argv = ["nginx", "-p", str(d), "-c", str(d / "nginx.conf")]
        env = None
    else:
        # The default keep-alive timeout (75 s) could end connections while a slow machine still opens
        # the rest; 300 s is nginx's setting here too.
        conf = servers.fastproxy_config(port, backend_port, 1, extra='\n[timeouts]\nkeepalive = "300s"\n')
        (d / "proxy.toml").write_text(conf)
        argv = [sys.executable, "-m", "fastproxy", "serve", "-c", str(d / "proxy.toml")]
        env = dict(os.environ, PYTHONPATH=str(servers.REPO))
    proc = servers.start(f"{name}-idle", argv, port, logdir, cwd=servers.REPO, env=env)
    try:
        servers.wait_ready(proc)
    except BaseException:
        servers.stop(proc)
        raise
    return proc


def measure(name, proc, backend_port, args):
    worker = find_worker(proc, WORKER_TITLE[name])
    warm_up(proc.port, args.warmup_conns)
    rss0, fds0 = rss_bytes(worker), open_fds(worker)
    socks = []
    try:
        t0 = time.monotonic()
        deadline = t0 + args.open_timeout
        for i in range(args.connections):
            if time.monotonic() > deadline:
                raise RuntimeError(f"opened only {i} of {args.connections} connections in {args.open_timeout} s")
            sock = connect(proc.port)
            socks.append(sock)
            try:
                exchange(sock)
            except (OSError, RuntimeError) as e:
                raise RuntimeError(f"connection {i + 1}: {e}") from None
        open_s = time.monotonic() - t0
        time.sleep(SETTLE)
        fds1 = open_fds(worker)
        backend_conns = established_to(backend_port)
        cpu0, sw0 = cpu_ns_and_switches(worker)
        busy0, i0 = run.busy_ticks(), time.monotonic()
        time.sleep(args.idle)
        cpu1, sw1 = cpu_ns_and_switches(worker)
        busy1, idle_s = run.busy_ticks(), time.monotonic() - i0
        rss1 = rss_bytes(worker)
        alive = still_open(socks)
    finally:
        close_rst(socks)
    return {
        "proxy": name,
        "n": args.connections,
        "open_s": open_s,
        "rss0": rss0,
        "rss1": rss1,
        "per_conn": (rss1 - rss0) / args.connections,
        "fds0": fds0,
        "fds1": fds1,
        "backend_conns": backend_conns,
        "idle_s": idle_s,
        "cpu_ms": (cpu1 - cpu0) / 1e6,
        "cpu_pct": (cpu1 - cpu0) / 1e9 / idle_s * 100,
        "wakeups": (sw1 - sw0) / idle_s,
        # the whole machine's busy time but the worker's: nothing else of ours runs while it is idle
        "other": max(0.0, (busy1 - busy0) / run.CLK_TCK - (cpu1 - cpu0) / 1e9) / idle_s * 100,
        "alive": alive,
    }


# --- report -----------------------------------------------------------------------------------------

HEADER = (
    "| proxy | idle conns | open s | worker RSS before KB | after KB | per idle conn B | worker fds before/after "
    "| backend conns | idle s | worker CPU ms | CPU % of a core | wakeups/s | still open | other load |\n"
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
)


def table(rows):
    lines = [HEADER]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['proxy']} | {r['n']} | failed: {r['error'].splitlines()[0]} |"
                         + " |" * 11 + "\n")
            continue
        lines.append(
            f"| {r['proxy']} | {r['n']} | {r['open_s']:.1f} | {r['rss0'] / 1024:.0f} | {r['rss1'] / 1024:.0f} "
            f"| {r['per_conn']:.0f} | {r['fds0']}/{r['fds1']} | {r['backend_conns']} | {r['idle_s']:.1f} "
            f"| {r['cpu_ms']:.1f} | {r['cpu_pct']:.2f} | {r['wakeups']:.1f} | {r['alive']} | {r['other']:.0f}% |\n"
        )
    return "".join(lines)


def markdown(rows, args, command, machine, notes):
    out = [
        "# Idle kept-alive connections: memory and CPU of one worker\n\n",
        f"Command: `{command}` (from the repository root)\n\n",
        table(rows),
        "\n",
        f"- Each proxy: 1 worker, in front of the benchmark's backend (nginx, static `/100`). {args.connections} "
        "client connections opened one after another from one process; each sent `GET /100` (keep-alive), "
        "read the answer and stayed open. Before that, a warm-up of "
        f"{args.warmup_conns} connections one after another (one request each, then closed).\n",
        "- worker RSS: VmRSS of the worker process before the N connections (after the warm-up) and at the end "
        "of the idle period; per idle conn = (after - before) / N. User-space memory only: the kernel's socket "
        "buffers are not in it. nginx allocates its connection table (worker_connections) at start, so that "
        "part of its per-connection cost is in `before`.\n",
        "- backend conns: established connections from the proxy to the backend during the idle period "
        "(the proxy pools them; the clients were served one after another).\n",
        f"- idle period: {args.idle:g} s with nothing sent, starting {SETTLE:g} s after the last answer. worker CPU: "
        "on-CPU time of the worker's threads (/proc/PID/task/*/schedstat, ns) over the idle period; wakeups/s: "
        "its context switches (voluntary + involuntary) per second over the same period.\n",
        "- still open: connections with neither EOF, a reset nor unexpected data at the end of the idle period.\n",
        "- other load: CPU the rest of the machine used during the idle period (/proc/stat minus the worker), "
        "in % of one core: other programs at work. They make `open s` longer and can add involuntary switches "
        "to the worker's wakeups; they do not change its RSS.\n",
        "- fastproxy: `[timeouts] keepalive = \"300s\"` (nginx: `keepalive_timeout 300s`), otherwise the "
        f"benchmark's configs (bench/servers.py). nginx: `{nginx_limits(args.connections)}`; fastproxy: "
        "`[server] max_connections` 10,000 by default, and the RLIMIT_NOFILE it inherits from this script "
        "(it accepts as many clients as that limit can serve, two descriptors each).\n",
    ]
    if notes:
        out.append("\n## Notes\n\n")
        out += [f"- {n}\n" for n in notes]
    out.append("\n## Machine\n\n| | |\n|---|---|\n")
    out += [f"| {k} | {v} |\n" for k, v in machine.items()]
    return "".join(out)


def without_notes(argv):
    """argv without --note TEXT: the notes have their own section in idle.md."""
    out, skip = [], False
    for a in argv:
        if skip or a.startswith("--note="):
            skip = False
        elif a == "--note":
            skip = True
        else:
            out.append(a)
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    check_port_range(args.connections + args.warmup_conns)
    limit = raise_nofile(args.connections + args.warmup_conns + 1024)
    command = shlex.join(["python", "bench/idle.py", *without_notes(argv)])
    logdir = args.out / "raw" / ("idle-" + time.strftime("%Y%m%d-%H%M%S"))
    logdir.mkdir(parents=True)
    tmp = tempfile.mkdtemp(prefix="fastproxy-idle-")
    notes = [*args.note, f"RLIMIT_NOFILE of this script and the proxies it started: {limit}"]
    started, rows = [], []
    try:
        backend = servers.start_backend(tmp, logdir)
        started.append(backend)
        for name in args.proxies:
            print(f"{name}: starting, {args.connections} connections, {args.idle:g} s idle", flush=True)
            proc = start(name, tmp, logdir, backend.port, args.connections)
            started.append(proc)
            try:
                row = measure(name, proc, backend.port, args)
            except (OSError, RuntimeError) as e:
                row = {"proxy": name, "n": args.connections, "error": str(e)}
                notes.append(f"{name}: {e}")
                print(f"{name}: FAILED: {e}\n{servers.tail(proc.log)}", file=sys.stderr)
            rows.append(row)
            if "error" not in row:
                print(f"{name}: {row['per_conn']:.0f} B per idle connection, {row['cpu_ms']:.1f} ms CPU in "
                      f"{row['idle_s']:.1f} s idle, {row['alive']}/{row['n']} still open", flush=True)
            started.remove(proc)
            survivors = servers.stop(proc)
            if survivors:
                notes.append(f"{name}: PIDs {survivors} outlived the master's TERM and were killed")
    finally:
        for proc in reversed(started):
            servers.stop(proc)
        shutil.copytree(tmp, logdir / "configs", ignore=shutil.ignore_patterns("temp"), dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    machine = report.machine_info()
    (args.out / "idle.md").write_text(markdown(rows, args, command, machine, notes))
    print()
    print(table(rows))
    for n in notes:
        print("note:", n)
    print(f"wrote {args.out / 'idle.md'}; logs and configs in {logdir}")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
