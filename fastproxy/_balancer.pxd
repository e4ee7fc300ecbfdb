# The balancer: one ops table (pick / release) over the shared-memory table, one instance per worker.
#
# Server indexes are the core's own: servers numbered 0..N-1 in config order (config.upstreams order,
# then each upstream's servers order); `group` is the upstream's index in config.upstreams order. The balancer
# maps them to shm slots itself.
#
# The core's side of the contract:
#   b = Balancer(config, shm, worker_id)   once per worker, after fork
#                                          (shm = fastproxy._shm.table_for(config))
#   srv = b.pick(group, key, tried, n_tried, now)
#       >= 0  a server; its active count is taken (call release() exactly once for it)
#       -1    nothing available (all down, disabled, draining, or tried)  -> 502 / 503
#       -2    candidates exist but every one is at max_conns -> queue the request (max_queue(),
#             queue_timeout())
#             and call pick() again when a release() happens or the deadline passes (then 503)
#   b.release(srv, outcome, response_seconds, now)   once per successful pick, when the exchange ends
#   sticky_slot() acquires like pick() (returns -2 when full); call it only on a request's first attempt.
#   may_retry(group, now) before every retry (the retry budget); tick(now) about every 100 ms (heartbeat).

from libc.stdint cimport int64_t, uint64_t

from fastproxy._shm cimport ServerSlot, ShmHeader, ShmTable

cdef enum:
    PICK_NONE = -1
    PICK_FULL = -2

cdef enum:
    OUTCOME_OK = 0
    OUTCOME_CONNECT_FAIL = 1    # connect refused / failed / timed out
    OUTCOME_RESET = 2           # reset or closed before a complete response
    OUTCOME_TIMEOUT = 3         # read/send timeout
    OUTCOME_HTTP_5XX = 4        # a 5xx response (counts as a failure only with passive.http_5xx = true)
    OUTCOME_ABORTED = 5         # ended without a verdict on the server (client went away, stale pool conn)

cdef enum:
    KEY_NONE = 0
    KEY_CLIENT_IP = 1
    KEY_URI = 2
    KEY_HEADER = 3
    KEY_COOKIE = 4

cdef enum:
    STICKY_NONE = 0
    STICKY_COOKIE = 1
    STICKY_HASH = 2

cdef enum:
    ALG_ROUND_ROBIN = 0
    ALG_LEAST_CONN = 1
    ALG_P2C = 2
    ALG_HASH = 3
    ALG_LEAST_TIME = 4


cdef struct BServer:
    int group
    int slot                    # shm slot
    int64_t generation          # the slot's generation when this worker bound it (changed = reassigned)
    bint backup
    uint64_t sticky_id          # keyed hash: the sticky cookie value
    char sticky_hex[17]
    Py_ssize_t address_len
    char *address               # as in the config (owned by the Balancer)


cdef struct BGroup:
    int first                   # first server index
    int n
    int alg
    int key_kind
    char key_name[256]
    Py_ssize_t key_name_len
    int sticky_kind
    char cookie_name[256]
    Py_ssize_t cookie_name_len
    char cookie_attrs[128]      # "; Path=/; HttpOnly; SameSite=Lax[; Secure][; Max-Age=N]"
    Py_ssize_t cookie_attrs_len
    int64_t drain_ms            # a draining server keeps its sticky clients this long
    int tries
    double budget
    double queue_timeout
    int max_queue
    double load_factor          # hash bounded load; 0 = off
    int max_fails               # passive; 0 = off
    int64_t fail_timeout_ms
    bint count_5xx
    int shm_group
    int64_t version             # GroupSlot.version the tables below were built for
    int *schedule               # smooth weighted RR order of the primaries (then of the backups)
    int sched_len
    int *bsched
    int bsched_len
    uint64_t *ring_keys         # ketama ring (hash), sorted
    int *ring_srv
    int ring_len
    int *bring_srv              # ring of the backups
    uint64_t *bring_keys
    int bring_len
    int64_t local_rr
    double tokens               # retry budget
    double tokens_at
    # least_conn / least_time on pools of more than SCAN_MAX primaries (see pick_heap in _balancer.pyx):
    # this worker's min-heap of the primaries (local indexes) by (hkey, hvt)
    int *heap
    int *hpos                   # local index -> position in heap
    double *hkey                # load score as last seen (exact for this worker's own picks/releases)
    double *hvt                 # virtual time: advances 1/weight per pick, breaks ties (weighted rotation)
    int heap_len
    int64_t heap_at_ms          # last full refresh of hkey from the table (-1 = refresh at next pick)
    double vclock               # hvt of the last pick: where a server coming back in starts
    int64_t rel_seen            # GroupSlot.released_head up to which releases were applied


cdef class Balancer:
    cdef ShmTable shm
    cdef ShmHeader *h
    cdef int row                # this worker's row in the table
    cdef int64_t *r_active
    cdef int64_t *r_requests
    cdef int64_t *r_errors
    cdef BServer *servers
    cdef int n_servers
    cdef BGroup *groups
    cdef int n_groups
    cdef uint64_t rng
    cdef char *excluded         # scratch: servers a scored pick already failed to acquire
    cdef int *slot_server       # shm slot -> server index (-1: none of ours)
    cdef int n_slot_server

    cdef int pick(self, int group, uint64_t key, const int *tried, int n_tried, double now) noexcept
    cdef void release(self, int server, int outcome, double response_seconds, double now) noexcept
    cdef int sticky_slot(self, int group, const char *cookie_value, Py_ssize_t n, double now) noexcept
    cdef Py_ssize_t sticky_cookie(self, int group, int server, char *out, Py_ssize_t cap) noexcept
    cdef int key_kind(self, int group) noexcept
    cdef const char *key_name(self, int group, Py_ssize_t *n) noexcept
    cdef int sticky_kind(self, int group) noexcept
    cdef const char *sticky_cookie_name(self, int group, Py_ssize_t *n) noexcept
    cdef int tries(self, int group) noexcept
    cdef bint may_retry(self, int group, double now) noexcept
    cdef double queue_timeout(self, int group) noexcept
    cdef int max_queue(self, int group) noexcept
    cdef void tick(self, double now) noexcept

    # internals
    cdef int load_group(self, BGroup *g, object up) except -1
    cdef void refresh(self, int group) noexcept
    cdef int64_t weight_of(self, int srv) noexcept
    cdef int *build_schedule(self, BGroup *g, bint backups, int *out_len) noexcept
    cdef void build_ring(self, BGroup *g, bint backups, uint64_t **keys, int **srvs, int *out_len) noexcept
    cdef bint usable(self, int srv, int64_t t, bint for_session) noexcept
    cdef bint is_full(self, int srv) noexcept
    cdef int acquire(self, int srv, int64_t t) noexcept
    cdef double weight_factor(self, int srv, int64_t t) noexcept
    cdef double random(self) noexcept
    cdef double score(self, BGroup *g, int srv, int64_t t) noexcept
    cdef void clear_excluded(self, BGroup *g) noexcept
    cdef int heap_init(self, BGroup *g) except -1
    cdef void heap_refresh(self, BGroup *g, int64_t t) noexcept
    cdef void heap_update(self, BGroup *g, int i, int64_t t) noexcept
    cdef void heap_catch_up(self, BGroup *g, int64_t t) noexcept
    cdef void settle(self, BGroup *g, ServerSlot *s, int outcome, double response_seconds,
                     int64_t t) noexcept
    cdef void heap_set(self, BGroup *g, int i, double key) noexcept
    cdef int pick_heap(self, BGroup *g, int64_t t, bint *full) noexcept
    cdef int pick_in(self, BGroup *g, bint backups, uint64_t key, const int *tried, int n_tried, int64_t t,
                     bint *full) noexcept
    cdef int pick_rr(self, BGroup *g, bint backups, const int *tried, int n_tried, int64_t t,
                     bint *full) noexcept
    cdef int pick_scored(self, BGroup *g, bint backups, const int *tried, int n_tried, int64_t t,
                         bint *full) noexcept
    cdef int pick_p2c(self, BGroup *g, bint backups, const int *tried, int n_tried, int64_t t,
                      bint *full) noexcept
    cdef int pick_hash(self, BGroup *g, bint backups, uint64_t key, const int *tried, int n_tried,
                       int64_t t, bint *full) noexcept
    cdef bint reset_if_all_passively_down(self, BGroup *g, int64_t t) noexcept

cdef uint64_t hash_bytes(const char *p, Py_ssize_t n) noexcept nogil
