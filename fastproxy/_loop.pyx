# cython: language_level=3
"""The event loop (rules in _loop.pxd)."""

from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EINTR, EMFILE, ENFILE, ENOBUFS, ENOMEM, errno
from libc.stdint cimport uint64_t
from posix.unistd cimport close, read

from fastproxy._sys cimport (EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_DEL, EPOLLET, EPOLLIN, EPOLLOUT,
                             EPOLLRDHUP, IPPROTO_TCP, SOCK_CLOEXEC, SOCK_NONBLOCK, TCP_DEFER_ACCEPT,
                             accept4, epoll_create1, epoll_ctl, epoll_event, epoll_wait, setsockopt,
                             sockaddr, socklen_t)
from fastproxy._timers cimport TimerNode, TimerWheel
from fastproxy._transport cimport tp_note_events

from fastproxy._clock cimport monotonic
from fastproxy._debug cimport DEBUG

cdef enum:
    TAG_WAKEUP = 2              # epoll data: odd = listener ((index << 1) | 1), 2 = signal pipe, else a Conn
    ACCEPT_BATCH = 64

cdef double ACCEPT_BACKOFF = 0.1   # out of descriptors: try accepting again after this


cdef long long live_conn_objects = 0      # debug build: Client and BackendConn objects alive


def debug_live_conns():
    return live_conn_objects


cdef class Conn:
    def __cinit__(self):
        global live_conn_objects
        if DEBUG:
            live_conn_objects += 1

    def __dealloc__(self):
        global live_conn_objects
        if DEBUG:
            live_conn_objects -= 1


cdef class Loop:
    def __cinit__(self):
        self.epfd = -1
        self.graveyard = []
        self.live = {}

    def __dealloc__(self):
        if self.epfd >= 0:
            close(self.epfd)

    cdef bint register(self, Conn c) except -1:
        """Add a connection's socket to the epoll set (edge-triggered, every event once)."""
        cdef epoll_event ev
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET
        ev.data.ptr = <void *>c
        c.timer.owner = <void *>c
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, c.tp.fd, &ev) < 0:
            return 0
        self.live[c.tp.fd] = c
        self.n_conns += 1
        return 1

    cdef void forget(self, Conn c) noexcept:
        """The connection is closed: drop its timer and our reference (at the end of this batch)."""
        self.timers.cancel(&c.timer)
        c.closed = 1
        self.graveyard.append(c)
        del self.live[c.tp.fd]
        self.n_conns -= 1
        if not self.accepting and not self.accept_closed and self.accept_retry_at == 0:
            self.resume_accepting()     # a descriptor came free (a client's or a backend's)

    cdef void client_closed(self) noexcept:
        self.n_clients -= 1
        if not self.accepting and not self.accept_closed and self.accept_retry_at == 0:
            self.resume_accepting()
        elif self.accept_retry_at > 0:
            self.accept_retry_at = self.now        # a descriptor came free: try at the next tick

    # --- accepting --------------------------------------------------------------------------------

    cdef void pause_accepting(self, double retry_at) noexcept:
        cdef int i
        if self.accepting:
            for i in range(self.n_listeners):
                epoll_ctl(self.epfd, EPOLL_CTL_DEL, self.listeners[i].fd, NULL)
            self.accepting = 0
            self.accept_pauses += 1
        self.accept_retry_at = retry_at

    cdef void resume_accepting(self) noexcept:
        cdef epoll_event ev
        cdef int i
        self.accept_retry_at = 0
        if self.accepting or self.accept_closed:
            return
        if self.max_clients and self.n_clients >= self.max_clients:
            return
        if self.fd_budget and self.n_conns >= self.fd_budget:
            return
        for i in range(self.n_listeners):
            ev.events = EPOLLIN
            ev.data.u64 = ((<uint64_t>i) << 1) | 1
            epoll_ctl(self.epfd, EPOLL_CTL_ADD, self.listeners[i].fd, &ev)
        self.accepting = 1

    cdef void close_listeners(self) noexcept:
        """Draining: close our copies of the listening sockets. The master (and the next generation's
        workers) keep the sockets open, so nothing queued in them is lost."""
        cdef int i
        self.pause_accepting(0)
        self.accept_closed = 1
        for i in range(self.n_listeners):
            close(self.listeners[i].fd)
            self.listeners[i].fd = -1

    cdef void accept_clients(self, ListenerSettings *ls):
        cdef sockaddr_storage addr
        cdef socklen_t alen
        cdef int fd, _
        for _ in range(ACCEPT_BATCH):
            if self.max_clients and self.n_clients >= self.max_clients:
                self.pause_accepting(0)
                self.on_limit(LIMIT_CONNECTIONS)
                return
            if self.fd_budget and self.n_conns >= self.fd_budget:
                self.pause_accepting(0)
                self.on_limit(LIMIT_FD_BUDGET)
                return
            alen = sizeof(addr)
            fd = accept4(ls.fd, <sockaddr *>&addr, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if fd < 0:
                if errno == EINTR:
                    continue
                if errno == EMFILE or errno == ENFILE or errno == ENOBUFS or errno == ENOMEM:
                    # The connection waits in the queue; a level-triggered listener would wake us at once
                    # again: stop polling it until a descriptor frees up or the back-off ends.
                    self.pause_accepting(self.now + ACCEPT_BACKOFF)
                    self.on_limit(LIMIT_DESCRIPTORS)
                return
            self.n_clients += 1
            self.on_accept(fd, &addr, ls)

    # --- the loop ---------------------------------------------------------------------------------

    cdef void run_loop(self, int wakeup_fd):
        cdef epoll_event events[MAX_EVENTS]
        cdef int n, i, defer_seconds = 1
        cdef uint64_t tag
        cdef double next_tick
        cdef char drain[256]
        cdef Conn c
        cdef epoll_event ev
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1")
        self.now = monotonic()
        self.timers = TimerWheel(TICK_MS / 1000.0, self.now)
        if wakeup_fd >= 0:
            ev.events = EPOLLIN
            ev.data.u64 = TAG_WAKEUP
            epoll_ctl(self.epfd, EPOLL_CTL_ADD, wakeup_fd, &ev)
        if not self.accept_closed:
            for i in range(self.n_listeners):
                # Accept only once the request has come: the first read then finds it (one call fewer).
                setsockopt(self.listeners[i].fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_seconds,
                           sizeof(defer_seconds))
            self.resume_accepting()
        next_tick = self.now + TICK_MS / 1000.0
        while not self.stopping:
            n = epoll_wait(self.epfd, events, MAX_EVENTS, TICK_MS)
            self.now = monotonic()
            if n < 0:
                if errno == EINTR:
                    PyErr_CheckSignals()
                    continue
                raise OSError(errno, "epoll_wait")
            for i in range(n):
                tag = events[i].data.u64
                if tag & 1:
                    if self.accepting:
                        self.accept_clients(&self.listeners[tag >> 1])
                elif tag == TAG_WAKEUP:
                    while read(wakeup_fd, drain, sizeof(drain)) > 0:
                        pass
                    PyErr_CheckSignals()      # runs the Python signal handlers: they call stop()
                else:
                    c = <Conn><void *>events[i].data.ptr
                    if not c.closed:
                        tp_note_events(&c.tp, events[i].events)
                        self.on_event(c, events[i].events)
                if self.stopping:
                    break
            c = None                          # no reference kept to the batch's last connection
            if self.graveyard:
                self.graveyard = []
            if self.now >= next_tick:
                next_tick = self.now + TICK_MS / 1000.0
                self.expire_timers()
                if self.accept_retry_at > 0 and self.now >= self.accept_retry_at:
                    self.resume_accepting()
                self.on_tick()
                if self.graveyard:
                    self.graveyard = []

    cdef void expire_timers(self):
        cdef TimerNode *node
        cdef Conn c
        while True:
            node = self.timers.pop_expired(self.now)
            if node == NULL:
                return
            c = <Conn>node.owner
            if not c.closed:
                self.on_timeout(c)

    # --- the protocol's part --------------------------------------------------------------------------

    cdef void on_accept(self, int fd, sockaddr_storage *addr, const ListenerSettings *ls):
        close(fd)

    cdef void on_event(self, Conn c, unsigned int events):
        pass

    cdef void on_timeout(self, Conn c):
        pass

    cdef void on_tick(self):
        pass

    cdef void on_limit(self, int reason):
        pass
