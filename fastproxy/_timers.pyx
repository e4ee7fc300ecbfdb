# cython: language_level=3
"""The timer wheel (rules in _timers.pxd)."""

from libc.math cimport ceil


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
        self.next_tick = <long long>(now / tick)
        for i in range(WHEEL_SLOTS):
            list_init(&self.slots[i])
        list_init(&self.pending)

    cdef void place(self, TimerNode *n) noexcept nogil:
        cdef long long t = <long long>ceil(n.deadline / self.tick)
        if t < self.next_tick:
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
            self.place(n)
            self.armed += 1

    cdef void cancel(self, TimerNode *n) noexcept nogil:
        if n.next != NULL:
            node_unlink(n)
            self.armed -= 1
        n.deadline = 0

    cdef TimerNode *pop_expired(self, double now) noexcept nogil:
        cdef TimerNode *n
        cdef TimerNode *head
        cdef long long now_tick = <long long>(now / self.tick)
        while True:
            while self.pending.next != &self.pending:
                n = self.pending.next
                node_unlink(n)
                if n.deadline <= now:
                    self.armed -= 1
                    n.deadline = 0
                    return n
                self.place(n)               # its deadline moved later: to its own slot
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
