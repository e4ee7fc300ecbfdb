# Per-worker counters: their layout, and the inline functions the core counts with (one call per event).
#
# Rules:
# - Every field is an int64_t of the worker's own row of the shared table (_shm.pxd places the blocks),
#   written only by the worker that owns the row: a relaxed load and a relaxed store, no read-modify-write
#   (nobody else writes it), so counting costs no lock, no fence and no system call. Any process reads the
#   rows with relaxed loads and adds them up (fastproxy/counters.py).
# - Gauges come first in WorkerCounters (N_GAUGES of them). When a row is released (its worker died or
#   exited) the monotonic counters after them are folded into the table's retired totals, so a sum never
#   goes backwards; the gauges are dropped with the row (what a dead worker held open is closed).
# - ErrorKind is the one place the failure taxonomy is named (HAProxy's sides: client, local, server);
#   _counters.pyx has the name table readers use. Only server-side kinds are the backend's fault.
# - A change here changes the table's layout: bump LAYOUT_VERSION in _shm.pxd.

from libc.stdint cimport int64_t

from fastproxy._sys cimport ATOMIC_RELAXED, atomic_load_i64, atomic_store_i64

cdef enum:
    N_CLASSES = 5           # responses by status class: [0] 1xx .. [4] 5xx
    N_BUCKETS = 14          # latency histogram: 1 2 5 10 25 50 100 250 500 ms, 1 2.5 5 10 s, +Inf
    N_GAUGES = 6            # the first fields of WorkerCounters, not folded on release

cdef enum ErrorKind:
    ERR_CLIENT_ABORT = 0    # client: closed or reset the connection mid-exchange, or stopped mid-request
    ERR_CLIENT_TIMEOUT      # client: too slow to send its request or to read the response
    ERR_BAD_REQUEST         # client: invalid request (400, 413, 431, bad chunked body)
    ERR_LOCAL_RESOURCE      # local: out of descriptors or memory (accept, socket, buffers)
    ERR_SERVER_CONNECT      # server: connect refused, failed or timed out
    ERR_SERVER_RESET        # server: closed or reset before the response was complete
    ERR_SERVER_TIMEOUT      # server: no response (or no more of it) within upstream_read / upstream_send
    ERR_SERVER_BAD_RESPONSE  # server: unparseable head, broken chunked framing, unasked 101
    N_ERROR_KINDS


cdef struct WorkerCounters:
    # gauges (N_GAUGES): dropped with the row
    int64_t client_open
    int64_t backend_open
    int64_t backend_idle
    int64_t buffers_in_use              # buffer blocks taken from the worker's pool (0 when all is idle)
    int64_t debug_conn_objects          # debug build only (else 0): Client/BackendConn objects alive
    int64_t exchanges_in_use            # Exchanges taken from the worker's pool (0 when all is idle)
    # monotonic: folded into the retired totals when the row is released
    int64_t client_total
    int64_t backend_total
    int64_t requests                    # request heads parsed
    int64_t responses[N_CLASSES]        # response heads sent or decided (proxied, local answers, errors)
    int64_t bytes_in                    # read from clients (tunnels included)
    int64_t bytes_out                   # written to clients (tunnels included)
    int64_t errors[N_ERROR_KINDS]
    int64_t latency[N_BUCKETS]          # per bucket, not cumulative (the reader cumulates, Prometheus-style)
    int64_t latency_sum_us
    int64_t latency_count


# one per route slot, per row (the route slot of a config route: _shm assign())
cdef struct RouteCounters:
    int64_t requests                    # requests routed here
    int64_t responses[N_CLASSES]
    int64_t bytes_out


# one per server slot, per row (next to the row's active/requests/errors arrays)
cdef struct ServerCounters:
    int64_t responses[N_CLASSES]
    int64_t bytes_out


# --- the core's calls ---------------------------------------------------------------------------------
# Route and server counters may be NULL (a request not routed yet, a response no server gave).

cdef inline void bump(int64_t *p, int64_t v) noexcept nogil:
    """Add v to a counter only this process writes: relaxed load and store, no locked instruction."""
    atomic_store_i64(p, atomic_load_i64(p, ATOMIC_RELAXED) + v, ATOMIC_RELAXED)


cdef inline void gauge_add(int64_t *g, int64_t v) noexcept nogil:
    bump(g, v)


cdef inline int status_class(int status) noexcept nogil:
    cdef int c = status // 100 - 1
    return 0 if c < 0 else (N_CLASSES - 1 if c >= N_CLASSES else c)


cdef inline int latency_bucket(int64_t us) noexcept nogil:
    """The histogram bucket of a latency in microseconds (LATENCY_BOUNDS in _counters.pyx)."""
    if us <= 100000:
        if us <= 1000:
            return 0
        if us <= 2000:
            return 1
        if us <= 5000:
            return 2
        if us <= 10000:
            return 3
        if us <= 25000:
            return 4
        return 5 if us <= 50000 else 6
    if us <= 250000:
        return 7
    if us <= 500000:
        return 8
    if us <= 1000000:
        return 9
    if us <= 2500000:
        return 10
    if us <= 5000000:
        return 11
    return 12 if us <= 10000000 else 13


cdef inline void count_client_open(WorkerCounters *w) noexcept nogil:
    bump(&w.client_open, 1)
    bump(&w.client_total, 1)


cdef inline void count_client_close(WorkerCounters *w) noexcept nogil:
    bump(&w.client_open, -1)


cdef inline void count_backend_open(WorkerCounters *w) noexcept nogil:
    bump(&w.backend_open, 1)
    bump(&w.backend_total, 1)


cdef inline void count_backend_close(WorkerCounters *w) noexcept nogil:
    bump(&w.backend_open, -1)


cdef inline void count_request(WorkerCounters *w) noexcept nogil:
    bump(&w.requests, 1)


cdef inline void count_routed(RouteCounters *r) noexcept nogil:
    if r != NULL:
        bump(&r.requests, 1)


cdef inline void count_response(WorkerCounters *w, RouteCounters *r, ServerCounters *s,
                                int status) noexcept nogil:
    cdef int c = status_class(status)
    bump(&w.responses[c], 1)
    if r != NULL:
        bump(&r.responses[c], 1)
    if s != NULL:
        bump(&s.responses[c], 1)


cdef inline void count_bytes_in(WorkerCounters *w, int64_t n) noexcept nogil:
    bump(&w.bytes_in, n)


cdef inline void count_bytes_out(WorkerCounters *w, RouteCounters *r, ServerCounters *s,
                                 int64_t n) noexcept nogil:
    bump(&w.bytes_out, n)
    if r != NULL:
        bump(&r.bytes_out, n)
    if s != NULL:
        bump(&s.bytes_out, n)


cdef inline void count_error(WorkerCounters *w, int kind) noexcept nogil:
    if 0 <= kind < N_ERROR_KINDS:
        bump(&w.errors[kind], 1)


cdef inline void count_latency(WorkerCounters *w, double seconds) noexcept nogil:
    cdef int64_t us = <int64_t>(seconds * 1e6 + 0.5) if seconds > 0 else 0
    bump(&w.latency[latency_bucket(us)], 1)
    bump(&w.latency_sum_us, us)
    bump(&w.latency_count, 1)
