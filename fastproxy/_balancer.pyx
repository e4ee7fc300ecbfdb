# cython: language_level=3
"""The balancer: pick(group, key, tried) / release(server, outcome) over the shared-memory table.

Rules:
- One instance per worker; every decision reads the shared table, so all workers see one state: global
  active counts (least_conn, p2c, least_time, max_conns), one round-robin position per upstream, health
  written by the checker, passive failures counted by every worker.
- A server is a candidate for a new request when its slot still has the generation this worker bound
  (not reassigned by a reload), it is enabled (not draining or disabled), the checker says up, and it is
  not passively down. After a passive cool-down exactly one request (a CAS on trial_since) is let
  through; its outcome marks the server up (slow start begins) or down for another cool-down.
- Passive checks protect a pool but never empty it (nginx's rule): the only server of an upstream is never
  taken out by them, and when every server that active checks and the operator allow is passively
  down, their passive state is reset and they are tried again. Active health checks and an operator's
  disable/drain still take servers out for real.
- Backups are candidates only when no primary is (down, disabled, draining or already tried for this
  request); primaries that are merely full make pick() say PICK_FULL instead.
- `tried` excludes servers this request already failed on, so failover is a loop in the caller.
- Weights are the runtime weights from the table; slow start scales a weight by the time since the
  server came back up over slow_start. Tables derived from weights (the round-robin schedule, the hash
  ring) are rebuilt when the upstream's version in the table changes (fastproxy weight, a reload).
- Races between workers only ever cost precision (an EWMA update lost, one request over a soft limit
  avoided by undoing the increment), never a count: counters only change with atomic adds.
"""

import hashlib
import os
import time

from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, qsort
from libc.math cimport ceil
from libc.string cimport memcmp, memcpy, memset

from fastproxy._shm cimport (ADMIN_DISABLED, ADMIN_DRAINING, HEALTH_UP, RELEASED_CAP, ServerSlot, GroupSlot,
                             ShmTable, add,
                             cas, ld, ld_relaxed, row_active, row_errors, row_requests, shm_group, shm_row,
                             shm_slot, st)

cdef int64_t TRIAL_LOST_MS = 30000       # a half-open trial not released by then (its worker died) is retried
cdef int SCHEDULE_CAP = 65536            # round-robin schedule length at most (weights are scaled down)
cdef int RING_POINTS = 100               # ketama points per server of average weight
cdef double RETRY_FLOOR_PER_SEC = 10.0   # retries always allowed at this rate, whatever the budget
cdef double RETRY_TOKENS_CAP = 100.0
cdef double EWMA_ALPHA = 0.25
cdef int SCAN_MAX = 8                    # least_conn / least_time: pools up to this many primaries: a scan
cdef int64_t HEAP_REFRESH_MS = 50        # bigger pools: re-read every server from the table this often
cdef int HEAP_CHECKS = 16                # live re-checks of the heap's top per pick, then the exact scan
cdef double INF = float("inf")
cdef uint64_t SEQ_MASK = 0xffffffff      # the sequence bits of a GroupSlot.released entry

ALGORITHMS = {"round_robin": ALG_ROUND_ROBIN, "least_conn": ALG_LEAST_CONN, "p2c": ALG_P2C,
              "hash": ALG_HASH, "least_time": ALG_LEAST_TIME}
OUTCOMES = {"ok": OUTCOME_OK, "connect_fail": OUTCOME_CONNECT_FAIL, "reset": OUTCOME_RESET,
            "timeout": OUTCOME_TIMEOUT, "http_5xx": OUTCOME_HTTP_5XX, "aborted": OUTCOME_ABORTED}
PICK_NOTHING = PICK_NONE
PICK_ALL_FULL = PICK_FULL


# --- hashing --------------------------------------------------------------------------------------------

cdef inline uint64_t fmix64(uint64_t k) noexcept nogil:
    # MurmurHash3's finaliser: every input bit affects every output bit
    k ^= k >> 33
    k *= <uint64_t>0xff51afd7ed558ccd
    k ^= k >> 33
    k *= <uint64_t>0xc4ceb9fe1a85ec53
    k ^= k >> 33
    return k


cdef uint64_t hash_bytes(const char *p, Py_ssize_t n) noexcept nogil:
    """A fast 64-bit hash of a key (8 bytes per step); not keyed, so only for spreading, never secrets."""
    cdef uint64_t h = <uint64_t>0x9E3779B97F4A7C15 ^ (<uint64_t>n * <uint64_t>0xff51afd7ed558ccd)
    cdef uint64_t k
    cdef Py_ssize_t i = 0
    while i + 8 <= n:
        memcpy(&k, p + i, 8)
        h = (h ^ fmix64(k)) * <uint64_t>0x9E3779B97F4A7C15
        h ^= h >> 29
        i += 8
    if i < n:
        k = 0
        memcpy(&k, p + i, n - i)
        h = (h ^ fmix64(k ^ <uint64_t>(n - i))) * <uint64_t>0x9E3779B97F4A7C15
    return fmix64(h)


def hash_key(data):
    """hash_bytes() from Python (tests, tools): the key the core passes to pick() for these bytes."""
    if isinstance(data, str):
        data = data.encode()
    cdef bytes b = bytes(data)
    return hash_bytes(b, len(b))


cdef struct RingPoint:
    uint64_t key
    int srv


cdef int cmp_points(const void *a, const void *b) noexcept nogil:
    cdef uint64_t x = (<const RingPoint *>a).key, y = (<const RingPoint *>b).key
    return -1 if x < y else (1 if x > y else 0)


cdef inline int64_t to_ms(double now) noexcept nogil:
    return <int64_t>(now * 1000.0)


cdef inline bint in_tried(int srv, const int *tried, int n_tried) noexcept nogil:
    cdef int i
    for i in range(n_tried):
        if tried[i] == srv:
            return 1
    return 0


cdef inline bint hless(BGroup *g, int a, int b) noexcept nogil:
    return g.hkey[a] < g.hkey[b] or (g.hkey[a] == g.hkey[b] and g.hvt[a] < g.hvt[b])


cdef int heap_up(BGroup *g, int pos) noexcept nogil:
    """Move the heap entry at pos up while it is less than its parent; returns where it ends."""
    cdef int i = g.heap[pos], parent
    while pos > 0:
        parent = (pos - 1) >> 1
        if not hless(g, i, g.heap[parent]):
            break
        g.heap[pos] = g.heap[parent]
        g.hpos[g.heap[pos]] = pos
        pos = parent
    g.heap[pos] = i
    g.hpos[i] = pos
    return pos


cdef void heap_down(BGroup *g, int pos) noexcept nogil:
    """Move the heap entry at pos down while a child is less."""
    cdef int i = g.heap[pos], child
    while True:
        child = 2 * pos + 1
        if child >= g.heap_len:
            break
        if child + 1 < g.heap_len and hless(g, g.heap[child + 1], g.heap[child]):
            child += 1
        if not hless(g, g.heap[child], i):
            break
        g.heap[pos] = g.heap[child]
        g.hpos[g.heap[pos]] = pos
        pos = child
    g.heap[pos] = i
    g.hpos[i] = pos


cdef inline int64_t gcd(int64_t a, int64_t b) noexcept nogil:
    while b:
        a, b = b, a % b
    return a


cdef class Balancer:
    """Balancer(config, shm, worker_id=0): the servers of config bound to their slots in shm."""

    def __cinit__(self):
        self.servers = NULL
        self.groups = NULL
        self.excluded = NULL
        self.slot_server = NULL
        self.row = -1

    def __init__(self, config, ShmTable shm not None, int worker_id=0):
        self.shm = shm
        self.h = shm.h
        if self.h == NULL:
            raise ValueError("the shared table is closed")
        names = list(config.upstreams)
        self.n_groups = len(names)
        self.n_servers = sum(len(config.upstreams[n].servers) for n in names)
        self.groups = <BGroup *>calloc(max(1, self.n_groups), sizeof(BGroup))
        self.servers = <BServer *>calloc(max(1, self.n_servers), sizeof(BServer))
        self.excluded = <char *>calloc(max(1, self.n_servers), 1)
        if self.groups == NULL or self.servers == NULL or self.excluded == NULL:
            raise MemoryError()
        self.rng = <uint64_t>hash_key(b"%d-%d-%f" % (os.getpid(), worker_id, time.time())) | 1
        cdef BGroup *g
        cdef BServer *s
        cdef bytes secret = (<char *>self.h.secret)[:16]
        index = 0
        for gi, name in enumerate(names):
            up = config.upstreams[name]
            g = &self.groups[gi]
            g.first = index
            g.n = len(up.servers)
            g.shm_group = shm.group_index(name)
            if g.shm_group < 0:
                raise ValueError(f"upstream {name} is not in the shared table (assign the config first)")
            self.load_group(g, up)
            g.version = -1
            for srv in up.servers:
                s = &self.servers[index]
                s.group = gi
                s.slot = shm.find(name, srv.address)
                if s.slot < 0:
                    raise ValueError(f"server {srv.address} of {name} is not in the shared table")
                s.generation = ld(&shm_slot(self.h, s.slot).generation)
                s.backup = srv.backup
                baddr = srv.address.encode()
                s.address = <char *>malloc(len(baddr) + 1)
                if s.address == NULL:
                    raise MemoryError()
                memcpy(s.address, <char *>baddr, len(baddr) + 1)
                s.address_len = len(baddr)
                # the sticky cookie value: a keyed hash of (upstream, address), opaque to clients
                digest = hashlib.blake2b(f"{name}\0{srv.address}".encode(), key=secret, digest_size=8)
                hexed = digest.hexdigest().encode()
                memcpy(s.sticky_hex, <char *>hexed, 16)
                s.sticky_hex[16] = 0
                s.sticky_id = int(hexed, 16)
                index += 1
        self.n_slot_server = self.h.n_slots
        self.slot_server = <int *>malloc(self.n_slot_server * sizeof(int))
        if self.slot_server == NULL:
            raise MemoryError()
        for i in range(self.n_slot_server):
            self.slot_server[i] = -1
        for i in range(self.n_servers):
            self.slot_server[self.servers[i].slot] = i
        for gi in range(self.n_groups):
            self.heap_init(&self.groups[gi])
            self.refresh(gi)
        self.row = shm.claim_row()
        self.r_active = row_active(self.h, self.row)
        self.r_requests = row_requests(self.h, self.row)
        self.r_errors = row_errors(self.h, self.row)
        st(&shm_row(self.h, self.row).heartbeat_ms, to_ms(time.monotonic()))

    cdef int load_group(self, BGroup *g, object up) except -1:
        g.alg = ALGORITHMS[up.balance]
        key = up.hash_key if up.balance == "hash" else None
        g.sticky_kind = STICKY_NONE
        if up.sticky is not None and up.sticky.cookie:
            g.sticky_kind = STICKY_COOKIE
            name = up.sticky.cookie.encode()[:255]
            memcpy(g.cookie_name, <char *>name, len(name))
            g.cookie_name_len = len(name)
            attrs = "; Path=/; HttpOnly; SameSite=Lax"
            if up.sticky.secure:
                attrs += "; Secure"
            if up.sticky.max_age:
                attrs += f"; Max-Age={int(up.sticky.max_age)}"
            battrs = attrs.encode()
            memcpy(g.cookie_attrs, <char *>battrs, len(battrs))
            g.cookie_attrs_len = len(battrs)
            g.drain_ms = <int64_t>(up.sticky.drain_timeout * 1000)
        elif up.sticky is not None and up.sticky.hash:
            g.sticky_kind = STICKY_HASH
            g.alg = ALG_HASH
            key = up.sticky.hash
        g.key_kind = KEY_NONE
        if key == "client_ip":
            g.key_kind = KEY_CLIENT_IP
        elif key == "uri":
            g.key_kind = KEY_URI
        elif key is not None:
            kind, _, kname = key.partition(":")
            g.key_kind = KEY_HEADER if kind == "header" else KEY_COOKIE
            bname = kname.encode()[:255]
            memcpy(g.key_name, <char *>bname, len(bname))
            g.key_name_len = len(bname)
        g.tries = up.retries.tries
        g.budget = up.retries.budget
        g.queue_timeout = up.queue_timeout
        g.max_queue = up.queue_size
        g.load_factor = up.hash_load_factor
        g.max_fails = up.passive.max_fails
        g.fail_timeout_ms = <int64_t>(up.passive.fail_timeout * 1000)
        g.count_5xx = up.passive.http_5xx
        g.tokens = 10.0
        g.tokens_at = time.monotonic()
        return 0

    def __dealloc__(self):
        cdef int i
        if self.groups != NULL:
            for i in range(self.n_groups):
                free(self.groups[i].schedule)
                free(self.groups[i].bsched)
                free(self.groups[i].ring_keys)
                free(self.groups[i].ring_srv)
                free(self.groups[i].bring_keys)
                free(self.groups[i].bring_srv)
                free(self.groups[i].heap)
                free(self.groups[i].hpos)
                free(self.groups[i].hkey)
                free(self.groups[i].hvt)
            free(self.groups)
        if self.servers != NULL:
            for i in range(self.n_servers):
                free(self.servers[i].address)
            free(self.servers)
        free(self.excluded)
        free(self.slot_server)

    def close(self):
        """Give this worker's row back (in-flight counts included); the balancer is unusable after."""
        if self.row >= 0:
            self.shm.release_row(ld(&shm_row(self.h, self.row).pid))
            self.row = -1

    # --- tables derived from weights ------------------------------------------------------------------

    cdef void refresh(self, int group) noexcept:
        """Rebuild the group's schedule and ring if a weight changed in the table since the last build."""
        cdef BGroup *g = &self.groups[group]
        cdef int64_t version = ld(&shm_group(self.h, g.shm_group).version)
        if version == g.version:
            return
        g.version = version
        g.heap_at_ms = -1                   # weights changed: re-read every key at the next pick
        free(g.schedule)
        free(g.bsched)
        free(g.ring_keys)
        free(g.ring_srv)
        free(g.bring_keys)
        free(g.bring_srv)
        g.schedule = self.build_schedule(g, 0, &g.sched_len)
        g.bsched = self.build_schedule(g, 1, &g.bsched_len)
        self.build_ring(g, 0, &g.ring_keys, &g.ring_srv, &g.ring_len)
        self.build_ring(g, 1, &g.bring_keys, &g.bring_srv, &g.bring_len)

    cdef int64_t weight_of(self, int srv) noexcept:
        return ld_relaxed(&shm_slot(self.h, self.servers[srv].slot).runtime_weight)

    cdef int *build_schedule(self, BGroup *g, bint backups, int *out_len) noexcept:
        """nginx's smooth weighted round robin, run once over a whole period: the order picks follow."""
        cdef int i, j, best, n = 0
        cdef int64_t total = 0, div = 0, w
        cdef int64_t *weights = <int64_t *>calloc(g.n, sizeof(int64_t))
        cdef int64_t *current = <int64_t *>calloc(g.n, sizeof(int64_t))
        cdef int *sched = NULL
        out_len[0] = 0
        if weights == NULL or current == NULL:
            free(weights)
            free(current)
            return NULL
        for i in range(g.n):
            if self.servers[g.first + i].backup == backups:
                w = max(1, self.weight_of(g.first + i))
                weights[i] = w
                total += w
                div = gcd(div, w)
        if total:
            total = 0
            for i in range(g.n):
                if weights[i]:
                    weights[i] //= div
                    total += weights[i]
            if total > SCHEDULE_CAP:       # keep proportions, bound the memory and the build time
                n = 0
                for i in range(g.n):
                    if weights[i]:
                        weights[i] = max(1, weights[i] * SCHEDULE_CAP // total)
                        n += weights[i]
                total = n
            sched = <int *>malloc(total * sizeof(int))
        if sched != NULL:
            for j in range(total):
                best = -1
                for i in range(g.n):
                    if weights[i]:
                        current[i] += weights[i]
                        if best < 0 or current[i] > current[best]:
                            best = i
                current[best] -= total
                sched[j] = g.first + best
            out_len[0] = <int>total
        free(weights)
        free(current)
        return sched

    cdef void build_ring(self, BGroup *g, bint backups, uint64_t **keys, int **srvs, int *out_len) noexcept:
        """A ketama ring: points per server in proportion to its weight, at hashes of its address."""
        cdef int i, k, pts, n = 0, total = 0, members = 0
        cdef int64_t wsum = 0
        cdef uint64_t base
        cdef RingPoint *points
        keys[0] = NULL
        srvs[0] = NULL
        out_len[0] = 0
        for i in range(g.n):
            if self.servers[g.first + i].backup == backups:
                wsum += max(1, self.weight_of(g.first + i))
                members += 1
        if members == 0:
            return
        for i in range(g.n):
            if self.servers[g.first + i].backup == backups:
                total += max(1, <int>(RING_POINTS * max(1, self.weight_of(g.first + i)) * members // wsum))
        points = <RingPoint *>malloc(total * sizeof(RingPoint))
        keys[0] = <uint64_t *>malloc(total * sizeof(uint64_t))
        srvs[0] = <int *>malloc(total * sizeof(int))
        if points == NULL or keys[0] == NULL or srvs[0] == NULL:
            free(points)
            free(keys[0])
            free(srvs[0])
            keys[0] = NULL
            srvs[0] = NULL
            return
        for i in range(g.n):
            if self.servers[g.first + i].backup != backups:
                continue
            pts = max(1, <int>(RING_POINTS * max(1, self.weight_of(g.first + i)) * members // wsum))
            # points depend only on the server's own address: adding a server moves only its own arcs
            base = hash_bytes(self.servers[g.first + i].address, self.servers[g.first + i].address_len)
            for k in range(pts):
                points[n].key = fmix64(base + <uint64_t>(k + 1) * <uint64_t>0x9E3779B97F4A7C15)
                points[n].srv = g.first + i
                n += 1
        qsort(points, n, sizeof(RingPoint), cmp_points)
        for i in range(n):
            keys[0][i] = points[i].key
            srvs[0][i] = points[i].srv
        out_len[0] = n
        free(points)

    # --- candidates -----------------------------------------------------------------------------------

    cdef bint usable(self, int srv, int64_t t, bint for_session) noexcept:
        """May srv take a request now? for_session: an existing sticky session (draining is fine)."""
        cdef BServer *b = &self.servers[srv]
        cdef ServerSlot *s = shm_slot(self.h, b.slot)
        cdef int64_t admin, du, ts
        if ld_relaxed(&s.generation) != b.generation:
            return 0                                    # reassigned by a reload: not ours any more
        admin = ld_relaxed(&s.admin)
        if admin == ADMIN_DISABLED:
            return 0
        if admin == ADMIN_DRAINING:
            if not for_session or t - ld_relaxed(&s.last_change_ms) > self.groups[b.group].drain_ms:
                return 0
        if ld_relaxed(&s.health) != HEALTH_UP:
            return 0
        du = ld_relaxed(&s.down_until_ms)
        if du:
            if t < du:
                return 0
            ts = ld_relaxed(&s.trial_since_ms)
            if ts and t - ts < TRIAL_LOST_MS:
                return 0                                # one trial is already deciding
        return 1

    cdef bint is_full(self, int srv) noexcept:
        cdef ServerSlot *s = shm_slot(self.h, self.servers[srv].slot)
        cdef int64_t mc = ld_relaxed(&s.max_conns)
        return mc > 0 and ld_relaxed(&s.active) >= mc

    cdef int acquire(self, int srv, int64_t t) noexcept:
        """Take one in-flight place on srv: 1 done, 0 full (max_conns), -1 lost a race for the trial."""
        cdef BServer *b = &self.servers[srv]
        cdef ServerSlot *s = shm_slot(self.h, b.slot)
        cdef int64_t mc = ld_relaxed(&s.max_conns)
        cdef int64_t du, ts
        if add(&s.active, 1) > mc > 0:
            add(&s.active, -1)
            return 0
        du = ld(&s.down_until_ms)
        if du:
            # half-open: only the one request that wins this CAS goes through
            ts = ld(&s.trial_since_ms)
            if (ts and t - ts < TRIAL_LOST_MS) or not cas(&s.trial_since_ms, ts, t):
                add(&s.active, -1)
                return -1
        add(&self.r_active[b.slot], 1)
        add(&shm_group(self.h, self.groups[b.group].shm_group).active, 1)
        return 1

    cdef double weight_factor(self, int srv, int64_t t) noexcept:
        """Slow start: the share of its weight a server that came back up has earned so far."""
        cdef ServerSlot *s = shm_slot(self.h, self.servers[srv].slot)
        cdef int64_t ss = ld_relaxed(&s.slow_start_ms), since
        if ss <= 0:
            return 1.0
        since = ld_relaxed(&s.slow_start_since_ms)
        if since <= 0 or t - since >= ss:
            return 1.0
        return max(0.02, <double>(t - since) / ss)

    cdef double random(self) noexcept:
        # xorshift64*: per worker, no shared state
        self.rng ^= self.rng >> 12
        self.rng ^= self.rng << 25
        self.rng ^= self.rng >> 27
        return <double>((self.rng * <uint64_t>0x2545F4914F6CDD1D) >> 11) / 9007199254740992.0

    # --- the ops table --------------------------------------------------------------------------------

    cdef int pick(self, int group, uint64_t key, const int *tried, int n_tried, double now) noexcept:
        cdef BGroup *g
        cdef int srv
        cdef bint full = 0
        cdef int64_t t = to_ms(now)
        if group < 0 or group >= self.n_groups:
            return PICK_NONE
        g = &self.groups[group]
        self.refresh(group)
        if n_tried == 0:
            g.tokens = min(RETRY_TOKENS_CAP, g.tokens + g.budget)
        srv = self.pick_in(g, 0, key, tried, n_tried, t, &full)
        if srv >= 0:
            return srv
        if full:
            return PICK_FULL
        srv = self.pick_in(g, 1, key, tried, n_tried, t, &full)
        if srv >= 0:
            return srv
        if not full and self.reset_if_all_passively_down(g, t):
            srv = self.pick_in(g, 0, key, tried, n_tried, t, &full)
            if srv < 0 and not full:
                srv = self.pick_in(g, 1, key, tried, n_tried, t, &full)
            if srv >= 0:
                return srv
        return PICK_FULL if full else PICK_NONE

    cdef bint reset_if_all_passively_down(self, BGroup *g, int64_t t) noexcept:
        """nginx's "all peers failed, mark them as live": when the servers that active checks and the
        operator allow (current generation, enabled, health up) are all passively down (cooling down
        or deciding a trial), their passive state is reset so that they are tried again, instead of
        every client getting 503 until a cool-down ends. Servers only this request tried do not count:
        a retry that finds just the others down still fails over nowhere (as nginx's 502), and the
        next request has a choice. 1 when a reset was made."""
        cdef int i, srv, eligible = 0
        cdef BServer *b
        cdef ServerSlot *s
        cdef int64_t admin
        for i in range(g.n):
            srv = g.first + i
            b = &self.servers[srv]
            s = shm_slot(self.h, b.slot)
            if ld_relaxed(&s.generation) != b.generation or ld_relaxed(&s.health) != HEALTH_UP:
                continue
            admin = ld_relaxed(&s.admin)
            if admin == ADMIN_DISABLED or admin == ADMIN_DRAINING:
                continue
            if not ld_relaxed(&s.down_until_ms):
                return 0                    # one is usable, full, or only excluded for this request
            eligible += 1
        if eligible == 0:
            return 0                        # taken out for real (health, operator): nothing to reset
        for i in range(g.n):
            s = shm_slot(self.h, self.servers[g.first + i].slot)
            if ld_relaxed(&s.down_until_ms) and ld_relaxed(&s.health) == HEALTH_UP:
                st(&s.fail_count, 0)
                st(&s.trial_since_ms, 0)
                st(&s.down_until_ms, 0)
                st(&s.last_change_ms, t)
        g.heap_at_ms = -1                   # big pools: the heap re-reads every server at the next pick
        return 1

    cdef int pick_in(self, BGroup *g, bint backups, uint64_t key, const int *tried, int n_tried, int64_t t,
                     bint *full) noexcept:
        cdef int srv
        if g.alg == ALG_ROUND_ROBIN:
            return self.pick_rr(g, backups, tried, n_tried, t, full)
        if g.alg == ALG_HASH:
            return self.pick_hash(g, backups, key, tried, n_tried, t, full)
        if g.alg == ALG_P2C:
            return self.pick_p2c(g, backups, tried, n_tried, t, full)
        if g.heap != NULL and not backups and n_tried == 0:
            srv = self.pick_heap(g, t, full)
            if srv >= 0:
                return srv
        # small pools, retries, backups, and whatever the heap could not serve: the exact scan
        return self.pick_scored(g, backups, tried, n_tried, t, full)

    cdef int pick_rr(self, BGroup *g, bint backups, const int *tried, int n_tried, int64_t t,
                     bint *full) noexcept:
        """The next entry of the shared schedule that can take the request (one atomic add per pick)."""
        cdef int *sched = g.bsched if backups else g.schedule
        cdef int n = g.bsched_len if backups else g.sched_len
        cdef int i, srv, r, ramping = -1
        cdef int64_t pos
        if n == 0:
            return PICK_NONE
        pos = add(&shm_group(self.h, g.shm_group).rr, 1) - 1
        for i in range(n):
            srv = sched[(pos + i) % n]
            if in_tried(srv, tried, n_tried) or not self.usable(srv, t, 0):
                continue
            if self.is_full(srv):
                full[0] = 1
                continue
            if self.random() >= self.weight_factor(srv, t):
                ramping = srv                   # slow start: let it take only its share for now
                continue
            r = self.acquire(srv, t)
            if r == 1:
                return srv
            full[0] = full[0] or r == 0
        if ramping >= 0 and self.acquire(ramping, t) == 1:
            return ramping
        return PICK_NONE

    cdef double score(self, BGroup *g, int srv, int64_t t) noexcept:
        """Load per unit of weight: in-flight requests (least_conn, p2c), times the response-time EWMA for
        least_time. Idle servers tie at 0, and ties follow the weighted schedule."""
        cdef ServerSlot *s = shm_slot(self.h, self.servers[srv].slot)
        cdef double w = max(1, ld_relaxed(&s.runtime_weight)) * self.weight_factor(srv, t)
        cdef double active = ld_relaxed(&s.active)
        if g.alg == ALG_LEAST_TIME:
            return (ld_relaxed(&s.ewma_us) + 1.0) * active / w
        return active / w

    cdef int pick_scored(self, BGroup *g, bint backups, const int *tried, int n_tried, int64_t t,
                         bint *full) noexcept:
        """least_conn / least_time: the lowest load over all workers; ties go to the next server of the
        weighted round-robin schedule, so equal loads still follow the weights."""
        cdef int *sched = g.bsched if backups else g.schedule
        cdef int n = g.bsched_len if backups else g.sched_len
        cdef int i, j, srv, best, start, _attempt, r
        cdef double sc, best_score
        if n == 0:
            return PICK_NONE
        start = sched[g.local_rr % n] - g.first
        g.local_rr += 1
        for _attempt in range(g.n):
            best = -1
            best_score = 0
            for j in range(g.n):
                i = start + j
                if i >= g.n:
                    i -= g.n
                srv = g.first + i
                if (self.servers[srv].backup != backups or self.excluded[srv] or in_tried(srv, tried, n_tried)
                        or not self.usable(srv, t, 0)):
                    continue
                if self.is_full(srv):
                    full[0] = 1
                    continue
                sc = self.score(g, srv, t)
                if best < 0 or sc < best_score:
                    best, best_score = srv, sc
            if best < 0:
                break
            r = self.acquire(best, t)
            if r == 1:
                self.clear_excluded(g)
                return best
            full[0] = full[0] or r == 0
            self.excluded[best] = 1
        self.clear_excluded(g)
        return PICK_NONE

    cdef void clear_excluded(self, BGroup *g) noexcept:
        memset(self.excluded + g.first, 0, g.n)

    # --- least_conn / least_time on big pools ---------------------------------------------------------
    #
    # The exact rule (pick_scored) reads every server's load per pick: O(N), ~16 us at 1,000 servers.
    # For pools of more than SCAN_MAX primaries each worker keeps a min-heap of the primaries keyed by
    # (load score, virtual time), and a pick is O(log N) while staying exact for the load:
    # - this worker's own picks and releases update their server's key at once;
    # - other workers' releases (load going down, a new EWMA) reach every heap through the upstream's
    #   ring in the table (GroupSlot.released): each pick first applies the entries posted since;
    # - other workers' picks (load going up) are not posted: a key can only be too low because of them,
    #   so the top is re-read from the table before it is taken, and re-sifted if it changed; when its
    #   live score is its key, every other server's live score is >= its key >= that score. Hence the
    #   server picked has the least live score, as a scan would find (up to HEAP_CHECKS re-reads per
    #   pick; past that, or when the heap has nothing usable left, the exact scan decides);
    # - what changes with time alone (health, passive cool-downs ending, slow start ramps, admin state)
    #   is re-read for every server every HEAP_REFRESH_MS (O(N), ~10 us at 1,000 servers; a server
    #   found down at the top is dropped at once), and so is everything after a reader fell more than
    #   RELEASED_CAP releases behind. The cost of that: a server coming back up waits <= 50 ms for work.
    # - ties (equal scores, e.g. idle servers) go to the lowest virtual time, which advances by
    #   1/weight per pick: a weighted rotation, like the scan's weighted round-robin tie-break.
    # Retries (a tried set) and backups use the exact scan, which also tells "all full" (queue) from
    # "none" (502/503). Pools up to SCAN_MAX primaries keep the scan: it is as cheap there.
    # Costs: one atomic add and store per release into the ring; per pick, one heap update per release
    # other workers made since this worker's last pick (about workers - 1).

    cdef int heap_init(self, BGroup *g) except -1:
        cdef int i, n = 0
        if g.alg != ALG_LEAST_CONN and g.alg != ALG_LEAST_TIME:
            return 0
        for i in range(g.n):
            n += not self.servers[g.first + i].backup
        if n <= SCAN_MAX:
            return 0
        g.heap = <int *>malloc(n * sizeof(int))
        g.hpos = <int *>malloc(g.n * sizeof(int))
        g.hkey = <double *>malloc(g.n * sizeof(double))
        g.hvt = <double *>calloc(g.n, sizeof(double))
        if g.heap == NULL or g.hpos == NULL or g.hkey == NULL or g.hvt == NULL:
            raise MemoryError()
        for i in range(g.n):
            g.hpos[i] = -1
            g.hkey[i] = INF
            if not self.servers[g.first + i].backup:
                g.heap[g.heap_len] = i
                g.hpos[i] = g.heap_len
                g.heap_len += 1
        g.heap_at_ms = -1
        g.rel_seen = ld(&shm_group(self.h, g.shm_group).released_head)
        return 0

    cdef void heap_set(self, BGroup *g, int i, double key) noexcept:
        """Give local server i a new key and move it to its place."""
        g.hkey[i] = key
        heap_down(g, heap_up(g, g.hpos[i]))

    cdef void heap_update(self, BGroup *g, int i, int64_t t) noexcept:
        """Re-read local server i's key from the table."""
        cdef int srv = g.first + i
        cdef double key = self.score(g, srv, t) if self.usable(srv, t, 0) and not self.is_full(srv) else INF
        if g.hkey[i] == INF and key != INF:
            g.hvt[i] = max(g.hvt[i], g.vclock)         # back in the running: no burst of catching up
        self.heap_set(g, i, key)

    cdef void heap_catch_up(self, BGroup *g, int64_t t) noexcept:
        """Apply the releases other workers posted since the last pick (or re-read all if too far behind
        or if the periodic refresh is due)."""
        cdef GroupSlot *gs = shm_group(self.h, g.shm_group)
        cdef int64_t head = ld(&gs.released_head), seq, e
        cdef int slot, srv
        if (g.heap_at_ms < 0 or t - g.heap_at_ms >= HEAP_REFRESH_MS or t < g.heap_at_ms
                or head - g.rel_seen > RELEASED_CAP):
            self.heap_refresh(g, t)
            return
        seq = g.rel_seen
        while seq < head:
            e = ld(&gs.released[seq % RELEASED_CAP])
            # an entry of another lap, or one still being written, is skipped: the refresh covers it
            if (<uint64_t>e >> 32) == (<uint64_t>seq & SEQ_MASK) and ((e >> 20) & 0xfff) != self.row:
                slot = e & 0xfffff
                srv = self.slot_server[slot] if slot < self.n_slot_server else -1
                if g.first <= srv < g.first + g.n and g.hpos[srv - g.first] >= 0:
                    self.heap_update(g, srv - g.first, t)
            seq += 1
        g.rel_seen = head

    cdef void heap_refresh(self, BGroup *g, int64_t t) noexcept:
        """Re-read every primary's load and state from the table and rebuild the heap."""
        cdef int i, pos, srv
        cdef double key
        g.rel_seen = ld(&shm_group(self.h, g.shm_group).released_head)   # before reading: none missed
        for pos in range(g.heap_len):
            i = g.heap[pos]
            srv = g.first + i
            key = self.score(g, srv, t) if self.usable(srv, t, 0) and not self.is_full(srv) else INF
            if g.hkey[i] == INF and key != INF:
                g.hvt[i] = max(g.hvt[i], g.vclock)     # back in the running: no burst of catching up
            g.hkey[i] = key
        for pos in range(g.heap_len // 2 - 1, -1, -1):
            heap_down(g, pos)
        g.heap_at_ms = t

    cdef int pick_heap(self, BGroup *g, int64_t t, bint *full) noexcept:
        """The heap's top once checked against the table; PICK_NONE sends the caller to the exact scan."""
        cdef int i, srv, r, _attempt
        cdef double sc
        cdef ServerSlot *s
        self.heap_catch_up(g, t)
        for _attempt in range(HEAP_CHECKS):
            i = g.heap[0]
            if g.hkey[i] == INF:
                return PICK_NONE
            srv = g.first + i
            if not self.usable(srv, t, 0) or self.is_full(srv):
                self.heap_set(g, i, INF)        # until a release or the next refresh says otherwise
                continue
            sc = self.score(g, srv, t)
            if sc != g.hkey[i]:
                self.heap_set(g, i, sc)
                if g.heap[0] != i:
                    continue                    # another worker loaded it: someone else is lower now
            r = self.acquire(srv, t)
            if r != 1:
                self.heap_set(g, i, INF)        # full or its trial was taken: until the next refresh
                continue
            s = shm_slot(self.h, self.servers[srv].slot)
            g.vclock = g.hvt[i]
            g.hvt[i] += 1.0 / (max(1, ld_relaxed(&s.runtime_weight)) * self.weight_factor(srv, t))
            self.heap_set(g, i, self.score(g, srv, t))
            return srv
        return PICK_NONE

    cdef int pick_p2c(self, BGroup *g, bint backups, const int *tried, int n_tried, int64_t t,
                      bint *full) noexcept:
        """Power of two choices: the less loaded of two random candidates, drawn from the weighted
        schedule so that weights count even when both are idle (falls back to a full scan when the
        draws keep hitting servers that cannot take the request)."""
        cdef int *sched = g.bsched if backups else g.schedule
        cdef int n = g.bsched_len if backups else g.sched_len
        cdef int a = -1, b = -1, srv, _draws, r
        if n == 0:
            return PICK_NONE
        for _draws in range(16):
            srv = sched[<int>(self.random() * n)]
            if srv == a or in_tried(srv, tried, n_tried) or not self.usable(srv, t, 0):
                continue
            if self.is_full(srv):
                full[0] = 1
                continue
            if a < 0:
                a = srv
            else:
                b = srv
                break
        if a >= 0 and b >= 0:
            if self.score(g, b, t) < self.score(g, a, t):
                a, b = b, a
            r = self.acquire(a, t)
            if r == 1:
                return a
            r = self.acquire(b, t)
            if r == 1:
                return b
        return self.pick_scored(g, backups, tried, n_tried, t, full)

    cdef int pick_hash(self, BGroup *g, bint backups, uint64_t key, const int *tried, int n_tried,
                       int64_t t, bint *full) noexcept:
        """Ketama: the first point clockwise from the key whose server can take it. With a load factor,
        servers above factor x the average in-flight count are passed over (bounded load)."""
        cdef uint64_t *keys = g.bring_keys if backups else g.ring_keys
        cdef int *srvs = g.bring_srv if backups else g.ring_srv
        cdef int n = g.bring_len if backups else g.ring_len
        cdef int lo = 0, hi, mid, i, srv, r
        cdef double cap = 0
        cdef bint bounded = 0
        if n == 0:
            return PICK_NONE
        hi = n
        while lo < hi:
            mid = (lo + hi) >> 1
            if keys[mid] < key:
                lo = mid + 1
            else:
                hi = mid
        if g.load_factor > 0:
            # consistent hashing with bounded loads: capacity ceil(factor x (in flight + 1) / servers)
            cap = ceil(g.load_factor * (ld_relaxed(&shm_group(self.h, g.shm_group).active) + 1.0) / g.n)
        for i in range(n):
            srv = srvs[(lo + i) % n]
            if in_tried(srv, tried, n_tried) or not self.usable(srv, t, 0):
                continue
            if self.is_full(srv):
                full[0] = 1
                continue
            if cap > 0 and ld_relaxed(&shm_slot(self.h, self.servers[srv].slot).active) + 1 > cap:
                bounded = 1
                continue
            r = self.acquire(srv, t)
            if r == 1:
                return srv
            full[0] = full[0] or r == 0
        if bounded:         # every candidate was over the bound (other workers raced us): ignore it
            g.load_factor, cap = -g.load_factor, g.load_factor
            srv = self.pick_hash(g, backups, key, tried, n_tried, t, full)
            g.load_factor = cap
            return srv
        return PICK_NONE

    cdef void release(self, int server, int outcome, double response_seconds, double now) noexcept:
        cdef BServer *b
        cdef BGroup *g
        cdef ServerSlot *s
        cdef GroupSlot *gs
        cdef int64_t t = to_ms(now), seq
        if server < 0 or server >= self.n_servers or self.row < 0:
            return
        b = &self.servers[server]
        g = &self.groups[b.group]
        s = shm_slot(self.h, b.slot)
        gs = shm_group(self.h, g.shm_group)
        add(&self.r_active[b.slot], -1)
        add(&gs.active, -1)
        if ld(&s.generation) != b.generation:
            return              # reassigned by a reload: its counters belong to another server now
        add(&s.active, -1)
        add(&self.r_requests[b.slot], 1)
        self.settle(g, s, outcome, response_seconds, t)
        if g.heap != NULL:
            # our heap sees our release at once; other workers' heaps through the group's ring
            if g.hpos[server - g.first] >= 0:       # backups are not in the heap
                self.heap_update(g, server - g.first, t)
            seq = add(&gs.released_head, 1) - 1
            st(&gs.released[seq % RELEASED_CAP],
               <int64_t>(((<uint64_t>seq & SEQ_MASK) << 32) | (<uint64_t>self.row << 20) | <uint64_t>b.slot))

    cdef void settle(self, BGroup *g, ServerSlot *s, int outcome, double response_seconds,
                     int64_t t) noexcept:
        """A released exchange's verdict on the server: passive checks and the response-time EWMA."""
        cdef int64_t du, ws, old, sample
        cdef bint failed
        if outcome == OUTCOME_ABORTED:
            return
        failed = (outcome == OUTCOME_CONNECT_FAIL or outcome == OUTCOME_RESET or outcome == OUTCOME_TIMEOUT
                  or (outcome == OUTCOME_HTTP_5XX and g.count_5xx))
        if failed:
            add(&self.r_errors[s - shm_slot(self.h, 0)], 1)
            add(&s.fails, 1)
            if g.max_fails <= 0 or g.n == 1:
                return          # off, or the only server of its upstream: never taken out (nginx)
            du = ld(&s.down_until_ms)
            if du:
                if t >= du and cas(&s.down_until_ms, du, t + g.fail_timeout_ms):
                    st(&s.trial_since_ms, 0)    # the trial failed: another cool-down
                    st(&s.last_change_ms, t)
                return
            ws = ld(&s.fail_window_ms)
            if t - ws > g.fail_timeout_ms and cas(&s.fail_window_ms, ws, t):
                st(&s.fail_count, 0)
            if add(&s.fail_count, 1) >= g.max_fails and cas(&s.down_until_ms, 0, t + g.fail_timeout_ms):
                st(&s.trial_since_ms, 0)
                st(&s.fail_count, 0)
                st(&s.last_change_ms, t)
            return
        if ld_relaxed(&s.fails):
            st(&s.fails, 0)
        du = ld(&s.down_until_ms)
        if du and t >= du and cas(&s.down_until_ms, du, 0):
            # the trial request succeeded: up again, and the weight ramps up from here
            st(&s.trial_since_ms, 0)
            st(&s.fail_count, 0)
            st(&s.slow_start_since_ms, t)
            st(&s.last_change_ms, t)
        if response_seconds > 0 and outcome == OUTCOME_OK:
            # a plain load and store: two workers racing lose one sample of an average, nothing more
            sample = <int64_t>(response_seconds * 1e6)
            old = ld_relaxed(&s.ewma_us)
            st(&s.ewma_us, sample if old == 0 else old + <int64_t>((sample - old) * EWMA_ALPHA))

    cdef int sticky_slot(self, int group, const char *cookie_value, Py_ssize_t n, double now) noexcept:
        cdef BGroup *g
        cdef int i, srv, r
        cdef int64_t t = to_ms(now)
        if group < 0 or group >= self.n_groups or n != 16:
            return PICK_NONE
        g = &self.groups[group]
        for i in range(g.n):
            srv = g.first + i
            if memcmp(self.servers[srv].sticky_hex, cookie_value, 16) != 0:
                continue
            if not self.usable(srv, t, 1):
                return PICK_NONE
            r = self.acquire(srv, t)
            return srv if r == 1 else (PICK_FULL if r == 0 else PICK_NONE)
        return PICK_NONE

    cdef Py_ssize_t sticky_cookie(self, int group, int server, char *out, Py_ssize_t cap) noexcept:
        """Set-Cookie value naming server: "NAME=VALUE; Path=/; HttpOnly; SameSite=Lax..."; -1 if cap is
        too small."""
        cdef BGroup *g
        cdef Py_ssize_t n
        if group < 0 or group >= self.n_groups or server < 0 or server >= self.n_servers:
            return -1
        g = &self.groups[group]
        n = g.cookie_name_len + 1 + 16 + g.cookie_attrs_len
        if g.sticky_kind != STICKY_COOKIE or n > cap:
            return -1
        memcpy(out, g.cookie_name, g.cookie_name_len)
        out[g.cookie_name_len] = b'='
        memcpy(out + g.cookie_name_len + 1, self.servers[server].sticky_hex, 16)
        memcpy(out + g.cookie_name_len + 17, g.cookie_attrs, g.cookie_attrs_len)
        return n

    cdef int key_kind(self, int group) noexcept:
        return self.groups[group].key_kind if 0 <= group < self.n_groups else KEY_NONE

    cdef const char *key_name(self, int group, Py_ssize_t *n) noexcept:
        n[0] = self.groups[group].key_name_len
        return self.groups[group].key_name

    cdef int sticky_kind(self, int group) noexcept:
        return self.groups[group].sticky_kind if 0 <= group < self.n_groups else STICKY_NONE

    cdef const char *sticky_cookie_name(self, int group, Py_ssize_t *n) noexcept:
        n[0] = self.groups[group].cookie_name_len
        return self.groups[group].cookie_name

    cdef int tries(self, int group) noexcept:
        return self.groups[group].tries

    cdef bint may_retry(self, int group, double now) noexcept:
        """The retry budget: a token per retry; tokens come from requests (budget each) and a small
        floor rate, so retries stay a bounded fraction of the traffic."""
        cdef BGroup *g = &self.groups[group]
        if g.budget >= 1.0:
            return 1
        g.tokens = min(RETRY_TOKENS_CAP, g.tokens + (now - g.tokens_at) * RETRY_FLOOR_PER_SEC)
        g.tokens_at = now
        if g.tokens >= 1.0:
            g.tokens -= 1.0
            return 1
        return 0

    cdef double queue_timeout(self, int group) noexcept:
        return self.groups[group].queue_timeout

    cdef int max_queue(self, int group) noexcept:
        return self.groups[group].max_queue

    cdef void tick(self, double now) noexcept:
        if self.row >= 0:
            st(&shm_row(self.h, self.row).heartbeat_ms, to_ms(now))

    # --- Python surface (the core's startup, tests, benchmarks) ---------------------------------------

    def slot_addresses(self):
        """[(server index, group index, shm slot, address text)] in server index order."""
        return [(i, self.servers[i].group, self.servers[i].slot,
                 self.servers[i].address[:self.servers[i].address_len].decode())
                for i in range(self.n_servers)]

    def py_pick(self, int group, key=0, tried=(), now=None):
        cdef int buf[64]
        cdef int n = min(len(tried), 64), i
        for i in range(n):
            buf[i] = tried[i]
        if not isinstance(key, int):
            key = hash_key(key)
        return self.pick(group, key, buf, n, time.monotonic() if now is None else now)

    def py_release(self, int server, int outcome=OUTCOME_OK, double seconds=0.0, now=None):
        self.release(server, outcome, seconds, time.monotonic() if now is None else now)

    def py_sticky_slot(self, int group, value, now=None):
        cdef bytes b = value.encode() if isinstance(value, str) else bytes(value)
        return self.sticky_slot(group, b, len(b), time.monotonic() if now is None else now)

    def py_sticky_cookie(self, int group, int server):
        cdef char buf[512]
        cdef Py_ssize_t n = self.sticky_cookie(group, server, buf, 512)
        return None if n < 0 else buf[:n].decode()

    def py_may_retry(self, int group, now=None):
        return bool(self.may_retry(group, time.monotonic() if now is None else now))

    def py_key(self, int group):
        """(key kind, key name) of a group: what the core hashes for pick()."""
        cdef Py_ssize_t n = 0
        cdef const char *p = self.key_name(group, &n)
        return self.key_kind(group), p[:n].decode()

    def py_tick(self, now=None):
        self.tick(time.monotonic() if now is None else now)

    @property
    def row_index(self):
        return self.row

    def bench_pick(self, int group, long n, bint release=True, double rate=20000.0):
        """n picks (each released at once) in C: the per-pick cost without Python call overhead.

        The clock advances 1/rate s per pick (a worker doing `rate` requests/s), so work done every few
        ms (the big-pool least_conn/least_time refresh) is charged to the picks as in a real worker.
        """
        cdef long i
        cdef int srv
        cdef double now = time.monotonic(), step = 1.0 / rate if rate > 0 else 0.0
        cdef uint64_t key = 0x12345
        for i in range(n):
            key = fmix64(key + <uint64_t>i)
            srv = self.pick(group, key, NULL, 0, now)
            if release and srv >= 0:
                self.release(srv, OUTCOME_OK, 0.001, now)
            now += step
        return n
