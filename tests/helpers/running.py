"""Handles on the real processes a test runs: recording backends and `python -m fastproxy serve`.

Each is started in its own process (group), waited for by polling with a deadline, and stopped by PID.
"""

import os
import signal
import socket
import subprocess
import sys
import tomllib

import h11

from fastproxy import counters
from helpers import procs
from helpers.client import Client

WORKER_TITLE = "fastproxy: worker "
CHECKER_TITLE = "fastproxy: health"
TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_DIR = os.path.dirname(TESTS_DIR)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now (bound to 0, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_answers(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class RunningBackend:
    """A helpers/backend.py process and what it recorded (see that module for its endpoints).

    port=0 binds any free port; stop() then restart() runs it again on the same port and directory (a
    backend that went away and came back, as a health checker sees it)."""

    def __init__(self, name, directory, port=0):
        self.name = name
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.port = procs.wait_for(lambda: self._spawn(port), message=f"backend {name} to bind port {port}")
        self.address = f"127.0.0.1:{self.port}"
        procs.wait_for(lambda: port_answers(self.port), message=f"backend {name} to accept")
        # that probe connection was recorded too: wait until it is closed, then forget it
        procs.wait_for(lambda: self._closed_files(), message="probe connection closed")
        self.baseline = len(self._raw_files())

    def _spawn(self, port):
        """Start the process; its port once it listens, or None if it could not bind that port (yet)."""
        env = dict(os.environ, PYTHONPATH=TESTS_DIR)
        args = ["--name", self.name, "--dir", self.dir, "--port", str(port)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "helpers.backend", *args],
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        self.pid = self.proc.pid
        line = self.proc.stdout.readline()  # the backend prints its port once it listens
        if line.strip():
            return int(line)
        self.proc.wait(timeout=5)
        self.proc.stdout.close()
        if port == 0 or self.proc.returncode != 2:
            raise RuntimeError(f"backend {self.name} did not start (exit {self.proc.returncode})")
        return None  # the port is still taken (e.g. by a client socket's ephemeral port): try again

    def restart(self):
        """Start again after stop(), on the same port, recording on into the same directory. It listens
        when this returns (no probe connection: none is added to what it recorded)."""
        procs.wait_for(
            lambda: self._spawn(self.port), message=f"backend {self.name} to bind {self.port} again"
        )

    def running(self):
        return self.proc.poll() is None

    def _raw_files(self):
        return sorted(f for f in os.listdir(self.dir) if f.endswith(".raw"))

    def _closed_files(self):
        return [f for f in os.listdir(self.dir) if f.endswith(".closed")]

    def connections(self):
        """How many connections the backend accepted (not counting the fixture's readiness probe)."""
        return len(self._raw_files()) - self.baseline

    def open_connections(self):
        return len(self._raw_files()) - len(self._closed_files())

    def received(self):
        """Raw bytes received, one bytes object per accepted connection, in accept order."""
        return [data for data, _ in self._connections()]

    def _connections(self):
        out = []
        for name in self._raw_files()[self.baseline :]:
            path = os.path.join(self.dir, name)
            with open(path, "rb") as f:
                data = f.read()
            out.append((data, os.path.exists(path[: -len(".raw")] + ".closed")))
        return out

    def messages(self):
        """Per connection, what h11 (the reference parser) makes of the bytes received: a Received.

        Any byte that is not part of a well-framed request fails with an AssertionError; a request cut
        short by the end of the bytes is reported in Received.partial (see requests() for the strict view).
        """
        return [parse_requests(data, closed) for data, closed in self._connections()]

    def requests(self):
        """Per connection, the list of (h11.Request, body, trailers) received; every request complete."""
        out = []
        for rec in self.messages():
            assert rec.partial is None, f"backend received an incomplete request: {rec.data[:600]!r}"
            out.append(rec.requests)
        return out

    def all_requests(self):
        return [r for conn in self.requests() for r in conn]

    def stop(self):
        procs.kill_pid(self.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            procs.kill_pid(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc.stdout.close()


class Received:
    """The requests found in one backend connection's bytes."""

    def __init__(self, data, closed):
        self.data = data
        self.closed = closed  # the connection has been closed
        self.requests = []  # complete requests: (h11.Request, body bytes, trailer fields)
        self.partial = None  # a request cut short at the end of the bytes: its h11.Request, or the
        # raw bytes of an incomplete head


def parse_requests(data, closed=False):
    """Parse raw request bytes with h11 as a server would; every byte must belong to a clean request.

    Tunnelled bytes after an Upgrade request are not HTTP: parsing stops there.
    """
    out = Received(data, closed)
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    current = None
    body = bytearray()
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as e:
            raise AssertionError(f"backend received malformed bytes ({e}): {data[:600]!r}") from None
        if event is h11.NEED_DATA:
            if conn.their_state is h11.SEND_BODY:
                out.partial = current
            elif conn.trailing_data[0]:
                out.partial = conn.trailing_data[0]
            return out
        if isinstance(event, h11.Request):
            current, body = event, bytearray()
            if event.method == b"CONNECT" or any(n == b"upgrade" for n, _ in event.headers):
                out.requests.append((current, b"", []))
                return out
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            out.requests.append((current, bytes(body), list(event.headers)))
            if conn.their_state is h11.MUST_CLOSE:
                # "Connection: close" (RFC 9112 section 9.6): the client sends nothing after this request
                if conn.trailing_data[0]:
                    raise AssertionError(f"bytes after a Connection: close request: {data[:600]!r}")
                return out
            # answer in h11's eyes so it moves on to the next pipelined request
            conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
            conn.send(h11.EndOfMessage())
            conn.start_next_cycle()
        else:  # PAUSED (after a CONNECT/upgrade) or ConnectionClosed
            return out


class RunningProxy:
    """`python -m fastproxy serve -c FILE` in its own process group; its counters read from the shared
    table (fastproxy.counters), as any process can."""

    def __init__(self, config_text, workdir):
        self.config_text = config_text
        self.config = tomllib.loads(config_text)
        self.port = int(self.config["listen"][0]["address"].rsplit(":", 1)[1])
        self.address = f"127.0.0.1:{self.port}"
        workers = self.config.get("server", {}).get("workers", 1)
        self.n_workers = os.cpu_count() if workers == "auto" else int(workers)
        self.dir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.config_path = os.path.join(workdir, "proxy.toml")
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.log_path = os.path.join(workdir, "proxy.log")
        self.clients = []
        self.checkers_seen = set()  # pids of health-checker processes seen (checked gone at stop())
        self.wants_checker = any("health" in u for u in self.config.get("upstreams", {}).values())
        self.connections_made = 0  # client connections opened to the proxy (the readiness probes too)
        env = dict(
            os.environ,
            PYTHONPATH=REPO_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""),
        )
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fastproxy", "serve", "-c", self.config_path],
                cwd=REPO_DIR,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.proc.pid
        try:
            self._wait_ready()
        except BaseException:
            self.stop(check=False)
            raise

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def _alive_or_fail(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"fastproxy exited with {self.proc.returncode}:\n{self.log()}")

    def _wait_ready(self):
        def workers_up():
            self._alive_or_fail()
            checker_ok = len(self.checker_pids()) == 1 if self.wants_checker else True
            return len(self.worker_pids()) == self.n_workers and checker_ok

        what = f"{self.n_workers} workers" + (" and the health checker" if self.wants_checker else "")
        procs.wait_for(workers_up, timeout=15, message=f"{what}\n{self.log()}")

        # a request the proxy answers itself (no Host on HTTP/1.1: 400), so no backend sees it
        def answers():
            self._alive_or_fail()
            try:
                with Client(self.port, timeout=2) as c:
                    self.connections_made += 1
                    c.send(b"GET / HTTP/1.1\r\n\r\n")
                    c.read_until_close()
                return True
            except OSError:
                return False

        procs.wait_for(answers, timeout=15, message=f"the proxy to answer\n{self.log()}")
        self.initial_workers = self.worker_pids()

    def check_workers_alive(self):
        """No worker died (and was respawned) since start-up: a crash is a bug whatever the client saw."""
        now = self.worker_pids()
        if now != self.initial_workers:
            raise AssertionError(
                f"workers changed from {self.initial_workers} to {now}: one died\n{self.log()}"
            )

    # -- what tests use -------------------------------------------------------------------------------

    def client(self, timeout=10.0):
        """A new raw client connection; the fixture closes it at teardown."""
        c = Client(self.port, timeout=timeout)
        self.clients.append(c)
        self.connections_made += 1
        return c

    def worker_pids(self):
        """The master's worker processes, told apart from its other children (the health checker) by the
        title setproctitle gives them: "fastproxy: worker N (gen G)"."""
        return [p for p in procs.children(self.pid) if procs.cmdline(p).startswith(WORKER_TITLE)]

    def checker_pids(self):
        """The master's health-checker process ("fastproxy: health"), a list of 0 or 1 pid. Every pid seen
        is remembered, so stop() can check that it is gone."""
        pids = [p for p in procs.children(self.pid) if procs.cmdline(p) == CHECKER_TITLE]
        self.checkers_seen.update(pids)
        return pids

    def counters(self):
        """The workers' counters summed (fastproxy.counters.read: dead workers' counts included)."""
        return counters.read(self.config_path)

    def stats(self):
        """{worker pid: counters} of the live workers (fastproxy.counters.per_worker)."""
        live = set(self.worker_pids())
        return {pid: c for pid, c in counters.per_worker(self.config_path).items() if pid in live}

    def total(self, key):
        return self.counters()[key]

    def quiescent(self):
        """No worker holds a client connection, nor a backend connection mid-request (only idle ones).

        The counters only count a connection once it is accepted: a reading counts once it has seen
        every connection the test made (so one still queued cannot hide a leak).
        """
        c = self.counters()
        if c["client_total"] < self.connections_made:
            return False
        # idle connections hold no buffer; in the debug build (tools/test.sh) the objects are counted too:
        # one per open connection, and no exchange outlives its request
        return (c["client_open"] == 0 and c["backend_open"] == c["backend_idle"] and c["buffers_in_use"] == 0
                and c["exchanges_in_use"] == 0 and c["debug_conn_objects"] in (0, c["backend_open"]))

    def running(self):
        return self.proc.poll() is None

    def wait_quiescent(self, timeout=10.0):
        for c in self.clients:
            c.close()
        try:
            procs.wait_for(self.quiescent, timeout=timeout, message="every proxy connection to be closed")
        except AssertionError:
            raise AssertionError(f"connection leak: worker counters {self.stats()}") from None

    def stop(self, check=True):
        """TERM the master, wait for it, and check that nothing of its process group is left."""
        procs.kill_pid(self.pid, signal.SIGTERM)
        problems = []
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            problems.append("master did not exit within 10 s of SIGTERM")
            procs.kill_pid(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

        def left():
            # the process group, and every checker seen even if it had left the group (title still on)
            checkers = [p for p in self.checkers_seen if procs.cmdline(p) == CHECKER_TITLE]
            return sorted(set(procs.group_members(self.pid)) | set(checkers))

        try:
            procs.wait_for(lambda: not left(), timeout=5, message="process group and health checker")
        except AssertionError:
            stragglers = left()
            problems.append(f"processes outlived the master: {[(p, procs.cmdline(p)) for p in stragglers]}")
            for p in stragglers:
                procs.kill_pid(p)
        if check and problems:
            raise AssertionError("; ".join(problems) + "\n" + self.log())


def settle(proxy, backends, timeout=10.0):
    """Wait until the proxy holds no connection mid-request and every backend connection the proxy
    closed has been seen closed by its backend: after this, what the backends recorded is final."""
    proxy.wait_quiescent(timeout)
    procs.wait_for(
        lambda: sum(b.open_connections() for b in backends) <= proxy.total("backend_open"),
        timeout=timeout,
        message="backends to see the proxy's closed connections",
    )


def wait_closed_backend_side(backend, timeout=10.0):
    procs.wait_for(
        lambda: backend.open_connections() == 0,
        timeout=timeout,
        message=f"backend {backend.name} connections to close",
    )
