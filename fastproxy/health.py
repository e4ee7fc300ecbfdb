"""Active health checks: one process for the whole server, forked by the master, writing up/down into the
shared table (so every worker sees a change at its next pick, and each backend is probed once, not once
per worker).

Rules:
- Only upstreams with a `health` table are probed; the others stay up as far as active checks go (passive
  checks in the balancer still apply to them).
- A probe is `GET <path>` with h11 as the client, over a fresh connection, bounded by `timeout` as a whole
  (connect and response head). Good = a response head with a status in `status`; anything else is bad.
- A server starts in the state the table holds (up for a new server). `fall` bad probes in a row mark an
  up server down; `rise` good probes in a row mark a down server up (its slow start begins then).
- Each server is probed every `interval`; probes run on a small thread pool so one slow server never
  delays the others.

The master calls CheckerProcess(config, table).start() after creating the table, poll() in its loop
(respawns a dead checker), restart(config) after a reload, and stop() on exit.
"""

import os
import signal
import socket
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import h11
from setproctitle import setproctitle

from fastproxy.log import log, set_role

MAX_THREADS = 32
RESPAWN_DELAY = 1.0


def probe(host, port, family, path, host_header, timeout):
    """One health probe: the response status, or None on any failure (refused, timeout, bad HTTP)."""
    deadline = time.monotonic() + timeout
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect((host, port))
            conn = h11.Connection(h11.CLIENT)
            request = h11.Request(method="GET", target=path,
                                  headers=[("Host", host_header), ("User-Agent", "fastproxy-health"),
                                           ("Connection", "close")])
            sock.sendall(conn.send(request) + conn.send(h11.EndOfMessage()))
            while True:
                event = conn.next_event()
                if isinstance(event, h11.Response):
                    return event.status_code
                if isinstance(event, h11.ConnectionClosed):
                    return None
                if event is h11.NEED_DATA:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return None
                    sock.settimeout(left)
                    conn.receive_data(sock.recv(65536))
    except (OSError, h11.ProtocolError):
        return None


@dataclass
class Target:
    slot: int
    upstream: str
    address: str
    host: str
    port: int
    family: int
    health: object              # config.Health
    up: bool = True
    good: int = 0               # probes in a row agreeing against the current state
    due: float = 0.0
    busy: bool = False
    host_header: str = field(default="")


class Checker:
    """The probing loop over every server that has active checks (runs in the checker process)."""

    def __init__(self, config, table):
        self.table = table
        self.targets = []
        states = {(b["upstream"], b["address"]): b["health"] == "up" for b in table.snapshot()}
        now = time.monotonic()
        for name, up in config.upstreams.items():
            if up.health is None:
                continue
            for srv in up.servers:
                slot = table.find(name, srv.address)
                if slot < 0:
                    continue
                self.targets.append(Target(slot, name, srv.address, srv.host, srv.port, srv.family, up.health,
                                           up=states.get((name, srv.address), True), due=now,
                                           host_header=up.health.host or srv.address))
        self.pool = ThreadPoolExecutor(max_workers=max(1, min(MAX_THREADS, len(self.targets))))
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def verdict(self, target, status):
        """Count one probe result; write the table when rise/fall is reached."""
        lo, hi = target.health.status
        good = status is not None and lo <= status <= hi
        self.table.count_check(target.slot)
        with self.lock:
            target.busy = False
            if good == target.up:
                target.good = 0
                return
            target.good += 1
            if target.good < (target.health.rise if good else target.health.fall):
                return
            target.up, target.good = good, 0
        self.table.set_health(target.slot, good)
        log(f"health: {target.upstream} {target.address} is {'up' if good else 'down'}"
            + ("" if good else f" (last probe: {status or 'no response'})"))

    def run_probe(self, target):
        try:
            h = target.health
            self.verdict(target, probe(target.host, target.port, target.family, h.path, target.host_header,
                                       h.timeout))
        except Exception:
            log("health probe failed:\n" + traceback.format_exc().rstrip())
            with self.lock:
                target.busy = False

    def step(self):
        """Start the probes that are due; return seconds until the next one is."""
        now = time.monotonic()
        wait = 1.0
        for t in self.targets:
            with self.lock:
                if t.busy:
                    continue
                if t.due <= now:
                    t.busy = True
                    t.due = now + t.health.interval
                    self.pool.submit(self.run_probe, t)
                wait = min(wait, max(0.0, t.due - now))
        return max(0.01, wait)

    def run(self):
        while not self.stopping.is_set():
            self.stopping.wait(self.step())
        self.pool.shutdown(wait=True, cancel_futures=True)


def run_checker(config, table):
    """The checker process's life (after fork): probe until TERM/INT/QUIT. Returns the exit code."""
    checker = Checker(config, table)

    def stop(signum, frame):
        checker.stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, stop)
    for sig in (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)
    checker.run()
    return 0


class CheckerProcess:
    """The master's handle on the checker process: start, respawn when it dies, restart on reload, stop."""

    def __init__(self, config, table, close_fds=(), unblock=()):
        self.config = config
        self.table = table
        self.close_fds = close_fds    # callable or list: master-only fds the child must not keep
        self.unblock = unblock        # signals the master keeps blocked across fork
        self.pid = None
        self.respawn_at = 0.0

    def needed(self):
        return any(up.health is not None for up in self.config.upstreams.values())

    def start(self):
        if self.pid is not None or not self.needed():
            return
        if self.unblock:
            signal.pthread_sigmask(signal.SIG_BLOCK, self.unblock)
        try:
            pid = os.fork()
            if pid == 0:
                self._child()
        finally:
            if self.unblock:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, self.unblock)
        self.pid = pid
        log(f"health checker started (pid {pid})")

    def _child(self):
        code = 1
        try:
            from fastproxy.worker import set_parent_death_signal
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            fds = self.close_fds() if callable(self.close_fds) else self.close_fds
            for fd in fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
            set_role("health")
            setproctitle("fastproxy: health")
            set_parent_death_signal(signal.SIGTERM)
            if self.unblock:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, self.unblock)
            code = run_checker(self.config, self.table)
        except BaseException:
            log("health checker failed:\n" + traceback.format_exc().rstrip())
        os._exit(code)

    def poll(self):
        """Reap a dead checker and respawn it (after a short delay, so a crash loop does not spin)."""
        if self.pid is not None:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                done, status = self.pid, 0
            if done:
                log(f"health checker (pid {self.pid}) exited with status {status}; respawning")
                self.pid = None
                self.respawn_at = time.monotonic() + RESPAWN_DELAY
        if self.pid is None and time.monotonic() >= self.respawn_at:
            self.start()

    def restart(self, config):
        """After a reload: probe the new config's servers."""
        self.stop()
        self.config = config
        self.respawn_at = 0.0
        self.start()

    def stop(self, timeout=5.0):
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        while True:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                break
            time.sleep(0.01)
        self.pid = None
