"""The balancer's algorithms and rules, driven through its Python wrappers over a real shared table.

Two Balancer objects on one table stand for two workers (the table is the only state they share, as
between processes). Time is passed explicitly (now=...), on the clock the table uses.
"""

import collections
import time

import pytest

from fastproxy import config
from fastproxy._balancer import OUTCOMES, PICK_ALL_FULL, PICK_NOTHING, Balancer, hash_key
from fastproxy._shm import ShmTable, sizes_for

OK, FAIL, RESET, HTTP_5XX = OUTCOMES["ok"], OUTCOMES["connect_fail"], OUTCOMES["reset"], OUTCOMES["http_5xx"]
A, B, C, D = "127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9003", "127.0.0.1:9004"


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return repr(v)


def make_config(servers, balance="round_robin", **options):
    entries = ", ".join(toml_value(s if isinstance(s, dict) else {"address": s}) for s in servers)
    extra = "".join(f"{k} = {toml_value(v)}\n" for k, v in options.items())
    text = (f'[[listen]]\naddress = "127.0.0.1:8080"\n\n[upstreams.app]\nbalance = "{balance}"\n'
            f"servers = [{entries}]\n{extra}\n[[routes]]\nupstream = \"app\"\n")
    return config.loads(text)


class Pool:
    """A table for a config and n balancers (workers) on it."""

    def __init__(self, cfg, workers=1):
        self.cfg = cfg
        self.table = ShmTable(None, True, *sizes_for(cfg))
        self.table.assign(cfg)
        self.workers = [Balancer(cfg, self.table, i) for i in range(workers)]
        self.addresses = [a for _, _, _, a in self.workers[0].slot_addresses()]

    def slot(self, address):
        return self.table.find("app", address)

    def index(self, address):
        return self.addresses.index(address)

    def state(self, address):
        return next(b for b in self.table.snapshot() if b["address"] == address)


def spread(pool, n, key=None, worker=0, now=None):
    """n sequential requests (each released at once): how many each address got."""
    b = pool.workers[worker]
    got = collections.Counter()
    for i in range(n):
        srv = b.py_pick(0, key=key(i) if key else 0, now=now)
        assert srv >= 0
        got[pool.addresses[srv]] += 1
        b.py_release(srv, OK, 0.001, now=now)
    return got


WEIGHTED = [{"address": A, "weight": 3}, {"address": B, "weight": 1}]


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "least_time", "p2c"])
def test_sequential_requests_follow_the_weights(balance):
    pool = Pool(make_config(WEIGHTED, balance))
    got = spread(pool, 4000)
    assert abs(got[A] / 4000 - 0.75) < 0.03, got


def test_round_robin_is_smooth_and_shared_by_workers():
    pool = Pool(make_config(WEIGHTED), workers=2)
    order = []
    for i in range(8):
        b = pool.workers[i % 2]                 # the two workers take turns
        srv = b.py_pick(0)
        order.append(pool.addresses[srv])
        b.py_release(srv)
    # nginx's smooth order for 3:1 is a a b a; shared across workers, the combined sequence keeps it
    assert order == [A, A, B, A, A, A, B, A]


def test_hash_spreads_keys_by_weight():
    pool = Pool(make_config(WEIGHTED, "hash"))
    got = spread(pool, 20000, key=lambda i: f"client-{i}")
    assert abs(got[A] / 20000 - 0.75) < 0.06, got


def test_least_conn_counts_in_flight_requests_of_every_worker():
    pool = Pool(make_config([A, B], "least_conn"), workers=2)
    w0, w1 = pool.workers
    held = [w0.py_pick(0) for _ in range(4)]          # worker 0: 4 slow requests in flight
    assert collections.Counter(pool.addresses[s] for s in held) == {A: 2, B: 2}
    for s in [s for s in held if pool.addresses[s] == A]:
        w0.py_release(s)                              # A's finish; B's pile up
    # worker 1 sees B busy (through the table) and sends everything new to A
    assert {pool.addresses[w1.py_pick(0)] for _ in range(2)} == {A}
    assert pool.state(A)["active"] == 2 and pool.state(B)["active"] == 2


def test_least_time_prefers_the_faster_server_under_load():
    pool = Pool(make_config([A, B], "least_time"))
    b = pool.workers[0]
    for _ in range(20):                 # teach it the response times: A 5 ms, B 100 ms
        for addr, secs in ((A, 0.005), (B, 0.1)):
            srv = b.py_pick(0, tried=[i for i, a in enumerate(pool.addresses) if a != addr])
            b.py_release(srv, OK, secs)
    held = [b.py_pick(0) for _ in range(12)]
    got = collections.Counter(pool.addresses[s] for s in held)
    assert got[A] >= 10, got


def test_p2c_avoids_a_loaded_server():
    pool = Pool(make_config([A, B, C], "p2c"))
    b = pool.workers[0]
    slow = [b.py_pick(0, tried=[pool.index(B), pool.index(C)]) for _ in range(30)]   # 30 on A
    assert {pool.addresses[s] for s in slow} == {A}
    got = collections.Counter(pool.addresses[b.py_pick(0)] for _ in range(20))
    assert got[A] <= 2, got


def test_max_conns_is_global_across_workers():
    pool = Pool(make_config([{"address": A, "max_conns": 2}]), workers=2)
    w0, w1 = pool.workers
    assert w0.py_pick(0) >= 0 and w1.py_pick(0) >= 0
    assert w0.py_pick(0) == PICK_ALL_FULL and w1.py_pick(0) == PICK_ALL_FULL
    w0.py_release(0)
    assert w1.py_pick(0) == 0


def test_a_full_server_sends_requests_to_the_others():
    pool = Pool(make_config([{"address": A, "max_conns": 1}, B], "least_conn"))
    b = pool.workers[0]
    first = b.py_pick(0)
    assert pool.addresses[first] in (A, B)
    picks = [pool.addresses[b.py_pick(0)] for _ in range(5)]
    assert picks.count(A) <= 1


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "p2c", "hash", "least_time"])
def test_backup_only_when_every_primary_is_down(balance):
    pool = Pool(make_config([A, B, {"address": C, "backup": True}], balance))
    got = spread(pool, 200, key=lambda i: f"k{i}")
    assert got[C] == 0
    pool.table.set_health(pool.slot(A), False)
    got = spread(pool, 200, key=lambda i: f"k{i}")
    assert set(got) == {B}
    pool.table.set_health(pool.slot(B), False)
    got = spread(pool, 200, key=lambda i: f"k{i}")
    assert set(got) == {C}
    pool.table.set_health(pool.slot(A), True)
    assert spread(pool, 50, key=lambda i: f"k{i}")[C] == 0


def test_tried_servers_are_skipped_then_backups_then_nothing():
    pool = Pool(make_config([A, B, {"address": C, "backup": True}]))
    b = pool.workers[0]
    assert pool.addresses[b.py_pick(0, tried=[pool.index(A)])] == B
    assert pool.addresses[b.py_pick(0, tried=[pool.index(A), pool.index(B)])] == C
    assert b.py_pick(0, tried=[0, 1, 2]) == PICK_NOTHING


def test_draining_and_disabled_servers_get_no_new_requests():
    pool = Pool(make_config([A, B, C]))
    pool.table.set_admin("app", A, "draining")
    pool.table.set_admin("app", B, "disabled")
    assert set(spread(pool, 30)) == {C}
    pool.table.set_admin("app", A, "enabled")
    assert set(spread(pool, 30)) == {A, C}


def test_runtime_weight_changes_the_distribution_at_once():
    pool = Pool(make_config([A, B]))
    pool.table.set_weight("app", A, 4)
    got = spread(pool, 500)
    assert got == {A: 400, B: 100}


def test_slow_start_ramps_the_weight_after_recovery():
    pool = Pool(make_config([{"address": A, "slow_start": "10s"}, B]))
    pool.table.set_health(pool.slot(A), False)
    pool.table.set_health(pool.slot(A), True)         # back up now: the ramp starts
    t0 = time.monotonic()
    early = spread(pool, 2000, now=t0 + 1)           # 10% of its weight
    mid = spread(pool, 2000, now=t0 + 5)             # 50%
    late = spread(pool, 2000, now=t0 + 11)           # full
    assert early[A] / 2000 < 0.12, early
    assert 0.2 < mid[A] / 2000 < 0.4, mid
    assert late[A] == 1000, late


def fail(pool, address, n, now, outcome=FAIL):
    b = pool.workers[0]
    srv = pool.index(address)
    others = [i for i in range(len(pool.addresses)) if i != srv]
    for _ in range(n):
        assert b.py_pick(0, tried=others, now=now) == srv
        b.py_release(srv, outcome, 0, now=now)


def test_passive_checks_mark_down_then_one_trial_decides():
    pool = Pool(make_config([A, B], passive={"max_fails": 3, "fail_timeout": "10s"}), workers=2)
    w0, w1 = pool.workers
    t0 = time.monotonic()
    fail(pool, A, 2, t0)
    assert pool.state(A)["state"] == "up"
    fail(pool, A, 1, t0 + 1)
    assert pool.state(A)["state"] == "down"
    assert set(spread(pool, 20, now=t0 + 2, worker=1)) == {B}       # every worker sees it
    # after the cool-down, exactly one request (from any worker) is let through as the trial
    only_a = [pool.index(B)]
    trial = w1.py_pick(0, tried=only_a, now=t0 + 12)
    assert pool.addresses[trial] == A
    assert w0.py_pick(0, tried=only_a, now=t0 + 12) == PICK_NOTHING
    w1.py_release(trial, OK, 0.01, now=t0 + 12)
    assert pool.state(A)["state"] == "up"
    assert A in spread(pool, 20, now=t0 + 13)


def test_a_failed_trial_means_another_cool_down():
    pool = Pool(make_config([A, B], passive={"max_fails": 1, "fail_timeout": "5s"}))
    b = pool.workers[0]
    t0 = time.monotonic()
    fail(pool, A, 1, t0)
    trial = b.py_pick(0, tried=[pool.index(B)], now=t0 + 6)
    b.py_release(trial, RESET, 0, now=t0 + 6)
    assert b.py_pick(0, tried=[pool.index(B)], now=t0 + 8) == PICK_NOTHING
    assert pool.addresses[b.py_pick(0, tried=[pool.index(B)], now=t0 + 12)] == A


def test_failures_outside_the_window_do_not_add_up():
    pool = Pool(make_config([A, B], passive={"max_fails": 2, "fail_timeout": "1s"}))
    t0 = time.monotonic()
    fail(pool, A, 1, t0)
    fail(pool, A, 1, t0 + 2)
    assert pool.state(A)["state"] == "up"


@pytest.mark.parametrize("count_5xx", [False, True])
def test_5xx_counts_only_when_configured(count_5xx):
    pool = Pool(make_config([A, B], passive={"max_fails": 2, "http_5xx": count_5xx}))
    fail(pool, A, 2, time.monotonic(), outcome=HTTP_5XX)
    assert pool.state(A)["state"] == ("down" if count_5xx else "up")


def test_passive_checks_off():
    pool = Pool(make_config([A, B], passive={"max_fails": 0}))
    fail(pool, A, 10, time.monotonic())
    assert pool.state(A)["state"] == "up" and pool.state(A)["errors"] == 10


# ---- nginx's rule: passive checks protect a pool but never empty it (issue 8) -------------------------------


def test_the_only_server_is_never_taken_out_by_passive_checks():
    pool = Pool(make_config([A], passive={"max_fails": 1, "fail_timeout": "30s"}), workers=2)
    t0 = time.monotonic()
    b = pool.workers[0]
    for i in range(10):
        srv = b.py_pick(0, now=t0 + i)
        assert srv == 0
        b.py_release(srv, FAIL, 0, now=t0 + i)
    assert pool.state(A)["state"] == "up" and pool.state(A)["errors"] == 10
    assert pool.workers[1].py_pick(0, now=t0 + 11) == 0


@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "least_time", "p2c", "hash"])
def test_when_every_server_is_passively_down_they_are_tried_again(balance):
    pool = Pool(make_config([A, B, C], balance, passive={"max_fails": 1, "fail_timeout": "30s"}), workers=2)
    t0 = time.monotonic()
    fail(pool, A, 1, t0)
    fail(pool, B, 1, t0)
    assert pool.state(A)["state"] == "down" and pool.state(B)["state"] == "down"
    # one left: passive checks keep the others out
    assert set(spread(pool, 10, now=t0 + 1, key=(lambda i: f"k{i}") if balance == "hash" else None)) == {C}
    fail(pool, C, 1, t0 + 1)
    assert all(pool.state(x)["state"] == "down" for x in (A, B, C))
    # every server is out: instead of 503 for 30 s, their passive state is reset and they take requests
    w1 = pool.workers[1]
    srv = w1.py_pick(0, key=7, now=t0 + 2)
    assert srv >= 0
    w1.py_release(srv, OK, 0.001, now=t0 + 2)
    assert all(pool.state(x)["state"] == "up" for x in (A, B, C))
    got = spread(pool, 60, now=t0 + 3, key=(lambda i: f"k{i}") if balance == "hash" else None)
    assert set(got) == {A, B, C}, got


def test_a_retry_that_finds_only_down_servers_does_not_reset_them():
    # the request already tried B (which is not down): A, passively down, stays down for it
    pool = Pool(make_config([A, B], passive={"max_fails": 1, "fail_timeout": "30s"}))
    t0 = time.monotonic()
    fail(pool, A, 1, t0)
    assert pool.workers[0].py_pick(0, tried=[pool.index(B)], now=t0 + 1) == PICK_NOTHING
    assert pool.state(A)["state"] == "down"


def test_active_checks_and_the_operator_still_take_servers_out():
    pool = Pool(make_config([A, B, C], passive={"max_fails": 1, "fail_timeout": "30s"}))
    t0 = time.monotonic()
    fail(pool, A, 1, t0)
    pool.table.set_health(pool.slot(B), False)
    pool.table.set_admin("app", C, "disabled")
    # A is passively down, B actively down, C disabled: A is reset (the only one passive checks took out)
    assert pool.addresses[pool.workers[0].py_pick(0, now=t0 + 1)] == A
    fail(pool, A, 1, t0 + 2)
    # now A is out by passive checks only; with B and C out for real, A is reset again, never B or C
    assert {pool.addresses[s] for s in [pool.workers[0].py_pick(0, now=t0 + 3)]} == {A}
    # all out for real: nothing to reset, no server
    pool.table.set_health(pool.slot(A), False)
    assert pool.workers[0].py_pick(0, now=t0 + 4) == PICK_NOTHING


def test_sticky_cookie_is_opaque_stable_and_routes_back():
    cfg = make_config([A, B], sticky={"cookie": "FPSRV", "secure": True, "max_age": "1h"})
    pool = Pool(cfg, workers=2)
    w0, w1 = pool.workers
    cookies = [w0.py_sticky_cookie(0, i) for i in range(2)]
    assert cookies[0] != cookies[1]
    for i, cookie in enumerate(cookies):
        name, _, rest = cookie.partition("=")
        value, *attrs = rest.split("; ")
        assert name == "FPSRV" and len(value) == 16 and int(value, 16) >= 0
        assert "9001" not in value and "127" not in value
        assert attrs == ["Path=/", "HttpOnly", "SameSite=Lax", "Secure", "Max-Age=3600"]
        assert w1.py_sticky_cookie(0, i) == cookie          # same in every worker
        assert w1.py_sticky_slot(0, value) == i
        w1.py_release(i)
    assert w0.py_sticky_slot(0, "0123456789abcdef") == PICK_NOTHING
    assert w0.py_sticky_slot(0, "short") == PICK_NOTHING


def test_sticky_cookie_follows_server_state():
    pool = Pool(make_config([A, B], sticky={"cookie": "S"}))
    b = pool.workers[0]
    value = b.py_sticky_cookie(0, pool.index(A)).split("=")[1].split(";")[0]
    pool.table.set_admin("app", A, "draining")
    assert b.py_sticky_slot(0, value) == pool.index(A)       # draining: its sessions stay
    pool.table.set_admin("app", A, "disabled")
    assert b.py_sticky_slot(0, value) == PICK_NOTHING
    pool.table.set_admin("app", A, "enabled")
    pool.table.set_health(pool.slot(A), False)
    assert b.py_sticky_slot(0, value) == PICK_NOTHING       # down: the client moves


def test_sticky_values_differ_between_tables():
    # the key is random per table, so values cannot be precomputed from addresses
    cfg = make_config([A], sticky={"cookie": "S"})
    assert Pool(cfg).workers[0].py_sticky_cookie(0, 0) != Pool(cfg).workers[0].py_sticky_cookie(0, 0)


def keys_map(pool, n=10000, key="k"):
    b = pool.workers[0]
    out = {}
    for i in range(n):
        srv = b.py_pick(0, key=f"{key}{i}")
        out[i] = pool.addresses[srv]
        b.py_release(srv)
    return out


def test_hash_adding_a_server_remaps_about_one_in_n():
    before = keys_map(Pool(make_config([A, B, C], "hash")))
    after = keys_map(Pool(make_config([A, B, C, D], "hash")))
    moved = [i for i in before if before[i] != after[i]]
    assert 0.15 < len(moved) / len(before) < 0.35, len(moved)
    assert {after[i] for i in moved} == {D}                    # only onto the new server


def test_hash_a_down_server_moves_only_its_keys():
    pool = Pool(make_config([A, B, C, D], "hash"))
    before = keys_map(pool)
    pool.table.set_health(pool.slot(B), False)
    after = keys_map(pool)
    assert all(after[i] == before[i] for i in before if before[i] != B)
    assert B not in after.values()


def test_hash_keys_are_stable_across_workers():
    pool = Pool(make_config([A, B, C], "hash"), workers=2)
    for i in range(100):
        picks = {w.py_pick(0, key=f"user{i}") for w in pool.workers}
        assert len(picks) == 1


def test_hash_bounded_load_skips_an_overloaded_server():
    pool = Pool(make_config([A, B, C], "hash", hash_load_factor=1.25))
    b = pool.workers[0]
    held = [b.py_pick(0, key="same-key") for _ in range(30)]     # one hot key, all in flight
    assert min(held) >= 0
    got = collections.Counter(pool.addresses[s] for s in held)
    assert max(got.values()) <= 30 * 1.25 / 3 + 2, got
    assert len(got) == 3


def test_sticky_hash_mode_uses_the_ring():
    pool = Pool(make_config([A, B, C], sticky={"hash": "header:X-User"}))
    b = pool.workers[0]
    assert b.py_key(0) == (3, "X-User")      # KEY_HEADER
    first = b.py_pick(0, key="alice")
    assert all(b.py_pick(0, key="alice") == first for _ in range(20))


def test_key_kinds():
    assert Pool(make_config([A], "hash", hash_key="uri")).workers[0].py_key(0) == (2, "")
    assert Pool(make_config([A], "hash", hash_key="cookie:sid")).workers[0].py_key(0) == (4, "sid")
    assert Pool(make_config([A], "hash")).workers[0].py_key(0) == (1, "")
    assert Pool(make_config([A])).workers[0].py_key(0) == (0, "")


def test_retry_budget_limits_retries_to_a_fraction_of_requests():
    pool = Pool(make_config([A, B], retries={"tries": 3, "budget": 0.1}))
    b = pool.workers[0]
    t = time.monotonic()
    allowed = sum(b.py_may_retry(0, now=t) for _ in range(50))
    assert allowed == 10                        # the initial allowance
    for _ in range(100):                        # 100 requests earn 10 retries
        b.py_release(b.py_pick(0, now=t), OK, now=t)
    assert sum(b.py_may_retry(0, now=t) for _ in range(50)) == 10
    assert b.py_may_retry(0, now=t + 1)         # plus a floor per second


def test_a_reassigned_slot_is_never_picked_by_an_old_worker():
    old = make_config([A, B])
    pool = Pool(old)
    b_old = pool.workers[0]
    pool.table.assign(make_config([A, C]))      # B removed, C new (its slot may be B's old one)
    got = spread(pool, 20)
    assert set(got) == {A}
    assert b_old.py_pick(0, tried=[pool.index(A)]) == PICK_NOTHING


def test_hash_key_is_deterministic_and_spread():
    assert hash_key(b"abc") == hash_key("abc")
    keys = {hash_key(f"10.0.0.{i}") for i in range(256)}
    assert len(keys) == 256
    assert sum(k >> 63 for k in keys) in range(96, 160)           # top bit about half the time
