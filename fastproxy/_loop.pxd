# The event loop: one epoll set per worker, listeners, connections, timers.
#
# Rules of this module:
# - The loop's interface is narrow on purpose: register a connection, arm its timer, close it; the loop
#   waits, then dispatches readiness (on_event), expiries (on_timeout) and new clients (on_accept) to the
#   subclass that runs the protocol. A completion-based backend (io_uring) would replace wait/dispatch
#   here without touching the state machines.
# - Edge-triggered: a connection's socket is registered once (IN | OUT | RDHUP) and never modified; its
#   Transport remembers the readiness edges.
# - Listeners are level-triggered. Accepting stops (listeners out of the epoll set) while the worker is at
#   max_connections, or holds as many connections as its open-files limit allows less a reserve (kept for
#   the backend connections its clients will need), or is out of descriptors anyway (EMFILE/ENFILE: then
#   retried after ACCEPT_BACKOFF); it resumes as soon as a connection closes: no spinning on a listener
#   we cannot serve.
# - A closed connection stays referenced until the end of the batch of events it was closed in, so a
#   later event of the same batch still finds a live object (marked closed).

from libc.stdint cimport uint64_t

from fastproxy._buffers cimport BufferPool
from fastproxy._sys cimport sockaddr_storage
from fastproxy._timers cimport TimerNode, TimerWheel
from fastproxy._transport cimport ListenerSettings, Transport

cdef enum:
    MAX_EVENTS = 512
    TICK_MS = 100               # the timer wheel's tick, and how often on_tick() runs
    MAX_LISTENERS = 64

# why on_limit() was called
cdef enum:
    LIMIT_CONNECTIONS = 1       # max_clients reached: accepting pauses until a client closes
    LIMIT_DESCRIPTORS = 2       # EMFILE/ENFILE (or no memory): accepting backs off
    LIMIT_FD_BUDGET = 3         # open connections at the open-files limit less a reserve: accepting pauses


cdef class Conn:
    cdef Transport tp
    cdef TimerNode timer
    cdef bint closed


cdef class Loop:
    cdef int epfd
    cdef double now
    cdef bint stopping
    cdef TimerWheel timers
    cdef BufferPool buffers
    cdef ListenerSettings listeners[MAX_LISTENERS]
    cdef int n_listeners
    cdef bint accepting             # listeners are in the epoll set
    cdef double accept_retry_at     # after EMFILE/ENFILE: when to try again (0: not backing off)
    cdef bint accept_closed         # draining: listeners closed for good
    cdef long long max_clients      # 0 = no limit
    cdef long long fd_budget        # connections (clients + backends) this worker may hold; 0 = no limit
    cdef long long n_clients        # client connections open
    cdef long long n_conns          # all connections open (clients and backends)
    cdef long long accept_pauses    # times accepting stopped at the limit or out of descriptors
    cdef list graveyard             # closed this batch
    cdef dict live                  # fd -> Conn, for close_all at exit

    cdef bint register(self, Conn c) except -1
    cdef void forget(self, Conn c) noexcept
    cdef inline void arm(self, Conn c, double deadline) noexcept:
        self.timers.arm(&c.timer, deadline)
    cdef inline void disarm(self, Conn c) noexcept:
        self.timers.cancel(&c.timer)
    cdef void client_closed(self) noexcept
    cdef void pause_accepting(self, double retry_at) noexcept
    cdef void resume_accepting(self) noexcept
    cdef void close_listeners(self) noexcept
    cdef void accept_clients(self, ListenerSettings *ls)
    cdef void run_loop(self, int wakeup_fd)
    cdef void expire_timers(self)

    # implemented by the protocol
    cdef void on_accept(self, int fd, sockaddr_storage *addr, const ListenerSettings *ls)
    cdef void on_event(self, Conn c, unsigned int events)
    cdef void on_timeout(self, Conn c)
    cdef void on_tick(self)
    cdef void on_limit(self, int reason)
