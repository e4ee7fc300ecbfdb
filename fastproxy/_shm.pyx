# cython: language_level=3
"""The shared-memory backend table (layout in _shm.pxd).

Rules:
- Only this file knows the layout. Every field written by more than one process is written with
  __atomic_* (the inline helpers of _shm.pxd). A layout change bumps LAYOUT_VERSION.
- The master creates the table before forking, as a named file under /dev/shm derived from the config
  file's path, so `fastproxy backends` and a new master after a binary upgrade open it
  by name. assign(config) is the master's alone: it keeps the slot (and state) of every (upstream,
  address) that remains, gives new servers fresh slots and bumps the generation, so a draining old
  worker sees that a slot it bound was reassigned.
- Counts every worker changes live in per-worker rows (a worker claims a row with CAS on its pid);
  `active` is also kept as one global counter per slot so max_conns is enforced across workers. When a
  worker dies, release_row() subtracts its row from the slots, folds its monotonic counters (requests,
  responses, bytes, errors, latency: the blocks of _counters.pxd) into the retired totals (the header's
  for the worker totals, the route slot's and server slot's for theirs) and zeroes it: a sum of the
  live rows plus the retired totals never goes backwards, whatever workers die. Gauges (open
  connections) go with the row. Retired counts of a slot are zeroed when the slot is given to another
  server or route.
- Routes have slots too (RouteSlot, keyed by the route's host and path as written): assign() keeps the slot
  of a route that remains across a reload, so its counters go on, and each row holds RouteCounters for
  every route slot.
- State one process owns (health) is written by that process only (the health checker); operator state
  (admin, runtime weight) by the CLI through the same table.
"""

import hashlib
import os
import time

from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcmp, memcpy, memset
from posix.mman cimport MAP_ANONYMOUS, MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap

from fastproxy._counters cimport (N_GAUGES, count_backend_close, count_backend_open, count_bytes_in,
                                  count_bytes_out, count_client_close, count_client_open, count_error,
                                  count_latency, count_request, count_response, count_routed, gauge_add)
from fastproxy._sys cimport atomic_exchange_i64

cdef uint64_t MAGIC = 0x4C4254534F525046     # "FPROSTBL" little-endian

ADMIN_NAMES = {ADMIN_ENABLED: "enabled", ADMIN_DRAINING: "draining", ADMIN_DISABLED: "disabled"}


cdef inline int64_t now_ms() noexcept:
    return <int64_t>(time.monotonic() * 1000.0)


def monotonic_ms():
    """CLOCK_MONOTONIC in milliseconds, the clock of every time field in the table."""
    return now_ms()


def path_for(config):
    """The table's name under /dev/shm for this config: derived from the config file's real path, which
    `fastproxy backends -c FILE` and a new master after a binary upgrade (same -c FILE) know too.

    None for a config that came from no file ("<demo>", "<string>"): the table is then anonymous.
    """
    return None if config.path.startswith("<") else path_for_file(config.path)


def path_for_file(config_file):
    real = os.path.realpath(config_file)
    return "/dev/shm/fastproxy-" + hashlib.sha1(real.encode()).hexdigest()[:16]


def sizes_for(config):
    """(n_groups, n_slots, n_rows, n_routes) with room for reloads that add upstreams, servers, workers or
    routes."""
    n_servers = sum(len(u.servers) for u in config.upstreams.values())
    return (max(16, 4 * len(config.upstreams)), max(64, 4 * n_servers),
            max(16, 4 * config.server.workers + 4), max(16, 4 * len(config.routes)))


def route_key(route):
    """A route's identity in the table (and its name for readers): host and path as written, "*/api/"."""
    return route.host + route.path


cdef inline void fold(int64_t *src, int64_t *dst, Py_ssize_t n) noexcept:
    """Move n counters from src (a released row) to dst (retired totals): each one exchanged with 0 first,
    so a second release of the same row (the worker itself, then the master) adds nothing twice."""
    cdef Py_ssize_t i
    cdef int64_t v
    for i in range(n):
        v = atomic_exchange_i64(&src[i], 0, ATOMIC_SEQ_CST)
        if v:
            add(&dst[i], v)


cdef inline void load_words(int64_t *dst, const int64_t *src, Py_ssize_t n) noexcept:
    cdef Py_ssize_t i
    for i in range(n):
        dst[i] = ld_relaxed(&src[i])


cdef class ShmTable:
    """ShmTable(path, create=False, n_groups=0, n_slots=0, n_rows=0, n_routes=0).

    path None: an anonymous MAP_SHARED mapping (shared with children forked after this).
    create=True: attach to a valid existing file that is large enough (a new master after an upgrade,
    or a restart: state kept), else (re)create it. create=False: open an existing table or raise.
    """

    def __cinit__(self):
        self.h = NULL

    def __init__(self, path=None, create=False, int n_groups=0, int n_slots=0, int n_rows=0, int n_routes=0):
        self.path = path
        if path is not None and (not create or os.path.exists(path)):
            if self._attach(path, create, n_groups, n_slots, n_rows, n_routes):
                return
            if not create:
                raise ValueError(f"{path}: not a fastproxy table of layout {LAYOUT_VERSION}")
        if not create:
            raise FileNotFoundError(path)
        self._create(path, max(1, n_groups), max(1, n_slots), max(1, n_rows), n_routes or 16)

    cdef bint _check(self, ShmHeader *h, int64_t size, int n_groups, int n_slots, int n_rows, int n_routes):
        return (size >= <int64_t>sizeof(ShmHeader) and h.magic == MAGIC and h.layout_version == LAYOUT_VERSION
                and h.total_size == size and h.n_groups >= n_groups and h.n_slots >= n_slots
                and h.n_rows >= n_rows and h.n_routes >= n_routes)

    def _attach(self, path, create, n_groups, n_slots, n_rows, n_routes):
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            if size < <int64_t>sizeof(ShmHeader):
                return False
            p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
            if p == MAP_FAILED:
                raise OSError("mmap failed")
        finally:
            os.close(fd)
        if not self._check(<ShmHeader *>p, size, n_groups, n_slots, n_rows, n_routes):
            munmap(p, size)
            return False
        self.h = <ShmHeader *>p
        self.size = size
        return True

    def _create(self, path, int n_groups, int n_slots, int n_rows, int n_routes):
        cdef int64_t row_slots_off = (sizeof(RowHeader) + sizeof(WorkerCounters)
                                      + n_routes * sizeof(RouteCounters))
        # rows start on a cache line: two workers never write the same line
        cdef int64_t row_size = (row_slots_off + 3 * 8 * n_slots + n_slots * sizeof(ServerCounters)
                                 + 63) & ~63
        cdef int64_t groups_off = (sizeof(ShmHeader) + 63) & ~63
        cdef int64_t slots_off = groups_off + n_groups * sizeof(GroupSlot)
        cdef int64_t routes_off = slots_off + n_slots * sizeof(ServerSlot)
        cdef int64_t rows_off = (routes_off + n_routes * sizeof(RouteSlot) + 63) & ~63
        cdef int64_t total = rows_off + n_rows * row_size
        cdef void *p
        if path is None:
            p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0)
        else:
            # a fresh file, renamed into place: a reader never sees a half-initialised table
            tmp = f"{path}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                os.ftruncate(fd, total)
                p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
            finally:
                os.close(fd)
        if p == MAP_FAILED:
            raise OSError("mmap failed")
        memset(p, 0, total)
        cdef ShmHeader *h = <ShmHeader *>p
        h.layout_version = LAYOUT_VERSION
        h.n_groups = n_groups
        h.n_slots = n_slots
        h.n_rows = n_rows
        h.groups_off = groups_off
        h.slots_off = slots_off
        h.rows_off = rows_off
        h.row_size = row_size
        h.n_routes = n_routes
        h.routes_off = routes_off
        h.row_slots_off = row_slots_off
        h.total_size = total
        h.master_pid = os.getpid()
        secret = os.urandom(16)
        memcpy(h.secret, <char *>secret, 16)
        st(<int64_t *>&h.magic, <int64_t>MAGIC)
        self.h = h
        self.size = total
        if path is not None:
            os.rename(tmp, path)

    def __dealloc__(self):
        if self.h != NULL:
            munmap(self.h, self.size)
            self.h = NULL

    def close(self):
        if self.h != NULL:
            munmap(self.h, self.size)
            self.h = NULL

    def unlink(self):
        """Remove the name (the master on its final exit); mappings stay valid until closed."""
        if self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    cdef ShmHeader *hdr(self) except NULL:
        if self.h == NULL:
            raise ValueError("the table is closed")
        return self.h

    @property
    def generation(self):
        return ld(&self.hdr().generation)

    @property
    def capacity(self):
        h = self.hdr()
        return {"groups": h.n_groups, "slots": h.n_slots, "rows": h.n_rows, "routes": h.n_routes}

    # --- lookups ------------------------------------------------------------------------------------

    cdef int find_group(self, const char *name, Py_ssize_t n) noexcept:
        cdef int i
        cdef GroupSlot *g
        for i in range(self.h.n_groups):
            g = shm_group(self.h, i)
            if ld(&g.generation) and g.name_len == n and memcmp(g.name, name, n) == 0:
                return i
        return -1

    cdef int find_slot(self, int group, const char *address, Py_ssize_t n) noexcept:
        cdef int i
        cdef ServerSlot *s
        for i in range(self.h.n_slots):
            s = shm_slot(self.h, i)
            if (ld(&s.generation) and s.group == group and s.address_len == n
                    and memcmp(s.address, address, n) == 0):
                return i
        return -1

    cdef int _find_route(self, const char *key, Py_ssize_t n) noexcept:
        cdef int i
        cdef RouteSlot *rs
        for i in range(self.h.n_routes):
            rs = shm_route(self.h, i)
            if ld(&rs.generation) and rs.key_len == n and memcmp(rs.key, key, n) == 0:
                return i
        return -1

    def find_route(self, key):
        """The route slot of a route_key(), or -1."""
        self.hdr()
        bkey = key.encode()[:ROUTE_KEY_CAP]
        return self._find_route(bkey, len(bkey))

    def find(self, upstream, address):
        """The slot index of (upstream name, address text), or -1."""
        self.hdr()
        name, addr = upstream.encode(), address.encode()
        g = self.find_group(name, len(name))
        return -1 if g < 0 else self.find_slot(g, addr, len(addr))

    def group_index(self, upstream):
        self.hdr()
        name = upstream.encode()
        return self.find_group(name, len(name))

    # --- the master: assign slots for a config ------------------------------------------------------

    def assign(self, config, keep=None):
        """Bind every (upstream, server) of config to a slot: kept if it was there, fresh if new.

        Slots and groups in neither config nor keep are freed (keep: the running config while a reload
        is pending, so old workers keep their slots and a rollback finds them unchanged). Raises
        ValueError (nothing changed) when the table has no room; the caller keeps the old config then.
        """
        cdef ShmHeader *h = self.hdr()
        cdef GroupSlot *g
        cdef ServerSlot *s
        cdef int gi, si, i
        cdef int64_t gen, t = now_ms()
        wanted = {(name, srv.address) for name, up in config.upstreams.items() for srv in up.servers}
        keep_groups = set(config.upstreams)
        if keep is not None:
            wanted |= {(name, srv.address) for name, up in keep.upstreams.items() for srv in up.servers}
            keep_groups |= set(keep.upstreams)
        # room check first, so a failure changes nothing
        free_groups = sum(1 for i in range(h.n_groups) if not ld(&shm_group(h, i).generation)
                          or self._group_name(i) not in keep_groups)
        new_groups = sum(1 for name in config.upstreams if self.group_index(name) < 0)
        existing = {self._slot_key(i) for i in range(h.n_slots) if ld(&shm_slot(h, i).generation)}
        free_slots = h.n_slots - len(existing & wanted)
        want_routes = {route_key(r) for r in config.routes}
        keep_routes = want_routes | ({route_key(r) for r in keep.routes} if keep is not None else set())
        routes_kept = sum(1 for i in range(h.n_routes) if ld(&shm_route(h, i).generation)
                          and self._route_key(i) in keep_routes)
        new_routes = sum(1 for k in want_routes if self.find_route(k) < 0)
        if (new_groups > free_groups or len(wanted - existing) > free_slots
                or new_routes > h.n_routes - routes_kept):
            raise ValueError(f"the shared table is too small for this config ({h.n_slots} server slots, "
                             f"{h.n_groups} upstreams, {h.n_routes} routes); restart the master to resize it")
        gen = add(&h.generation, 1)
        for i in range(h.n_routes):            # routes: free what went away, bind the new ones
            if ld(&shm_route(h, i).generation) and self._route_key(i) not in keep_routes:
                st(&shm_route(h, i).generation, 0)
        for key in dict.fromkeys(route_key(r) for r in config.routes):    # in config order
            if self.find_route(key) < 0:
                self._bind_route(key, gen)
        for i in range(h.n_groups):            # free what went away
            if ld(&shm_group(h, i).generation) and self._group_name(i) not in keep_groups:
                st(&shm_group(h, i).generation, 0)
        for i in range(h.n_slots):
            s = shm_slot(h, i)
            if ld(&s.generation) and self._slot_key(i) not in wanted:
                st(&s.generation, 0)
        for name, up in config.upstreams.items():
            gi = self.group_index(name)
            if gi < 0:
                gi = next(i for i in range(h.n_groups) if not ld(&shm_group(h, i).generation))
                g = shm_group(h, gi)
                memset(g, 0, sizeof(GroupSlot))
                bname = name.encode()[:NAME_CAP]
                memcpy(g.name, <char *>bname, len(bname))
                g.name_len = len(bname)
                st(&g.generation, gen)
            for srv in up.servers:
                baddr = srv.address.encode()[:ADDR_CAP]
                si = self.find_slot(gi, baddr, len(baddr))
                if si < 0:
                    si = self._free_slot()
                    s = shm_slot(h, si)
                    memset(s, 0, sizeof(ServerSlot))
                    s.group = gi
                    memcpy(s.address, <char *>baddr, len(baddr))
                    s.address_len = len(baddr)
                    s.weight = s.runtime_weight = srv.weight
                    s.last_change_ms = t
                    st(&s.generation, gen)
                s = shm_slot(h, si)
                if s.weight != srv.weight:     # a changed config weight wins over a runtime one
                    st(&s.weight, srv.weight)
                    st(&s.runtime_weight, srv.weight)
                    add(&shm_group(h, gi).version, 1)
                st(&s.backup, 1 if srv.backup else 0)
                st(&s.max_conns, srv.max_conns)
                st(&s.slow_start_ms, <int64_t>(srv.slow_start * 1000))
                if up.health is None:
                    st(&s.health, HEALTH_UP)   # nothing checks it any more
            add(&shm_group(h, gi).version, 1)
        return gen

    def _bind_route(self, key, int64_t gen):
        cdef ShmHeader *h = self.hdr()
        cdef RouteSlot *rs
        cdef int i
        bkey = key.encode()[:ROUTE_KEY_CAP]
        for i in range(h.n_routes):
            rs = shm_route(h, i)
            if not ld(&rs.generation):
                memset(rs, 0, sizeof(RouteSlot))       # retired counts of a route that went away go too
                memcpy(rs.key, <char *>bkey, len(bkey))
                rs.key_len = len(bkey)
                st(&rs.generation, gen)
                return i
        return -1

    def _route_key(self, int i):
        cdef RouteSlot *rs = shm_route(self.hdr(), i)
        return rs.key[:rs.key_len].decode()

    cdef int _free_slot(self):
        # the free slot freed longest ago would be best; the lowest never-used one is close enough, and
        # reusing a just-freed slot is safe anyway (old workers check its generation)
        cdef int i
        for i in range(self.h.n_slots):
            if not ld(&shm_slot(self.h, i).generation) and shm_slot(self.h, i).address_len == 0:
                return i
        for i in range(self.h.n_slots):
            if not ld(&shm_slot(self.h, i).generation):
                return i
        return -1

    def _group_name(self, int i):
        cdef GroupSlot *g = shm_group(self.hdr(), i)
        return g.name[:g.name_len].decode()

    def _slot_key(self, int i):
        cdef ServerSlot *s = shm_slot(self.hdr(), i)
        return (self._group_name(s.group), s.address[:s.address_len].decode())

    # --- worker rows --------------------------------------------------------------------------------

    def claim_row(self, pid=None):
        """A free row for this worker (CAS 0 -> pid); its counters start at zero."""
        cdef ShmHeader *h = self.hdr()
        cdef int r
        cdef int64_t p = os.getpid() if pid is None else pid
        for r in range(h.n_rows):
            if cas(&shm_row(h, r).pid, 0, p):
                return r
        raise RuntimeError("no free worker row in the shared table")

    def release_row(self, pid):
        """A worker died or exited: take its in-flight count off the slots, fold its counters into the
        retired totals and free its row."""
        cdef ShmHeader *h = self.hdr()
        cdef int r, i
        cdef int64_t *act
        cdef int64_t n
        for r in range(h.n_rows):
            if ld(&shm_row(h, r).pid) != pid:
                continue
            act = row_active(h, r)
            for i in range(h.n_slots):
                n = atomic_exchange_i64(&act[i], 0, ATOMIC_SEQ_CST)
                if n:
                    add(&shm_slot(h, i).active, -n)
            self._fold_row(r)
            memset(row_counters(h, r), 0, h.row_size - sizeof(RowHeader))
            st(&shm_row(h, r).heartbeat_ms, 0)
            st(&shm_row(h, r).pid, 0)
            return True
        return False

    cdef void _fold_row(self, int r) noexcept:
        cdef ShmHeader *h = self.h
        cdef ServerSlot *s
        cdef RouteSlot *rs
        cdef int i
        add(&h.fold_busy, 1)
        fold(<int64_t *>row_counters(h, r) + N_GAUGES, <int64_t *>&h.retired + N_GAUGES,
             sizeof(WorkerCounters) // 8 - N_GAUGES)
        for i in range(h.n_routes):
            rs = shm_route(h, i)
            if ld(&rs.generation):
                fold(<int64_t *>row_route(h, r, i), <int64_t *>&rs.retired, sizeof(RouteCounters) // 8)
        for i in range(h.n_slots):
            s = shm_slot(h, i)
            if ld(&s.generation):
                fold(&row_requests(h, r)[i], &s.retired_requests, 1)
                fold(&row_errors(h, r)[i], &s.retired_errors, 1)
                fold(<int64_t *>row_server(h, r, i), <int64_t *>&s.retired, sizeof(ServerCounters) // 8)
        add(&h.fold_seq, 1)
        add(&h.fold_busy, -1)

    def reap_rows(self):
        """Release the rows of processes that no longer exist (after a master crash or SIGKILL)."""
        cdef ShmHeader *h = self.hdr()
        dead = []
        for r in range(h.n_rows):
            pid = ld(&shm_row(h, r).pid)
            if pid:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    dead.append(pid)
                except PermissionError:
                    pass
        for pid in dead:
            self.release_row(pid)
        return dead

    def rows(self):
        cdef ShmHeader *h = self.hdr()
        t = now_ms()
        return [{"row": r, "pid": ld(&shm_row(h, r).pid),
                 "heartbeat_age": (t - ld(&shm_row(h, r).heartbeat_ms)) / 1000.0}
                for r in range(h.n_rows) if ld(&shm_row(h, r).pid)]

    # --- operator and health-checker writes ---------------------------------------------------------

    def _slot_of(self, upstream, address):
        i = self.find(upstream, address)
        if i < 0:
            raise KeyError(f"no server {address} in upstream {upstream}")
        return i

    def set_admin(self, upstream, address, state):
        """state: "enabled", "draining" or "disabled" (fastproxy enable|drain|disable)."""
        codes = {v: k for k, v in ADMIN_NAMES.items()}
        if state not in codes:
            raise ValueError(f"unknown admin state {state!r}")
        cdef ServerSlot *s = shm_slot(self.hdr(), self._slot_of(upstream, address))
        if ld(&s.admin) != codes[state]:
            st(&s.admin, codes[state])
            st(&s.last_change_ms, now_ms())
            if codes[state] == ADMIN_ENABLED:
                st(&s.slow_start_since_ms, now_ms())

    def set_weight(self, upstream, address, int weight):
        if not 1 <= weight <= 1000:
            raise ValueError("weight must be 1..1000")
        cdef ServerSlot *s = shm_slot(self.hdr(), self._slot_of(upstream, address))
        st(&s.runtime_weight, weight)
        add(&shm_group(self.h, s.group).version, 1)

    def set_health(self, int slot, bint up):
        """The health checker's verdict; a server coming up starts its slow start and passive slate."""
        cdef ServerSlot *s = shm_slot(self.hdr(), slot)
        cdef int64_t t = now_ms()
        cdef int64_t want = HEALTH_UP if up else HEALTH_DOWN
        if ld(&s.health) == want:
            return False
        if up:
            st(&s.down_until_ms, 0)
            st(&s.fail_count, 0)
            st(&s.fails, 0)
            st(&s.slow_start_since_ms, t)
        st(&s.health, want)
        st(&s.last_change_ms, t)
        return True

    def count_check(self, int slot):
        add(&shm_slot(self.hdr(), slot).checks, 1)

    def _test_add_active(self, int slot, long n):
        """Test hook: n atomic increments of a slot's global active count (the fork test hammers it)."""
        cdef int64_t *p = &shm_slot(self.hdr(), slot).active
        cdef long _i
        for _i in range(n):
            add(p, 1)

    def _test_count(self, int row, str event, double value=0, int route_slot=-1, int slot=-1):
        """Test hook: one call of _counters.pxd's inline function for event on a row, as the core makes it
        (route_slot / slot -1: no route / no server counters)."""
        cdef ShmHeader *h = self.hdr()
        cdef WorkerCounters *w = row_counters(h, row)
        cdef RouteCounters *rc = row_route(h, row, route_slot) if route_slot >= 0 else NULL
        cdef ServerCounters *sc = row_server(h, row, slot) if slot >= 0 else NULL
        if event == "client_open":
            count_client_open(w)
        elif event == "client_close":
            count_client_close(w)
        elif event == "backend_open":
            count_backend_open(w)
        elif event == "backend_close":
            count_backend_close(w)
        elif event == "backend_idle":
            gauge_add(&w.backend_idle, <int64_t>value)
        elif event == "request":
            count_request(w)
            count_routed(rc)
        elif event == "response":
            count_response(w, rc, sc, <int>value)
        elif event == "bytes_in":
            count_bytes_in(w, <int64_t>value)
        elif event == "bytes_out":
            count_bytes_out(w, rc, sc, <int64_t>value)
        elif event == "error":
            count_error(w, <int>value)
        elif event == "latency":
            count_latency(w, value)
        else:
            raise ValueError(event)

    # --- reading ------------------------------------------------------------------------------------

    def counters(self):
        """The counters as they are now, unsummed (fastproxy/counters.py shapes and sums them):

            {"rows": [{"row", "pid", "generation", "worker": {field: value | [values]},
                       "routes": {route slot: {...}}, "servers": {slot: {...}}}, ...],
             "retired": {"worker": {...}, "routes": {route slot: {...}}, "servers": {slot: {...}}},
             "routes": {route slot: key}, "servers": {slot: (upstream, address)}}

        Only assigned route and server slots appear. Read again while a row is being folded into the
        retired totals (so nothing is counted twice or missed); after 100 tries (a process killed mid-fold)
        the last reading is returned as it is.
        """
        cdef ShmHeader *h = self.hdr()
        cdef int64_t seq
        for _ in range(100):
            seq = ld(&h.fold_seq)
            if ld(&h.fold_busy) == 0:
                out = self._read_counters()
                if ld(&h.fold_busy) == 0 and ld(&h.fold_seq) == seq:
                    return out
            time.sleep(0.001)
        return self._read_counters()

    def _read_counters(self):
        cdef ShmHeader *h = self.hdr()
        cdef WorkerCounters w
        cdef RouteCounters rc
        cdef ServerCounters sc
        cdef int r, i
        routes = {i: self._route_key(i) for i in range(h.n_routes) if ld(&shm_route(h, i).generation)}
        servers = {i: self._slot_key(i) for i in range(h.n_slots) if ld(&shm_slot(h, i).generation)}
        rows = []
        for r in range(h.n_rows):
            pid = ld(&shm_row(h, r).pid)
            if not pid:
                continue
            load_words(<int64_t *>&w, <int64_t *>row_counters(h, r), sizeof(WorkerCounters) // 8)
            row = {"row": r, "pid": pid, "generation": ld(&shm_row(h, r).generation), "worker": w,
                   "routes": {}, "servers": {}}
            for i in routes:
                load_words(<int64_t *>&rc, <int64_t *>row_route(h, r, i), sizeof(RouteCounters) // 8)
                row["routes"][i] = rc
            for i in servers:
                load_words(<int64_t *>&sc, <int64_t *>row_server(h, r, i), sizeof(ServerCounters) // 8)
                row["servers"][i] = dict(sc, requests=ld_relaxed(&row_requests(h, r)[i]),
                                         errors=ld_relaxed(&row_errors(h, r)[i]),
                                         active=ld_relaxed(&row_active(h, r)[i]))
            rows.append(row)
        load_words(<int64_t *>&w, <int64_t *>&h.retired, sizeof(WorkerCounters) // 8)
        retired = {"worker": w, "routes": {}, "servers": {}}
        for i in routes:
            load_words(<int64_t *>&rc, <int64_t *>&shm_route(h, i).retired, sizeof(RouteCounters) // 8)
            retired["routes"][i] = rc
        for i in servers:
            load_words(<int64_t *>&sc, <int64_t *>&shm_slot(h, i).retired, sizeof(ServerCounters) // 8)
            retired["servers"][i] = dict(sc, requests=ld_relaxed(&shm_slot(h, i).retired_requests),
                                         errors=ld_relaxed(&shm_slot(h, i).retired_errors), active=0)
        return {"rows": rows, "retired": retired, "routes": routes, "servers": servers}

    def snapshot(self):
        """Every assigned server as a dict (read-only copy): fastproxy backends, status, tests."""
        cdef ShmHeader *h = self.hdr()
        cdef ServerSlot *s
        cdef int i, r
        cdef int64_t requests, errors, t = now_ms()
        out = []
        live_rows = [r for r in range(h.n_rows) if ld(&shm_row(h, r).pid)]
        for i in range(h.n_slots):
            s = shm_slot(h, i)
            if not ld(&s.generation):
                continue
            requests = ld(&s.retired_requests)
            errors = ld(&s.retired_errors)
            for r in live_rows:
                requests += ld(&row_requests(h, r)[i])
                errors += ld(&row_errors(h, r)[i])
            admin = ld(&s.admin)
            passive_down = ld(&s.down_until_ms) > 0
            if admin == ADMIN_DISABLED:
                state = "disabled"
            elif admin == ADMIN_DRAINING:
                state = "draining"
            elif ld(&s.health) == HEALTH_DOWN or passive_down:
                state = "down"
            else:
                state = "up"
            out.append({
                "slot": i,
                "upstream": self._group_name(s.group),
                "address": s.address[:s.address_len].decode(),
                "state": state,
                "admin": ADMIN_NAMES.get(admin, "?"),
                "health": "up" if ld(&s.health) == HEALTH_UP else "down",
                "passive_down": passive_down,
                "weight": ld(&s.runtime_weight),
                "config_weight": ld(&s.weight),
                "backup": bool(ld(&s.backup)),
                "max_conns": ld(&s.max_conns),
                "active": ld(&s.active),
                "requests": requests,
                "errors": errors,
                "fails": ld(&s.fails),
                "ewma_ms": ld(&s.ewma_us) / 1000.0,
                "checks": ld(&s.checks),
                "since_change": (t - ld(&s.last_change_ms)) / 1000.0,
                "generation": ld(&s.generation),
            })
        return out


_current = None


def create_for(config):
    """The master's call before forking: create or attach the named table and assign config to it."""
    global _current
    path = path_for(config)
    table = ShmTable(path, True, *sizes_for(config))
    table.reap_rows()
    table.assign(config)
    _current = table
    return table


def table_for(config):
    """The table this process should use for config: the one the master made (inherited through fork),
    else the named one, else (a core built without a master, e.g. in a test) a private anonymous one."""
    global _current
    if _current is not None:
        return _current
    path = path_for(config)
    if path is not None and os.path.exists(path):
        try:
            _current = ShmTable(path)
            return _current
        except ValueError:
            pass
    _current = ShmTable(None, True, *sizes_for(config))
    _current.assign(config)
    return _current
