"""least_conn / least_time on pools bigger than the exact scan's limit (the per-worker heap + release ring).

The heap must pick what the exact rule picks: the server with the least live score over all workers.
Two Balancer objects on one table stand for two workers, as in test_balancer.py.
"""

import collections
import random
import time

import pytest

from fastproxy._balancer import PICK_ALL_FULL, PICK_NOTHING
from tests.test_balancer import OK, Pool, make_config

N = 20          # more than the scan limit (SCAN_MAX = 8)


def addresses(n):
    return [f"127.0.0.1:{9001 + i}" for i in range(n)]


def live_scores(pool, balance):
    """Each address's score as the exact rule computes it (no slow start configured here)."""
    out = {}
    for b in pool.table.snapshot():
        if b["state"] != "up" or b["backup"]:
            continue
        load = b["active"] / b["weight"]
        if balance == "least_time":
            load *= b["ewma_ms"] * 1000 + 1
        out[b["address"]] = load
    return out


@pytest.mark.parametrize("step", [0.0, 0.013])     # the clock still, or moving (periodic refreshes)
@pytest.mark.parametrize("balance", ["least_conn", "least_time"])
def test_every_pick_has_the_least_live_score_across_workers(balance, step):
    rnd = random.Random(7)
    servers = [{"address": a, "weight": 1 + i % 3} for i, a in enumerate(addresses(N))]
    pool = Pool(make_config(servers, balance), workers=2)
    now = time.monotonic()
    held = [[], []]
    for i in range(3000):
        now += step
        if i == 1500:
            pool.table.set_weight("app", pool.addresses[5], 4)   # a runtime weight change mid-way
        w = rnd.randrange(2)
        b = pool.workers[w]
        if held[w] and rnd.random() < 0.45:
            srv = held[w].pop(rnd.randrange(len(held[w])))
            b.py_release(srv, OK, rnd.choice((0.002, 0.01, 0.05)), now=now)
            continue
        scores = live_scores(pool, balance)
        srv = b.py_pick(0, now=now)
        assert srv >= 0
        assert scores[pool.addresses[srv]] == min(scores.values()), i
        held[w].append(srv)


def test_idle_picks_rotate_by_weight():
    servers = [{"address": a, "weight": 2 if i < 5 else 1} for i, a in enumerate(addresses(N))]
    pool = Pool(make_config(servers, "least_conn"))
    got = collections.Counter()
    b = pool.workers[0]
    for _ in range(250):                            # 10 cycles of total weight 25
        srv = b.py_pick(0)
        got[pool.addresses[srv]] += 1
        b.py_release(srv)
    assert got == {a: (20 if i < 5 else 10) for i, a in enumerate(addresses(N))}


def test_a_release_by_another_worker_is_seen_at_the_next_pick():
    pool = Pool(make_config(addresses(N), "least_conn"), workers=2)
    w0, w1 = pool.workers
    now = time.monotonic()
    held = [w0.py_pick(0, now=now) for _ in range(2 * N)]      # two in flight on every server
    assert set(collections.Counter(held).values()) == {2}
    assert w1.py_pick(0, now=now) >= 0                         # worker 1 has seen the load: 3 on one
    w0.py_release(held[7], now=now)                            # worker 0 frees one place on a server
    assert w1.py_pick(0, now=now) == held[7]                   # same instant: no refresh involved


def test_a_server_down_or_full_is_skipped_and_comes_back():
    servers = [{"address": a, "max_conns": 1} for a in addresses(N)]
    pool = Pool(make_config(servers, "least_conn"), workers=2)
    w0, w1 = pool.workers
    now = time.monotonic()
    down = pool.addresses[3]
    pool.table.set_health(pool.slot(down), False)
    held = [w0.py_pick(0, now=now) for _ in range(N - 1)]
    assert sorted(pool.addresses[s] for s in held) == sorted(a for a in pool.addresses if a != down)
    assert w1.py_pick(0, now=now) == PICK_ALL_FULL               # every usable server at max_conns
    w0.py_release(held[0], now=now)
    assert w1.py_pick(0, now=now) == held[0]
    pool.table.set_health(pool.slot(down), True)
    assert w1.py_pick(0, now=now + 1) == pool.index(down)        # seen at the periodic refresh


def test_backups_tried_and_nothing_left():
    servers = [*addresses(N), {"address": "127.0.0.1:9999", "backup": True}]
    pool = Pool(make_config(servers, "least_conn"))
    b = pool.workers[0]
    primaries = list(range(N))
    assert b.py_pick(0, tried=primaries[1:]) == 0
    backup = b.py_pick(0, tried=primaries)
    assert pool.addresses[backup] == "127.0.0.1:9999"
    assert b.py_pick(0, tried=[*primaries, backup]) == PICK_NOTHING
    b.py_release(backup)                                       # a backup is not in the heap
    for srv in range(N):
        pool.table.set_health(pool.slot(pool.addresses[srv]), False)
    assert pool.addresses[b.py_pick(0)] == "127.0.0.1:9999"     # every primary down


def test_a_reader_far_behind_reads_everything_again():
    pool = Pool(make_config(addresses(N), "least_conn"), workers=2)
    w0, w1 = pool.workers
    now = time.monotonic()
    held = [w1.py_pick(0, now=now) for _ in range(N)]          # one on every server, in worker 1's heap
    w0_held = [w0.py_pick(0, now=now) for _ in range(N)]       # two everywhere
    for _ in range(300):                                       # more than the ring holds
        w0.py_release(w0.py_pick(0, now=now), now=now)
    for s in w0_held[:3]:
        w0.py_release(s, now=now)
    got = {w1.py_pick(0, now=now) for _ in range(3)}
    assert got == set(w0_held[:3])
    assert len(held) == N
