"""Per-worker counters in the shared table (_counters.pxd) and their reader (fastproxy.counters).

Unit tests count through the real inline functions (ShmTable._test_count) into a real table and read it
back; end-to-end tests drive a real `fastproxy serve` with two workers and read the table from this
process, as any reader does.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
from helpers import procs
from helpers.config import proxy_config
from helpers.running import free_port

from fastproxy import config, counters
from fastproxy._counters import CLASS_NAMES, ERROR_KINDS, ERROR_NAMES, GAUGES, LATENCY_BOUNDS, bucket_of
from fastproxy._shm import ShmTable, route_key, sizes_for

SERVER_CONNECT = ERROR_NAMES.index("server_connect")


def make_config(routes=(("*", "/"),), servers=("127.0.0.1:9001", "127.0.0.1:9002")):
    entries = ", ".join(f'{{ address = "{a}" }}' for a in servers)
    text = f'[[listen]]\naddress = "127.0.0.1:8080"\n\n[upstreams.app]\nservers = [{entries}]\n\n'
    for host, path in routes:
        text += f'[[routes]]\nhost = "{host}"\npath = "{path}"\nupstream = "app"\n\n'
    return config.loads(text, "<string>")


def table(cfg):
    t = ShmTable(None, True, *sizes_for(cfg))
    t.assign(cfg)
    return t


# --- the name tables -------------------------------------------------------------------------------------

def test_every_error_kind_is_named_once_with_its_side():
    assert sorted(ERROR_KINDS) == list(range(len(ERROR_NAMES)))
    assert len(set(ERROR_NAMES)) == len(ERROR_NAMES) == 8
    for name, side in ERROR_KINDS.values():
        assert side in ("client", "local", "server")
        assert name.startswith(side) or (side, name) == ("client", "bad_request")
    assert CLASS_NAMES == ("1xx", "2xx", "3xx", "4xx", "5xx")
    assert GAUGES == ("client_open", "backend_open", "backend_idle", "buffers_in_use", "debug_conn_objects",
                      "exchanges_in_use")


def test_histogram_buckets_are_upper_bounds_inclusive():
    assert LATENCY_BOUNDS[-1] == float("inf") and list(LATENCY_BOUNDS) == sorted(LATENCY_BOUNDS)
    for i, bound in enumerate(LATENCY_BOUNDS[:-1]):
        assert bucket_of(bound) == i, bound                       # le: the bound itself is in
        assert bucket_of(bound + 1e-6) == i + 1, bound            # one microsecond more is not
    assert bucket_of(0) == 0 and bucket_of(-1) == 0
    assert bucket_of(3600) == len(LATENCY_BOUNDS) - 1


# --- one table, rows counted through the inline functions -----------------------------------------------

def test_two_rows_are_summed_and_kept_apart_per_worker():
    t = table(make_config())
    a, b = t.claim_row(1001), t.claim_row(1002)
    for row, n in ((a, 3), (b, 4)):
        for _ in range(n):
            t._test_count(row, "client_open")
            t._test_count(row, "request", route_slot=0)
            t._test_count(row, "response", 200, route_slot=0)
            t._test_count(row, "bytes_in", 100)
            t._test_count(row, "bytes_out", 1000, route_slot=0)
    t._test_count(a, "client_close")
    t._test_count(b, "response", 503, route_slot=0)
    t._test_count(b, "error", SERVER_CONNECT)
    t._test_count(b, "backend_open")
    t._test_count(b, "backend_idle", 1)

    total = counters.read(t)
    assert total["workers"] == 2
    assert total["requests"] == 7 and total["client_total"] == 7 and total["client_open"] == 6
    assert total["responses"] == {"1xx": 0, "2xx": 7, "3xx": 0, "4xx": 0, "5xx": 1}
    assert total["bytes_in"] == 700 and total["bytes_out"] == 7000
    assert total["errors"]["server_connect"] == 1 and sum(total["errors"].values()) == 1
    assert total["backend_open"] == total["backend_idle"] == total["backend_total"] == 1

    each = counters.per_worker(t)
    assert set(each) == {1001, 1002}
    assert each[1001]["requests"] == 3 and each[1002]["requests"] == 4
    assert each[1001]["client_open"] == 2 and each[1002]["client_open"] == 4
    assert "workers" not in each[1001]


def test_route_and_server_counters_land_in_their_slots():
    cfg = make_config(routes=(("*", "/"), ("api.test", "/v1/")))
    t = table(cfg)
    slots = [t.find_route(route_key(r)) for r in cfg.routes]
    assert sorted(slots) == [0, 1]
    server = t.find("app", "127.0.0.1:9002")
    row = t.claim_row(2001)
    t._test_count(row, "request", route_slot=slots[1])
    t._test_count(row, "response", 404, route_slot=slots[1], slot=server)
    t._test_count(row, "bytes_out", 77, route_slot=slots[1], slot=server)
    t._test_count(row, "request", route_slot=slots[0])
    t._test_count(row, "response", 101, route_slot=slots[0])

    c = counters.read(t)
    assert list(c["routes"]) == ["*/", "api.test/v1/"]
    assert c["routes"]["api.test/v1/"] == {"requests": 1, "bytes_out": 77,
                                            "responses": {"1xx": 0, "2xx": 0, "3xx": 0, "4xx": 1, "5xx": 0}}
    assert c["routes"]["*/"]["requests"] == 1 and c["routes"]["*/"]["responses"]["1xx"] == 1
    srv = c["servers"][("app", "127.0.0.1:9002")]
    assert srv["responses"]["4xx"] == 1 and srv["bytes_out"] == 77
    assert c["servers"][("app", "127.0.0.1:9001")]["bytes_out"] == 0
    assert c["bytes_out"] == 77 and c["responses"]["4xx"] == 1


def test_latency_histogram_is_cumulative_with_sum_and_count():
    t = table(make_config())
    row = t.claim_row(3001)
    for seconds in (0.0005, 0.001, 0.003, 0.2, 0.2, 7.0, 30.0):
        t._test_count(row, "latency", seconds)
    h = counters.read(t)["latency"]
    assert h["count"] == 7
    assert h["sum"] == pytest.approx(0.0005 + 0.001 + 0.003 + 0.4 + 7.0 + 30.0)
    le = dict(h["buckets"])
    assert [b for b, _ in h["buckets"]] == list(LATENCY_BOUNDS)
    assert le[0.001] == 2 and le[0.002] == 2 and le[0.005] == 3 and le[0.1] == 3
    assert le[0.25] == 5 and le[5.0] == 5 and le[10.0] == 6 and le[float("inf")] == 7


def test_a_released_row_keeps_its_counts_but_not_its_gauges():
    """A worker that dies must not make a monotonic total go backwards (Prometheus would see a reset)."""
    t = table(make_config())
    a, b = t.claim_row(4001), t.claim_row(4002)
    server = t.find("app", "127.0.0.1:9001")
    for row in (a, b):
        t._test_count(row, "client_open")
        t._test_count(row, "request", route_slot=0)
        t._test_count(row, "response", 200, route_slot=0, slot=server)
        t._test_count(row, "bytes_out", 10, route_slot=0, slot=server)
        t._test_count(row, "latency", 0.01)
    before = counters.read(t)
    assert t.release_row(4001)
    assert not t.release_row(4001)              # a second release (worker, then master) adds nothing
    after = counters.read(t)
    assert after["workers"] == 1
    for key in ("requests", "client_total", "bytes_out", "responses", "latency", "routes"):
        assert after[key] == before[key], key
    assert after["servers"][("app", "127.0.0.1:9001")]["bytes_out"] == 20
    assert after["client_open"] == 1            # the dead worker's connection is gone with it
    assert counters.per_worker(t)[4002]["requests"] == 1
    # the row is clean for the next worker
    again = t.claim_row(4003)
    assert again == a and counters.per_worker(t)[4003]["requests"] == 0


def test_snapshot_requests_include_released_rows():
    from fastproxy._balancer import Balancer

    cfg = make_config(servers=("127.0.0.1:9001",))
    t = table(cfg)
    bal = Balancer(cfg, t)
    srv = bal.py_pick(0)
    bal.py_release(srv)
    assert t.snapshot()[0]["requests"] == 1
    bal.close()
    assert t.rows() == [] and t.snapshot()[0]["requests"] == 1


def test_reload_keeps_a_remaining_routes_slot_and_frees_a_removed_one():
    one = make_config(routes=(("*", "/"), ("*", "/old/")))
    t = table(one)
    keep, old = t.find_route("*/"), t.find_route("*/old/")
    row = t.claim_row(5001)
    t._test_count(row, "request", route_slot=keep)
    t._test_count(row, "request", route_slot=old)
    t.release_row(5001)
    two = make_config(routes=(("*", "/new/"), ("*", "/")))
    t.assign(two, keep=one)                    # old workers still run `one`: its routes stay
    assert t.find_route("*/") == keep and t.find_route("*/old/") == old
    t.assign(two)                               # they are gone
    assert t.find_route("*/") == keep and t.find_route("*/old/") == -1
    routes = counters.read(t)["routes"]
    assert set(routes) == {"*/", "*/new/"}
    assert routes["*/"]["requests"] == 1 and routes["*/new/"]["requests"] == 0


def test_a_table_too_small_for_the_routes_refuses_the_config():
    t = ShmTable(None, True, 4, 4, 4, 2)
    t.assign(make_config(routes=(("*", "/"), ("*", "/a/"))))
    with pytest.raises(ValueError, match="2 routes"):
        t.assign(make_config(routes=(("*", "/"), ("*", "/b/"), ("*", "/c/"))))
    assert t.find_route("*/a/") >= 0


# --- end to end: a real `fastproxy serve` with two workers ---------------------------------------------

def exchange(port, request):
    """Send one request with Connection: close; return every byte the proxy sent back."""
    from helpers.client import Client

    with Client(port) as c:
        c.send(request)
        return c.read_until_close()


def delta(after, before):
    if isinstance(after, dict):
        return {k: delta(v, before.get(k, 0) if isinstance(before, dict) else 0) for k, v in after.items()}
    if isinstance(after, list):
        return [(b, n - m) for (b, n), (_, m) in zip(after, before, strict=True)]
    return after - before


def test_served_requests_are_counted_by_both_workers(proxy, backends):
    (b,) = backends(1)
    dead = f"127.0.0.1:{free_port()}"
    p = proxy(proxy_config({"app": [b], "dead": [dead]},
                           routes=[("app.test", "/", "app"), ("app.test", "/dead/", "dead")], workers=2))
    p.wait_quiescent()                         # the readiness probe's connection is closed
    before = p.counters()
    n = 20
    sent = received = 0
    for i in range(n):
        req = b"GET /?i=%d HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n" % i
        answer = exchange(p.port, req)
        assert answer.startswith(b"HTTP/1.1 200 ")
        sent, received = sent + len(req), received + len(answer)
        p.connections_made += 1
    extra = [
        (b"GET /status/404 HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n", b"HTTP/1.1 404 "),
        (b"GET / HTTP/1.1\r\nHost: nowhere.test\r\nConnection: close\r\n\r\n", b"HTTP/1.1 404 "),  # no route
        (b"GET /dead/ HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n", b"HTTP/1.1 502 "),
    ]
    for req, status in extra:
        answer = exchange(p.port, req)
        assert answer.startswith(status), answer[:100]
        sent, received = sent + len(req), received + len(answer)
        p.connections_made += 1
    p.wait_quiescent()

    d = delta(p.counters(), before)
    assert d["requests"] == n + 3
    assert d["responses"] == {"1xx": 0, "2xx": n, "3xx": 0, "4xx": 2, "5xx": 1}
    assert d["bytes_in"] == sent and d["bytes_out"] == received
    assert d["client_total"] == n + 3 and d["client_open"] == 0
    assert d["errors"]["server_connect"] >= 1
    assert sum(v for k, v in d["errors"].items() if k != "server_connect") == 0, d["errors"]
    assert d["latency"]["count"] == n + 3 and d["latency"]["buckets"][-1] == (float("inf"), n + 3)
    app, dead_route = d["routes"]["app.test/"], d["routes"]["app.test/dead/"]
    assert app["requests"] == n + 1 and app["responses"]["2xx"] == n and app["responses"]["4xx"] == 1
    assert dead_route["requests"] == 1 and dead_route["responses"]["5xx"] == 1
    srv = d["servers"][("app", b.address)]
    assert srv["requests"] == n + 1 and srv["responses"]["2xx"] == n and srv["responses"]["4xx"] == 1
    assert 0 < srv["bytes_out"] < received
    assert d["servers"][("dead", dead)]["errors"] >= 1

    now = p.counters()
    assert now["client_open"] == 0 and now["backend_open"] == now["backend_idle"]
    each = p.stats()
    assert len(each) == 2 and sum(c["requests"] for c in each.values()) == now["requests"]
    # the CLI reads the same table: text for a person, JSON for a script
    r = subprocess.run([sys.executable, "-m", "fastproxy", "stats", "-c", p.config_path, "--json"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["requests"] == now["requests"] and shown["responses"] == now["responses"]
    assert shown["servers"][f"app {b.address}"]["requests"] == now["servers"][("app", b.address)]["requests"]
    assert shown["latency"]["buckets"][-1] == ["+Inf", now["latency"]["count"]]
    r = subprocess.run([sys.executable, "-m", "fastproxy", "stats", "-c", p.config_path],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and f"requests {now['requests']}: 1xx 0, 2xx " in r.stdout, r.stdout
    assert "server_connect 1" in r.stdout and "route app.test/dead/: requests 1" in r.stdout, r.stdout
    cfg = config.load(p.config_path)           # a Config finds the same table, and orders its routes
    assert list(counters.read(cfg)["routes"]) == ["app.test/", "app.test/dead/"]
    with pytest.raises(ValueError, match="no named table"):
        counters.read(make_config())


def test_a_killed_workers_counts_stay_in_the_totals(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=2))
    for _ in range(10):
        with p.client() as c:
            assert c.get("/").status == 200
    procs.wait_for(lambda: p.total("requests") == 10, message="10 requests counted")
    p.wait_quiescent()
    before = p.counters()
    victim = max(p.stats(), key=lambda pid: p.stats()[pid]["requests"])
    assert p.stats()[victim]["requests"] > 0
    os.kill(victim, signal.SIGKILL)
    procs.wait_for(lambda: victim not in counters.per_worker(p.config_path) and len(p.worker_pids()) == 2
                   and victim not in p.worker_pids(),
                   message="the killed worker's row released and the worker respawned")
    p.initial_workers = p.worker_pids()        # a death the test caused, not a crash
    after = p.counters()
    for key in ("requests", "client_total", "bytes_in", "bytes_out", "responses", "latency"):
        assert after[key] == before[key], key
    assert after["client_open"] == 0
