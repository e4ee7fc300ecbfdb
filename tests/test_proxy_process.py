"""End-to-end: the process model as a client sees it -- forked workers, clean stops, no orphans."""

import os
import signal

from helpers import procs
from helpers.config import proxy_config


def test_workers_are_forked_children(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=2))
    workers = p.worker_pids()
    assert len(workers) == 2
    for pid in workers:
        assert os.getpgid(pid) == p.pid  # same process group as the master
    # both workers serve: each has its own SO_REUSEPORT socket, so many connections reach both
    for _ in range(40):
        with p.client() as c:
            assert c.get("/").status == 200
    procs.wait_for(lambda: p.total("requests") == 40, message="stats to count 40 requests")
    served = [s.get("requests", 0) for s in p.stats().values()]
    assert len(served) == 2 and all(n > 0 for n in served), served


def test_sigint_stops_everything(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=2))
    group = procs.group_members(p.pid)
    assert len(group) == 3
    os.kill(p.pid, signal.SIGINT)
    p.proc.wait(timeout=10)
    procs.wait_for(lambda: not procs.group_members(p.pid), message="master and workers gone after SIGINT")


def test_workers_exit_when_the_master_is_killed(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=2))
    workers = p.worker_pids()
    os.kill(p.pid, signal.SIGKILL)
    p.proc.wait(timeout=10)
    # no child outlives the master, even one killed without a chance to clean up
    procs.wait_for(lambda: not any(os.path.exists(f"/proc/{w}") for w in workers), message="orphaned workers")


def test_workers_auto_is_one_per_core(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers="auto"))
    assert len(p.worker_pids()) == os.cpu_count()
    assert p.client().get("/").status == 200
