"""Fuzz a running `fastproxy serve` from both sides: mutated requests from clients, mutated responses from a
raw-socket backend (issue 8).

    python tools/fuzz.py                       # 60 s, a random seed (printed)
    python tools/fuzz.py --seconds 1800        # a long run
    python tools/fuzz.py --seed 1234 --batches 6   # replay exactly what a failing run did

One proxy (2 workers by default) routes /fuzz-backend/ to a raw backend that answers every request with a
mutated response (seeds: tests/responses corpus and a few framings of its own: chunked with trailers,
1xx then 200, close-delimited, 101), sent in random pieces, then kept open, closed, or followed by more
bytes; everything else goes to the demo backend (fastproxy.demo). Batches alternate:
- client side: `--clients` connections at once, each sending a mutated request (seeds: the
  tests/requests corpus and the tests/smuggling cases), half of them then half-closing;
- backend side: as many well-formed GETs to /fuzz-backend/ at once.
Each client must get a response (bytes starting "HTTP/1.") or a clean close (EOF or reset) before its
deadline; anything else (silence past the deadline, bytes that are not HTTP) is a failure.
After each batch: the worker PIDs are unchanged (no crash), a normal request is answered 200 within
PROBE_TIMEOUT (no hang, no spinning worker starving the loop), and each worker's RSS is read; at the end
its growth since the first batch must be under --rss-mb (memory bounded).

Every random choice comes from the seed: the clients' from random.Random(seed * 1000003 + batch), the
backend's from the seed and the request's target. A failure prints the seed, the batch and the input, and
`--seed S --batches B+1` replays it (timing aside: the proxy's reads may split bytes differently). The exit status is 0 when every check held.
tests/test_fuzz.py runs a short version of this (a fixed seed, ~20 s) in the suite.
"""

import argparse
import codecs
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from helpers.rawbackend import RawBackend  # noqa: E402

CLIENT_DEADLINE = 8.0       # > client_header + upstream_read timeouts of the config below, with slack
PROBE_TIMEOUT = 3.0
INTERESTING = [b"\x00", b"\t", b"\n", b"\r", b" ", b"\x7f", b"\xff", b":", b";", b",", b'"', b"0", b"9",
               b"a", b"f", b"-", b"\r\n", b"\r\n\r\n", b"chunked", b"Content-Length: ",
               b"Transfer-Encoding: chunked\r\n", b"Connection: close\r\n", b"Upgrade: h2c\r\n",
               b"Expect: 100-continue\r\n", b"HTTP/1.1 ", b"99999999999999999999", b"-1", b"0x10"]


# ---- seeds --------------------------------------------------------------------------------------------

def load_http(path):
    """A corpus .http file: real newlines are for reading only; bytes are escapes."""
    return codecs.escape_decode(Path(path).read_bytes().replace(b"\n", b""))[0]


def request_seeds():
    seeds = [load_http(p) for kind in ("valid", "invalid") for p in sorted((REPO / "tests/requests" / kind)
                                                                          .glob("*.http"))]
    sys.path.insert(0, str(REPO / "tests/smuggling"))
    from cases import CASES
    seeds += [c.data for c in CASES]
    seeds += [b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;e=1\r\nhello\r\n0\r\nX: 1\r\n\r\n",
              b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n",
              b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
              b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nxyz"]
    return seeds


def response_seeds():
    seeds = [load_http(p) for kind in ("valid", "invalid") for p in sorted((REPO / "tests/responses" / kind)
                                                                          .glob("*.http"))]
    seeds += [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
              b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\nHTTP/1.1 200 OK\r\n"
              b"Content-Length: 2\r\n\r\nok",
              b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nclose-delimited body",
              b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
              b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nabc",
              b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
              b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n"]
    return seeds


# ---- mutations ------------------------------------------------------------------------------------------

def mutate(rng, data, others):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randint(0, len(data))
        if op == 0 and data:                            # flip a bit
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:                          # replace a byte with an interesting one
            data[min(pos, len(data) - 1)] = rng.choice(INTERESTING)[0]
        elif op == 2:                                   # insert interesting bytes
            data[pos:pos] = rng.choice(INTERESTING)
        elif op == 3 and data:                          # delete a range
            data[pos:pos + rng.randint(1, 16)] = b""
        elif op == 4 and data:                          # repeat a range (a header line, a chunk) many times
            end = min(len(data), pos + rng.randint(1, 40))
            data[pos:end] = data[pos:end] * rng.randint(2, 60)
        elif op == 5:                                   # splice with another seed
            other = rng.choice(others)
            data = data[:pos] + other[rng.randint(0, len(other)):]
        elif op == 6:                                   # line ends: CRLF <-> LF
            data = bytearray(data.replace(b"\r\n", b"\n", 1) if rng.random() < 0.5
                             else data.replace(b"\n", b"\r\n", 1))
        elif op == 7:                                   # a number becomes another
            digits = [i for i, c in enumerate(data) if 48 <= c <= 57]
            if digits:
                i = rng.choice(digits)
                data[i:i + 1] = rng.choice([b"0", b"00000000000000000001", b"18446744073709551616", b"-1",
                                            b"ffff", b"1 1", b"1,1", b"+1"])
        elif op == 8:                                   # truncate
            data = data[:pos]
    return bytes(data[:65536])


# ---- the proxy -------------------------------------------------------------------------------------------

CONFIG = """\
[server]
workers = {workers}

[timeouts]
client_header = "2s"
client_body = "2s"
keepalive = "2s"
upstream_connect = "1s"
upstream_read = "2s"
upstream_send = "2s"

[[listen]]
address = "127.0.0.1:{port}"

[upstreams.demo]
servers = [{{ address = "{demo}" }}]

[upstreams.fuzz]
servers = [{{ address = "{raw}" }}]
passive = {{ max_fails = 0 }}

[[routes]]
path = "/fuzz-backend/"
upstream = "fuzz"

[[routes]]
path = "/"
upstream = "demo"
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid):
    out = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
        except FileNotFoundError:
            pass
    return out


def title(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return 0


class Proxy:
    def __init__(self, workdir, workers, demo_address, raw_address):
        self.port = free_port()
        self.config = os.path.join(workdir, "fuzz.toml")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(workers=workers, port=self.port, demo=demo_address, raw=raw_address))
        self.log_path = os.path.join(workdir, "fuzz-proxy.log")
        self.log = open(self.log_path, "wb")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen([sys.executable, "-m", "fastproxy", "serve", "-c", self.config],
                                     cwd=REPO, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.workers = workers
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fastproxy exited: {self.tail()}")
            if len(self.worker_pids()) == workers and probe(self.port, 1.0)[0] == 200:
                return
            time.sleep(0.05)
        raise RuntimeError(f"fastproxy did not start: {self.tail()}")

    def worker_pids(self):
        return sorted(p for p in children(self.proc.pid) if title(p).startswith("fastproxy: worker"))

    def tail(self, n=3000):
        with open(self.log_path, errors="replace") as f:
            return f.read()[-n:]

    def stop(self):
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


class Demo:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "fastproxy.demo", "--name", "demo", "--port", "0"],
                                     cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                                     stdout=subprocess.PIPE, start_new_session=True)
        line = self.proc.stdout.readline().decode()
        self.address = line.rsplit(" ", 1)[1].strip()

    def stop(self):
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=10)
        self.proc.stdout.close()


def probe(port, timeout):
    """(status, seconds) of one normal request on a new connection; status 0 when it failed."""
    t0 = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    except (OSError, ValueError, IndexError):
        status = 0
    return status, time.monotonic() - t0


# ---- one batch: many clients at once, each classified -------------------------------------------------

def run_clients(port, inputs, deadline_s):
    """Send each input on its own connection (then maybe half-close) and classify what comes back:
    "response" (starts with HTTP/1.), "close" (EOF or reset), "hang" (deadline), "garbage", "connect"."""
    sel = selectors.DefaultSelector()
    results = [None] * len(inputs)
    got = {}
    for i, (data, half_close) in enumerate(inputs):
        s = socket.socket()
        s.settimeout(2)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            results[i] = "connect"
            s.close()
            continue
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass            # the proxy may already have answered and closed: read what it said
        s.setblocking(False)
        got[i] = b""
        sel.register(s, selectors.EVENT_READ, i)
    deadline = time.monotonic() + deadline_s
    while sel.get_map() and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.2):
            s, i = key.fileobj, key.data
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                chunk = None            # reset
            if chunk:
                got[i] += chunk
                if b"\r\n" not in got[i] and len(got[i]) < 16:
                    continue
                results[i] = "response" if got[i].startswith(b"HTTP/1.") else "garbage"
            else:
                results[i] = "response" if got[i].startswith(b"HTTP/1.") else ("close" if not got[i] else "garbage")
            sel.unregister(s)
            s.close()
    for key in list(sel.get_map().values()):
        i = key.data
        results[i] = "response" if got[i].startswith(b"HTTP/1.") else "hang"
        sel.unregister(key.fileobj)
        key.fileobj.close()
    sel.close()
    return results, got


def fuzz_backend(seeds, seed):
    """The raw backend's script: every request gets a mutated response, in pieces, then an ending. The
    choices depend only on the seed and the request's target (/fuzz-backend/BATCH/CLIENT), not on the
    order in which concurrent requests arrive, so a run replays exactly."""

    def script(conn, n):
        target = conn.requests[-1].split(b" ", 2)[1] if b" " in conn.requests[-1] else b"?"
        rng = random.Random(f"{seed}:{target.decode(errors='replace')}:{n}")
        data = mutate(rng, rng.choice(seeds), seeds) if rng.random() < 0.85 else rng.choice(seeds)
        pos = 0
        while pos < len(data):
            step = rng.choice([len(data), rng.randint(1, 64)])
            if not conn.send(data[pos:pos + step]):
                return False
            pos += step
        ending = rng.random()
        if ending < 0.3:
            return False                        # close
        if ending < 0.4:
            conn.send(rng.choice(seeds)[:rng.randint(0, 40)])   # bytes after the response
        return True                             # keep it open (the proxy decides)

    return script


class Fuzzer:
    def __init__(self, seed, workers=2, clients=40, rss_mb=40, workdir=None, out=sys.stdout,
                 client_deadline=CLIENT_DEADLINE):
        self.seed = seed
        self.client_deadline = client_deadline
        self.clients = clients
        self.rss_limit_kib = rss_mb * 1024
        self.out = out
        self.requests = request_seeds()
        self.responses = response_seeds()
        self.batch = 0
        self.tmp = tempfile.TemporaryDirectory(prefix="fastproxy-fuzz-") if workdir is None else None
        workdir = workdir or self.tmp.name
        self.raw = RawBackend(default=fuzz_backend(self.responses, seed), idle_timeout=5.0)
        self.demo = Demo()
        self.proxy = Proxy(workdir, workers, self.demo.address, self.raw.address)
        self.pids = self.proxy.worker_pids()
        self.rss_first = None
        self.rss = []
        self.failures = []
        self.counts = {}

    def say(self, text):
        print(text, file=self.out, flush=True)

    def run_batch(self):
        b = self.batch
        rng = random.Random(self.seed * 1000003 + b)
        if b % 2 == 0:
            side = "client"
            inputs = []
            for _ in range(self.clients):
                seed = rng.choice(self.requests)
                data = mutate(rng, seed, self.requests) if rng.random() < 0.9 else seed
                inputs.append((data, rng.random() < 0.5))
        else:
            side = "backend"
            inputs = [(b"GET /fuzz-backend/%d/%d HTTP/1.1\r\nHost: fuzz\r\n\r\n" % (b, i), rng.random() < 0.3)
                      for i in range(self.clients)]
        results, got = run_clients(self.proxy.port, inputs, self.client_deadline)
        for i, r in enumerate(results):
            self.counts[(side, r)] = self.counts.get((side, r), 0) + 1
            if r not in ("response", "close"):
                self.fail(f"batch {b} ({side} side) client {i}: {r}; sent {inputs[i][0][:300]!r}; "
                          f"got {got.get(i, b'')[:200]!r}")
        now = self.proxy.worker_pids()
        if now != self.pids:
            self.fail(f"batch {b} ({side} side): workers changed from {self.pids} to {now} (a worker died)\n"
                      f"{self.proxy.tail()}")
            self.pids = now
        status, seconds = probe(self.proxy.port, PROBE_TIMEOUT)
        if status != 200:
            self.fail(f"batch {b} ({side} side): the probe request got {status or 'no answer'} "
                      f"after {seconds:.2f}s (hang?)")
        rss = [rss_kib(p) for p in now]
        self.rss.append(rss)
        if self.rss_first is None:
            self.rss_first = rss
        self.batch += 1
        return side, results, seconds, rss

    def fail(self, what):
        self.failures.append(what)
        self.say(f"FAIL (seed {self.seed}): {what}")

    def check_memory(self):
        if not self.rss or self.rss_first is None:
            return
        growth = [last - first for first, last in zip(self.rss_first, self.rss[-1], strict=False)]
        if any(g > self.rss_limit_kib for g in growth):
            self.fail(f"worker RSS grew by {[g // 1024 for g in growth]} MB (limit {self.rss_limit_kib // 1024}"
                      f" MB): {[r[0] // 1024 for r in self.rss]} MB per batch for worker 0")
        return growth

    def close(self):
        self.proxy.stop()
        self.demo.stop()
        self.raw.stop()
        if self.tmp is not None:
            self.tmp.cleanup()


def run(seed, seconds=None, batches=None, workers=2, clients=40, rss_mb=40, out=sys.stdout):
    """Fuzz until `seconds` pass or `batches` are done; returns the list of failures (empty: all held)."""
    f = Fuzzer(seed, workers=workers, clients=clients, rss_mb=rss_mb, out=out)
    f.say(f"fuzz: seed {seed}, {workers} worker(s), {clients} clients per batch, proxy on port {f.proxy.port}")
    t0 = time.monotonic()
    try:
        while True:
            if batches is not None and f.batch >= batches:
                break
            if seconds is not None and time.monotonic() - t0 >= seconds:
                break
            side, results, probe_s, rss = f.run_batch()
            summary = {r: results.count(r) for r in sorted(set(results))}
            f.say(f"batch {f.batch - 1:4d} {side:7s} {summary} probe {probe_s * 1000:.0f} ms, "
                  f"worker RSS {[r // 1024 for r in rss]} MB")
        growth = f.check_memory()
        f.say(f"fuzz: {f.batch} batches in {time.monotonic() - t0:.0f}s; outcomes "
              f"{dict(sorted((f'{s}/{r}', n) for (s, r), n in f.counts.items()))}; RSS growth "
              f"{[g // 1024 for g in growth or []]} MB")
        if f.failures:
            f.say(f"fuzz FAILED: {len(f.failures)} problem(s); replay with: python tools/fuzz.py --seed {seed} "
                  f"--batches {f.batch} --workers {workers} --clients {clients}")
        return f.failures
    finally:
        f.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: from the clock; printed)")
    ap.add_argument("--seconds", type=float, default=None, help="run this long (default 60 unless --batches)")
    ap.add_argument("--batches", type=int, default=None, help="run exactly this many batches")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", type=int, default=40, help="connections per batch")
    ap.add_argument("--rss-mb", type=int, default=40, help="allowed worker RSS growth over the run, MB")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time() * 1000) % 1_000_000_007
    seconds = args.seconds if args.seconds is not None or args.batches is not None else 60.0
    failures = run(seed, seconds=seconds, batches=args.batches, workers=args.workers, clients=args.clients,
                   rss_mb=args.rss_mb)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
