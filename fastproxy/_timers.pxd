# Timers: a hashed timer wheel, so that a worker with 10,000 idle connections spends nothing per tick on
# them (the sweep it replaces walked every connection every 100 ms).
#
# Rules of this module:
# - A TimerNode lives inside the object it times (a connection); the wheel only links nodes. `owner`
#   points back to that object, which stays alive while its node is armed (the loop holds it).
# - Deadlines are CLOCK_MONOTONIC seconds, 0 = not armed. Resolution is TICK seconds: a timer fires at
#   the first tick at or after its deadline.
# - Moving a deadline later is one store (the node is moved when its old slot comes round); only an
#   earlier deadline relinks. That keeps the per-read "push the deadline" of the hot path free.
# - pop_expired() hands back one expired node at a time, so a timeout handler may cancel or arm any
#   other timer (close another connection) without invalidating the walk.

cdef enum:
    WHEEL_SLOTS = 1024          # with TICK = 0.1 s, one turn is 102.4 s; later deadlines wait a turn

cdef struct TimerNode:
    TimerNode *prev
    TimerNode *next
    double deadline             # 0: not armed
    void *owner


cdef class TimerWheel:
    cdef double tick                        # seconds per slot
    cdef long long next_tick                # the next tick to process
    cdef TimerNode slots[WHEEL_SLOTS]       # list heads (sentinels)
    cdef TimerNode pending                  # the slot being processed, detached
    cdef long long armed                    # nodes linked (for tests and the debug counts)

    cdef void place(self, TimerNode *n, bint due_to_pending) noexcept nogil
    cdef void arm(self, TimerNode *n, double deadline) noexcept nogil
    cdef void cancel(self, TimerNode *n) noexcept nogil
    cdef TimerNode *pop_expired(self, double now) noexcept nogil
