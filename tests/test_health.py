"""Active health checks: the checker process against real backend processes that stop and start again."""

import os
import signal
import subprocess
import sys

import pytest
from helpers import procs
from helpers.running import free_port, port_answers

from fastproxy import config, health
from fastproxy._shm import ShmTable, sizes_for

INTERVAL, TIMEOUT, RISE, FALL = 0.2, 0.5, 2, 3
# a verdict needs rise/fall probes one interval apart, each bounded by the timeout; the rest is slack for
# a loaded test machine (polled, never slept)
VERDICT_DEADLINE = max(RISE, FALL) * (INTERVAL + TIMEOUT) + 5.0


class HttpServer:
    """`python -m http.server` on a fixed port, so it can be stopped and started again at the same address."""

    def __init__(self, port, directory):
        self.port = port
        self.directory = directory
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1",
                                      "--directory", self.directory],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.wait_for(lambda: port_answers(self.port), message=f"http.server on {self.port}")

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def http_servers(tmp_path):
    started = []

    def start(n):
        for _ in range(n):
            s = HttpServer(free_port(), str(tmp_path))
            s.start()
            started.append(s)
        return started[-n:]

    yield start
    for s in started:
        s.stop()


def make_config(addresses, path="/"):
    servers = ", ".join(f'{{ address = "{a}" }}' for a in addresses)
    text = (f'[[listen]]\naddress = "127.0.0.1:8080"\n\n[upstreams.app]\nservers = [{servers}]\n'
            f'health = {{ path = "{path}", interval = "{INTERVAL}s", timeout = "{TIMEOUT}s", rise = {RISE}, '
            f"fall = {FALL} }}\n\n[[routes]]\nupstream = \"app\"\n")
    return config.loads(text)


def health_of(table, address):
    return next(b["health"] for b in table.snapshot() if b["address"] == address)


@pytest.fixture
def checker():
    started = []

    def start(cfg, table):
        c = health.CheckerProcess(cfg, table)
        c.start()
        started.append(c)
        return c

    yield start
    for c in started:
        pid = c.pid
        c.stop()                        # TERM, then waitpid (KILL after a deadline)
        assert c.pid is None and (pid is None or not os.path.exists(f"/proc/{pid}"))


def test_probe_reads_the_status(http_servers, tmp_path):
    (tmp_path / "ok.txt").write_text("ok")
    (s,) = http_servers(1)
    assert health.probe("127.0.0.1", s.port, 2, "/ok.txt", "x", 2.0) == 200
    assert health.probe("127.0.0.1", s.port, 2, "/missing", "x", 2.0) == 404
    assert health.probe("127.0.0.1", free_port(), 2, "/", "x", 2.0) is None


def test_a_stopped_backend_is_marked_down_and_up_again(http_servers, checker):
    a, b = http_servers(2)
    addrs = [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
    cfg = make_config(addrs)
    table = ShmTable(None, True, *sizes_for(cfg))
    table.assign(cfg)
    c = checker(cfg, table)
    procs.wait_for(lambda: all(x["checks"] >= FALL for x in table.snapshot()), timeout=VERDICT_DEADLINE,
                   message="first probes")
    assert health_of(table, addrs[0]) == "up" and health_of(table, addrs[1]) == "up"

    a.stop()
    procs.wait_for(lambda: health_of(table, addrs[0]) == "down", timeout=VERDICT_DEADLINE, message="down")
    assert health_of(table, addrs[1]) == "up"

    a.start()
    procs.wait_for(lambda: health_of(table, addrs[0]) == "up", timeout=VERDICT_DEADLINE, message="up again")
    assert c.pid is not None


def test_a_bad_status_counts_as_down(http_servers, checker):
    (s,) = http_servers(1)
    addr = f"127.0.0.1:{s.port}"
    cfg = make_config([addr], path="/no-such-file")
    table = ShmTable(None, True, *sizes_for(cfg))
    table.assign(cfg)
    checker(cfg, table)
    procs.wait_for(lambda: health_of(table, addr) == "down", timeout=VERDICT_DEADLINE, message="down on 404")


def test_the_checker_is_respawned_when_it_dies(http_servers, checker):
    (s,) = http_servers(1)
    cfg = make_config([f"127.0.0.1:{s.port}"])
    table = ShmTable(None, True, *sizes_for(cfg))
    table.assign(cfg)
    c = checker(cfg, table)
    first = c.pid
    os.kill(first, signal.SIGKILL)
    procs.wait_for(lambda: (c.poll(), c.pid not in (None, first))[1], timeout=10, message="respawn")
    before = table.snapshot()[0]["checks"]
    procs.wait_for(lambda: table.snapshot()[0]["checks"] > before, timeout=10, message="probing again")


def test_no_checker_without_health_config():
    cfg = config.loads('[[listen]]\naddress = "127.0.0.1:8080"\n[upstreams.app]\n'
                       'servers = [{ address = "127.0.0.1:9" }]\n[[routes]]\nupstream = "app"\n')
    table = ShmTable(None, True, *sizes_for(cfg))
    table.assign(cfg)
    c = health.CheckerProcess(cfg, table)
    c.start()
    assert c.pid is None
