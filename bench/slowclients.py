"""Slow-client attacks against fastproxy and nginx, each in front of the same backend (issue 8).

    python bench/slowclients.py                       # 4 attacks x 2 proxies, 300 connections, ~4 min
    python bench/slowclients.py --seconds 10 --connections 100 --attacks slowloris,idle --proxies fastproxy

For each attack and proxy: the proxy is started fresh (1 worker, its default timeouts: the bench's configs
in bench/servers.py), `--connections` attacking connections are opened and kept up (an attacker reconnects
whatever the proxy closes), and after a ramp-up a probe client makes normal requests (`GET /100` on a new
connection, one every PROBE_INTERVAL, each given PROBE_TIMEOUT) for `--seconds`. Printed per attack and
proxy: the probe's success rate (200 with the right body within the timeout) and p95 latency, and what
happened to the attackers (connections opened, closed by the proxy).

The attacks (loopback only, bounded in time):
- slowloris: a request head sent one header line per --interval (1 s), never finished;
- slow-body: `POST /upload` announcing 1,000,000 bytes (under nginx's default 1 MB client_max_body_size,
  which would refuse 10 MB at once), then one body byte per --interval (1 s);
- slow-read: `GET /big` (4 MB) read 64 bytes per second through a 4 KB receive buffer;
- idle: connections that send nothing.
The backend is a separate nginx (1 worker, as in bench/servers.py) serving /100, /10k, /big, and /upload, which
reads a whole request body before answering (it passes the request to its own /100 with nginx's request
buffering), as an application would.
Goal (issue 8): under each attack, >= 99 % of the probe's requests succeed with a p95 under 1 s.
This is a benchmark: nothing here asserts; figures are printed (and --markdown writes them as a table).
"""

import argparse
import os
import selectors
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import servers  # noqa: E402

PROBE_INTERVAL = 0.05
PROBE_TIMEOUT = 5.0
BIG = 4 << 20
ATTACKS = ("slowloris", "slow-body", "slow-read", "idle")


def start_backend(tmp, logdir):
    """nginx, 1 worker: /100 and /big static, /upload reads the whole body first (request buffering)."""
    return servers.start_mixed_backend(tmp, logdir, BIG, client_body_timeout="300s")


class Attacker(threading.Thread):
    """Keeps `n` attacking connections of one kind open until stopped; counts what the proxy does to them."""

    def __init__(self, kind, port, n, interval=1.0):
        super().__init__(daemon=True)
        self.kind, self.port, self.n, self.interval = kind, port, n, interval
        self.stopping = False
        self.opened = self.closed_by_proxy = self.connect_errors = 0
        self.sel = selectors.DefaultSelector()
        self.conns = {}         # socket -> next time to send / read

    def open_one(self):
        s = socket.socket()
        if self.kind == "slow-read":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        except OSError:
            self.connect_errors += 1
            s.close()
            return
        self.opened += 1
        self.conns[s] = {"next": time.monotonic(), "started": False, "n": 0}
        self.sel.register(s, selectors.EVENT_READ)

    def first_bytes(self):
        if self.kind == "slowloris":
            return b"GET /100 HTTP/1.1\r\nHost: attack\r\n"
        if self.kind == "slow-body":
            return b"POST /upload HTTP/1.1\r\nHost: attack\r\nContent-Length: 1000000\r\n\r\n"
        if self.kind == "slow-read":
            return b"GET /big HTTP/1.1\r\nHost: attack\r\n\r\n"
        return b""

    def drop(self, s, by_proxy):
        if s in self.sel.get_map():
            self.sel.unregister(s)
        del self.conns[s]
        s.close()
        if by_proxy:
            self.closed_by_proxy += 1

    def tick(self, s, st, now):
        try:
            if not st["started"]:
                st["started"] = True
                if self.first_bytes():
                    s.send(self.first_bytes())
            elif self.kind == "slowloris":
                s.send(b"X-Slow-%d: y\r\n" % st["n"])
            elif self.kind == "slow-body":
                s.send(b"x")
            st["n"] += 1
        except BlockingIOError:
            pass
        except OSError:
            self.drop(s, True)
            return
        st["next"] = now + self.interval

    def run(self):
        while not self.stopping:
            while len(self.conns) < self.n and not self.stopping:
                self.open_one()
            now = time.monotonic()
            for s, st in list(self.conns.items()):
                if st["next"] <= now:
                    self.tick(s, st, now)
            for key, _ in self.sel.select(timeout=0.1):
                s = key.fileobj
                if s not in self.conns:
                    continue
                try:
                    # slow read: 64 bytes per wake-up at most (the socket's 4 KB buffer does the rest);
                    # the other kinds read whatever the proxy says (an error status, then its close)
                    data = s.recv(64 if self.kind == "slow-read" else 65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.drop(s, True)
                elif self.kind == "slow-read":
                    self.sel.unregister(s)          # read again in a second
                    self.conns[s]["reread"] = time.monotonic() + 1.0
            if self.kind == "slow-read":
                now = time.monotonic()
                for s, st in self.conns.items():
                    if st.get("reread") and st["reread"] <= now:
                        st["reread"] = None
                        self.sel.register(s, selectors.EVENT_READ)
        for s in list(self.conns):
            self.drop(s, False)
        self.sel.close()


def probe_once(port):
    """(ok, seconds) for one GET /100 on a new connection."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT) as s:
            s.settimeout(max(0.01, PROBE_TIMEOUT - (time.monotonic() - t0)))
            s.sendall(b"GET /100 HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if time.monotonic() - t0 > PROBE_TIMEOUT:
                    break
        ok = data.startswith(b"HTTP/1.1 200 ") and data.endswith(servers.BODIES["/100"])
    except OSError:
        ok = False
    elapsed = time.monotonic() - t0
    return ok and elapsed <= PROBE_TIMEOUT, elapsed


def probe(port, seconds):
    results = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        results.append(probe_once(port))
        time.sleep(max(0.0, PROBE_INTERVAL - (time.monotonic() - t0)))
    return results


def p95(values):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(0.95 * len(values)))]


def run_one(proxy_name, attack, backend, tmp, logdir, connections, seconds, ramp, interval):
    proc = servers.start_proxy(proxy_name, attack, tmp, logdir, backend.port, workers=1)
    try:
        attacker = Attacker(attack, proc.port, connections, interval)
        attacker.start()
        deadline = time.monotonic() + ramp
        while time.monotonic() < deadline:
            time.sleep(0.1)
        results = probe(proc.port, seconds)
        attacker.stopping = True
        attacker.join(timeout=10)
        ok = [r for r in results if r[0]]
        return {
            "proxy": proxy_name, "attack": attack, "probes": len(results),
            "success": 100.0 * len(ok) / max(1, len(results)),
            "p95": p95([r[1] for r in results]),
            "median": statistics.median([r[1] for r in results]) if results else float("nan"),
            "opened": attacker.opened, "closed": attacker.closed_by_proxy, "connect_errors": attacker.connect_errors,
        }
    finally:
        servers.stop(proc)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=20.0, help="probe time per attack and proxy")
    ap.add_argument("--ramp", type=float, default=3.0, help="attack time before probing starts")
    ap.add_argument("--interval", type=float, default=1.0,
                    help="seconds between two header lines (slowloris) or body bytes (slow-body)")
    ap.add_argument("--attacks", default=",".join(ATTACKS))
    ap.add_argument("--proxies", default="fastproxy,nginx")
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args(argv)
    attacks = [a for a in args.attacks.split(",") if a]
    proxies = [p for p in args.proxies.split(",") if p]
    rows = []
    with tempfile.TemporaryDirectory(prefix="fastproxy-slow-") as tmp:
        logdir = Path(tmp) / "logs"
        logdir.mkdir()
        backend = start_backend(tmp, logdir)
        try:
            for attack in attacks:
                for name in proxies:
                    row = run_one(name, attack, backend, tmp, logdir, args.connections, args.seconds, args.ramp,
                                  args.interval)
                    rows.append(row)
                    print(f"{attack:10s} {name:10s} probe success {row['success']:6.2f}% of {row['probes']:4d}, "
                          f"p95 {row['p95'] * 1000:7.1f} ms, median {row['median'] * 1000:6.1f} ms; attackers: "
                          f"{row['opened']} opened, {row['closed']} closed by the proxy, "
                          f"{row['connect_errors']} connect errors", flush=True)
        finally:
            servers.stop(backend)
    table = ["| attack | proxy | probe success | p95 | median | attack conns opened | closed by proxy |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {r['attack']} | {r['proxy']} | {r['success']:.2f} % ({r['probes']}) | {r['p95'] * 1000:.0f} ms "
              f"| {r['median'] * 1000:.0f} ms | {r['opened']} | {r['closed']} |" for r in rows]
    print("\n".join(table))
    if args.markdown:
        Path(args.markdown).write_text(
            f"Slow-client attacks, {args.connections} connections each, probe {args.seconds:g} s "
            f"(`python bench/slowclients.py`), {os.cpu_count()} CPUs shared with other work.\n\n"
            + "\n".join(table) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
