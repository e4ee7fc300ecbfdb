"""Soak fastproxy: mixed traffic for a long time, with reloads and binary upgrades, watching memory and
descriptors (issue 8). On demand, not in the suite.

    python tools/soak.py                                   # 30 minutes, reload every 60 s, upgrade every 600 s
    python tools/soak.py --seconds 120 --upgrade-every 60  # a short try

Traffic, each kind in its own thread(s), paced (--pace) so that it stays a load, not a flood:
- keep-alive: GET /100 over one connection, again and again;
- new connections: GET /100 with "Connection: close";
- uploads: POST /upload with a 256 KB body (the backend reads it all before answering);
- downloads: GET /big (4 MB), read to the end and checked for length;
- WebSocket: an upgrade to /ws, then a few echoed messages, then close;
- slow clients: a few connections sending a head one line per second, and a few reading /big slowly.
Behind the proxy: a separate nginx (1 worker, as in bench/servers.py) for /100, /big and /upload, and a
small WebSocket echo server in this process for /ws. Every --reload-every seconds `fastproxy reload`
(HUP), every --upgrade-every seconds `fastproxy upgrade` (USR2, WINCH, QUIT with rollback).

Every --sample-every seconds the master's and each current worker's RSS and open descriptors are read
from /proc. At the end: errors by kind (a response that is not the expected one, a socket error, a
timeout), and per minute the workers' RSS and descriptors (the goal: flat) and the master's descriptors.
A keep-alive request that meets a connection the proxy closed between two requests (EOF before any
response byte, the HTTP keep-alive race a retiring worker causes) is retried once on a new connection and
counted as "retried", not as an error (browsers and HTTP libraries retry it the same way).
"""

import argparse
import base64
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import servers  # noqa: E402

BIG = 4 << 20
UPLOAD = b"u" * (256 << 10)
TIMEOUT = 15.0


def start_backend(tmp, logdir):
    """nginx, 1 worker: /100 and /big static, /upload reads the whole body first (request buffering)."""
    return servers.start_mixed_backend(tmp, logdir, BIG, client_body_timeout="60s")


class WebSocketEcho(threading.Thread):
    """Answers an Upgrade: websocket request with 101 (RFC 6455 4.2.2), then echoes raw bytes until close."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(256)
        self.port = self.sock.getsockname()[1]

    def run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        try:
            conn.settimeout(60)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            key = b""
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"sec-websocket-key:"):
                    key = line.split(b":", 1)[1].strip()
            accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n" + head.split(b"\r\n\r\n", 1)[1])
            while chunk := conn.recv(65536):
                conn.sendall(chunk)
        except OSError:
            pass
        finally:
            conn.close()


CONFIG = """\
[server]
workers = {workers}
pidfile = "{pidfile}"
drain_timeout = "20s"

[log]
error_log = "{log}"

[[listen]]
address = "127.0.0.1:{port}"

[upstreams.app]
servers = [{{ address = "127.0.0.1:{backend}" }}]
keepalive = 32

[upstreams.ws]
servers = [{{ address = "127.0.0.1:{ws}" }}]

[[routes]]
path = "/ws"
upstream = "ws"

[[routes]]
path = "/"
upstream = "app"
"""


def fastproxy(*args):
    return subprocess.run([sys.executable, "-m", "fastproxy", *args], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=120)


# ---- traffic ------------------------------------------------------------------------------------------------

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = Counter()
        self.errors = []

    def add(self, key, error=None):
        with self.lock:
            self.counts[key] += 1
            if error and len(self.errors) < 200:
                self.errors.append(f"{time.strftime('%H:%M:%S')} {key}: {error}")


def read_response(sock, head_only=False):
    """(status, body length) of one response framed by Content-Length (the backend's are)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError(f"closed after {len(data)} bytes")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if head_only:
        return status, length, body
    got = len(body)
    while got < length:
        chunk = sock.recv(min(1 << 20, length - got))
        if not chunk:
            raise EOFError(f"body cut at {got} of {length}")
        got += len(chunk)
    return status, got, b""


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    s.settimeout(TIMEOUT)
    return s


def keepalive_loop(port, stats, stop, pace):
    sock = None
    while not stop.is_set():
        fresh = sock is None
        try:
            if sock is None:
                sock = connect(port)
            sock.sendall(b"GET /100 HTTP/1.1\r\nHost: soak\r\n\r\n")
            status, n, _ = read_response(sock)
            if status == 200 and n == 100:
                stats.add("keepalive ok")
            else:
                stats.add("keepalive error", f"status {status}, {n} bytes")
        except EOFError as e:
            sock.close()
            sock = None
            if fresh or "after 0 bytes" not in str(e):
                stats.add("keepalive error", str(e))
            else:
                stats.add("keepalive retried")      # closed between two requests: the next loop retries
            continue
        except OSError as e:
            stats.add("keepalive error", repr(e))
            if sock is not None:
                sock.close()
            sock = None
        stop.wait(pace)
    if sock is not None:
        sock.close()


def one_shot(kind, port, stats, request, check):
    try:
        with connect(port) as s:
            s.sendall(request)
            status, n, _ = read_response(s)
            if check(status, n):
                stats.add(f"{kind} ok")
            else:
                stats.add(f"{kind} error", f"status {status}, {n} bytes")
    except (OSError, EOFError, ValueError) as e:
        stats.add(f"{kind} error", repr(e))


def loop(kind, port, stats, stop, pace, request, check):
    while not stop.is_set():
        one_shot(kind, port, stats, request, check)
        stop.wait(pace)


def websocket_loop(port, stats, stop, pace):
    key = base64.b64encode(os.urandom(16))
    while not stop.is_set():
        try:
            with connect(port) as s:
                s.sendall(b"GET /ws HTTP/1.1\r\nHost: soak\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                          b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
                status, _, rest = read_response(s, head_only=True)
                if status != 101:
                    stats.add("websocket error", f"status {status}")
                else:
                    buf = rest
                    for i in range(5):
                        msg = b"message %d " % i * 50
                        s.sendall(msg)
                        while len(buf) < len(msg):
                            chunk = s.recv(65536)
                            if not chunk:
                                raise EOFError("tunnel closed")
                            buf += chunk
                        if buf[:len(msg)] != msg:
                            raise ValueError("echo differs")
                        buf = buf[len(msg):]
                    stats.add("websocket ok")
        except (OSError, EOFError, ValueError) as e:
            stats.add("websocket error", repr(e))
        stop.wait(pace * 5)


def slow_loop(kind, port, stats, stop):
    """A slow client: one head line per second (slowloris), or /big read 16 KB per second (slow read)."""
    while not stop.is_set():
        try:
            with connect(port) as s:
                if kind == "slowloris":
                    s.sendall(b"GET /100 HTTP/1.1\r\nHost: soak\r\n")
                    while not stop.wait(1.0):
                        s.sendall(b"X-Slow: 1\r\n")
                else:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
                    s.sendall(b"GET /big HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
                    while not stop.wait(1.0):
                        if not s.recv(16384):
                            break
            stats.add(f"{kind} closed by proxy")
        except OSError:
            stats.add(f"{kind} closed by proxy")
        stop.wait(1.0)


# ---- sampling -------------------------------------------------------------------------------------------

def proc_rss_fds(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return rss, fds
    except (OSError, StopIteration):
        return None


def workers_of(master):
    out = []
    try:
        for task in os.listdir(f"/proc/{master}/task"):
            with open(f"/proc/{master}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
    except OSError:
        return []
    titled = []
    for pid in out:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(b"fastproxy: worker"):
                    titled.append(pid)
        except OSError:
            pass
    return titled


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=1800.0)
    ap.add_argument("--reload-every", type=float, default=60.0)
    ap.add_argument("--upgrade-every", type=float, default=600.0)
    ap.add_argument("--sample-every", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pace", type=float, default=0.01, help="pause between two requests of one traffic thread")
    args = ap.parse_args(argv)
    stats = Stats()
    stop = threading.Event()
    samples = []    # (t, master, master fds, [(pid, rss KiB, fds)])
    with tempfile.TemporaryDirectory(prefix="fastproxy-soak-") as tmp:
        logdir = Path(tmp) / "logs"
        logdir.mkdir()
        backend = start_backend(tmp, logdir)
        ws = WebSocketEcho()
        ws.start()
        port = servers.free_port()
        cfg = Path(tmp) / "soak.toml"
        pidfile = Path(tmp) / "soak.pid"
        log = Path(tmp) / "soak.log"
        cfg.write_text(CONFIG.format(workers=args.workers, pidfile=pidfile, log=log, port=port,
                                     backend=backend.port, ws=ws.port))
        first = subprocess.Popen([sys.executable, "-m", "fastproxy", "serve", "-c", str(cfg)], cwd=REPO,
                                 env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True)
        threads = []
        try:
            deadline = time.monotonic() + 20
            while not (pidfile.exists() and pidfile.read_text().strip()):
                if time.monotonic() > deadline or first.poll() is not None:
                    raise RuntimeError(f"fastproxy did not start:\n{log.read_text() if log.exists() else ''}")
                time.sleep(0.05)
            pace = args.pace
            plan = [(keepalive_loop, (port, stats, stop, pace))] * 2
            plan += [(loop, ("newconn", port, stats, stop, pace,
                             b"GET /100 HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n",
                             lambda st, n: st == 200 and n == 100))] * 2
            plan += [(loop, ("upload", port, stats, stop, pace * 5,
                             b"POST /upload HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n\r\n" % len(UPLOAD)
                             + UPLOAD, lambda st, n: st == 200))]
            plan += [(loop, ("download", port, stats, stop, pace * 5,
                             b"GET /big HTTP/1.1\r\nHost: soak\r\n\r\n", lambda st, n: st == 200 and n == BIG))]
            plan += [(websocket_loop, (port, stats, stop, pace))]
            plan += [(slow_loop, ("slowloris", port, stats, stop))] * 2
            plan += [(slow_loop, ("slow-read", port, stats, stop))] * 2
            for target, a in plan:
                t = threading.Thread(target=target, args=a, daemon=True)
                t.start()
                threads.append(t)
            t0 = time.monotonic()
            next_reload, next_upgrade, next_sample = args.reload_every, args.upgrade_every, 0.0
            events = []
            while (now := time.monotonic() - t0) < args.seconds:
                if now >= next_sample:
                    master = int(pidfile.read_text().split()[0]) if pidfile.exists() else None
                    mfds = proc_rss_fds(master)[1] if master and proc_rss_fds(master) else None
                    ws_ = [(p, *v) for p in workers_of(master) if (v := proc_rss_fds(p))] if master else []
                    samples.append((now, master, mfds, ws_))
                    next_sample += args.sample_every
                if now >= next_upgrade:
                    r = fastproxy("upgrade", "-c", str(cfg))
                    events.append((now, "upgrade", r.returncode, (r.stdout + r.stderr).strip()[-200:]))
                    next_upgrade += args.upgrade_every
                    next_reload = max(next_reload, now + 5)
                elif now >= next_reload:
                    r = fastproxy("reload", "-c", str(cfg))
                    events.append((now, "reload", r.returncode, (r.stdout + r.stderr).strip()[-200:]))
                    next_reload += args.reload_every
                time.sleep(0.2)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=20)
            master = int(pidfile.read_text().split()[0]) if pidfile.exists() else None
            for pid in {first.pid, master} - {None}:
                try:
                    os.kill(pid, 15)
                except ProcessLookupError:
                    pass
            first.wait(timeout=30)
            servers.stop(backend)
            ws.sock.close()
            proxy_log = log.read_text(errors="replace") if log.exists() else ""
    report(args, stats, samples, events, proxy_log)
    return 1 if any(k.endswith("error") for k in stats.counts) else 0


def report(args, stats, samples, events, proxy_log):
    print(f"soak: {args.seconds:g} s, {args.workers} workers, reload every {args.reload_every:g} s, "
          f"upgrade every {args.upgrade_every:g} s")
    print("traffic:", ", ".join(f"{k} {v}" for k, v in sorted(stats.counts.items())))
    for t, what, code, out in events:
        print(f"  {t:7.1f}s {what}: exit {code}{'' if code == 0 else ' ' + out}")
    if stats.errors:
        print(f"errors (first {len(stats.errors)}):")
        for e in stats.errors[:30]:
            print("  " + e)
    deaths = [line for line in proxy_log.splitlines() if " died" in line or "killed" in line]
    print(f"worker deaths in the proxy log: {len(deaths)}")
    for line in deaths[:10]:
        print("  " + line)
    print("samples (per minute: the last sample of the minute; workers of the master serving then):")
    print("     t  master  master fds  workers: pid RSS MB / fds")
    shown = {}
    for s in samples:
        shown[int(s[0] // 60)] = s
    if samples:
        shown[-1] = samples[0]
    for _minute, (t, master, mfds, ws) in sorted(shown.items()):
        row = "  ".join(f"{pid} {rss / 1024:.1f}/{fds}" for pid, rss, fds in sorted(ws))
        print(f"{t:6.0f}s  {master}  {mfds}  {row}")
    rss = [sum(r for _, r, _ in s[3]) / max(1, len(s[3])) / 1024 for s in samples if s[3]]
    fds = [sum(f for _, _, f in s[3]) / max(1, len(s[3])) for s in samples if s[3]]
    if rss:
        print(f"worker RSS (mean over workers): first {rss[0]:.1f} MB, max {max(rss):.1f} MB, last {rss[-1]:.1f} MB; "
              f"worker fds: first {fds[0]:.0f}, max {max(fds):.0f}, last {fds[-1]:.0f}")


if __name__ == "__main__":
    sys.exit(main())
