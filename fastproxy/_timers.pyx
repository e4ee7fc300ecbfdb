# cython: language_level=3
"""The timer wheel (rules in _timers.pxd)."""

from libc.math cimport ceil
from libc.stdlib cimport calloc, free


# times are sums of binary fractions: 1009.8 / 0.1 is 10097.99999...; a tick is reached within this
cdef double TICK_EPSILON = 1e-6


cdef inline void node_unlink(TimerNode *n) noexcept nogil:
    n.prev.next = n.next
    n.next.prev = n.prev
    n.prev = n.next = NULL


cdef inline void node_link(TimerNode *head, TimerNode *n) noexcept nogil:
    n.prev = head.prev
    n.next = head
    head.prev.next = n
    head.prev = n


cdef inline void list_init(TimerNode *head) noexcept nogil:
    head.prev = head.next = head


cdef class TimerWheel:
    def __cinit__(self, double tick=0.1, double now=0.0):
        cdef int i
        self.tick = tick
        self.next_tick = <long long>(now / tick + TICK_EPSILON)
        for i in range(WHEEL_SLOTS):
            list_init(&self.slots[i])
        list_init(&self.pending)

    cdef void place(self, TimerNode *n, bint due_to_pending) noexcept nogil:
        # A deadline already due goes to the list being handed out (it fires in this expiry), unless
        # the node comes from that list (not due after all): then to the next tick's slot.
        cdef long long t = <long long>ceil(n.deadline / self.tick - TICK_EPSILON)
        if t < self.next_tick:
            if due_to_pending:
                node_link(&self.pending, n)
                return
            t = self.next_tick
        node_link(&self.slots[t % WHEEL_SLOTS], n)

    cdef void arm(self, TimerNode *n, double deadline) noexcept nogil:
        if n.next != NULL:
            if deadline >= n.deadline:
                n.deadline = deadline       # later: found at the old slot and moved on then
                return
            node_unlink(n)
            self.armed -= 1
        n.deadline = deadline
        if deadline > 0:
            self.place(n, 1)
            self.armed += 1

    cdef void cancel(self, TimerNode *n) noexcept nogil:
        if n.next != NULL:
            node_unlink(n)
            self.armed -= 1
        n.deadline = 0

    cdef TimerNode *pop_expired(self, double now) noexcept nogil:
        cdef TimerNode *n
        cdef TimerNode *head
        cdef long long now_tick = <long long>(now / self.tick + TICK_EPSILON)
        while True:
            while self.pending.next != &self.pending:
                n = self.pending.next
                node_unlink(n)
                if n.deadline <= now:
                    self.armed -= 1
                    n.deadline = 0
                    return n
                self.place(n, 0)            # its deadline moved later: to its own slot
            if self.next_tick > now_tick:
                return NULL
            head = &self.slots[self.next_tick % WHEEL_SLOTS]
            if head.next != head:           # detach the whole slot into `pending`
                self.pending.next = head.next
                self.pending.prev = head.prev
                head.next.prev = &self.pending
                head.prev.next = &self.pending
                list_init(head)
            self.next_tick += 1

    @property
    def armed_count(self):
        return self.armed


cdef class WheelProbe:
    """Test surface: n timer nodes (named by their index) on a real wheel."""
    cdef TimerWheel wheel
    cdef TimerNode *nodes
    cdef int n

    def __cinit__(self, int n, double tick=0.1, double now=0.0):
        self.wheel = TimerWheel(tick, now)
        self.nodes = <TimerNode *>calloc(max(1, n), sizeof(TimerNode))
        if self.nodes == NULL:
            raise MemoryError()
        self.n = n

    def __dealloc__(self):
        free(self.nodes)

    def arm(self, int i, double deadline):
        self.wheel.arm(&self.nodes[i], deadline)

    def cancel(self, int i):
        self.wheel.cancel(&self.nodes[i])

    def deadline(self, int i):
        return self.nodes[i].deadline

    def expire(self, double now, on_fire=None):
        """Indexes of the nodes that fire at `now`, in order; on_fire(i) may arm or cancel others."""
        cdef TimerNode *node
        fired = []
        while True:
            node = self.wheel.pop_expired(now)
            if node == NULL:
                return fired
            i = node - self.nodes
            fired.append(i)
            if on_fire is not None:
                on_fire(i)

    @property
    def armed(self):
        return self.wheel.armed
