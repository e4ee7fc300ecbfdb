"""The master under load: reload, broken reload, binary upgrade, rollback and a killed worker while wrk
drives traffic through fastproxy, over kept-alive connections and with a new connection per request.

Each test starts wrk for a few seconds, waits (by polling the workers' counters) until traffic flows, acts
with real signals on real processes, checks that the action was complete while wrk still ran (else the
test would prove nothing), then asserts on wrk's own counts: its "Socket errors" line, its "Non-2xx or 3xx
responses" line, and per-status / per-backend counts from a Lua script. The figures are printed (-s).
"""

import os
import signal
import time

import pytest
from helpers import procs
from helpers.load import Wrk, serve_config

WRK_SECONDS = 4
TRAFFIC = 200       # requests seen by the workers before and after each step


@pytest.fixture
def wrk(tmp_path):
    started = []

    def start(port, close=False):
        w = Wrk(f"http://127.0.0.1:{port}/", WRK_SECONDS, str(tmp_path), close=close)
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


modes = pytest.mark.parametrize("close", [False, True], ids=["keepalive", "conn-close"])


def wait_traffic(p, more, pids=None):
    """Wait until the workers (all, or those pids) served `more` requests beyond what they had served."""
    start = p.requests_served(pids)
    procs.wait_for(lambda: p.requests_served(pids) >= start + more, timeout=15, message=f"{more} more requests")


def report(name, r):
    print(f"\n[{name}] {r.summary()}")


def assert_clean(r):
    assert r.requests > 0, r.output
    assert r.socket_errors == 0, r.summary()
    assert r.non_2xx == 0, r.summary()
    assert set(r.statuses) == {200}, r.summary()


@modes
def test_reload_moves_traffic_to_new_servers_without_errors(tmp_path, demo, served, wrk, close):
    a, b = demo("A"), demo("B")
    p = served(serve_config(str(tmp_path / "proxy"), [a.address]))
    master = p.master()
    old_workers = set(p.workers())
    w = wrk(p.port, close)
    wait_traffic(p, TRAFFIC)
    since = p.log_size()
    p.write_config(serve_config(str(tmp_path / "proxy"), [b.address], port=p.port))
    os.kill(master, signal.SIGHUP)
    p.wait_log(r"reload complete: generation 2", since)
    procs.wait_for(lambda: not (old_workers & set(procs.children(master))), message="old workers to exit")
    new_workers = set(p.workers())
    assert len(new_workers) == 2 and not new_workers & old_workers
    assert all("(gen 2)" in t for t in p.workers().values())
    wait_traffic(p, TRAFFIC, new_workers)
    assert w.running(), "wrk ended before the reload was over"
    r = w.result()
    report(f"reload {'conn-close' if close else 'keepalive'}", r)
    assert_clean(r)
    assert set(r.backends) == {"A", "B"} and r.backends["B"] >= TRAFFIC, r.summary()


@modes
def test_broken_reload_keeps_the_old_config_serving(tmp_path, demo, served, wrk, close):
    a, b = demo("A"), demo("B")
    text = serve_config(str(tmp_path / "proxy"), [a.address])
    p = served(text)
    workers = set(p.workers())
    w = wrk(p.port, close)
    wait_traffic(p, TRAFFIC)
    since = p.log_size()
    # a valid TOML file with a bad value: the error must name the file, line, table and key
    p.write_config(serve_config(str(tmp_path / "proxy"), [b.address], port=p.port).replace(
        "[[routes]]", '[[routes]]\nhost = "bad host!"'))
    os.kill(p.master(), signal.SIGHUP)
    p.wait_log(r"reload refused: the running configuration keeps serving", since)
    log = p.log()[since:]
    assert f"reload refused: {p.config_path}:" in log and "[routes[0]] host:" in log, log
    wait_traffic(p, TRAFFIC)
    assert w.running(), "wrk ended before the refused reload was over"
    r = w.result()
    report(f"broken reload {'conn-close' if close else 'keepalive'}", r)
    assert_clean(r)
    assert set(r.backends) == {"A"}, r.summary()
    assert set(p.workers()) == workers


def start_upgrade(p, since):
    """USR2 the master; return (old, new) once the new master's workers are ready (its pidfile is written)."""
    old = p.master()
    os.kill(old, signal.SIGUSR2)
    procs.wait_for(lambda: p.master() not in (None, old), timeout=15, message="the new master's pidfile")
    new = p.master()
    assert p.oldbin() == old
    p.wait_log(rf"\[master {new}\] all 2 worker\(s\) of generation 1 ready", since)
    assert len(p.workers(new)) == 2
    return old, new


@modes
def test_binary_upgrade_without_errors(tmp_path, demo, served, wrk, close):
    a = demo("A")
    p = served(serve_config(str(tmp_path / "proxy"), [a.address]))
    w = wrk(p.port, close)
    wait_traffic(p, TRAFFIC)
    since = p.log_size()
    old, new = start_upgrade(p, since)
    new_workers = set(p.workers(new))
    os.kill(old, signal.SIGWINCH)
    procs.wait_for(lambda: not p.workers(old), message="the old master's workers to exit after WINCH")
    wait_traffic(p, TRAFFIC, new_workers)
    os.kill(old, signal.SIGQUIT)
    procs.wait_for(lambda: p.proc.poll() is not None, message="the old master to exit after QUIT")
    assert p.master() == new and p.oldbin() is None
    wait_traffic(p, TRAFFIC, new_workers)
    assert w.running(), "wrk ended before the upgrade was over"
    r = w.result()
    report(f"upgrade {'conn-close' if close else 'keepalive'}", r)
    assert_clean(r)


@modes
def test_rollback_without_errors(tmp_path, demo, served, wrk, close):
    a = demo("A")
    p = served(serve_config(str(tmp_path / "proxy"), [a.address]))
    w = wrk(p.port, close)
    wait_traffic(p, TRAFFIC)
    since = p.log_size()
    old, new = start_upgrade(p, since)
    os.kill(old, signal.SIGWINCH)
    procs.wait_for(lambda: not p.workers(old), message="the old master's workers to exit after WINCH")
    wait_traffic(p, TRAFFIC, set(p.workers(new)))
    since = p.log_size()
    os.kill(old, signal.SIGHUP)                 # rollback: the old master's workers come back
    p.wait_log(rf"\[master {old}\] all 2 worker\(s\) of generation 1 ready", since)
    back = set(p.workers(old))
    os.kill(new, signal.SIGQUIT)
    p.wait_log(rf"\[master {old}\] pidfile .* names this master again", since)
    assert p.master() == old and p.oldbin() is None
    wait_traffic(p, TRAFFIC, back)
    assert w.running(), "wrk ended before the rollback was over"
    r = w.result()
    report(f"rollback {'conn-close' if close else 'keepalive'}", r)
    assert_clean(r)


def test_killed_worker_is_back_at_once_and_no_client_is_refused(tmp_path, demo, served, wrk):
    a = demo("A")
    p = served(serve_config(str(tmp_path / "proxy"), [a.address]))
    master = p.master()
    w = wrk(p.port)
    wait_traffic(p, TRAFFIC)
    victim = min(p.workers())
    since = p.log_size()
    killed_at = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    line = p.wait_log(r"worker (\d) \(pid \d+, gen 1\) died: killed by SIGKILL after [\d.]+s; (.*)", since)
    assert line.group(2) == "respawning", line.group(0)      # at once, not backed off
    slot = line.group(1)
    p.wait_log(rf"worker {slot} \(pid \d+, gen 1\) ready", since)
    back_after = time.monotonic() - killed_at
    replacement = set(p.workers(master)) - {victim}
    assert len(replacement) == 2
    wait_traffic(p, TRAFFIC, replacement)
    assert w.running(), "wrk ended before the worker was back"
    r = w.result()
    report(f"kill -9 worker (back, serving, after {back_after * 1000:.0f} ms)", r)
    assert r.connect_errors == 0, r.summary()          # never "connection refused": the master holds the socket
    assert r.non_2xx == 0, r.summary()
    assert r.read_errors + r.write_errors + r.timeouts <= 16, r.summary()  # at most wrk's connections
