# cython: language_level=3
"""The proxy: a worker's exchanges between clients and backends, on top of the event loop.

Where things live (one concern per module, each with its .pxd):
  _loop       epoll loop, listeners and accept (limit and back-off), timers, dispatch
  _transport  every read and write of a socket (plain TCP; TLS next), readiness, the outgoing queue
  _client     a client connection (what stays across its requests)
  _backend    servers and backend connections; opening a socket
  _pool       idle backend connections per server
  _exchange   one request and its response, reset in one place
  _routing    host/path -> route
  _filters    the per-route filter chain and the built-in filters
  _core       (this file) the two state machines that move an exchange along: request head, route,
              filters, balancer, backend, streaming both ways, retries, errors, keep-alive, tunnels

Rules of this module:
- A kept-alive request costs four system calls: read the client, write the backend, read the backend,
  write the client (readiness is remembered by the transport, see _transport.pxd).
- Bytes are never copied between buffers. A request body is forwarded straight out of the client's read
  buffer, a response body straight out of the backend's; only heads are rewritten, into a head buffer
  of the receiving side. Reading from one side pauses while its buffer holds bytes the other side has
  not taken yet: that is the back-pressure, and memory per connection stays at two buffers (plus one
  filter output piece on a route whose filters change the body).
- A request stays in the client buffer, untouched, until the first response byte arrives (as long as it
  fits): that is what makes a retry on another backend possible.
- Failures are told apart by side, as HAProxy's termination states are: only the server's own failures
  (connect, reset, timeout, bad response) count against it in the balancer and allow a retry; a client
  that is slow or leaves, and our own lack of resources, never do. While the backend waits for the
  client's body, only the client's timer runs.
- A request body is read whole before a backend is picked (route request_buffering, on by default:
  nginx's proxy_request_buffering): in the connection's buffer when it fits, else in an unlinked file.
  A slow client then never holds a backend connection, and the request can be retried elsewhere. A client
  must keep up [limits] min_rate bytes/s while it sends a head or a body (Apache's MinRate).
- Connections hold their buffers only while they have work; a client holds an Exchange only while a
  request is under way.
- Counters live in this worker's row of the shared table (_counters.pxd): one inline call per event, at
  the place the event happens (a connection opened or closed, a request, a response, bytes moved to or
  from a client, an error of a kind). fastproxy/counters.py reads them from any process.
"""

cimport cython
from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.errno cimport EINTR, EMFILE, ENFILE, ENOMEM, errno
from libc.string cimport memcmp, memcpy, memmove, strlen
from posix.unistd cimport close, pread, read, write

from fastproxy._accesslog cimport AccessLog, LogRecord
from fastproxy._backend cimport (BS_ACTIVE, BS_CLOSED, BS_CONNECTING, BS_IDLE, BackendConn, Server,
                                 UpstreamGroup, fill_sockaddr, open_socket)
from fastproxy._balancer cimport (KEY_COOKIE, KEY_HEADER, KEY_NONE, KEY_URI, OUTCOME_ABORTED,
                                  OUTCOME_CONNECT_FAIL, OUTCOME_HTTP_5XX, OUTCOME_OK, OUTCOME_RESET,
                                  OUTCOME_TIMEOUT, PICK_FULL, STICKY_COOKIE, Balancer, hash_bytes)
from fastproxy._counters cimport (ERR_BAD_REQUEST, ERR_CLIENT_ABORT, ERR_CLIENT_TIMEOUT,
                                  ERR_LOCAL_RESOURCE, ERR_SERVER_BAD_RESPONSE, ERR_SERVER_CONNECT,
                                  ERR_SERVER_RESET, ERR_SERVER_TIMEOUT, RouteCounters, ServerCounters,
                                  WorkerCounters, count_backend_close, count_backend_open, count_bytes_in,
                                  count_bytes_out, count_client_close, count_client_open, count_error,
                                  count_latency, count_request, count_response, count_routed, gauge_add,
                                  N_ERROR_KINDS)
from fastproxy._buffers cimport Buffer, BufferPool, buffer_make_room
from fastproxy._debug cimport DEBUG
from fastproxy._client cimport (CS_ANSWER, CS_BODY, CS_CLOSED, CS_CLOSING, CS_HEAD, CS_LINGER, CS_PROXY,
                                CS_TUNNEL, Client, format_addr)
from fastproxy._exchange cimport (F_BAD_RESPONSE, F_CONNECT, F_CONNECT_TIMEOUT, F_LOCAL, F_RESET, F_STALE,
                                  F_TIMEOUT, FRAME_AS_IS, FRAME_CHUNKED, FRAME_CLOSE, FRAME_DECHUNK,
                                  RS_BODY, RS_DONE, RS_WAIT_HEAD, TRIED_MAX, Exchange, ExchangePool)
from fastproxy._filters cimport (FILTER_ANSWERED, FILTER_BACKEND_HEAD, FILTER_BODY, FILTER_REQUEST,
                                 FILTER_RESPONSE, FILTER_TRANSFORM, FilterChain, head_add_fields,
                                 head_remove_field)
from fastproxy._http cimport (BODY_CHUNKED, BODY_CLOSE, BODY_LENGTH, BODY_NONE, METHOD_DELETE, METHOD_GET,
                              METHOD_HEAD, METHOD_OPTIONS, METHOD_PUT, METHOD_TRACE, ForwardInfo, HeaderField,
                              Limits, RequestHead, ResponseRewrite, chunked_feed, parse_request_head,
                              chunk_reset, parse_response_head, write_error_response, write_request_head,
                              write_response_head)
from fastproxy._loop cimport LIMIT_CONNECTIONS, LIMIT_FD_BUDGET, Conn, Loop
from fastproxy._pool cimport BackendPool
from fastproxy._routing cimport RouteTable
from fastproxy._shm cimport ShmHeader, ShmTable, row_counters, row_route, row_server
from fastproxy._sys cimport (EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLRDHUP, IPPROTO_TCP, SO_ERROR, SOL_SOCKET,
                             TCP_NODELAY, getsockopt, setsockopt, sockaddr_storage, socklen_t)
from fastproxy._transport cimport (IO_AGAIN, ListenerSettings, Outgoing, Transport, out_clear, out_flush,
                                   out_left, out_pending, out_push, tp_close, tp_init_plain, tp_read,
                                   tp_shutdown_write)

import os

from fastproxy import _counters, _shm
from fastproxy._filters import built_in_filters, python_hooks_filter
from fastproxy._loop import debug_live_conns

cdef enum:
    HEAD_SLACK = 4096           # room a rewritten head may grow by (forwarding fields, Connection, filters)
    MAX_INTERIM = 16            # 1xx responses one request may get before the backend is deemed broken
    FD_WAIT_MAX = 4096          # requests that may wait for a descriptor to open their backend connection

cdef double LINGER_SECONDS = 2.0       # how long an answered-and-closing client may keep sending
cdef double DRAIN_IDLE_GRACE = 1.0     # while draining, an idle kept-alive client is closed after this

cdef const char *CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
cdef const char *CRLF = b"\r\n"
cdef const char *CRLF_LAST_CHUNK = b"\r\n0\r\n\r\n"
cdef const char *LAST_CHUNK = b"0\r\n\r\n"
cdef const char *HEX = b"0123456789abcdef"


# --- failures: one table --------------------------------------------------------------------------

cdef inline bint is_idempotent(int method) noexcept nogil:
    # RFC 9110 9.2.2
    return (method == METHOD_GET or method == METHOD_HEAD or method == METHOD_PUT or
            method == METHOD_DELETE or method == METHOD_OPTIONS or method == METHOD_TRACE)


cdef inline bint failure_allows_retry(int f, int method) noexcept nogil:
    # Nothing reached the backend: any method may go to the next server. A connection lost before any
    # response byte may have had the request applied: only idempotent ones go again (RFC 9110 9.2.2).
    # A timeout or a garbled answer is the server's verdict, and a local failure would fail again: no retry.
    if f == F_CONNECT or f == F_CONNECT_TIMEOUT:
        return 1
    if f == F_STALE or f == F_RESET:
        return is_idempotent(method)
    return 0


cdef inline int failure_outcome(int f) noexcept nogil:
    # what the balancer's passive checks hear about the server
    if f == F_CONNECT or f == F_CONNECT_TIMEOUT:
        return OUTCOME_CONNECT_FAIL
    if f == F_TIMEOUT:
        return OUTCOME_TIMEOUT
    if f == F_RESET or f == F_BAD_RESPONSE:
        return OUTCOME_RESET
    return OUTCOME_ABORTED      # a stale pooled connection, or our own failure: not the server's


cdef inline int failure_status(int f) noexcept nogil:
    if f == F_CONNECT_TIMEOUT or f == F_TIMEOUT:
        return 504
    if f == F_LOCAL:
        return 503
    return 502


# ErrorKind -> its name (as _counters.ERROR_KINDS names it), for the access log's "error" field
cdef const char *ERROR_NAMES_C[8]
ERROR_NAMES_C[:] = [b"client_abort", b"client_timeout", b"bad_request", b"local_resource", b"server_connect",
                    b"server_reset", b"server_timeout", b"server_bad_response"]
assert [n.decode() for n in ERROR_NAMES_C[:N_ERROR_KINDS]] == list(_counters.ERROR_NAMES)


cdef inline int failure_error_kind(int f) noexcept nogil:
    # what the counters call it (_counters.ErrorKind); a stale pooled connection is nobody's error
    if f == F_CONNECT or f == F_CONNECT_TIMEOUT:
        return ERR_SERVER_CONNECT
    if f == F_RESET:
        return ERR_SERVER_RESET
    if f == F_TIMEOUT:
        return ERR_SERVER_TIMEOUT
    if f == F_BAD_RESPONSE:
        return ERR_SERVER_BAD_RESPONSE
    if f == F_LOCAL:
        return ERR_LOCAL_RESOURCE
    return -1


cdef inline unsigned char lower(unsigned char c) noexcept nogil:
    return c + 32 if 65 <= c <= 90 else c


cdef inline int copy_bounded(char *dst, Py_ssize_t cap, const char *src, Py_ssize_t n) noexcept nogil:
    if n > cap:
        n = cap
    memcpy(dst, src, n)
    return <int>n


cdef bint name_is(const char *base, const HeaderField *h, const char *name, Py_ssize_t n) noexcept nogil:
    """Whether the field's name is `name`, compared case-insensitively (RFC 9110 5.1)."""
    cdef Py_ssize_t i
    if h.name.len != n:
        return 0
    for i in range(n):
        if lower(base[h.name.off + i]) != lower(name[i]):
            return 0
    return 1


cdef inline void set_nodelay(int fd) noexcept nogil:
    cdef int one = 1
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))


cdef long long FD_RESERVE = 64   # descriptors kept for backend connections, spool files, logs


def fd_budget():
    """Connections (clients and backends) a worker may hold: its open-files limit less a reserve, so that
    the clients it accepts can still reach a backend (0: no limit)."""
    import resource
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return 0
    return max(1, soft - FD_RESERVE)


def spool_file(directory):
    """An unlinked temporary file (O_TMPFILE where the filesystem has it); returns its fd."""
    import os
    import tempfile
    directory = directory or tempfile.gettempdir()
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError:
        fd, path = tempfile.mkstemp(dir=directory)
        os.unlink(path)
        return fd


cdef Py_ssize_t chunk_size_line(char *out, Py_ssize_t n) noexcept nogil:
    """ "<hex>\\r\\n" for a chunk of n bytes, into out (24 bytes); returns its length."""
    cdef char digits[16]
    cdef int k = 0, i
    while True:
        digits[k] = HEX[n & 15]
        k += 1
        n >>= 4
        if n == 0:
            break
    for i in range(k):
        out[i] = digits[k - 1 - i]
    out[k] = b'\r'
    out[k + 1] = b'\n'
    return k + 2


@cython.final
cdef class Core(Loop):
    cdef int worker_id
    cdef Balancer balancer
    cdef list waiting             # clients queued for a server at max_conns, oldest first
    cdef list fd_waiting          # clients whose backend connection waits for a free descriptor
    cdef dict group_index
    cdef BackendPool pool
    cdef ExchangePool exchanges     # used Exchanges, handed out again (no allocation per request)
    cdef Limits limits
    cdef Server *servers
    cdef int n_servers
    cdef UpstreamGroup *groups
    cdef int n_groups
    cdef RouteTable routes
    cdef Py_ssize_t head_cap
    cdef long long max_body
    cdef double t_client_header, t_client_body, t_keepalive
    cdef double t_connect, t_read, t_send, t_drain
    cdef double min_rate, rate_grace  # bytes/s a client must keep up once rate_grace has passed (0: off)
    cdef object spool_dir           # where request bodies larger than the buffer go (None: system temp)
    cdef long long spool_max        # largest body buffered in a file (0: none)
    cdef bytes server_header
    cdef const char *server_header_ptr    # into server_header, for the hot path
    cdef Py_ssize_t server_header_len
    cdef bint add_forwarded
    cdef bint draining
    cdef double drain_deadline
    cdef double limit_logged_at
    cdef double local_logged_at
    cdef int local_errno            # why the last backend connection could not be opened here
    # counters: blocks of this worker's row of the shared table (_counters.pxd)
    cdef WorkerCounters *wc
    cdef RouteCounters **route_ctr  # per route (NULL: a route the table has no slot for)
    cdef ServerCounters **server_ctr  # per server
    cdef AccessLog alog           # None when the access log is off

    def __init__(self, config, listen_fds, int worker_id=0, Balancer balancer=None, hooks=None):
        """hooks: per route of config.routes, its fastproxy.hooks.RouteHooks (or None); loaded here when
        not given (the worker loads them after fork and passes them)."""
        cdef int i
        self.worker_id = worker_id
        self.balancer = balancer if balancer is not None else Balancer(config, _shm.table_for(config),
                                                                       worker_id)
        self.waiting = []
        self.fd_waiting = []
        fds = list(listen_fds)
        if len(fds) > 64:
            raise ValueError("at most 64 listeners")
        for i, fd in enumerate(fds):
            self.listeners[i].fd = fd
            self.listeners[i].index = i
            self.listeners[i].proto = b"http"
            self.listeners[i].proto_len = 4
        self.n_listeners = len(fds)
        self.max_clients = getattr(config.server, "max_connections", 0) or 0
        self.fd_budget = fd_budget()
        lim = config.limits
        self.limits.max_head = lim.max_head_size
        self.limits.max_target = lim.max_uri_size
        self.limits.max_headers = min(lim.max_headers, 128)
        self.head_cap = lim.max_head_size + HEAD_SLACK
        self.exchanges = ExchangePool()
        self.buffers = BufferPool(max(lim.buffer_size, lim.max_head_size + 1024), self.head_cap)
        self.max_body = lim.max_body_size
        t = config.timeouts
        self.t_client_header = t.client_header
        self.t_client_body = t.client_body
        self.t_keepalive = t.keepalive
        self.t_connect = t.upstream_connect
        self.t_read = t.upstream_read
        self.t_send = t.upstream_send
        self.t_drain = config.server.drain_timeout
        self.min_rate = getattr(lim, "min_rate", 0)
        self.rate_grace = getattr(t, "rate_grace", 0.0)
        self.spool_dir = getattr(lim, "spool_dir", None)
        self.spool_max = getattr(lim, "spool_max_size", 0)
        self.server_header = (config.server.server_header or "").encode("latin-1")
        self.server_header_ptr = self.server_header
        self.server_header_len = len(self.server_header)
        self.add_forwarded = bool(config.server.forwarded)
        self._load_upstreams(config)
        if hooks is None:
            from fastproxy import hooks as hook_api
            hooks = hook_api.load(config)
        self.routes = RouteTable(config, self.group_index, self._filter_chains(config, hooks))
        self._bind_counters(config)

    def _bind_counters(self, config):
        """This worker's counter blocks, in the row of the shared table its balancer claimed."""
        cdef ShmTable table = self.balancer.shm
        cdef ShmHeader *h = self.balancer.h
        cdef int row = self.balancer.row
        cdef int i, slot
        self.wc = row_counters(h, row)
        self.route_ctr = <RouteCounters **>PyMem_Calloc(max(1, len(config.routes)), sizeof(RouteCounters *))
        self.server_ctr = <ServerCounters **>PyMem_Calloc(max(1, self.n_servers), sizeof(ServerCounters *))
        if self.route_ctr == NULL or self.server_ctr == NULL:
            raise MemoryError()
        for i, r in enumerate(config.routes):
            slot = table.find_route(_shm.route_key(r))
            self.route_ctr[i] = row_route(h, row, slot) if slot >= 0 else NULL
        for i in range(self.n_servers):
            self.server_ctr[i] = row_server(h, row, self.balancer.servers[i].slot)

    def _load_upstreams(self, config):
        names = list(config.upstreams)
        all_servers = [(gi, s) for gi, name in enumerate(names) for s in config.upstreams[name].servers]
        self.n_groups = len(names)
        self.n_servers = len(all_servers)
        self.groups = <UpstreamGroup *>PyMem_Calloc(max(1, self.n_groups), sizeof(UpstreamGroup))
        self.servers = <Server *>PyMem_Calloc(max(1, self.n_servers), sizeof(Server))
        if self.groups == NULL or self.servers == NULL:
            raise MemoryError()
        self.pool = BackendPool(self.n_servers)
        self.group_index = {name: i for i, name in enumerate(names)}
        index = 0
        for gi, name in enumerate(names):
            up = config.upstreams[name]
            self.groups[gi].first_server = index
            self.groups[gi].n_servers = len(up.servers)
            self.groups[gi].keepalive = up.keepalive
            self.groups[gi].keepalive_timeout = up.keepalive_timeout
            for s in up.servers:
                fill_sockaddr(&self.servers[index], s.host, s.port)
                text = (("[%s]:%d" if ":" in s.host else "%s:%d") % (s.host, s.port)).encode()[:63]
                memcpy(self.servers[index].text, <char *>text, len(text))
                self.servers[index].text_len = len(text)
                self.servers[index].group = gi
                index += 1

    def _filter_chains(self, config, route_hooks):
        """Per route: its FilterChain (built-in filters, then the Python hooks), or None without filters."""
        chains = []
        for r, rh in zip(config.routes, route_hooks):
            group = self.group_index[r.upstream] if r.upstream is not None else -1
            filters = built_in_filters(r, self.balancer, group)
            hooks = python_hooks_filter(rh)
            if hooks is not None:
                filters.append(hooks)
            chains.append(FilterChain(filters) if filters else None)
        return chains

    def __dealloc__(self):
        PyMem_Free(self.servers)
        PyMem_Free(self.groups)
        PyMem_Free(self.route_ctr)
        PyMem_Free(self.server_ctr)

    # --- Python surface ---------------------------------------------------------------------------

    def run(self, int wakeup_fd=-1):
        """Run the loop until stop(); returns when every connection is closed."""
        if not self.stopping:
            self.run_loop(wakeup_fd)
        self.close_all()
        if self.alog is not None:
            self.alog.flush()

    def stop(self, graceful=False):
        """Called from a signal handler: fast (close everything) or graceful (finish what is in flight)."""
        if graceful and not self.stopping:
            self.start_drain()
        else:
            self.stopping = True

    def set_access_log(self, int fd, str fmt="combined"):
        """Log requests to fd (-1: off). Lines buffered for the old fd are written there first."""
        if self.alog is not None:
            self.alog.flush()
        self.alog = AccessLog(fd, fmt) if fd >= 0 else None

    # --- the loop's callbacks ---------------------------------------------------------------------

    cdef void on_event(self, Conn conn, unsigned int events):
        cdef Client c
        if type(conn) is Client:
            c = <Client>conn
            if c.state == CS_HEAD:
                self.client_read_head(c)
            elif c.state == CS_BODY:
                self.read_body(c, c.ex)
            elif c.state == CS_PROXY:
                self.pump(c)
            elif c.state == CS_TUNNEL:
                self.tunnel(c)
            elif c.state == CS_ANSWER:
                self.answering(c)
            elif c.state == CS_CLOSING:
                self.closing(c)
            elif c.state == CS_LINGER:
                self.linger(c)
        else:
            self.backend_event(<BackendConn>conn, events)

    cdef void on_timeout(self, Conn conn):
        if type(conn) is Client:
            self.client_timeout(<Client>conn)
        else:
            self.backend_timeout(<BackendConn>conn)

    cdef void on_tick(self):
        self.wc.buffers_in_use = self.buffers.in_use    # gauges published once a tick
        self.wc.exchanges_in_use = self.exchanges.in_use
        if DEBUG:
            self.wc.debug_conn_objects = debug_live_conns()
        if self.draining and (self.wc.client_open == 0 or self.now >= self.drain_deadline):
            self.stopping = True
        self.balancer.tick(self.now)      # also the heartbeat the master watches (our shm row)
        if self.waiting:
            self.serve_waiting()
        if self.fd_waiting:
            self.expire_fd_waiting()
        if self.alog is not None:
            self.alog.refresh_time()
            self.alog.flush()

    cdef void on_limit(self, int reason):
        # once a minute at most: the condition may last, the log must not fill up
        if self.now - self.limit_logged_at < 60 and self.limit_logged_at > 0:
            return
        self.limit_logged_at = self.now
        from fastproxy.log import log
        if reason == LIMIT_CONNECTIONS:
            log("worker %d: max_connections (%d) reached: new connections wait in the listen queue"
                % (self.worker_id, self.max_clients))
        elif reason == LIMIT_FD_BUDGET:
            log("worker %d: %d connections open, the open-files limit (%d) less a reserve of %d for backend "
                "connections: new connections wait in the listen queue (raise ulimit -n)"
                % (self.worker_id, self.n_conns, self.fd_budget + FD_RESERVE, FD_RESERVE))
        else:
            log("worker %d: out of file descriptors or memory while accepting (%d clients open): "
                "accepting pauses and retries" % (self.worker_id, self.n_clients))

    cdef void start_drain(self):
        cdef Client c
        self.draining = True
        self.drain_deadline = self.now + self.t_drain
        self.close_listeners()
        # Idle kept-alive clients go after a short grace; the others when their exchange ends.
        for obj in list(self.live.values()):
            if type(obj) is Client:
                c = <Client>obj
                if c.state == CS_HEAD and c.rb.end == c.rb.start:
                    self.arm(c, c.idle_since + DRAIN_IDLE_GRACE)

    cdef close_all(self):
        for obj in list(self.live.values()):
            if type(obj) is Client:
                self.close_client(<Client>obj)
            else:
                self.close_backend(<BackendConn>obj)
        self.graveyard = []

    # --- accepting ------------------------------------------------------------------------------

    cdef void on_accept(self, int fd, sockaddr_storage *addr, const ListenerSettings *ls):
        cdef Client c = Client.__new__(Client)
        tp_init_plain(&c.tp, fd, ls)
        format_addr(addr, c.addr, &c.addr_len)
        c.state = CS_HEAD
        c.idle_since = self.now
        if not self.register(c):
            self.failed(c, ERR_LOCAL_RESOURCE)
            close(fd)
            self.client_closed()
            return
        count_client_open(self.wc)
        self.arm(c, self.now + self.t_client_header)
        # The request usually arrives with or right after the handshake: try before waiting.
        c.tp.rd_ready = 1
        c.tp.wr_ready = 1
        self.client_read_head(c)

    # --- request heads --------------------------------------------------------------------------

    cdef void client_read_head(self, Client c):
        cdef Py_ssize_t n, avail
        cdef Exchange ex
        while True:
            avail = c.rb.end - c.rb.start
            if avail > 0:
                if c.ex is None:
                    c.ex = self.exchanges.take()
                ex = c.ex
                n = parse_request_head(c.rb.data + c.rb.start, avail, &ex.req, &self.limits)
                if n > 0:
                    self.start_request(c, ex, n)
                    return
                if n < 0:
                    self.open_bare_log(c, ex)
                    self.failed(c, ERR_BAD_REQUEST)
                    self.answer_error(c, ex.req.err_status)
                    return
            if not c.tp.rd_ready:
                if avail > 0:
                    self.arm(c, self.head_deadline(c))  # part of a head: the rest is due by then
                return
            if c.rb.data == NULL and not self.buffers.take(&c.rb, &c.head):
                self.failed(c, ERR_LOCAL_RESOURCE)
                self.close_client(c)      # out of memory: this one client goes, the worker stays
                return
            if avail == 0:
                c.rb.start = c.rb.end = 0
            elif not buffer_make_room(&c.rb):
                self.answer_error(c, 431)     # cannot happen: the buffer is larger than max_head
                return
            n = tp_read(&c.tp, c.rb.data + c.rb.end, c.rb.cap - c.rb.end)
            if n > 0:
                count_bytes_in(self.wc, n)
                if avail == 0:            # a head has begun
                    c.head_start = self.now
                    c.head_bytes = 0
                c.head_bytes += n
                c.rb.end += n
            elif n == IO_AGAIN:
                if c.rb.end == c.rb.start:
                    self.buffers.give(&c.rb, &c.head)   # idle: no buffer until bytes come
                else:
                    self.arm(c, self.head_deadline(c))  # part of a head: the rest is due by then
                return
            else:
                if avail > 0:
                    self.failed(c, ERR_CLIENT_ABORT)    # mid-head (idle: the client is just done)
                self.close_client(c)      # the client is done (idle or mid-head: nothing to answer)
                return

    cdef void start_request(self, Client c, Exchange ex, Py_ssize_t head_len):
        cdef int ri
        cdef int r
        count_request(self.wc)
        ex.start(c.rb.start, head_len)
        ex.started = self.now
        ex.timed = 1
        if self.alog is not None:
            self.open_log(c, ex)
        if ex.req.body_kind == BODY_LENGTH and self.max_body and ex.req.content_length > self.max_body:
            self.failed(c, ERR_BAD_REQUEST)
            self.answer_error(c, 413)
            return
        ri = self.routes.match(c.rb.data + ex.req_start + ex.req.host.off, ex.req.host.len,
                               c.rb.data + ex.req_start + ex.req.path.off, ex.req.path.len)
        if ri < 0:
            self.answer_error(c, 404)
            return
        ex.route = ri
        ex.rctr = self.route_ctr[ri]
        count_routed(ex.rctr)
        ex.group = self.routes.routes[ri].group
        ex.filters = self.routes.routes[ri].filters
        if ex.filters:
            ex.chain = self.routes.chains[ri]
            if ex.filters & FILTER_REQUEST:
                ex.keep_alive = (ex.req.keep_alive and ex.req_done and not self.draining and
                                 self.t_keepalive > 0)
                r = (<FilterChain>ex.chain).run_request(ex, c)
                if r == FILTER_ANSWERED:
                    self.answer_local(c, ex)
                    return
                if r < 0:
                    self.answer_error(c, 500)
                    return
        if ex.group < 0:
            self.answer_error(c, 404)     # a route for its filters only, and none answered
            return
        self.balancing_key(c, ex)
        self.disarm(c)
        # RFC 9110 10.1.1: we want the body, so say so now, unless it is already on its way.
        if ex.req.expect_continue and not ex.req_done and c.rb.end == ex.fwd and ex.req.version_minor == 1:
            self.send_continue(c, ex)
        ex.body_start = self.now
        if not ex.req_done and self.routes.routes[ri].buffering and self.may_buffer(c, ex):
            c.state = CS_BODY
            ex.scanned = ex.fwd
            self.read_body(c, ex)
            return
        c.state = CS_PROXY
        self.connect_backend(c, ex)

    # --- deadlines of a client sending its request ------------------------------------------------------

    cdef inline double rate_deadline(self, double start, long long received, double limit):
        """The earlier of `limit` and when a sender that began at `start` and has sent `received` bytes
        falls below min_rate (once rate_grace has passed)."""
        cdef double r
        if self.min_rate > 0:
            r = start + self.rate_grace + received / self.min_rate
            if r < limit:
                return r
        return limit

    cdef inline double head_deadline(self, Client c):
        """A head must come whole within client_header, and at min_rate."""
        return self.rate_deadline(c.head_start, c.head_bytes, c.head_start + self.t_client_header)

    cdef inline double body_deadline(self, Exchange ex):
        """A body must keep coming: client_body between reads, and min_rate."""
        return self.rate_deadline(ex.body_start, ex.body_bytes, self.now + self.t_client_body)

    # --- request buffering ------------------------------------------------------------------------------

    cdef inline bint may_buffer(self, Client c, Exchange ex):
        """A Content-Length body is buffered if it fits the buffer or the spool limit; else streamed."""
        return (ex.req.body_kind != BODY_LENGTH or
                ex.fwd + ex.req.content_length <= c.rb.cap or ex.req.content_length <= self.spool_max)

    cdef void read_body(self, Client c, Exchange ex):
        """Read the request body whole (into the buffer, or a file when it outgrows it), then pick a
        backend."""
        cdef Py_ssize_t n, shift
        cdef int r
        while True:
            r = self.scan_body(c, ex)
            if r < 0:
                return
            if r == 1:
                self.body_read(c, ex)
                return
            if ex.spool_fd >= 0 and not self.spool(c, ex, ex.scanned):
                return
            if not c.tp.rd_ready:
                self.arm(c, self.body_deadline(ex))
                return
            if c.rb.end == c.rb.cap:
                if c.rb.start > 0:
                    shift = c.rb.start
                    buffer_make_room(&c.rb)
                    ex.req_start -= shift
                    ex.fwd -= shift
                    ex.scanned -= shift
                    continue
                # the body outgrows the buffer: on to a file
                if self.spool_max == 0:     # no files: stream it after all (nothing was sent yet)
                    self.body_read(c, ex)
                    return
                if not self.open_spool(c, ex) or not self.spool(c, ex, ex.scanned):
                    return
            n = tp_read(&c.tp, c.rb.data + c.rb.end, c.rb.cap - c.rb.end)
            if n > 0:
                count_bytes_in(self.wc, n)
                c.rb.end += n
                ex.body_bytes += n
                self.arm(c, self.body_deadline(ex))
            elif n == IO_AGAIN:
                self.arm(c, self.body_deadline(ex))
                return
            else:
                self.abort(c, ERR_CLIENT_ABORT)     # the client left in the middle of its request
                return

    cdef int scan_body(self, Client c, Exchange ex):
        """Check the framing of the body bytes read since the last call: 1 the body is complete (it ends
        at ex.scanned), 0 more is needed, -1 the body is bad (answered)."""
        cdef Py_ssize_t avail = c.rb.end - ex.scanned, take, outlen
        if ex.req.body_kind == BODY_LENGTH:
            take = avail if avail < ex.req_left else ex.req_left
            ex.req_left -= take
            ex.scanned += take
            return ex.req_left == 0
        if avail == 0:
            return 0
        take = chunked_feed(&ex.req_chunk, c.rb.data + ex.scanned, avail, 0, &outlen)
        if take < 0:
            self.failed(c, ERR_BAD_REQUEST)
            self.answer_error(c, 400)
            return -1
        ex.scanned += take
        ex.req_body_seen += take
        if self.max_body and ex.req_body_seen > self.max_body + 64:
            self.failed(c, ERR_BAD_REQUEST)
            self.answer_error(c, 413)
            return -1
        return ex.req_chunk.done

    cdef bint open_spool(self, Client c, Exchange ex):
        """An unlinked temporary file for this body. False: none could be made (answered 500)."""
        try:
            ex.spool_fd = spool_file(self.spool_dir)
        except OSError as e:
            self.spool_failed(c, "cannot create a file in %s: %s" % (self.spool_dir or "the temp dir", e))
            return 0
        return 1

    cdef bint spool(self, Client c, Exchange ex, Py_ssize_t upto):
        """Move the body bytes from the buffer (up to `upto`) to the file; pipelined bytes after the body
        stay in the buffer right after the head. False: the write failed (answered 500)."""
        cdef Py_ssize_t n = upto - ex.fwd, done = 0, w
        while done < n:
            w = write(ex.spool_fd, c.rb.data + ex.fwd + done, n - done)
            if w < 0:
                if errno == EINTR:
                    continue
                self.spool_failed(c, "cannot write a request body to its file: errno %d" % errno)
                return 0
            done += w
        ex.spool_len += n
        if ex.spool_len > self.spool_max:       # a chunked body past the limit (a sized one never gets here)
            self.failed(c, ERR_BAD_REQUEST)
            self.answer_error(c, 413)
            return 0
        memmove(c.rb.data + ex.fwd, c.rb.data + upto, c.rb.end - upto)
        c.rb.end -= n
        ex.scanned = ex.fwd
        return 1

    cdef void spool_failed(self, Client c, str why):
        from fastproxy.log import log
        log("worker %d: %s" % (self.worker_id, why))
        self.failed(c, ERR_LOCAL_RESOURCE)
        self.answer_error(c, 500)

    cdef void body_read(self, Client c, Exchange ex):
        """The whole body is in (or, without a file to put it in, as much as fits): pick a backend. The body
        goes out from where it is (buffer or file), the rest streamed."""
        if ex.spool_fd >= 0 and not self.spool(c, ex, ex.scanned):
            return
        ex.rewind()
        c.state = CS_PROXY
        self.disarm(c)
        self.connect_backend(c, ex)

    cdef void open_log(self, Client c, Exchange ex):
        cdef LogRecord *r = &ex.log
        cdef const char *base = c.rb.data + ex.req_start
        cdef int i
        r.started = self.now
        r.remote_len = copy_bounded(r.remote, sizeof(r.remote), c.addr, c.addr_len)
        r.method_len = copy_bounded(r.method, sizeof(r.method), base + ex.req.method_span.off,
                                    ex.req.method_span.len)
        r.uri_len = copy_bounded(r.uri, sizeof(r.uri), base + ex.req.target.off, ex.req.target.len)
        r.version_minor = ex.req.version_minor
        r.host_len = copy_bounded(r.host, sizeof(r.host), base + ex.req.host.off, ex.req.host.len)
        r.referer_len = r.user_agent_len = r.upstream_len = 0
        r.status = 0
        r.bytes_sent = 0
        r.error_len = 0
        for i in range(ex.req.n_headers):
            if name_is(base, &ex.req.headers[i], b"referer", 7):
                r.referer_len = copy_bounded(r.referer, sizeof(r.referer),
                                             base + ex.req.headers[i].value.off, ex.req.headers[i].value.len)
            elif name_is(base, &ex.req.headers[i], b"user-agent", 10):
                r.user_agent_len = copy_bounded(r.user_agent, sizeof(r.user_agent),
                                                base + ex.req.headers[i].value.off,
                                                ex.req.headers[i].value.len)
        ex.log_open = 1

    cdef void open_bare_log(self, Client c, Exchange ex):
        """A request refused before its head could be read: logged with "-" for the request."""
        ex.start(c.rb.start, 0)
        if self.alog is None:
            return
        ex.log.started = self.now
        ex.log.remote_len = copy_bounded(ex.log.remote, sizeof(ex.log.remote), c.addr, c.addr_len)
        ex.log.method_len = ex.log.uri_len = ex.log.host_len = 0
        ex.log.referer_len = ex.log.user_agent_len = ex.log.upstream_len = 0
        ex.log.version_minor = 1
        ex.log.status = 0
        ex.log.bytes_sent = 0
        ex.log.error_len = 0
        ex.log_open = 1

    cdef void close_log(self, Exchange ex, int status):
        """The exchange is over (answered, failed or abandoned): count its latency, write its line."""
        if ex.timed:
            ex.timed = 0
            if status != 499 or ex.status:     # abandoned (the client went away): no latency to speak of
                count_latency(self.wc, self.now - ex.started)
        if not ex.log_open:
            return
        ex.log_open = 0
        if self.alog is None:
            return
        ex.log.status = ex.status if ex.status else status
        ex.log.bytes_sent = ex.bytes_out
        self.alog.write(&ex.log, self.now)

    # --- answers of the proxy's own -------------------------------------------------------------------

    cdef void answer_local(self, Client c, Exchange ex):
        """A filter answered: its whole head is in c.head, its body in ex.answer_*. Keep-alive goes on
        (ex.keep_alive) unless a request body would have to be read first."""
        cdef Py_ssize_t n = ex.answer_head_len
        if n <= 0:
            self.answer_error(c, 500)
            return
        self.disarm(c)
        out_clear(&c.out)
        out_push(&c.out, c.head, n)
        if ex.req.method != METHOD_HEAD:
            out_push(&c.out, ex.answer_body, ex.answer_len)
        else:
            ex.answer_file_left = 0
        count_response(self.wc, ex.rctr, NULL, ex.status)
        ex.resp_started = 1
        c.state = CS_ANSWER
        self.answering(c)

    cdef void answering(self, Client c):
        cdef Exchange ex = c.ex
        cdef Py_ssize_t before, n
        cdef int r
        while True:
            before = out_left(&c.out)
            r = out_flush(&c.tp, &c.out)
            self.sent(ex, NULL, before - out_left(&c.out))
            if r < 0:
                self.failed(c, ERR_CLIENT_ABORT)
                self.close_client(c)
                return
            if r == 0:
                if c.timer.deadline == 0:
                    self.arm(c, self.now + self.t_send)
                return
            if ex.answer_file_left <= 0:
                break
            # a file body: the next piece, through the head buffer (the head is out)
            n = read(ex.answer_fd, c.head, min(self.head_cap, ex.answer_file_left))
            if n <= 0:
                self.close_client(c)          # the file shrank or failed: the length we announced is a lie
                return
            ex.answer_file_left -= n
            out_clear(&c.out)
            out_push(&c.out, c.head, n)
        out_clear(&c.out)
        ex.fwd = ex.req_start + ex.req_head_len
        self.finish_exchange(c)

    cdef void send_continue(self, Client c, Exchange ex):
        memcpy(c.head, CONTINUE_100, 25)
        out_clear(&c.out)
        out_push(&c.out, c.head, 25)
        ex.sent_continue = 1
        if out_flush(&c.tp, &c.out) == 1:
            out_clear(&c.out)
        self.sent(ex, NULL, 25 - out_left(&c.out))

    # --- choosing and connecting to a backend ---------------------------------------------------

    cdef void balancing_key(self, Client c, Exchange ex):
        """What the balancer needs from the request: the hash key, and the server a sticky cookie names."""
        cdef const char *base = c.rb.data + ex.req_start
        cdef const char *name
        cdef Py_ssize_t name_len = 0, off = -1, n = 0
        cdef int kind = self.balancer.key_kind(ex.group)
        if kind != KEY_NONE:
            if kind == KEY_URI:
                off, n = ex.req.path.off, ex.req.path.len
            elif kind == KEY_HEADER or kind == KEY_COOKIE:
                name = self.balancer.key_name(ex.group, &name_len)
                if kind == KEY_HEADER:
                    find_header(base, &ex.req, name, name_len, &off, &n)
                else:
                    find_cookie(base, &ex.req, name, name_len, &off, &n)
            # no such header or cookie (or client_ip asked for): the client address decides
            ex.key = hash_bytes(base + off, n) if off >= 0 else hash_bytes(c.addr, c.addr_len)
        if self.balancer.sticky_kind(ex.group) == STICKY_COOKIE:
            name = self.balancer.sticky_cookie_name(ex.group, &name_len)
            if find_cookie(base, &ex.req, name, name_len, &off, &n):
                ex.sticky_server = self.balancer.sticky_slot(ex.group, base + off, n, self.now)
                ex.cookie_server = ex.sticky_server

    cdef int pick(self, Exchange ex):
        """The next server for this request: its sticky server first, then the balancer's choice."""
        cdef int srv
        if ex.n_tried >= TRIED_MAX or ex.n_tried >= self.balancer.tries(ex.group):
            return -1
        if ex.n_tried == 0 and ex.sticky_server >= 0:
            srv = ex.sticky_server         # sticky_slot() already took it for us
            ex.sticky_server = -1
            return srv
        if ex.n_tried > 0 and ex.last_failure != F_STALE and not self.balancer.may_retry(ex.group, self.now):
            return -1                     # the retry budget is spent: a sick pool is not hammered
        return self.balancer.pick(ex.group, ex.key, ex.tried, ex.n_tried, self.now)

    cdef void release_pick(self, Exchange ex, int outcome):
        """Tell the balancer how the exchange with the picked server ended (exactly once per pick)."""
        cdef int srv = ex.picked
        if srv < 0:
            return
        ex.picked = -1
        if outcome == OUTCOME_OK and ex.resp_started and ex.response_seconds == 0:
            ex.response_seconds = self.now - ex.picked_at
        self.balancer.release(srv, outcome, ex.response_seconds, self.now)
        if self.waiting:
            self.serve_waiting()

    cdef void enqueue(self, Client c, Exchange ex):
        """Every candidate is at max_conns: wait (bounded in number and time) for one to free up."""
        cdef int n = 0
        for other in self.waiting:
            if (<Client>other).ex is not None and (<Client>other).ex.group == ex.group:
                n += 1
        if n >= self.balancer.max_queue(ex.group):
            self.answer_error(c, 503)
            return
        if ex.wait_deadline == 0:
            ex.wait_deadline = self.now + self.balancer.queue_timeout(ex.group)
        ex.waiting = 1
        self.waiting.append(c)

    cdef void serve_waiting(self):
        """Give queued requests another try, oldest first; those past their deadline get 503."""
        cdef Client c
        queue = self.waiting
        self.waiting = []
        for obj in queue:
            c = <Client>obj
            if c.ex is None or not c.ex.waiting or c.state != CS_PROXY:
                continue
            c.ex.waiting = 0
            if c.ex.wait_deadline <= self.now:
                self.answer_error(c, 503)
            else:
                self.connect_backend(c, c.ex)

    cdef void connect_backend(self, Client c, Exchange ex):
        cdef int srv, rc
        cdef BackendConn b
        while True:
            srv = self.pick(ex)
            if srv == PICK_FULL:
                self.enqueue(c, ex)
                return
            if srv < 0:
                # nothing (more) to try: no server available at all (down, disabled, drained)
                self.answer_error(c, failure_status(ex.last_failure) if ex.last_failure else 503)
                return
            ex.tried[ex.n_tried] = srv
            ex.n_tried += 1
            ex.picked = srv
            ex.picked_at = self.now
            ex.response_seconds = 0
            b = None if ex.no_pool else self.pool.take(srv)
            if b is not None:
                gauge_add(&self.wc.backend_idle, -1)
                self.disarm(b)
                b.reused = 1
                b.state = BS_ACTIVE
                if not self.buffers.take(&b.rb, &b.head):
                    self.local_errno = ENOMEM
                    self.close_backend(b)
                    self.local_failure(c, ex)
                    return
            else:
                b = self.open_backend(srv, &rc)
                if rc == -2:
                    if (self.local_errno == EMFILE or self.local_errno == ENFILE) and self.wait_for_fd(c, ex):
                        return
                    self.local_failure(c, ex)
                    return
                if rc < 0:
                    self.failed(c, ERR_SERVER_CONNECT)
                    ex.last_failure = F_CONNECT
                    self.release_pick(ex, OUTCOME_CONNECT_FAIL)
                    continue
            b.client = c
            c.backend = b
            if not self.prepare_request(c, ex, b):
                return
            if b.state == BS_ACTIVE:
                self.arm(b, self.now + self.t_send)
                self.pump(c)
            else:
                self.arm(b, self.now + self.t_connect)
            return

    cdef bint wait_for_fd(self, Client c, Exchange ex):
        """Out of descriptors for a backend connection: the request waits (within upstream_connect) for one
        to come free, as connections close or go back to the pool, instead of getting a 503 at once."""
        if len(self.fd_waiting) >= FD_WAIT_MAX:
            return 0
        self.release_pick(ex, OUTCOME_ABORTED)   # not the server's doing, and not a try of it
        ex.n_tried -= 1
        if ex.wait_deadline == 0:
            ex.wait_deadline = self.now + self.t_connect
        ex.waiting = 1
        self.fd_waiting.append(c)
        return 1

    cdef void fd_freed(self):
        """A descriptor (or a pooled backend connection) came free: the oldest waiting request goes on."""
        cdef Client c
        while self.fd_waiting:
            c = <Client>self.fd_waiting.pop(0)
            if c.ex is None or not c.ex.waiting or c.state != CS_PROXY:
                continue
            c.ex.waiting = 0
            self.connect_backend(c, c.ex)
            return

    cdef void expire_fd_waiting(self):
        cdef Client c
        queue = self.fd_waiting
        self.fd_waiting = []
        for obj in queue:
            c = <Client>obj
            if c.ex is None or not c.ex.waiting or c.state != CS_PROXY:
                continue
            if c.ex.wait_deadline <= self.now:
                c.ex.waiting = 0
                self.local_errno = EMFILE
                self.local_failure(c, c.ex)
            else:
                self.fd_waiting.append(c)

    cdef void local_failure(self, Client c, Exchange ex):
        """We could not open or set up a backend connection: our fault, not the server's."""
        self.failed(c, ERR_LOCAL_RESOURCE)
        ex.last_failure = F_LOCAL
        self.release_pick(ex, OUTCOME_ABORTED)
        if self.now - self.local_logged_at >= 60 or self.local_logged_at == 0:
            self.local_logged_at = self.now          # once a minute at most
            from fastproxy.log import log
            log("worker %d: cannot open a backend connection (%s, %d connections open): 503"
                % (self.worker_id, os.strerror(self.local_errno), self.n_conns))
        self.answer_error(c, failure_status(F_LOCAL))

    cdef BackendConn open_backend(self, int srv, int *rc):
        """A new connection to srv; rc: 0 ok, -1 the server refused, -2 a local failure (None then)."""
        cdef int fd = -1
        cdef int r = open_socket(&self.servers[srv], &fd)
        cdef BackendConn b
        rc[0] = r if r < 0 else 0
        if r < 0:
            self.local_errno = errno
            return None
        b = BackendConn.__new__(BackendConn)
        tp_init_plain(&b.tp, fd, NULL)
        b.server = srv
        if not self.buffers.take(&b.rb, &b.head):
            self.local_errno = ENOMEM
            close(fd)
            rc[0] = -2
            return None
        if not self.register(b):
            self.local_errno = errno
            self.buffers.give(&b.rb, &b.head)
            close(fd)
            rc[0] = -2
            return None
        b.state = BS_ACTIVE if r == 1 else BS_CONNECTING
        b.tp.wr_ready = r == 1
        count_backend_open(self.wc)
        return b

    cdef bint prepare_request(self, Client c, Exchange ex, BackendConn b):
        """Write the backend's request head; the body follows from the client buffer."""
        cdef ForwardInfo fwd
        cdef Py_ssize_t n
        fwd.client_addr = c.addr
        fwd.client_addr_len = c.addr_len
        fwd.proto = c.tp.listener.proto
        fwd.proto_len = c.tp.listener.proto_len
        fwd.add_forwarded = self.add_forwarded
        fwd.upgrade = ex.req.upgrade
        n = write_request_head(c.rb.data + ex.req_start, &ex.req, &fwd, b.head, self.head_cap)
        if n > 0 and ex.filters & FILTER_BACKEND_HEAD:
            n = (<FilterChain>ex.chain).run_backend_head(ex, c, b.head, n, self.head_cap)
            if n < 0:
                self.release_pick(ex, OUTCOME_ABORTED)
                self.answer_error(c, 500)
                return 0
        if n < 0:
            self.failed(c, ERR_BAD_REQUEST)
            self.release_pick(ex, OUTCOME_ABORTED)
            self.answer_error(c, 431)
            return 0
        out_clear(&b.out)
        out_push(&b.out, b.head, n)
        return 1

    cdef void backend_event(self, BackendConn b, unsigned int events):
        cdef Client c
        cdef int err = 0
        cdef socklen_t elen = sizeof(err)
        if b.state == BS_IDLE:
            if events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR):
                self.close_backend(b)      # the backend closed (or spoke out of turn): drop it
            return
        if b.state == BS_CONNECTING:
            if not b.tp.wr_ready:
                return
            getsockopt(b.tp.fd, SOL_SOCKET, SO_ERROR, &err, &elen)
            if err != 0:
                self.backend_failed(<Client>b.client, F_CONNECT)
                return
            b.state = BS_ACTIVE
            self.arm(b, self.now + self.t_send)
        if b.client is None:
            self.close_backend(b)
            return
        c = <Client>b.client
        if c.state == CS_TUNNEL:
            self.tunnel(c)
        else:
            self.pump(c)

    cdef void backend_failed(self, Client c, int failure):
        """A backend attempt failed before any response byte reached the client: retry or answer."""
        cdef Exchange ex = c.ex
        self.failed(c, failure_error_kind(failure))
        self.release_pick(ex, failure_outcome(failure))
        if c.backend is not None:
            self.detach_and_close(c)
        if ex.resp_started:
            self.close_client(c)
            return
        if failure == F_STALE:
            # The pooled connection was stale, not the server: do not count this server as tried.
            if ex.n_tried > 0:
                ex.n_tried -= 1
            ex.no_pool = 1
        ex.last_failure = failure
        if ex.replayable and failure_allows_retry(failure, ex.req.method):
            ex.rewind()
            self.connect_backend(c, ex)
        else:
            self.answer_error(c, failure_status(failure))

    # --- moving bytes ---------------------------------------------------------------------------

    cdef void pump(self, Client c):
        """Move request bytes to the backend and response bytes to the client until nothing moves."""
        cdef int a, b
        while c.state == CS_PROXY:
            a = self.step_request(c)
            if a < 0 or c.state != CS_PROXY:
                return
            b = self.step_response(c)
            if b < 0 or c.state != CS_PROXY:
                return
            if a == 0 and b == 0:
                break

    cdef int frame_request_body(self, Client c, Exchange ex, BackendConn b):
        """Queue the request body bytes already read for the backend (after its head).

        1 some queued, 0 none available, -1 the body is bad (answered).
        """
        cdef Py_ssize_t avail = c.rb.end - ex.fwd, take, outlen
        if ex.spool_fd >= 0:
            return self.frame_spooled_body(ex, b)
        if ex.req_done or avail <= 0 or b.out.consume > 0:
            return 0
        if ex.req.body_kind == BODY_LENGTH:
            take = avail if avail < ex.req_left else ex.req_left
            ex.req_left -= take
            ex.req_done = ex.req_left == 0
            outlen = take
        else:
            take = chunked_feed(&ex.req_chunk, c.rb.data + ex.fwd, avail, 0, &outlen)
            if take < 0:
                self.client_request_error(c, 400)
                return -1
            ex.req_done = ex.req_chunk.done
            ex.req_body_seen += take
            if self.max_body and ex.req_body_seen > self.max_body + 64:
                self.client_request_error(c, 413)
                return -1
        out_push(&b.out, c.rb.data + ex.fwd, outlen)
        b.out.consume = take
        self.disarm(c)
        return 1

    cdef int frame_spooled_body(self, Exchange ex, BackendConn b):
        """The next piece of a body kept in a file, through the backend's head buffer once the head is out."""
        cdef Py_ssize_t n
        if ex.req_done or out_pending(&b.out):
            return 0
        n = pread(ex.spool_fd, b.head, min(self.head_cap, ex.spool_len - ex.spool_off), ex.spool_off)
        if n <= 0:
            return 0                    # cannot happen (our own file); the backend's timer then ends it
        ex.spool_off += n
        ex.req_done = ex.spool_off == ex.spool_len
        out_push(&b.out, b.head, n)
        b.out.consume = 0
        return 1

    cdef int step_request(self, Client c):
        """Client -> backend. 1 progress, 0 nothing to do now, -1 the exchange changed state."""
        cdef BackendConn b = c.backend
        cdef Exchange ex = c.ex
        cdef Py_ssize_t n, shift
        cdef int r
        if b is None or b.state != BS_ACTIVE:
            return 0
        if self.frame_request_body(c, ex, b) < 0:
            return -1
        if out_pending(&b.out):
            r = out_flush(&b.tp, &b.out)
            if r < 0:
                self.backend_failed(c, F_STALE if b.reused else F_RESET)
                return -1
            if r == 0:
                if b.timer.deadline == 0:
                    self.arm(b, self.now + self.t_send)   # the backend is not taking the request
                return 0
            ex.fwd += b.out.consume
            out_clear(&b.out)
            if ex.req_done:
                self.arm(b, self.now + self.t_read)
            else:
                self.disarm(b)          # now it waits for the client, not the client for it
            if not ex.replayable or ex.resp_started:
                c.rb.start = ex.fwd
            return 1
        if ex.req_done:
            return 0
        # need more request body from the client: only the client's timer runs meanwhile
        if not c.tp.rd_ready:
            if c.timer.deadline == 0:
                self.arm(c, self.body_deadline(ex))
            return 0
        if c.rb.end == c.rb.cap:
            if ex.replayable:
                # The request outgrew the buffer: it can no longer be replayed elsewhere.
                ex.replayable = 0
                c.rb.start = ex.fwd
            shift = c.rb.start
            if not buffer_make_room(&c.rb):
                return 0
            ex.fwd -= shift
            ex.req_start -= shift
        n = tp_read(&c.tp, c.rb.data + c.rb.end, c.rb.cap - c.rb.end)
        if n > 0:
            count_bytes_in(self.wc, n)
            c.rb.end += n
            ex.body_bytes += n
            self.arm(c, self.body_deadline(ex))
            return 1
        if n == IO_AGAIN:
            return 0
        self.abort(c, ERR_CLIENT_ABORT)     # the client left in the middle of its request
        return -1

    cdef int frame_response(self, Client c, Exchange ex, BackendConn b):
        """Turn response bytes already read into output for the client: a rewritten head, then body.

        1 output queued or bytes consumed, 0 nothing to do until more is read, -1 exchange changed.
        """
        cdef Py_ssize_t avail, take, outlen, n
        cdef bint end
        cdef int progress = 0
        # Called only with nothing queued for the client: a head queued here goes out in the same writev
        # as the first body piece (the four system calls of a kept-alive request).
        if ex.resp_state == RS_WAIT_HEAD:
            avail = b.rb.end - b.rb.start
            if avail == 0:
                return 0
            n = parse_response_head(b.rb.data + b.rb.start, avail, &ex.resp, ex.req.method, &self.limits)
            if n < 0:
                self.backend_failed(c, F_BAD_RESPONSE)
                return -1
            if n == 0:
                return 0
            if self.start_response(c, ex, b, n) < 0:
                return -1
            if ex.resp_state != RS_BODY:
                return 1                  # an interim response, or one without a body
            progress = 1
        while ex.resp_state == RS_BODY and c.out.consume == 0:
            avail = b.rb.end - b.rb.start
            if avail == 0:
                break
            end = 0
            if ex.resp.body_kind == BODY_LENGTH:
                take = avail if avail < ex.resp_left else ex.resp_left
                ex.resp_left -= take
                outlen = take
                end = ex.resp_left == 0
            elif ex.resp.body_kind == BODY_CHUNKED:
                take = chunked_feed(&ex.resp_chunk, b.rb.data + b.rb.start, avail,
                                    ex.framing != FRAME_AS_IS, &outlen)
                if take < 0:
                    self.abort(c, ERR_SERVER_BAD_RESPONSE)   # broken framing mid-body: cut the client off
                    return -1
                end = ex.resp_chunk.done
            else:
                take = outlen = avail
            if end:
                ex.resp_state = RS_DONE
            progress = 1
            if outlen == 0 and not (end and ex.framing == FRAME_CHUNKED):
                b.rb.start += take        # only framing (a chunk-size line): nothing to send
                continue
            if self.queue_body(c, ex, b.rb.data + b.rb.start, outlen, end) < 0:
                return -1
            if out_pending(&c.out):
                c.out.consume = take      # (also ends the loop: one body piece at a time)
            else:
                b.rb.start += take        # a filter kept this piece to itself
        return progress

    cdef int queue_body(self, Client c, Exchange ex, const char *data, Py_ssize_t n, bint end):
        """Queue one piece of the response body for the client, through the route's body filters and
        in the client's framing. 0 queued, -1 a filter failed (the connection is cut)."""
        if ex.filters & FILTER_BODY:
            if (<FilterChain>ex.chain).run_body(ex, c, &data, &n, end) < 0:
                self.abort(c, -1)           # a hook's failure, logged by the hook layer
                return -1
        if ex.framing == FRAME_CHUNKED:
            if n > 0:
                out_push(&c.out, c.out.chunk_line, chunk_size_line(c.out.chunk_line, n))
                out_push(&c.out, data, n)
                if end:
                    out_push(&c.out, CRLF_LAST_CHUNK, 7)
                else:
                    out_push(&c.out, CRLF, 2)
            elif end:
                out_push(&c.out, LAST_CHUNK, 5)
        else:
            out_push(&c.out, data, n)
        return 0

    cdef int step_response(self, Client c):
        """Backend -> client. 1 progress, 0 nothing to do now, -1 the exchange changed state."""
        cdef BackendConn b = c.backend
        cdef Exchange ex = c.ex
        cdef Py_ssize_t n, before
        cdef int r, framed
        if b is None or b.state != BS_ACTIVE:
            return 0
        framed = 0
        if not out_pending(&c.out):
            framed = self.frame_response(c, ex, b)
            if framed < 0:
                return -1
        if out_pending(&c.out):
            before = out_left(&c.out)
            r = out_flush(&c.tp, &c.out)
            self.sent(ex, self.server_ctr[b.server], before - out_left(&c.out))
            if r < 0:
                self.abort(c, ERR_CLIENT_ABORT)
                return -1
            if r == 0:
                if c.timer.deadline == 0:
                    self.arm(c, self.now + self.t_send)
                return framed
            b.rb.start += c.out.consume
            out_clear(&c.out)
            if ex.body_keep is not None:
                ex.body_keep = None
            self.disarm(c)
            if ex.resp_state == RS_DONE:
                self.finish_exchange(c)
                return -1
            return 1
        if ex.resp_state == RS_DONE:
            self.finish_exchange(c)
            return -1
        if framed:
            return 1
        if not b.tp.rd_ready:
            return 0
        if b.rb.start == b.rb.end:
            b.rb.start = b.rb.end = 0
        elif not buffer_make_room(&b.rb):
            if ex.resp_state == RS_WAIT_HEAD:
                self.backend_failed(c, F_BAD_RESPONSE)     # a head larger than the buffer
                return -1
            return 0
        n = tp_read(&b.tp, b.rb.data + b.rb.end, b.rb.cap - b.rb.end)
        if n > 0:
            b.rb.end += n
            self.arm(b, self.now + self.t_read)
            return 1
        if n == IO_AGAIN:
            return 0
        # the backend closed (or reset)
        if ex.resp_state == RS_WAIT_HEAD:
            if b.rb.end == b.rb.start and b.reused and not ex.resp_started:
                self.backend_failed(c, F_STALE)
            else:
                self.backend_failed(c, F_RESET)
            return -1
        if ex.resp_state == RS_BODY and ex.resp.body_kind == BODY_CLOSE:
            ex.resp_state = RS_DONE
            ex.resp.keep_alive = 0
            if ex.framing == FRAME_CHUNKED or ex.filters & FILTER_BODY:
                if self.queue_body(c, ex, NULL, 0, 1) < 0:
                    return -1
            return 1
        self.release_pick(ex, OUTCOME_RESET)
        self.abort(c, ERR_SERVER_RESET)   # a truncated body: the client must see the connection end
        return -1

    cdef int start_response(self, Client c, Exchange ex, BackendConn b, Py_ssize_t head_len):
        cdef ResponseRewrite rw
        cdef Py_ssize_t n
        cdef int status = ex.resp.status
        cdef bint reframe
        if 100 <= status < 200 and status != 101:
            # Interim responses (RFC 9110 15.2) go to 1.1 clients as they are, except a 100 Continue
            # we already sent ourselves. An endless run of them is a broken backend.
            ex.n_interim += 1
            if ex.n_interim > MAX_INTERIM:
                self.backend_failed(c, F_BAD_RESPONSE)
                return -1
            if ex.req.version_minor == 1 and not (status == 100 and ex.sent_continue):
                if head_len > self.head_cap:
                    self.backend_failed(c, F_BAD_RESPONSE)
                    return -1
                memcpy(c.head, b.rb.data + b.rb.start, head_len)
                out_push(&c.out, c.head, head_len)
            b.rb.start += head_len
            return 1
        if status == 101 and not ex.req.upgrade:
            self.backend_failed(c, F_BAD_RESPONSE)
            return -1
        # How the body reaches the client: as it came, de-chunked for a 1.0 client, or re-framed when a
        # body filter changes it (or must see a chunked body decoded).
        reframe = (ex.filters & FILTER_BODY and ex.resp.body_kind != BODY_NONE and status != 101 and
                   (ex.filters & FILTER_TRANSFORM or ex.resp.body_kind == BODY_CHUNKED))
        if reframe:
            ex.framing = FRAME_CHUNKED if ex.req.version_minor == 1 else FRAME_CLOSE
        elif ex.resp.body_kind == BODY_CHUNKED and ex.req.version_minor == 0:
            ex.framing = FRAME_DECHUNK
        else:
            ex.framing = FRAME_AS_IS
        ex.keep_alive = (ex.req.keep_alive and ex.req_done and not self.draining and self.t_keepalive > 0
                         and status != 101 and ex.framing != FRAME_DECHUNK and ex.framing != FRAME_CLOSE
                         and (ex.resp.body_kind != BODY_CLOSE or ex.framing == FRAME_CHUNKED))
        rw.server = self.server_header_ptr
        rw.server_len = self.server_header_len
        rw.client_keep_alive = ex.keep_alive
        rw.client_version_minor = ex.req.version_minor
        rw.dechunk = ex.framing != FRAME_AS_IS
        n = write_response_head(b.rb.data + b.rb.start, &ex.resp, &rw, c.head, self.head_cap)
        if n < 0:
            self.backend_failed(c, F_BAD_RESPONSE)
            return -1
        ex.response_seconds = self.now - ex.picked_at
        ex.server = b.server
        ex.status = status
        if ex.filters:
            if reframe or (ex.filters & FILTER_TRANSFORM and ex.req.method == METHOD_HEAD):
                n = head_remove_field(c.head, n, b"content-length", 14)
                if ex.framing == FRAME_CHUNKED:
                    n = head_add_fields(c.head, n, self.head_cap, b"Transfer-Encoding: chunked\r\n", 28)
            if ex.filters & FILTER_RESPONSE:
                n = (<FilterChain>ex.chain).run_response(ex, c, c.head, n, self.head_cap)
                if n < 0:
                    ex.status = 0
                    self.release_pick(ex, OUTCOME_OK)
                    self.answer_error(c, 500)
                    return -1
        count_response(self.wc, ex.rctr, self.server_ctr[b.server], status)
        if ex.log_open:
            ex.log.upstream_len = self.servers[b.server].text_len
            memcpy(ex.log.upstream, self.servers[b.server].text, ex.log.upstream_len)
        b.rb.start += head_len
        out_push(&c.out, c.head, n)
        ex.resp_started = 1
        if ex.req_done:
            c.rb.start = ex.fwd           # the request can no longer be replayed: release it
            ex.replayable = 0
        if ex.resp.body_kind == BODY_NONE or status == 101:
            ex.resp_state = RS_DONE
        elif ex.resp.body_kind == BODY_LENGTH:
            ex.resp_left = ex.resp.content_length
            ex.resp_state = RS_BODY if ex.resp_left > 0 else RS_DONE
            if ex.resp_left == 0 and ex.framing == FRAME_CHUNKED:
                self.queue_body(c, ex, NULL, 0, 1)
        else:
            chunk_reset(&ex.resp_chunk)
            ex.resp_state = RS_BODY
        return 1

    cdef void failed(self, Client c, int kind):
        """Count a failure of this kind (an ErrorKind; < 0: none) and note it in the exchange's log line."""
        cdef const char *name
        if kind < 0:
            return
        count_error(self.wc, kind)
        if c is not None and c.ex is not None and c.ex.log_open:
            name = ERROR_NAMES_C[kind]
            c.ex.log.error_len = copy_bounded(c.ex.log.error, sizeof(c.ex.log.error), name, strlen(name))

    cdef inline void sent(self, Exchange ex, ServerCounters *s, Py_ssize_t n):
        """n bytes of an exchange went to its client."""
        ex.bytes_out += n
        count_bytes_out(self.wc, ex.rctr, s, n)

    cdef void finish_exchange(self, Client c):
        """The response is out. Keep or close both connections, then serve a pipelined request."""
        cdef BackendConn b = c.backend
        cdef Exchange ex = c.ex
        cdef UpstreamGroup *g
        if ex.req.upgrade and b is not None and ex.resp.status == 101:
            self.start_tunnel(c)
            return
        self.close_log(ex, 0)
        self.release_pick(ex, OUTCOME_HTTP_5XX if b is not None and ex.resp.status >= 500 else OUTCOME_OK)
        c.backend = None
        if b is not None:
            b.client = None
            g = &self.groups[self.servers[b.server].group]
            if (ex.resp.keep_alive and ex.req_done and b.rb.start == b.rb.end and not out_pending(&b.out)
                    and not self.draining and self.pool.count(b.server) < g.keepalive):
                b.state = BS_IDLE
                b.reused = 0
                self.buffers.give(&b.rb, &b.head)   # an idle connection holds no buffer
                self.arm(b, self.now + g.keepalive_timeout)
                self.pool.put(b)
                gauge_add(&self.wc.backend_idle, 1)
                if self.fd_waiting:
                    self.fd_freed()
            else:
                self.close_backend(b)
        if not ex.keep_alive or not ex.req_done:
            self.finish_client(c)
            return
        c.state = CS_HEAD
        if not c.nodelay:
            # A kept-alive connection's next response must not wait behind Nagle for the last ACK.
            set_nodelay(c.tp.fd)
            c.nodelay = 1
        c.rb.start = ex.fwd
        ex.end()
        self.exchanges.give(ex)
        c.ex = None
        if c.rb.start == c.rb.end:
            self.buffers.give(&c.rb, &c.head)   # idle between requests: no buffer until bytes come
        c.idle_since = self.now
        c.head_start = self.now           # a pipelined head may already be here
        c.head_bytes = c.rb.end - c.rb.start
        # while draining, a kept-alive client gets a short grace for its next request, then goes
        self.arm(c, self.now + (DRAIN_IDLE_GRACE if self.draining else self.t_keepalive))
        self.client_read_head(c)

    # --- tunnels (Upgrade) ----------------------------------------------------------------------

    cdef void start_tunnel(self, Client c):
        cdef Exchange ex = c.ex
        self.close_log(ex, 0)
        c.state = CS_TUNNEL
        self.disarm(c)
        self.disarm(c.backend)
        c.rb.start = ex.fwd
        c.tunnel_eof = 0
        c.backend_eof = 0
        self.tunnel(c)

    cdef void tunnel(self, Client c):
        cdef BackendConn b = c.backend
        cdef int x, y
        cdef Py_ssize_t moved
        while c.state == CS_TUNNEL:
            x = tunnel_direction(&c.tp, &c.rb, &c.tunnel_eof, &b.tp, &b.out, &moved)
            count_bytes_in(self.wc, moved)
            y = tunnel_direction(&b.tp, &b.rb, &c.backend_eof, &c.tp, &c.out, &moved)
            count_bytes_out(self.wc, NULL, self.server_ctr[b.server], moved)
            if x < 0 or y < 0 or (c.tunnel_eof and c.backend_eof and
                                  not out_pending(&b.out) and not out_pending(&c.out)):
                self.detach_and_close(c)
                self.close_client(c)
                return
            if x == 0 and y == 0:
                return

    # --- errors, timeouts and closing -----------------------------------------------------------

    cdef void client_request_error(self, Client c, int status):
        """The request itself is bad (found while streaming its body)."""
        if c.ex.resp_started:
            self.abort(c, ERR_BAD_REQUEST)
        else:
            self.failed(c, ERR_BAD_REQUEST)
            self.answer_error(c, status)

    cdef void answer_error(self, Client c, int status):
        """Answer with a small error response and close: framing may be in doubt."""
        cdef Py_ssize_t n
        if c.backend is not None:
            self.detach_and_close(c)
        count_response(self.wc, c.ex.rctr if c.ex is not None else NULL, NULL, status)
        if c.ex is not None:
            c.ex.status = status
            c.ex.keep_alive = 0
        if c.rb.data == NULL and not self.buffers.take(&c.rb, &c.head):
            self.close_client(c)
            return
        n = write_error_response(status, 1, c.head, self.head_cap)
        out_clear(&c.out)
        out_push(&c.out, c.head, n)
        c.state = CS_CLOSING
        self.arm(c, self.now + self.t_send)
        self.closing(c)

    cdef void closing(self, Client c):
        cdef Py_ssize_t before = out_left(&c.out)
        cdef int r = out_flush(&c.tp, &c.out)
        if c.ex is not None:
            self.sent(c.ex, NULL, before - out_left(&c.out))
        if r < 0:
            self.close_client(c)
        elif r == 1:
            if c.ex is not None:
                self.close_log(c.ex, 0)
            # Half-close and keep reading for a while, so that unread request bytes do not turn our
            # answer into a reset (RFC 9112 9.6).
            tp_shutdown_write(&c.tp)
            c.state = CS_LINGER
            self.arm(c, self.now + LINGER_SECONDS)
            c.rb.start = c.rb.end = 0
            self.linger(c)

    cdef void linger(self, Client c):
        cdef Py_ssize_t n
        cdef int _
        for _ in range(16):
            if not c.tp.rd_ready:
                return
            n = tp_read(&c.tp, c.rb.data, c.rb.cap)
            if n > 0:
                count_bytes_in(self.wc, n)
                continue
            if n == IO_AGAIN:
                return
            self.close_client(c)
            return

    cdef void finish_client(self, Client c):
        """Close after the last response. A client that asked to close sends nothing more (RFC 9112
        9.6): close at once. Otherwise (we chose to close, a body not read to its end, bytes after the
        request) half-close and drain first, so that nothing unread turns the answer into a reset."""
        cdef Exchange ex = c.ex
        if not ex.req.keep_alive and ex.req_done and c.rb.end == ex.fwd:
            self.close_client(c)
            return
        out_clear(&c.out)
        c.state = CS_CLOSING
        self.arm(c, self.now + self.t_send)
        self.closing(c)

    cdef void abort(self, Client c, int kind):
        """Something broke mid-exchange (an ErrorKind, counted): drop both connections without a word."""
        self.failed(c, kind)
        if c.backend is not None:
            self.detach_and_close(c)
        self.close_client(c)

    cdef void detach_and_close(self, Client c):
        cdef BackendConn b = c.backend
        if c.ex is not None:
            self.release_pick(c.ex, OUTCOME_OK if c.state == CS_TUNNEL else OUTCOME_ABORTED)
        c.backend = None
        out_clear(&c.out)
        if b is not None:
            b.client = None
            self.close_backend(b)

    cdef void client_timeout(self, Client c):
        cdef Exchange ex = c.ex
        if c.state == CS_HEAD:
            if c.rb.end > c.rb.start:
                self.open_bare_log(c, ex if ex is not None else self.new_exchange(c))
                self.failed(c, ERR_CLIENT_TIMEOUT)
                self.answer_error(c, 408)
            else:
                self.close_client(c)      # idle keep-alive connection
        elif c.state == CS_BODY:
            self.failed(c, ERR_CLIENT_TIMEOUT)
            self.answer_error(c, 408)       # too slow with its body: no backend ever saw it
        elif c.state == CS_PROXY:
            if ex.resp_started or ex.req_done:
                self.abort(c, ERR_CLIENT_TIMEOUT)   # the client stopped reading the response
            else:
                self.failed(c, ERR_CLIENT_TIMEOUT)
                self.answer_error(c, 408)   # the client stopped sending its body
        else:
            if c.state == CS_ANSWER:
                self.failed(c, ERR_CLIENT_TIMEOUT)    # it stopped reading the proxy's answer
            self.close_client(c)

    cdef Exchange new_exchange(self, Client c):
        c.ex = self.exchanges.take()
        return c.ex

    cdef void backend_timeout(self, BackendConn b):
        cdef Client c = <Client>b.client
        if b.state == BS_IDLE or c is None:
            self.close_backend(b)
        elif b.state == BS_CONNECTING:
            self.backend_failed(c, F_CONNECT_TIMEOUT)
        elif c.ex.resp_started:
            self.release_pick(c.ex, OUTCOME_TIMEOUT)
            self.abort(c, ERR_SERVER_TIMEOUT)
        else:
            self.backend_failed(c, F_TIMEOUT)

    cdef void close_client(self, Client c):
        if c.state == CS_CLOSED:
            return
        if c.ex is not None:
            c.ex.waiting = 0              # serve_waiting() skips it
            self.close_log(c.ex, 499)     # nginx's "client closed request" when nothing was answered
        if c.backend is not None:
            self.detach_and_close(c)
        c.state = CS_CLOSED
        self.forget(c)
        tp_close(&c.tp)
        self.buffers.give(&c.rb, &c.head)
        if c.ex is not None:
            c.ex.end()
            self.exchanges.give(c.ex)
            c.ex = None
        count_client_close(self.wc)
        self.client_closed()
        if self.fd_waiting:
            self.fd_freed()

    cdef void close_backend(self, BackendConn b):
        if b.state == BS_CLOSED:
            return
        if b.state == BS_IDLE:
            self.pool.remove(b)
            gauge_add(&self.wc.backend_idle, -1)
        b.state = BS_CLOSED
        b.client = None
        self.forget(b)
        tp_close(&b.tp)
        self.buffers.give(&b.rb, &b.head)
        count_backend_close(self.wc)
        if self.fd_waiting:
            self.fd_freed()


cdef int tunnel_direction(Transport *src, Buffer *rb, bint *eof, Transport *dst, Outgoing *out,
                          Py_ssize_t *moved) noexcept:
    """Move what src sent on to dst (moved: bytes written to dst). 1 progress, 0 nothing to do now,
    -1 broken."""
    cdef int r
    cdef Py_ssize_t n, before
    moved[0] = 0
    if out_pending(out):
        before = out_left(out)
        r = out_flush(dst, out)
        moved[0] = before - out_left(out)
        if r < 0:
            return -1
        if r == 0:
            return 0
        rb.start += out.consume
        out_clear(out)
        if eof[0] and rb.start == rb.end:
            tp_shutdown_write(dst)
        return 1
    if rb.end > rb.start:
        out_clear(out)
        out_push(out, rb.data + rb.start, rb.end - rb.start)
        out.consume = rb.end - rb.start
        return 1
    if eof[0] or not src.rd_ready:
        return 0
    rb.start = rb.end = 0
    n = tp_read(src, rb.data, rb.cap)
    if n > 0:
        rb.end = n
        return 1
    if n == 0:
        eof[0] = 1
        tp_shutdown_write(dst)        # pass the half-close on
        return 1
    if n == IO_AGAIN:
        return 0
    return -1


cdef bint find_header(const char *base, const RequestHead *req, const char *name, Py_ssize_t n,
                      Py_ssize_t *off, Py_ssize_t *length) noexcept nogil:
    """The value of the first field called name (case-insensitive)."""
    cdef int i
    for i in range(req.n_headers):
        if name_is(base, &req.headers[i], name, n):
            off[0] = req.headers[i].value.off
            length[0] = req.headers[i].value.len
            return 1
    off[0] = -1
    return 0


cdef bint find_cookie(const char *base, const RequestHead *req, const char *name, Py_ssize_t n,
                      Py_ssize_t *off, Py_ssize_t *length) noexcept nogil:
    """The value of cookie `name` in the Cookie fields (RFC 6265 5.4: "a=1; b=2")."""
    cdef int i
    cdef Py_ssize_t p, end, eq, vend
    for i in range(req.n_headers):
        if not name_is(base, &req.headers[i], b"cookie", 6):
            continue
        p = req.headers[i].value.off
        end = p + req.headers[i].value.len
        while p < end:
            while p < end and (base[p] == b' ' or base[p] == b';'):
                p += 1
            vend = p
            while vend < end and base[vend] != b';':
                vend += 1
            eq = p
            while eq < vend and base[eq] != b'=':
                eq += 1
            if eq < vend and eq - p == n and memcmp(base + p, name, n) == 0:
                off[0] = eq + 1
                length[0] = vend - eq - 1
                return 1
            p = vend
    off[0] = -1
    return 0
