"""pytest-benchmark: the cost of one pick (+ its release) per algorithm with 2, 100 and 1,000 servers.

    python -m pytest bench/bench_pick.py --benchmark-enable --benchmark-columns=min,median,mean

Each round runs PICKS pick/release pairs in C (Balancer.bench_pick), so the figure divided by PICKS is the
per-request cost in the core, without Python call overhead. The balancer's clock advances as in a worker
doing RATE requests/s, so periodic work (least_conn/least_time's refresh on big pools) is charged too.
One worker: on big least_conn/least_time pools each release by another worker adds one heap update to
this worker's next pick (~20-30 ns; see test_pick_two_workers).
"""

import pytest

from fastproxy import config
from fastproxy._balancer import Balancer
from fastproxy._shm import ShmTable, sizes_for

PICKS = 1000
RATE = 20000.0


def config_for(balance, n):
    servers = ", ".join(f'{{ address = "127.0.{i // 250}.{i % 250 + 1}:80", weight = {1 + i % 5} }}'
                        for i in range(n))
    cfg = config.loads(f'[[listen]]\naddress = "127.0.0.1:8080"\n[upstreams.app]\nbalance = "{balance}"\n'
                       f'servers = [{servers}]\n[[routes]]\nupstream = "app"\n')
    return cfg


def balancer(balance, n):
    cfg = config_for(balance, n)
    table = ShmTable(None, True, *sizes_for(cfg))
    table.assign(cfg)
    return Balancer(cfg, table)


@pytest.mark.parametrize("n", [2, 100, 1000])
@pytest.mark.parametrize("balance", ["round_robin", "least_conn", "p2c", "hash", "least_time"])
def test_pick(benchmark, balance, n):
    b = balancer(balance, n)
    benchmark.extra_info["picks_per_round"] = PICKS
    benchmark(b.bench_pick, 0, PICKS, True, RATE)


@pytest.mark.parametrize("n", [2, 100, 1000])
@pytest.mark.parametrize("balance", ["least_conn", "least_time"])
def test_pick_two_workers(benchmark, balance, n):
    """Two workers on one table taking turns (PICKS/2 each per round): every pick also applies the
    other worker's releases."""
    cfg = config_for(balance, n)
    table = ShmTable(None, True, *sizes_for(cfg))
    table.assign(cfg)
    a, b = Balancer(cfg, table, 0), Balancer(cfg, table, 1)

    def turns():
        for _ in range(PICKS // 20):
            a.bench_pick(0, 10, True, RATE)
            b.bench_pick(0, 10, True, RATE)

    benchmark.extra_info["picks_per_round"] = PICKS
    benchmark(turns)
