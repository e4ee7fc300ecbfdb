# The shared-memory backend table: its layout and the inline atomics every process uses on it.
#
# Only _shm.pyx creates, sizes and assigns the table; other modules read and write fields through the
# inline helpers below. Every field written by more than one process is written with __atomic_*.
# A layout change bumps LAYOUT_VERSION (a table with another version is recreated, not attached).
#
# Layout of the mapping (all offsets in the header, every field an int64_t so one set of atomics fits all):
#   ShmHeader | GroupSlot[n_groups] | ServerSlot[n_slots] | RouteSlot[n_routes] | rows[n_rows]
#   a row = RowHeader + WorkerCounters + RouteCounters[n_routes]                      (at row_slots_off:)
#           + int64_t active[n_slots] + int64_t requests[n_slots] + int64_t errors[n_slots]
#           + ServerCounters[n_slots]
# The counter blocks are _counters.pxd's; a row is written only by its worker, except active (see
# release_row). Times are CLOCK_MONOTONIC milliseconds (the same clock in every process of the machine).

from libc.stdint cimport int64_t, uint64_t

from fastproxy._counters cimport RouteCounters, ServerCounters, WorkerCounters
from fastproxy._sys cimport (ATOMIC_ACQUIRE, ATOMIC_RELAXED, ATOMIC_RELEASE, ATOMIC_SEQ_CST,
                             atomic_add_fetch_i64, atomic_cas_i64, atomic_load_i64, atomic_store_i64)

cdef enum:
    LAYOUT_VERSION = 4
    ADDR_CAP = 80           # address text as written in the config ("host:port"), NUL padded
    ROUTE_KEY_CAP = 1288    # a route's host and path as written in the config ("*" "/api/" -> "*/api/")
    NAME_CAP = 64           # upstream name
    RELEASED_CAP = 256      # GroupSlot.released ring (recent releases, for least_conn/least_time heaps)

# ServerSlot.admin: set by the operator (fastproxy drain|enable|disable), kept across reloads
cdef enum:
    ADMIN_ENABLED = 0
    ADMIN_DRAINING = 1      # no new sessions; sticky clients and in-flight requests go on
    ADMIN_DISABLED = 2      # nothing new at all

# ServerSlot.health: written by the health checker only
cdef enum:
    HEALTH_UP = 0
    HEALTH_DOWN = 1


cdef struct ShmHeader:
    uint64_t magic
    int64_t layout_version
    int64_t generation          # bumped by every assign() (start, reload)
    int64_t n_groups
    int64_t n_slots
    int64_t n_rows
    int64_t groups_off          # byte offsets from the start of the mapping
    int64_t slots_off
    int64_t rows_off
    int64_t row_size            # bytes per row
    int64_t total_size
    int64_t master_pid
    uint64_t secret[2]          # key of the sticky cookie values (random at creation)
    int64_t n_routes            # route slots
    int64_t routes_off
    int64_t row_slots_off       # byte offset of a row's active[] array from the row's start
    # counters of released rows (see release_row), so sums never go backwards; a reader retries while a
    # fold is under way (fold_busy > 0) or one ended while it read (fold_seq moved)
    int64_t fold_busy
    int64_t fold_seq
    WorkerCounters retired


cdef struct GroupSlot:
    int64_t generation          # 0 = free, else the generation that assigned it
    int64_t rr                  # shared round-robin position (atomic fetch-add)
    int64_t version             # bumped when a runtime weight of one of its servers changes
    int64_t active              # in-flight requests over all its servers (hash bounded load)
    int64_t name_len
    char name[NAME_CAP]
    # releases on big least_conn/least_time pools, so every worker's heap sees other workers' releases:
    # entry released_head (fetch-add) goes to released[head % RELEASED_CAP] as
    # (head & 0xffffffff) << 32 | row << 20 | slot; a reader more than RELEASED_CAP behind re-reads all
    int64_t released_head
    int64_t released[RELEASED_CAP]


cdef struct ServerSlot:
    int64_t generation          # 0 = free, else the generation that (re)assigned it to this server
    int64_t group               # GroupSlot index
    int64_t admin               # ADMIN_*
    int64_t health              # HEALTH_*
    int64_t weight              # as configured
    int64_t runtime_weight      # as used (fastproxy weight changes it)
    int64_t backup
    int64_t max_conns           # 0 = unlimited; global across workers
    int64_t slow_start_ms       # 0 = none
    int64_t active              # in-flight requests, all workers (each worker's share is in its row too)
    int64_t fails               # failures in a row (any outcome but OK resets it)
    int64_t fail_window_ms      # passive: start of the current fail_timeout window
    int64_t fail_count          # passive: failures in that window
    int64_t down_until_ms       # passive: down until then (0 = not passively down); then one trial decides
    int64_t trial_since_ms      # passive: the half-open trial request in flight since (0 = none)
    int64_t last_change_ms      # last up/down/admin change
    int64_t ewma_us             # response time EWMA, microseconds
    int64_t slow_start_since_ms  # when it last came (back) up: weight ramps from there over slow_start_ms
    int64_t checks              # health probes done (for the CLI / status)
    int64_t retired_requests    # requests, errors, counters of released rows (while this server has the slot)
    int64_t retired_errors
    ServerCounters retired
    int64_t address_len
    char address[ADDR_CAP]


cdef struct RouteSlot:
    int64_t generation          # 0 = free, else the generation that assigned it to this route
    RouteCounters retired       # counters of released rows
    int64_t key_len
    char key[ROUTE_KEY_CAP]


cdef struct RowHeader:
    int64_t pid                 # 0 = free; a worker claims a row with CAS(0 -> pid)
    int64_t heartbeat_ms
    int64_t generation          # config generation the worker runs
    int64_t reserved


# --- atomics ----------------------------------------------------------------------------------------

cdef inline int64_t ld(const int64_t *p) noexcept nogil:
    return atomic_load_i64(p, ATOMIC_ACQUIRE)

cdef inline int64_t ld_relaxed(const int64_t *p) noexcept nogil:
    return atomic_load_i64(p, ATOMIC_RELAXED)

cdef inline void st(int64_t *p, int64_t v) noexcept nogil:
    atomic_store_i64(p, v, ATOMIC_RELEASE)

cdef inline int64_t add(int64_t *p, int64_t v) noexcept nogil:
    """Atomically add v; returns the new value."""
    return atomic_add_fetch_i64(p, v, ATOMIC_SEQ_CST)

cdef inline bint cas(int64_t *p, int64_t expected, int64_t desired) noexcept nogil:
    return atomic_cas_i64(p, &expected, desired, 0, ATOMIC_SEQ_CST, ATOMIC_RELAXED)


# --- addressing -------------------------------------------------------------------------------------

cdef inline GroupSlot *shm_group(ShmHeader *h, Py_ssize_t i) noexcept nogil:
    return <GroupSlot *>(<char *>h + h.groups_off + i * sizeof(GroupSlot))

cdef inline ServerSlot *shm_slot(ShmHeader *h, Py_ssize_t i) noexcept nogil:
    return <ServerSlot *>(<char *>h + h.slots_off + i * sizeof(ServerSlot))

cdef inline RowHeader *shm_row(ShmHeader *h, Py_ssize_t r) noexcept nogil:
    return <RowHeader *>(<char *>h + h.rows_off + r * h.row_size)

cdef inline RouteSlot *shm_route(ShmHeader *h, Py_ssize_t i) noexcept nogil:
    return <RouteSlot *>(<char *>h + h.routes_off + i * sizeof(RouteSlot))

cdef inline WorkerCounters *row_counters(ShmHeader *h, Py_ssize_t r) noexcept nogil:
    return <WorkerCounters *>(<char *>shm_row(h, r) + sizeof(RowHeader))

cdef inline RouteCounters *row_route(ShmHeader *h, Py_ssize_t r, Py_ssize_t route_slot) noexcept nogil:
    return <RouteCounters *>(<char *>row_counters(h, r) + sizeof(WorkerCounters)) + route_slot

cdef inline int64_t *row_active(ShmHeader *h, Py_ssize_t r) noexcept nogil:
    return <int64_t *>(<char *>shm_row(h, r) + h.row_slots_off)

cdef inline ServerCounters *row_server(ShmHeader *h, Py_ssize_t r, Py_ssize_t slot) noexcept nogil:
    return <ServerCounters *>(row_active(h, r) + 3 * h.n_slots) + slot

cdef inline int64_t *row_requests(ShmHeader *h, Py_ssize_t r) noexcept nogil:
    return row_active(h, r) + h.n_slots

cdef inline int64_t *row_errors(ShmHeader *h, Py_ssize_t r) noexcept nogil:
    return row_active(h, r) + 2 * h.n_slots


cdef class ShmTable:
    cdef ShmHeader *h           # the mapping; NULL once closed
    cdef readonly object path   # /dev/shm/... file, or None for an anonymous mapping
    cdef int64_t size

    cdef ShmHeader *hdr(self) except NULL
    cdef bint _check(self, ShmHeader *h, int64_t size, int n_groups, int n_slots, int n_rows, int n_routes)
    cdef int _free_slot(self)
    cdef int _find_route(self, const char *key, Py_ssize_t n) noexcept
    cdef void _fold_row(self, int r) noexcept
    cdef int find_group(self, const char *name, Py_ssize_t n) noexcept
    cdef int find_slot(self, int group, const char *address, Py_ssize_t n) noexcept
