"""Health end to end through `fastproxy serve` with two workers: the one checker process marks a backend
that stops down and, once it is back on the same port, up again, and every worker follows the shared
table; it probes each backend once per interval, not once per worker; with no active checks, passive
marking takes a refusing backend out after max_fails and lets one trial request bring it back.

Every wait is a poll with a deadline; the deadlines are the rise/fall x interval bounds plus slack for a
loaded machine.
"""

import os
import signal
import subprocess
import sys
import time

from helpers import procs
from helpers.config import proxy_config
from helpers.running import REPO_DIR, free_port

from fastproxy._shm import ShmTable, path_for_file

INTERVAL, TIMEOUT, RISE, FALL = 0.2, 0.5, 2, 2
HEALTH = {"path": "/healthz", "interval": "200ms", "timeout": "500ms", "rise": RISE, "fall": FALL}
# rise/fall probes one interval apart, each bounded by the timeout; the rest is slack (polled, not slept)
VERDICT_DEADLINE = max(RISE, FALL) * (INTERVAL + TIMEOUT) + 5.0
CLOCK_SLACK = 0.05  # changed_at() reads the clock a moment after the table did
FRESH = 40  # requests, each on its own connection: the kernel spreads them over both workers


def servers(proxy):
    """The shared table as the test process reads it: {address: snapshot row}."""
    table = ShmTable(path_for_file(proxy.config_path))
    try:
        return {b["address"]: b for b in table.snapshot()}
    finally:
        table.close()


def changed_at(row):
    """When (time.monotonic(), the table's clock too) the server's state last changed."""
    return time.monotonic() - row["since_change"]


def get_fresh(proxy, path="/"):
    with proxy.client() as c:
        return c.get(path)


def requests_per_worker(proxy):
    return {pid: s.get("requests", 0) for pid, s in proxy.stats().items()}


def wait_every_worker_served(proxy, before):
    """Both workers' request counters moved past before."""
    procs.wait_for(lambda: len(now := requests_per_worker(proxy)) == proxy.n_workers
                   and all(now[p] > before.get(p, 0) for p in now),
                   timeout=10, message=f"every worker to serve some of the requests (before: {before})")


def health_probes(backend):
    """Health probes the backend received (the checker's GET /healthz, User-Agent fastproxy-health)."""
    n = 0
    for rec in backend.messages():
        for req, _, _ in rec.requests:
            if req.target == b"/healthz":
                assert dict(req.headers).get(b"user-agent") == b"fastproxy-health", req
                n += 1
    return n


def proxy_requests(backend):
    """Requests that came through the proxy (everything but the health probes)."""
    return sum(1 for rec in backend.messages() for req, _, _ in rec.requests if req.target != b"/healthz")


def fastproxy(*args):
    return subprocess.run([sys.executable, "-m", "fastproxy", *args], cwd=REPO_DIR, capture_output=True,
                          text=True, env={"PYTHONPATH": REPO_DIR, "PATH": "/usr/bin:/bin"}, timeout=30)


def test_a_backend_stopped_and_started_again_is_marked_down_then_up_in_every_worker(proxy, backends):
    a, b = backends(2)
    # passive checks off: only the checker may take b out
    p = proxy(proxy_config({"app": [a, b]}, workers=2,
                           upstream_options={"health": HEALTH, "passive": {"max_fails": 0}}))
    assert len(p.checker_pids()) == 1 and not set(p.checker_pids()) & set(p.worker_pids())
    procs.wait_for(lambda: all(s["checks"] >= 1 for s in servers(p).values()), timeout=VERDICT_DEADLINE,
                   message="first probes")
    assert {s["state"] for s in servers(p).values()} == {"up"}

    b.stop()                                                    # SIGTERM to its PID
    procs.wait_for(lambda: servers(p)[b.address]["health"] == "down", timeout=VERDICT_DEADLINE,
                   message=f"{b.address} marked down by the checker\n{p.log()}")
    assert servers(p)[a.address]["state"] == "up"

    # while it is down no worker picks it: its request counter (summed over the workers' rows) stays put,
    # and every request, whichever worker took the connection, is answered by a
    picked_b = servers(p)[b.address]["requests"]
    before = requests_per_worker(p)
    replies = [get_fresh(p) for _ in range(FRESH)]
    assert [(r.status, r.header("X-Backend")) for r in replies] == [(200, b"b0")] * FRESH
    wait_every_worker_served(p, before)
    assert servers(p)[b.address]["requests"] == picked_b

    b.restart()                                                 # same port, same recording directory
    procs.wait_for(lambda: servers(p)[b.address]["health"] == "up", timeout=VERDICT_DEADLINE,
                   message=f"{b.address} marked up again\n{p.log()}")
    replies = [get_fresh(p) for _ in range(FRESH)]
    assert all(r.status == 200 for r in replies)
    assert {r.header("X-Backend") for r in replies} == {b"b0", b"b1"}   # b gets traffic again

    # and every worker sees it up: with a taken out by hand, b is the only server left, so a worker that
    # still thought b down would have nothing to send a request to
    assert fastproxy("disable", "-c", p.config_path, "app", a.address).returncode == 0
    before = requests_per_worker(p)
    replies = [get_fresh(p) for _ in range(FRESH)]
    assert [(r.status, r.header("X-Backend")) for r in replies] == [(200, b"b1")] * FRESH
    wait_every_worker_served(p, before)


def test_each_backend_is_probed_once_per_interval_not_once_per_worker(proxy, backends):
    (a,) = backends(1)
    start = time.monotonic()
    p = proxy(proxy_config({"app": [a]}, workers=2, upstream_options={"health": HEALTH}))
    wanted = 10
    procs.wait_for(lambda: health_probes(a) >= wanted, timeout=wanted * (INTERVAL + TIMEOUT) + 10,
                   message=f"{wanted} probes")
    checks = servers(p)[a.address]["checks"]
    probes = health_probes(a)
    elapsed = time.monotonic() - start
    # every probe the backend got is one the checker counted in the table (one may still be in flight):
    # nothing else probes it, the workers included
    assert checks <= probes <= checks + 1, (checks, probes)
    # and one checker probes it once per interval: the next probe is due an interval after the last
    # one started, so there cannot be more than this (a slow machine only makes it fewer); a checker per
    # worker would have sent about twice as many
    assert probes <= elapsed / INTERVAL + 1, (probes, elapsed)
    assert proxy_requests(a) == 0

    # a checker that dies is replaced by the master (the workers are untouched), and probing goes on
    (first,) = p.checker_pids()
    os.kill(first, signal.SIGKILL)
    (second,) = procs.wait_for(lambda: [c for c in p.checker_pids() if c != first], timeout=10,
                               message=f"a new checker\n{p.log()}")
    procs.wait_for(lambda: health_probes(a) > probes + 1, timeout=10, message="probes from the new checker")
    p.check_workers_alive()
    # and stopping the master stops its checker
    p.stop()
    assert not os.path.exists(f"/proc/{second}")


def test_passive_checks_take_a_refusing_backend_out_and_one_trial_brings_it_back(proxy, backends):
    (a,) = backends(1)
    dead_port = free_port()                                     # nothing listens: connections are refused
    dead = f"127.0.0.1:{dead_port}"
    fail_timeout = 2.0
    p = proxy(proxy_config({"app": [a, dead]}, workers=2,
                           upstream_options={"passive": {"max_fails": 2, "fail_timeout": "2s"}}))
    assert p.checker_pids() == []                               # no health table: no checker process

    # requests that meet the refusal are retried on a; after max_fails of them the server is down
    replies = []

    def marked_down():
        replies.append(get_fresh(p))
        return servers(p)[dead]["state"] == "down"

    procs.wait_for(marked_down, timeout=10, message=f"{dead} marked down by passive checks")
    assert all(r.status == 200 and r.header("X-Backend") == b"b0" for r in replies)
    out = fastproxy("backends", "-c", p.config_path)
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if dead in x)
    assert " down " in line and "passive-down" in line and "health-down" not in line, out.stdout

    # for the cool-down nothing is sent there; then one trial request goes there, fails (still refused),
    # is retried on a, and starts another cool-down
    picked, down_at = servers(p)[dead]["requests"], changed_at(servers(p)[dead])
    replies = []

    def trial_made():
        replies.append(get_fresh(p))
        return servers(p)[dead]["requests"] > picked

    procs.wait_for(trial_made, timeout=fail_timeout + 10, message="a trial request")
    assert all(r.status == 200 and r.header("X-Backend") == b"b0" for r in replies)
    snap = servers(p)[dead]
    assert snap["requests"] == picked + 1 and snap["state"] == "down"
    trial_at = changed_at(snap)
    assert trial_at - down_at >= fail_timeout - CLOCK_SLACK, (down_at, trial_at)

    # now it answers: after the next cool-down, the one trial request succeeds and it is up again
    (back,) = backends(1, port=dead_port)
    answers = []

    def served_by_back():
        r = get_fresh(p)
        assert r.status == 200
        answers.append(r.header("X-Backend"))
        return answers[-1] == b"b1"

    procs.wait_for(served_by_back, timeout=fail_timeout + 10, message=f"a trial request to {dead}")
    # the worker records the outcome once the response is sent: the client may have it a moment before
    snap = procs.wait_for(lambda: (s := servers(p)[dead])["state"] == "up" and s, timeout=10,
                          message=f"{dead} up after the trial: {servers(p)[dead]}")
    assert not snap["passive_down"]
    assert changed_at(snap) - trial_at >= fail_timeout - CLOCK_SLACK
    assert set(answers[:-1]) <= {b"b0"}
    assert len(back.all_requests()) == 1                         # exactly one trial decided it
    replies = [get_fresh(p) for _ in range(10)]
    assert {r.header("X-Backend") for r in replies} == {b"b0", b"b1"}


# ---- nginx's rule: passive checks protect a pool but never empty it (issue 8) -------------------------------


def test_the_only_server_of_an_upstream_is_not_taken_out_by_passive_checks(proxy, backends):
    (a,) = backends(1)
    p = proxy(proxy_config({"app": [a]}, upstream_options={"passive": {"max_fails": 1, "fail_timeout": "30s"}}))
    assert get_fresh(p, "/reset").status == 502         # a server-side failure (reset before any byte)
    assert servers(p)[a.address]["errors"] >= 1
    # before: the only server was down for fail_timeout and everyone got 503
    assert [get_fresh(p).status for _ in range(5)] == [200] * 5
    assert servers(p)[a.address]["state"] == "up"


def test_when_every_server_is_passively_down_they_are_tried_again(proxy, backends):
    a, b = backends(2)
    p = proxy(proxy_config({"app": [a, b]},
                           upstream_options={"passive": {"max_fails": 1, "fail_timeout": "30s"}}))
    # the GET is retried on the other server, which resets it too: both are passively down, and the
    # request's last look for a server finds none left and resets them (nginx: "all peers failed, mark
    # them as live"); that request still gets its 502
    assert get_fresh(p, "/reset").status == 502
    assert all(row["errors"] == 1 for row in servers(p).values())
    replies = [get_fresh(p) for _ in range(6)]
    assert [r.status for r in replies] == [200] * 6       # before: 503 for 30 s
    assert {r.header("X-Backend") for r in replies} == {b"b0", b"b1"}


def test_a_server_disabled_by_the_operator_is_not_brought_back(proxy, backends):
    a, b = backends(2)
    p = proxy(proxy_config({"app": [a, b]},
                           upstream_options={"passive": {"max_fails": 1, "fail_timeout": "30s"}}))
    assert fastproxy("disable", "-c", p.config_path, "app", b.address).returncode == 0
    assert get_fresh(p, "/reset").status == 502          # a is passively down, b disabled
    replies = [get_fresh(p) for _ in range(4)]
    assert {(r.status, r.header("X-Backend")) for r in replies} == {(200, b"b0")}
