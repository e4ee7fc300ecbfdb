"""The timer wheel (fastproxy/_timers.pyx) through WheelProbe: nodes on a real wheel, time moved by hand.

A timer fires at the first tick at or after its deadline, never before it; moving a deadline later is
a store, earlier relinks; a cancelled timer never fires; deadlines past one turn of the wheel (102.4 s)
wait their turn; a handler may arm or cancel other timers while expiries are handed out.
"""

import math
import random

from fastproxy._timers import WheelProbe

TICK = 0.1


def run_until(w, start, end, step=TICK, on_fire=None):
    """Advance time tick by tick; return {index: time it fired}."""
    fired = {}
    t = start
    while t <= end + 1e-9:
        for i in w.expire(t, on_fire):
            assert i not in fired, f"timer {i} fired twice"
            fired[i] = t
        t = round(t + step, 6)
    return fired


def test_each_timer_fires_once_at_the_first_tick_after_its_deadline():
    rng = random.Random(7)
    n = 2000
    w = WheelProbe(n, TICK, 1000.0)
    deadlines = [1000.0 + rng.uniform(0.0, 30.0) for _ in range(n)]
    for i, d in enumerate(deadlines):
        w.arm(i, d)
    assert w.armed == n
    fired = run_until(w, 1000.0, 1031.0)
    assert sorted(fired) == list(range(n))
    for i, d in enumerate(deadlines):
        assert fired[i] >= d, f"timer {i} fired early"
        assert fired[i] - d <= TICK + 1e-6, f"timer {i} fired late: {fired[i] - d:.3f} s"
    assert w.armed == 0


def test_a_later_deadline_moves_the_timer_and_an_earlier_one_too():
    w = WheelProbe(3, TICK, 0.0)
    w.arm(0, 1.0)
    w.arm(0, 5.0)           # later: found at its old slot, moved on
    w.arm(1, 5.0)
    w.arm(1, 0.5)           # earlier: relinked
    w.arm(2, 2.0)
    fired = run_until(w, 0.0, 6.0)
    assert math.isclose(fired[0], 5.0) and math.isclose(fired[1], 0.5) and math.isclose(fired[2], 2.0)
    assert w.armed == 0


def test_a_cancelled_timer_never_fires_and_rearming_works():
    w = WheelProbe(2, TICK, 0.0)
    w.arm(0, 1.0)
    w.arm(1, 1.0)
    w.cancel(0)
    assert w.armed == 1 and w.deadline(0) == 0
    assert run_until(w, 0.0, 2.0) == {1: 1.0}
    w.arm(0, 3.0)
    assert run_until(w, 2.1, 4.0) == {0: 3.0}


def test_deadlines_beyond_one_turn_of_the_wheel_wait_their_turn():
    w = WheelProbe(3, TICK, 0.0)
    w.arm(0, 150.0)          # one turn is 1024 slots x 0.1 s = 102.4 s
    w.arm(1, 300.05)
    w.arm(2, 102.4)
    fired = run_until(w, 0.0, 301.0, step=0.1)
    assert fired[2] >= 102.4 and fired[2] - 102.4 < 0.11
    assert fired[0] >= 150.0 and fired[0] - 150.0 < 0.11
    assert fired[1] >= 300.05 and fired[1] - 300.05 < 0.11


def test_a_late_loop_fires_everything_due_in_one_call():
    w = WheelProbe(100, TICK, 0.0)
    for i in range(100):
        w.arm(i, 0.05 * (i + 1))
    assert sorted(w.expire(10.0)) == list(range(100))     # 10 s without a tick (a busy loop)


def test_a_handler_may_cancel_and_arm_other_timers_while_they_are_handed_out():
    w = WheelProbe(4, TICK, 0.0)
    for i in range(3):
        w.arm(i, 1.0)         # the same slot

    def on_fire(i):
        if i == 0:
            w.cancel(1)       # a timeout closes another connection of the same slot
            w.arm(2, 2.0)     # and pushes a third one later
            w.arm(3, 0.5)     # and arms one that is already due

    fired = run_until(w, 0.0, 3.0, on_fire=on_fire)
    assert 1 not in fired
    assert math.isclose(fired[0], 1.0) and math.isclose(fired[2], 2.0) and math.isclose(fired[3], 1.0)
    assert w.armed == 0


def test_arming_a_due_deadline_fires_at_the_next_expiry():
    w = WheelProbe(1, TICK, 100.0)
    w.arm(0, 50.0)            # already past
    assert w.expire(100.0) == [0]
