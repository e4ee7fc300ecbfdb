"""A short, bounded run of tools/fuzz.py in the suite (issue 8): mutated requests and mutated backend
responses through a running `fastproxy serve`, checking no worker crash, no hang, bounded memory, and that
every client got a response or a clean close.

A fixed seed keeps it reproducible; the long run is `python tools/fuzz.py --seconds 1800` (a random seed,
printed). On failure the output names the seed and the batch to replay.
"""

import io
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

import fuzz  # noqa: E402

SEED = 20261201


def test_fuzz_both_sides_briefly():
    out = io.StringIO()
    try:
        failures = fuzz.run(SEED, seconds=15, workers=2, clients=30, rss_mb=30, out=out)
    finally:
        print(out.getvalue())
    assert not failures, f"seed {SEED}:\n" + "\n".join(failures[:10])


def test_the_harness_reports_a_dead_worker_and_a_hang():
    """The checks themselves: a worker killed between batches and a probe that gets no answer are failures."""
    out = io.StringIO()
    f = fuzz.Fuzzer(SEED, workers=1, clients=5, out=out, client_deadline=1.0)
    try:
        os.kill(f.pids[0], 9)
        f.run_batch()
        assert any("a worker died" in x for x in f.failures), out.getvalue()
        os.killpg(f.proxy.proc.pid, 19)             # SIGSTOP the whole proxy: nothing answers
        try:
            f.failures.clear()
            f.run_batch()
        finally:
            os.killpg(f.proxy.proc.pid, 18)         # SIGCONT
        assert any("probe request got no answer" in x for x in f.failures), out.getvalue()
        assert any(": hang;" in x for x in f.failures), out.getvalue()
    finally:
        f.close()
