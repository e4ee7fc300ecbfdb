"""Out of descriptors, a worker neither spins nor stops serving for good (issue 8), through `fastproxy serve`.

The proxy runs with an open-files limit of 64 (prlimit, and without CAP_SYS_RESOURCE so the master cannot
raise it) and 1 worker; 120 idle client connections take every descriptor the worker can have, and the
rest wait in the listen queue. While that lasts, the worker must not busy-loop on a listener that stays
readable (accept failing with EMFILE again and again, level-triggered): its CPU time over 2 s must stay
near zero. Once the idle clients go, the proxy serves again.

This needs the core's accept loop to stop polling the listener on EMFILE/ENFILE and resume when a
connection closes or after a short back-off: it fails on the current core (the worker spins).
"""

import socket
import sys
import time

import pytest
from helpers.client import Client
from helpers.load import serve_config

CLK_TCK = 100


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        raise AssertionError(f"worker {pid} died while out of descriptors") from None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


@pytest.mark.parametrize("stats", [False, True], ids=["plain", "debug-stats"])
def test_out_of_descriptors_the_worker_does_not_spin_and_recovers(tmp_path, demo, served, stats):
    """stats: with FASTPROXY_STATS_DIR (the tests' debug counters, written to a file every ~100 ms) too:
    a worker that cannot open that file must not die of it."""
    a = demo("A")
    text = serve_config(str(tmp_path / "proxy"), [a.address], workers=1, server={"max_connections": 16})
    unprivileged = ["setpriv", "--bounding-set=-sys_resource", "--inh-caps=-sys_resource"]
    env = [] if stats else ["env", "-u", "FASTPROXY_STATS_DIR"]
    p = served(text, command=[*env, *unprivileged, "prlimit", "--nofile=64:64", sys.executable, "-m", "fastproxy"])
    (worker,) = p.workers()
    idle = []
    try:
        for _ in range(120):
            s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
            idle.append(s)
        time.sleep(0.5)                 # let the worker accept what it can and meet EMFILE
        before, t0 = cpu_seconds(worker), time.monotonic()
        time.sleep(2.0)                 # the measurement window
        used = (cpu_seconds(worker) - before) / (time.monotonic() - t0)
        assert used < 0.10, f"the worker used {used:.0%} of a CPU while out of descriptors (spinning)"
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            with Client(p.port, timeout=5) as c:
                if c.get("/").status == 200:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the proxy did not serve again after the idle clients left"
    assert list(p.workers()) == [worker], f"the worker died:\n{p.log()[-3000:]}"
