# cython: language_level=3
"""The worker's event loop: accept clients, proxy each request to a backend, stream the answer back.

Rules of this module:
- One epoll set per worker, edge-triggered. A socket is registered once (EPOLLIN | EPOLLOUT | EPOLLRDHUP)
  and never modified: `rd_ready` / `wr_ready` remember what the kernel last said (nginx's `ready` flags),
  so a read that came back short, or a write that was cut, is the only thing that clears them. That
  keeps a kept-alive request at four system calls: read the client, write the backend, read the
  backend, write the client.
- A connection holds its buffers only while it has work: an idle kept-alive client or pooled backend
  connection gives them back to the worker's pool of spare blocks.
- Bytes are never copied between buffers. A request body is forwarded straight out of the client's read
  buffer, a response body straight out of the backend's; only heads are rewritten, into a head buffer of
  the receiving side. Reading from one side pauses while its buffer holds bytes the other side has not
  taken yet: that is the back-pressure, and memory per connection stays at two buffers.
- A request stays in the client buffer, untouched, until the first response byte arrives (as long as it
  fits): that is what makes a retry on another backend possible.
- Every socket goes through `sock_read` / `sock_writev`: the transport seam where TLS will plug in.
- Timeouts are coarse deadlines checked by a sweep every SWEEP_MS milliseconds.
- Counters live in this worker's row of the shared table (_counters.pxd): one inline call per event, at
  the place the event happens (a connection opened or closed, a request, a response, bytes moved to or
  from a client, an error of a kind). fastproxy/counters.py reads them from any process.
"""

cimport cython
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport (EAGAIN, EINPROGRESS, EINTR, EMFILE, ENFILE,
                         ENOBUFS, ENOMEM, errno)
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcmp, memcpy, memmove, memset
from posix.unistd cimport close, read

from fastproxy._accesslog cimport AccessLog, LogRecord
from fastproxy._balancer cimport (KEY_COOKIE, KEY_HEADER, KEY_NONE, KEY_URI,
                                  OUTCOME_ABORTED, OUTCOME_CONNECT_FAIL, OUTCOME_HTTP_5XX, OUTCOME_OK,
                                  OUTCOME_RESET, OUTCOME_TIMEOUT, PICK_FULL, STICKY_COOKIE, Balancer,
                                  hash_bytes)
from fastproxy._counters cimport (ERR_BAD_REQUEST, ERR_CLIENT_ABORT, ERR_CLIENT_TIMEOUT,
                                  ERR_LOCAL_RESOURCE, ERR_SERVER_BAD_RESPONSE, ERR_SERVER_CONNECT,
                                  ERR_SERVER_RESET, ERR_SERVER_TIMEOUT, RouteCounters, ServerCounters,
                                  WorkerCounters, count_backend_close, count_backend_open, count_bytes_in,
                                  count_bytes_out, count_client_close, count_client_open, count_error,
                                  count_latency, count_request, count_response, count_routed, gauge_add)
from fastproxy._http cimport (BODY_CHUNKED, BODY_CLOSE, BODY_LENGTH, BODY_NONE, METHOD_DELETE,
                              METHOD_GET, METHOD_HEAD, METHOD_OPTIONS, METHOD_PUT, METHOD_TRACE,
                              ChunkState, ForwardInfo, HeaderField, Limits, RequestHead, ResponseHead,
                              ResponseRewrite, chunked_feed, parse_request_head,
                              parse_response_head, write_error_response, write_request_head,
                              write_response_head)
from fastproxy._sys cimport (AF_INET, AF_INET6, EPOLL_CLOEXEC, EPOLL_CTL_ADD, EPOLL_CTL_DEL,
                             EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP,
                             IPPROTO_TCP, SHUT_WR, SO_ERROR, SOCK_CLOEXEC, SOCK_NONBLOCK,
                             SOCK_STREAM, SOL_SOCKET, TCP_DEFER_ACCEPT, TCP_NODELAY, CLOCK_MONOTONIC, accept4,
                             clock_gettime, connect, epoll_create1, epoll_ctl, epoll_event,
                             epoll_wait, getsockopt, htons, inet_ntop, inet_pton, iovec, setsockopt,
                             shutdown, sockaddr, sockaddr_in, sockaddr_in6, sockaddr_storage,
                             socket, socklen_t, timespec, writev)
from fastproxy._shm cimport ShmHeader, ShmTable, row_counters, row_route, row_server

from http import HTTPStatus

from fastproxy import _shm

DEF MAX_EVENTS = 512
DEF SWEEP_MS = 100
DEF HEAD_SLACK = 4096          # room a rewritten head may grow by (forwarding fields, Connection)
DEF LINGER_SECONDS = 2.0       # how long an answered-and-closing client may keep sending
DEF DRAIN_IDLE_GRACE = 1.0     # while draining, an idle kept-alive client is closed after this
# epoll data: an odd value is a listener ((fd << 1) | 1), TAG_WAKEUP the signal pipe, anything else
# a pointer to a Client or Upstream (kept alive by Core.live).
DEF TAG_WAKEUP = 2
DEF SPARE_BLOCKS = 256         # buffer blocks kept for reuse (a block: buffer_size + a head buffer)
DEF TRIED_MAX = 32             # servers one request may try (the balancer's `tries` is capped by it)

# What a client connection is doing.
cdef enum ClientState:
    CS_HEAD = 1       # reading a request head (idle while no byte of it has come)
    CS_PROXY          # a request is being proxied
    CS_TUNNEL         # after 101 Switching Protocols: bytes both ways
    CS_ANSWER         # writing an answer of the proxy's own (a `respond` route), then the next request
    CS_CLOSING        # writing a final answer, then close
    CS_LINGER         # answered and half-closed; reading what the client still sends, then close
    CS_CLOSED

# Where the response to the current request is.
cdef enum RespState:
    RS_WAIT_HEAD = 1
    RS_BODY
    RS_DONE

cdef enum UpstreamState:
    US_CONNECTING = 1
    US_ACTIVE         # attached to a client
    US_IDLE           # in the keep-alive pool
    US_CLOSED

# Why a backend attempt failed: decides retry and status (one table, below).
cdef enum Failure:
    F_CONNECT = 1     # connect refused/failed: nothing was sent
    F_CONNECT_TIMEOUT
    F_STALE           # a reused pooled connection closed before any response byte
    F_RESET           # connection lost before any response byte (request may have been processed)
    F_TIMEOUT         # no response within upstream_read / upstream_send
    F_BAD_RESPONSE    # unparseable response head


cdef inline bint is_idempotent(int method) noexcept nogil:
    # RFC 9110 9.2.2
    return (method == METHOD_GET or method == METHOD_HEAD or method == METHOD_PUT or
            method == METHOD_DELETE or method == METHOD_OPTIONS or method == METHOD_TRACE)


cdef inline bint failure_allows_retry(int f, int method) noexcept nogil:
    # Nothing reached the backend: any method may go to the next server. A connection lost before any
    # response byte may have had the request applied: only idempotent ones go again (RFC 9110 9.2.2).
    # A timeout or a garbled answer is the server's verdict: no retry.
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
    if f == F_STALE:
        return OUTCOME_ABORTED    # the pooled connection was stale, not the server
    return OUTCOME_RESET


cdef inline int failure_status(int f) noexcept nogil:
    return 504 if f == F_CONNECT_TIMEOUT or f == F_TIMEOUT else 502


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
    return -1


cdef inline double monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef inline unsigned char lower(unsigned char c) noexcept nogil:
    return c + 32 if 65 <= c <= 90 else c


cdef struct Buffer:
    char *data
    Py_ssize_t cap
    Py_ssize_t start      # first byte still needed
    Py_ssize_t end        # end of the bytes read


# Bytes on their way out of one socket: a head (in the receiving side's head buffer) and then a body
# region of the sending side's read buffer.
cdef struct Outgoing:
    Py_ssize_t head_off
    Py_ssize_t head_len
    Py_ssize_t body_off
    Py_ssize_t body_len
    Py_ssize_t body_consume   # read-buffer bytes released once the body part is written


cdef inline bint out_pending(const Outgoing *o) noexcept nogil:
    return o.head_off < o.head_len or o.body_len > 0


cdef inline void out_clear(Outgoing *o) noexcept nogil:
    memset(o, 0, sizeof(Outgoing))


cdef inline Py_ssize_t out_left(const Outgoing *o) noexcept nogil:
    return o.head_len - o.head_off + o.body_len


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


# --- the transport seam: every byte in or out of a socket passes here ------------------------------

cdef inline Py_ssize_t sock_read(int fd, char *buf, Py_ssize_t n) noexcept nogil:
    return read(fd, buf, n)


cdef inline Py_ssize_t sock_writev(int fd, iovec *iov, int cnt) noexcept nogil:
    return writev(fd, iov, cnt)


cdef int flush_out(int fd, Outgoing *o, char *head, char *body, bint *wr_ready) noexcept nogil:
    """Write what is pending: 1 all written, 0 the socket is full (wait for EPOLLOUT), -1 error."""
    cdef iovec iov[2]
    cdef int cnt
    cdef Py_ssize_t n, want, h
    while out_pending(o):
        if not wr_ready[0]:
            return 0
        cnt = 0
        want = 0
        h = o.head_len - o.head_off
        if h > 0:
            iov[0].iov_base = head + o.head_off
            iov[0].iov_len = h
            want += h
            cnt = 1
        if o.body_len > 0:
            iov[cnt].iov_base = body + o.body_off
            iov[cnt].iov_len = o.body_len
            want += o.body_len
            cnt += 1
        n = sock_writev(fd, iov, cnt)
        if n < 0:
            if errno == EAGAIN:
                wr_ready[0] = 0
                return 0
            if errno == EINTR:
                continue
            return -1
        if n >= h:
            o.head_off = o.head_len
            n -= h
            o.body_off += n
            o.body_len -= n
        else:
            o.head_off += n
        if o.head_off < o.head_len or o.body_len > 0:
            wr_ready[0] = 0       # a cut write means the send buffer is full: EPOLLOUT will tell
            return 0
    return 1


cdef inline void note_events(unsigned int events, bint *rd_ready, bint *wr_ready, bint *hup) noexcept nogil:
    """Remember what an edge said: readable, writable, and whether the peer closed its side."""
    if events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR):
        rd_ready[0] = 1
        if events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR):
            hup[0] = 1
    if events & (EPOLLOUT | EPOLLHUP | EPOLLERR):
        wr_ready[0] = 1


cdef inline bint buffer_make_room(Buffer *b) noexcept nogil:
    """Slide the live bytes to the front when the tail is full. False if no room can be made."""
    if b.end < b.cap:
        return 1
    if b.start == 0:
        return 0
    memmove(b.data, b.data + b.start, b.end - b.start)
    b.end -= b.start
    b.start = 0
    return 1


# --- routing ------------------------------------------------------------------------------------------

# The filter seams: a route's filters run where a request has been routed (request filters: they may
# answer it themselves) and where a response head has been rewritten (response filters: they may change
# it). A route without filters pays one flag test at each seam. Rate limits, the cache and compression
# plug in here as further FilterFlags.
cdef enum FilterFlag:
    FILTER_RESPOND = 1       # request filter: the proxy answers (route `respond`)
    FILTER_ADD_HEADERS = 2   # response filter: add fields (route `add_headers`)


cdef struct Route:
    int host_kind            # 0 any, 1 suffix (*.x matches x and a.x), 2 exact
    char host[256]
    int host_len
    char path[1024]
    int path_len
    int upstream             # -1 for a route the proxy answers itself
    int filters              # FilterFlag bits
    const char *respond_head  # "HTTP/1.1 200 OK\r\nContent-Type..Content-Length: N\r\n" + add_headers
    Py_ssize_t respond_head_len
    const char *respond_body
    Py_ssize_t respond_body_len
    int respond_status
    const char *add_headers  # "Name: value\r\n" lines
    Py_ssize_t add_headers_len


cdef struct Server:
    sockaddr_storage addr
    socklen_t addr_len
    int upstream
    char text[64]            # "ip:port", for the access log
    int text_len


cdef struct UpstreamGroup:
    int first_server
    int n_servers
    int keepalive            # idle connections kept per server
    double keepalive_timeout


cdef bint host_matches(const Route *r, const char *host, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, off
    if r.host_kind == 0:
        return 1
    if r.host_kind == 2:
        if n != r.host_len:
            return 0
        for i in range(n):
            if lower(host[i]) != <unsigned char>r.host[i]:
                return 0
        return 1
    # suffix: route host holds ".example.com"; "example.com" itself matches too (nginx's ".name")
    if n == r.host_len - 1:
        off = -1
    elif n >= r.host_len:
        off = n - r.host_len
    else:
        return 0
    for i in range(r.host_len):
        if off + i < 0:
            continue
        if lower(host[off + i]) != <unsigned char>r.host[i]:
            return 0
    return 1


cdef Py_ssize_t host_without_port(const char *host, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i = n - 1
    if n > 0 and host[0] == b'[':        # [v6]:port
        while i > 0 and host[i] != b']':
            i -= 1
        return i + 1 if i > 0 else n
    while i >= 0:
        if host[i] == b':':
            return i
        if host[i] < b'0' or host[i] > b'9':
            return n
        i -= 1
    return n


@cython.final
@cython.freelist(256)
cdef class Upstream:
    cdef int fd
    cdef int state
    cdef int server
    cdef bint rd_ready
    cdef bint wr_ready
    cdef bint hup                # the backend closed its side: reading goes on until read() says 0
    cdef bint reused
    cdef Buffer rb
    cdef char *head              # the rewritten request head
    cdef Py_ssize_t head_cap
    cdef Outgoing out            # request bytes on their way to the backend
    cdef Client client
    cdef double deadline
    cdef ResponseHead resp


@cython.final
@cython.freelist(256)
cdef class Client:
    cdef int fd
    cdef int state
    cdef bint rd_ready
    cdef bint wr_ready
    cdef bint hup                # the client closed its side (EPOLLRDHUP): an edge that never repeats
    cdef bint nodelay            # TCP_NODELAY is set (once it is kept alive, as nginx does)
    cdef bint eof
    cdef Buffer rb
    cdef char *head              # the rewritten response head, or an error answer
    cdef Py_ssize_t head_cap
    cdef Outgoing out            # response bytes on their way to the client
    cdef Upstream up
    cdef double deadline
    cdef char addr[64]
    cdef int addr_len
    # the request being proxied
    cdef RequestHead req
    cdef Py_ssize_t req_start    # where it starts in rb
    cdef Py_ssize_t req_head_len
    cdef Py_ssize_t fwd          # rb offset up to which request bytes were handed to the backend
    cdef bint replayable         # the whole request is still in rb: it can go to another backend
    cdef bint req_done           # the whole request body was handed to the backend
    cdef long long req_left      # Content-Length bytes still to come
    cdef long long req_body_seen
    cdef ChunkState req_chunk
    cdef int upstream_group
    cdef int route               # index of the matched route
    cdef int route_filters       # its FilterFlag bits
    cdef int tried[TRIED_MAX]    # servers already tried for this request
    cdef int n_tried
    cdef int picked              # the server the balancer gave us (-1: none held); released once
    cdef double picked_at
    cdef double response_seconds  # pick to response head, for least_time
    cdef int sticky_server       # taken for this request by its sticky cookie, not yet used (-1: none)
    cdef int cookie_server       # the server the request's sticky cookie names (-1: none or gone)
    cdef uint64_t key            # hash of the balancing key (hash / sticky hash)
    cdef bint waiting            # queued: every candidate server is at max_conns
    cdef double wait_deadline
    cdef int last_failure
    cdef bint no_pool            # after a stale pooled connection: connect afresh
    cdef bint sent_continue
    # the response
    cdef int resp_state
    cdef bint resp_started       # a byte of the response went to the client
    cdef bint keep_alive         # the client connection stays open after this response
    cdef bint dechunk
    cdef long long resp_left
    cdef ChunkState resp_chunk
    cdef bint up_eof             # tunnel: the backend closed its side
    cdef bint tunnel_client_eof
    cdef double idle_since       # when it last became idle between requests
    cdef LogRecord *log          # the access-log record of the current request (when logging)
    cdef bint log_open           # a request is under way and not logged yet
    cdef RouteCounters *rctr     # the counters of the request's route (NULL until routed)
    cdef double req_started      # when its head was parsed (the latency histogram's start)
    cdef bint timed              # a request is under way and its latency not counted yet


cdef const char *CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


@cython.final
cdef class Core:
    cdef int epfd
    cdef int worker_id
    cdef list listen_fds
    cdef dict live                # fd -> Client | Upstream
    cdef list graveyard           # closed this batch: kept alive until the batch's events are done
    cdef Balancer balancer
    cdef list waiting             # clients queued for a server at max_conns, oldest first
    cdef dict group_index
    cdef list pools               # per server: list of idle Upstream
    cdef Limits limits
    cdef Server *servers
    cdef int n_servers
    cdef UpstreamGroup *groups
    cdef int n_groups
    cdef Route *routes
    cdef int n_routes
    cdef list route_texts         # the bytes the Route structs point into
    cdef char *spare[SPARE_BLOCKS]  # buffer blocks of closed connections, reused by new ones
    cdef int n_spare
    cdef Py_ssize_t buffer_size
    cdef long long max_body
    cdef double t_client_header, t_client_body, t_keepalive
    cdef double t_connect, t_read, t_send, t_drain
    cdef bytes server_header
    cdef const char *server_header_ptr    # into server_header, for the hot path
    cdef Py_ssize_t server_header_len
    cdef bint add_forwarded
    cdef double now
    cdef bint stopping
    cdef bint draining
    cdef double drain_deadline
    # counters: blocks of this worker's row of the shared table (_counters.pxd)
    cdef WorkerCounters *wc
    cdef RouteCounters **route_ctr  # per route (NULL: a route the table has no slot for)
    cdef ServerCounters **server_ctr  # per server
    cdef AccessLog alog           # None when the access log is off

    def __cinit__(self):
        self.epfd = -1

    def __init__(self, config, listen_fds, int worker_id=0, Balancer balancer=None):
        self.worker_id = worker_id
        self.balancer = balancer if balancer is not None else Balancer(config, _shm.table_for(config),
                                                                       worker_id)
        self.waiting = []
        self.listen_fds = list(listen_fds)
        self.live = {}
        self.graveyard = []
        lim = config.limits
        self.limits.max_head = lim.max_head_size
        self.limits.max_target = lim.max_uri_size
        self.limits.max_headers = min(lim.max_headers, 128)
        self.buffer_size = max(lim.buffer_size, lim.max_head_size + 1024)
        self.max_body = lim.max_body_size
        t = config.timeouts
        self.t_client_header = t.client_header
        self.t_client_body = t.client_body
        self.t_keepalive = t.keepalive
        self.t_connect = t.upstream_connect
        self.t_read = t.upstream_read
        self.t_send = t.upstream_send
        self.t_drain = config.server.drain_timeout
        self.server_header = (config.server.server_header or "").encode("latin-1")
        self.server_header_ptr = self.server_header
        self.server_header_len = len(self.server_header)
        self.add_forwarded = bool(config.server.forwarded)
        self._load_upstreams(config)
        self._load_routes(config)
        self._bind_counters(config)
        self.now = monotonic()

    def _bind_counters(self, config):
        """This worker's counter blocks, in the row of the shared table its balancer claimed."""
        cdef ShmTable table = self.balancer.shm
        cdef ShmHeader *h = self.balancer.h
        cdef int row = self.balancer.row
        cdef int i, slot
        self.wc = row_counters(h, row)
        self.route_ctr = <RouteCounters **>malloc(sizeof(RouteCounters *) * max(1, self.n_routes))
        self.server_ctr = <ServerCounters **>malloc(sizeof(ServerCounters *) * max(1, self.n_servers))
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
        self.groups = <UpstreamGroup *>malloc(sizeof(UpstreamGroup) * max(1, self.n_groups))
        self.servers = <Server *>malloc(sizeof(Server) * max(1, self.n_servers))
        if self.groups == NULL or self.servers == NULL:
            raise MemoryError()
        memset(self.servers, 0, sizeof(Server) * max(1, self.n_servers))
        self.pools = [[] for _ in range(self.n_servers)]
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
                self.servers[index].upstream = gi
                index += 1

    def _load_routes(self, config):
        self.route_texts = []
        self.n_routes = len(config.routes)
        self.routes = <Route *>malloc(sizeof(Route) * max(1, self.n_routes))
        if self.routes == NULL:
            raise MemoryError()
        memset(self.routes, 0, sizeof(Route) * max(1, self.n_routes))
        for i, r in enumerate(config.routes):
            host = r.host.lower()
            if host == "*":
                kind, text = 0, b""
            elif host.startswith("*."):
                kind, text = 1, b"." + host[2:].encode("idna")
            else:
                kind, text = 2, host.encode("idna")
            path = r.path.encode()
            if len(text) > 255 or len(path) > 1023:
                raise ValueError("route host or path too long: %r" % (r,))
            self.routes[i].host_kind = kind
            memcpy(self.routes[i].host, <char *>text, len(text))
            self.routes[i].host_len = len(text)
            memcpy(self.routes[i].path, <char *>path, len(path))
            self.routes[i].path_len = len(path)
            self.routes[i].upstream = self.group_index[r.upstream] if r.upstream is not None else -1
            self._load_filters(&self.routes[i], r)

    cdef _load_filters(self, Route *route, r):
        """Prepare a route's filters as ready-made bytes, so the seams only copy them."""
        fields = b"".join(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
                          for name, value in r.add_headers)
        if fields:
            route.filters |= FILTER_ADD_HEADERS
            route.add_headers = self.keep_text(fields)
            route.add_headers_len = len(fields)
        if r.respond is not None:
            body = r.respond.body.encode()
            head = (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
                r.respond.status, HTTPStatus(r.respond.status).phrase.encode(),
                r.respond.content_type.encode("latin-1"), len(body))) + fields
            if len(head) + 64 > self.limits.max_head + HEAD_SLACK:
                raise ValueError("route %s%s: respond head too large" % (r.host, r.path))
            route.filters |= FILTER_RESPOND
            route.respond_status = r.respond.status
            route.respond_head = self.keep_text(head)
            route.respond_head_len = len(head)
            route.respond_body = self.keep_text(body)
            route.respond_body_len = len(body)

    cdef const char *keep_text(self, bytes text):
        self.route_texts.append(text)
        return text

    def __dealloc__(self):
        while self.n_spare > 0:
            self.n_spare -= 1
            free(self.spare[self.n_spare])
        free(self.servers)
        free(self.groups)
        free(self.routes)
        free(self.route_ctr)
        free(self.server_ctr)
        if self.epfd >= 0:
            close(self.epfd)

    # --- Python surface ---------------------------------------------------------------------------

    def run(self, int wakeup_fd=-1):
        """Run the loop until stop(); returns when every connection is closed."""
        cdef epoll_event ev
        cdef int fd, defer_seconds = 1
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1")
        for fd in (self.listen_fds if not self.draining else []):
            # Accept only once the request has come: the first read then finds it (one call fewer).
            setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &defer_seconds, sizeof(defer_seconds))
            ev.events = EPOLLIN
            ev.data.u64 = ((<uint64_t>fd) << 1) | 1
            if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
                raise OSError(errno, "epoll_ctl listener")
        if wakeup_fd >= 0:
            ev.events = EPOLLIN
            ev.data.u64 = TAG_WAKEUP
            epoll_ctl(self.epfd, EPOLL_CTL_ADD, wakeup_fd, &ev)
        if not self.stopping:
            self.loop(wakeup_fd)
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

    # --- the loop -------------------------------------------------------------------------------

    cdef loop(self, int wakeup_fd):
        cdef epoll_event events[MAX_EVENTS]
        cdef int n, i
        cdef uint64_t tag
        cdef double next_sweep = monotonic() + SWEEP_MS / 1000.0
        cdef char drain[256]
        cdef object obj
        while not self.stopping:
            n = epoll_wait(self.epfd, events, MAX_EVENTS, SWEEP_MS)
            self.now = monotonic()
            if n < 0:
                if errno == EINTR:
                    PyErr_CheckSignals()
                    continue
                raise OSError(errno, "epoll_wait")
            for i in range(n):
                tag = events[i].data.u64
                if tag & 1:
                    if not self.draining:
                        self.accept_clients(<int>(tag >> 1))
                elif tag != TAG_WAKEUP:
                    obj = <object><void *>events[i].data.ptr
                    if type(obj) is Client:
                        self.on_client_event(<Client>obj, events[i].events)
                    else:
                        self.on_upstream_event(<Upstream>obj, events[i].events)
                else:
                    while read(wakeup_fd, drain, sizeof(drain)) > 0:
                        pass
                    PyErr_CheckSignals()      # runs the Python signal handlers: they call stop()
                if self.stopping:
                    break
            if self.graveyard:
                self.graveyard = []
            if self.now >= next_sweep:
                next_sweep = self.now + SWEEP_MS / 1000.0
                self.sweep()
        self.close_all()

    cdef void start_drain(self):
        cdef int fd
        self.now = monotonic()
        self.draining = True
        self.drain_deadline = self.now + self.t_drain
        for fd in self.listen_fds:
            # Our copy only: the master (and the next generation's workers) keep the socket open, so
            # nothing queued in it is lost; once every copy is closed new clients are refused at once.
            epoll_ctl(self.epfd, EPOLL_CTL_DEL, fd, NULL)
            close(fd)
        self.listen_fds = []

    cdef void sweep(self):
        cdef Client c
        cdef Upstream u
        for obj in list(self.live.values()):
            if type(obj) is Client:
                c = <Client>obj
                if c.state == CS_CLOSED:
                    continue
                if self.draining and c.state == CS_HEAD and c.rb.end == c.rb.start:
                    if c.idle_since + DRAIN_IDLE_GRACE <= self.now:
                        self.close_client(c)
                        continue
                if c.deadline and c.deadline <= self.now:
                    self.client_timeout(c)
            else:
                u = <Upstream>obj
                if u.state != US_CLOSED and u.deadline and u.deadline <= self.now:
                    self.upstream_timeout(u)
        if self.draining and (self.wc.client_open == 0 or self.now >= self.drain_deadline):
            self.stopping = True
        self.balancer.tick(self.now)      # also the heartbeat the master watches (our shm row)
        if self.waiting:
            self.serve_waiting()
        if self.alog is not None:
            self.alog.refresh_time()
            self.alog.flush()

    cdef close_all(self):
        for obj in list(self.live.values()):
            if type(obj) is Client:
                self.close_client(<Client>obj)
            else:
                self.close_upstream(<Upstream>obj)

    # --- accepting ------------------------------------------------------------------------------

    cdef void accept_clients(self, int lfd):
        cdef sockaddr_storage addr
        cdef socklen_t alen
        cdef int fd, _
        cdef Client c
        for _ in range(64):
            alen = sizeof(addr)
            fd = accept4(lfd, <sockaddr *>&addr, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC)
            if fd < 0:
                if errno == EINTR:
                    continue
                if errno == EMFILE or errno == ENFILE or errno == ENOBUFS or errno == ENOMEM:
                    # out of descriptors: the connection waits in the queue for a later try
                    count_error(self.wc, ERR_LOCAL_RESOURCE)
                return
            c = Client.__new__(Client)
            c.fd = fd
            if not self.alloc_buffers(&c.rb, &c.head, &c.head_cap):
                count_error(self.wc, ERR_LOCAL_RESOURCE)
                close(fd)
                return
            format_addr(&addr, c.addr, &c.addr_len)
            c.state = CS_HEAD
            c.deadline = self.now + self.t_client_header
            c.idle_since = self.now
            if not self.register(fd, c):
                count_error(self.wc, ERR_LOCAL_RESOURCE)
                self.free_buffers(&c.rb, &c.head)
                close(fd)
                return
            count_client_open(self.wc)
            # The request usually arrives with or right after the handshake: try before waiting.
            c.rd_ready = 1
            c.wr_ready = 1
            self.client_read_head(c)

    cdef bint alloc_buffers(self, Buffer *rb, char **head, Py_ssize_t *head_cap):
        """A connection's read buffer and head buffer: one block, from the pool of spare blocks."""
        cdef char *block
        if self.n_spare > 0:
            self.n_spare -= 1
            block = self.spare[self.n_spare]
        else:
            block = <char *>malloc(self.buffer_size + self.limits.max_head + HEAD_SLACK)
            if block == NULL:
                return 0
        rb.data = block
        rb.cap = self.buffer_size
        rb.start = rb.end = 0
        head[0] = block + self.buffer_size
        head_cap[0] = self.limits.max_head + HEAD_SLACK
        return 1

    cdef void free_buffers(self, Buffer *rb, char **head):
        rb.start = rb.end = 0
        if rb.data != NULL:
            if self.n_spare < SPARE_BLOCKS:
                self.spare[self.n_spare] = rb.data
                self.n_spare += 1
            else:
                free(rb.data)
        rb.data = NULL
        head[0] = NULL

    cdef bint register(self, int fd, object obj):
        cdef epoll_event ev
        ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET
        ev.data.ptr = <void *>obj
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, fd, &ev) < 0:
            return 0
        self.live[fd] = obj
        return 1

    # --- events ---------------------------------------------------------------------------------

    cdef void on_client_event(self, Client c, unsigned int events):
        if c.state == CS_CLOSED:
            return
        note_events(events, &c.rd_ready, &c.wr_ready, &c.hup)
        if c.state == CS_HEAD:
            self.client_read_head(c)
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

    cdef void on_upstream_event(self, Upstream u, unsigned int events):
        cdef Client c
        cdef int err = 0
        cdef socklen_t elen = sizeof(err)
        if u.state == US_CLOSED:
            return
        note_events(events, &u.rd_ready, &u.wr_ready, &u.hup)
        if u.state == US_IDLE:
            if events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR):
                self.close_upstream(u)      # the backend closed (or spoke out of turn): drop it
            return
        if u.state == US_CONNECTING:
            if not (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)):
                return
            getsockopt(u.fd, SOL_SOCKET, SO_ERROR, &err, &elen)
            if err != 0:
                self.upstream_failed(u.client, F_CONNECT)
                return
            u.state = US_ACTIVE
            u.deadline = self.now + self.t_send
        c = u.client
        if c is None:
            self.close_upstream(u)
        elif c.state == CS_TUNNEL:
            self.tunnel(c)
        else:
            self.pump(c)

    # --- request heads --------------------------------------------------------------------------

    cdef void client_read_head(self, Client c):
        cdef Py_ssize_t n, avail
        while True:
            avail = c.rb.end - c.rb.start
            if avail > 0:
                n = parse_request_head(c.rb.data + c.rb.start, avail, &c.req, &self.limits)
                if n > 0:
                    self.start_request(c, n)
                    return
                if n < 0:
                    if self.alog is not None:
                        self.open_bare_log(c)
                    count_error(self.wc, ERR_BAD_REQUEST)
                    self.answer_error(c, c.req.err_status)
                    return
            if not c.rd_ready:
                return
            if c.rb.data == NULL and not self.alloc_buffers(&c.rb, &c.head, &c.head_cap):
                count_error(self.wc, ERR_LOCAL_RESOURCE)
                self.close_client(c)      # out of memory: this one client goes, the worker stays
                return
            if avail == 0:
                c.rb.start = c.rb.end = 0
            elif not buffer_make_room(&c.rb):
                count_error(self.wc, ERR_BAD_REQUEST)
                self.answer_error(c, 431)     # cannot happen: the buffer is larger than max_head
                return
            n = sock_read(c.fd, c.rb.data + c.rb.end, c.rb.cap - c.rb.end)
            if n > 0:
                count_bytes_in(self.wc, n)
                if avail == 0:
                    c.deadline = self.now + self.t_client_header    # a head has begun
                if n < c.rb.cap - c.rb.end:
                    c.rd_ready = c.hup   # a short read drained it, unless the peer also closed
                c.rb.end += n
            elif n == 0:
                if avail > 0:
                    count_error(self.wc, ERR_CLIENT_ABORT)    # mid-head (idle: the client is just done)
                self.close_client(c)      # the client is done (idle or mid-head: nothing to answer)
                return
            else:
                if errno == EAGAIN:
                    c.rd_ready = 0
                    return
                if errno != EINTR:
                    if avail > 0:
                        count_error(self.wc, ERR_CLIENT_ABORT)
                    self.close_client(c)
                    return

    cdef void start_request(self, Client c, Py_ssize_t head_len):
        cdef int ri
        cdef Route *r
        count_request(self.wc)
        c.rctr = NULL
        c.req_started = self.now
        c.timed = 1
        c.req_start = c.rb.start
        c.req_head_len = head_len
        c.fwd = c.rb.start + head_len
        c.replayable = 1
        c.n_tried = 0
        c.picked = -1
        c.sticky_server = -1
        c.cookie_server = -1
        c.wait_deadline = 0
        c.no_pool = 0
        c.last_failure = 0
        c.sent_continue = 0
        c.resp_state = RS_WAIT_HEAD
        c.resp_started = 0
        c.req_body_seen = 0
        if self.alog is not None:
            self.open_log(c)
        if c.req.body_kind == BODY_LENGTH:
            if self.max_body and c.req.content_length > self.max_body:
                count_error(self.wc, ERR_BAD_REQUEST)
                self.answer_error(c, 413)
                return
            c.req_left = c.req.content_length
            c.req_done = c.req_left == 0
        elif c.req.body_kind == BODY_CHUNKED:
            memset(&c.req_chunk, 0, sizeof(ChunkState))
            c.req_done = 0
        else:
            c.req_done = 1
        ri = self.route(c)
        if ri < 0:
            self.answer_error(c, 404)
            return
        r = &self.routes[ri]
        c.route = ri
        c.rctr = self.route_ctr[ri]
        count_routed(c.rctr)
        c.route_filters = r.filters
        if r.filters and self.request_filters(c, r):
            return
        c.upstream_group = r.upstream
        self.balancing_key(c)
        c.state = CS_PROXY
        c.deadline = 0
        # RFC 9110 10.1.1: we want the body, so say so now, unless it is already on its way.
        if c.req.expect_continue and not c.req_done and c.rb.end == c.fwd and c.req.version_minor == 1:
            self.send_continue(c)
        self.connect_upstream(c)

    cdef void open_log(self, Client c):
        cdef LogRecord *r = c.log
        cdef const char *base = c.rb.data + c.req_start
        cdef int i
        if r == NULL:
            r = c.log = <LogRecord *>malloc(sizeof(LogRecord))
            if r == NULL:
                return
        r.started = self.now
        r.remote_len = copy_bounded(r.remote, sizeof(r.remote), c.addr, c.addr_len)
        r.method_len = copy_bounded(r.method, sizeof(r.method), base + c.req.method_span.off,
                                    c.req.method_span.len)
        r.uri_len = copy_bounded(r.uri, sizeof(r.uri), base + c.req.target.off, c.req.target.len)
        r.version_minor = c.req.version_minor
        r.host_len = copy_bounded(r.host, sizeof(r.host), base + c.req.host.off, c.req.host.len)
        r.referer_len = r.user_agent_len = r.upstream_len = 0
        r.status = 0
        r.bytes_sent = 0
        for i in range(c.req.n_headers):
            if name_is(base, &c.req.headers[i], b"referer", 7):
                r.referer_len = copy_bounded(r.referer, sizeof(r.referer), base + c.req.headers[i].value.off,
                                             c.req.headers[i].value.len)
            elif name_is(base, &c.req.headers[i], b"user-agent", 10):
                r.user_agent_len = copy_bounded(r.user_agent, sizeof(r.user_agent),
                                                base + c.req.headers[i].value.off, c.req.headers[i].value.len)
        c.log_open = 1

    cdef void open_bare_log(self, Client c):
        """A request refused before its head could be read: logged with "-" for the request."""
        if c.log == NULL:
            c.log = <LogRecord *>malloc(sizeof(LogRecord))
            if c.log == NULL:
                return
        memset(c.log, 0, sizeof(LogRecord))
        c.log.started = self.now
        c.log.remote_len = copy_bounded(c.log.remote, sizeof(c.log.remote), c.addr, c.addr_len)
        c.log.version_minor = 1
        c.log_open = 1

    cdef void close_log(self, Client c, int status):
        """The exchange is over (answered, failed or abandoned): count its latency, write its line."""
        if c.timed:
            c.timed = 0
            if status != 499:         # abandoned (the client went away): no latency to speak of
                count_latency(self.wc, self.now - c.req_started)
        if not c.log_open:
            return
        c.log_open = 0
        if self.alog is None or c.log == NULL:
            return
        if c.log.status == 0:
            c.log.status = status
        self.alog.write(c.log, self.now)

    # --- the request filter seam ------------------------------------------------------------------

    cdef bint request_filters(self, Client c, Route *r):
        """Run the route's request filters: True when one of them answered the request."""
        if r.filters & FILTER_RESPOND:
            self.answer_local(c, r)
            return 1
        return 0

    cdef void answer_local(self, Client c, Route *r):
        """Answer from the proxy itself. Keep-alive goes on unless a request body would have to be read."""
        cdef Py_ssize_t n = r.respond_head_len
        c.keep_alive = c.req.keep_alive and c.req_done and not self.draining and self.t_keepalive > 0
        memcpy(c.head, r.respond_head, n)
        if not c.keep_alive:
            memcpy(c.head + n, b"Connection: close\r\n", 19)
            n += 19
        elif c.req.version_minor == 0:
            memcpy(c.head + n, b"Connection: keep-alive\r\n", 24)
            n += 24
        memcpy(c.head + n, b"\r\n", 2)
        out_clear(&c.out)
        c.out.head_len = n + 2
        if c.req.method != METHOD_HEAD:
            c.out.body_len = r.respond_body_len
        count_response(self.wc, c.rctr, NULL, r.respond_status)
        if c.log_open:
            c.log.status = r.respond_status
        c.resp_started = 1
        c.state = CS_ANSWER
        self.answering(c)

    cdef void answering(self, Client c):
        cdef Py_ssize_t before = out_left(&c.out)
        cdef int r = flush_out(c.fd, &c.out, c.head, <char *>self.routes[c.route].respond_body,
                               &c.wr_ready)
        count_bytes_out(self.wc, c.rctr, NULL, before - out_left(&c.out))
        if c.log_open:
            c.log.bytes_sent += before - out_left(&c.out)
        if r < 0:
            count_error(self.wc, ERR_CLIENT_ABORT)
            self.close_client(c)
        elif r == 0:
            c.deadline = self.now + self.t_send
        else:
            out_clear(&c.out)
            c.fwd = c.req_start + c.req_head_len
            self.finish_exchange(c)

    cdef void send_continue(self, Client c):
        memcpy(c.head, CONTINUE_100, 25)
        c.out.head_off = 0
        c.out.head_len = 25
        c.sent_continue = 1
        if flush_out(c.fd, &c.out, c.head, c.rb.data, &c.wr_ready) == 1:
            out_clear(&c.out)
        count_bytes_out(self.wc, c.rctr, NULL, 25 - out_left(&c.out))

    cdef int route(self, Client c):
        cdef const char *host = c.rb.data + c.req_start + c.req.host.off
        cdef Py_ssize_t host_len = host_without_port(host, c.req.host.len)
        cdef const char *path = c.rb.data + c.req_start + c.req.path.off
        cdef Py_ssize_t path_len = c.req.path.len
        cdef int i, best = -1, best_kind = -1, best_path = -1, best_host = -1
        cdef Route *r
        for i in range(self.n_routes):
            r = &self.routes[i]
            if r.path_len > path_len or memcmp(path, r.path, r.path_len) != 0:
                continue
            if not host_matches(r, host, host_len):
                continue
            if (r.host_kind > best_kind or (r.host_kind == best_kind and r.host_len > best_host) or
                    (r.host_kind == best_kind and r.host_len == best_host and r.path_len > best_path)):
                best, best_kind, best_host, best_path = i, r.host_kind, r.host_len, r.path_len
        return best

    # --- choosing and connecting to a backend ---------------------------------------------------

    cdef void balancing_key(self, Client c):
        """What the balancer needs from the request: the hash key, and the server a sticky cookie names."""
        cdef const char *base = c.rb.data + c.req_start
        cdef const char *name
        cdef Py_ssize_t name_len = 0, off = -1, n = 0
        cdef int kind = self.balancer.key_kind(c.upstream_group)
        c.key = 0
        if kind != KEY_NONE:
            if kind == KEY_URI:
                off, n = c.req.path.off, c.req.path.len
            elif kind == KEY_HEADER or kind == KEY_COOKIE:
                name = self.balancer.key_name(c.upstream_group, &name_len)
                if kind == KEY_HEADER:
                    find_header(base, &c.req, name, name_len, &off, &n)
                else:
                    find_cookie(base, &c.req, name, name_len, &off, &n)
            # no such header or cookie (or client_ip asked for): the client address decides
            c.key = hash_bytes(base + off, n) if off >= 0 else hash_bytes(c.addr, c.addr_len)
        if self.balancer.sticky_kind(c.upstream_group) == STICKY_COOKIE:
            name = self.balancer.sticky_cookie_name(c.upstream_group, &name_len)
            if find_cookie(base, &c.req, name, name_len, &off, &n):
                c.sticky_server = self.balancer.sticky_slot(c.upstream_group, base + off, n, self.now)
                c.cookie_server = c.sticky_server

    cdef int pick(self, Client c):
        """The next server for this request: its sticky server first, then the balancer's choice."""
        cdef int srv
        if c.n_tried >= TRIED_MAX or c.n_tried >= self.balancer.tries(c.upstream_group):
            return -1
        if c.n_tried == 0 and c.sticky_server >= 0:
            srv = c.sticky_server         # sticky_slot() already took it for us
            c.sticky_server = -1
            return srv
        if c.n_tried > 0 and c.last_failure != F_STALE and not self.balancer.may_retry(c.upstream_group,
                                                                                       self.now):
            return -1                     # the retry budget is spent: a sick pool is not hammered
        return self.balancer.pick(c.upstream_group, c.key, c.tried, c.n_tried, self.now)

    cdef void release_pick(self, Client c, int outcome):
        """Tell the balancer how the exchange with the picked server ended (exactly once per pick)."""
        cdef int srv = c.picked
        if srv < 0:
            return
        c.picked = -1
        if outcome == OUTCOME_OK and c.resp_started and c.response_seconds == 0:
            c.response_seconds = self.now - c.picked_at
        self.balancer.release(srv, outcome, c.response_seconds, self.now)
        if self.waiting:
            self.serve_waiting()

    cdef void enqueue(self, Client c):
        """Every candidate is at max_conns: wait (bounded in number and time) for one to free up."""
        cdef int n = 0
        for other in self.waiting:
            if (<Client>other).upstream_group == c.upstream_group:
                n += 1
        if n >= self.balancer.max_queue(c.upstream_group):
            self.answer_error(c, 503)
            return
        if c.wait_deadline == 0:
            c.wait_deadline = self.now + self.balancer.queue_timeout(c.upstream_group)
        c.waiting = 1
        self.waiting.append(c)

    cdef void serve_waiting(self):
        """Give queued requests another try, oldest first; those past their deadline get 503."""
        cdef Client c
        queue = self.waiting
        self.waiting = []
        for obj in queue:
            c = <Client>obj
            if not c.waiting or c.state != CS_PROXY:
                continue
            c.waiting = 0
            if c.wait_deadline <= self.now:
                self.answer_error(c, 503)
            else:
                self.connect_upstream(c)

    cdef void connect_upstream(self, Client c):
        cdef int srv
        cdef Upstream u
        cdef list pool
        while True:
            srv = self.pick(c)
            if srv == PICK_FULL:
                self.enqueue(c)
                return
            if srv < 0:
                # nothing tried yet: no server available at all (down, disabled, drained)
                self.answer_error(c, failure_status(c.last_failure) if c.last_failure else 503)
                return
            c.tried[c.n_tried] = srv
            c.n_tried += 1
            c.picked = srv
            c.picked_at = self.now
            c.response_seconds = 0
            u = None
            pool = <list>self.pools[srv]
            if not c.no_pool:
                while pool:
                    u = <Upstream>pool.pop()
                    gauge_add(&self.wc.backend_idle, -1)
                    if u.state == US_IDLE:
                        break
                    u = None
            if u is None:
                u = self.open_upstream(srv)
                if u is None:
                    c.last_failure = F_CONNECT
                    self.release_pick(c, OUTCOME_CONNECT_FAIL)
                    continue
            else:
                u.reused = 1
                u.state = US_ACTIVE
                if not self.alloc_buffers(&u.rb, &u.head, &u.head_cap):
                    count_error(self.wc, ERR_LOCAL_RESOURCE)
                    self.close_upstream(u)
                    c.last_failure = F_CONNECT
                    self.release_pick(c, OUTCOME_ABORTED)
                    continue
            u.client = c
            c.up = u
            if not self.prepare_request(c, u):
                return
            if u.state == US_ACTIVE:
                u.deadline = self.now + self.t_send
                self.pump(c)
            else:
                u.deadline = self.now + self.t_connect
            return

    cdef Upstream open_upstream(self, int srv):
        cdef Server *s = &self.servers[srv]
        cdef int fd, rc
        cdef Upstream u
        fd = socket(s.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
        if fd < 0:
            count_error(self.wc, ERR_LOCAL_RESOURCE)
            return None
        set_nodelay(fd)                 # backend connections are kept alive: requests go out at once
        rc = connect(fd, <sockaddr *>&s.addr, s.addr_len)
        if rc < 0 and errno != EINPROGRESS:
            count_error(self.wc, ERR_SERVER_CONNECT)
            close(fd)
            return None
        u = Upstream.__new__(Upstream)
        u.fd = fd
        u.server = srv
        if not self.alloc_buffers(&u.rb, &u.head, &u.head_cap):
            count_error(self.wc, ERR_LOCAL_RESOURCE)
            close(fd)
            return None
        if not self.register(fd, u):
            count_error(self.wc, ERR_LOCAL_RESOURCE)
            self.free_buffers(&u.rb, &u.head)
            close(fd)
            return None
        u.state = US_ACTIVE if rc == 0 else US_CONNECTING
        u.wr_ready = rc == 0
        count_backend_open(self.wc)
        return u

    cdef bint prepare_request(self, Client c, Upstream u):
        """Write the backend's request head; the body follows from the client buffer."""
        cdef ForwardInfo fwd
        cdef Py_ssize_t n
        fwd.client_addr = c.addr
        fwd.client_addr_len = c.addr_len
        fwd.proto = b"http"
        fwd.proto_len = 4
        fwd.add_forwarded = self.add_forwarded
        fwd.upgrade = c.req.upgrade
        n = write_request_head(c.rb.data + c.req_start, &c.req, &fwd, u.head, u.head_cap)
        if n < 0:
            count_error(self.wc, ERR_BAD_REQUEST)
            self.answer_error(c, 431)
            return 0
        out_clear(&u.out)
        u.out.head_len = n
        return 1

    cdef void upstream_failed(self, Client c, int failure):
        """A backend attempt failed before any response byte reached the client: retry or answer."""
        cdef Upstream u = c.up
        count_error(self.wc, failure_error_kind(failure))
        self.release_pick(c, failure_outcome(failure))
        if u is not None:
            self.detach_and_close(c)
        if c.resp_started:
            self.close_client(c)
            return
        if failure == F_STALE:
            # The pooled connection was stale, not the server: do not count this server as tried.
            if c.n_tried > 0:
                c.n_tried -= 1
            c.no_pool = 1
        c.last_failure = failure
        if c.replayable and failure_allows_retry(failure, c.req.method):
            self.rewind_request(c)
            self.connect_upstream(c)
        else:
            self.answer_error(c, failure_status(failure))

    cdef void rewind_request(self, Client c):
        c.fwd = c.req_start + c.req_head_len
        c.req_body_seen = 0
        if c.req.body_kind == BODY_LENGTH:
            c.req_left = c.req.content_length
            c.req_done = c.req_left == 0
        elif c.req.body_kind == BODY_CHUNKED:
            memset(&c.req_chunk, 0, sizeof(ChunkState))
            c.req_done = 0

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

    cdef int frame_request_body(self, Client c, Upstream u):
        """Hand the request body bytes already read to the backend's outgoing queue (after its head).

        1 some attached, 0 none available, -1 the body is bad (answered).
        """
        cdef Py_ssize_t avail = c.rb.end - c.fwd, take, outlen
        if c.req_done or avail <= 0 or u.out.body_len > 0 or u.out.body_consume > 0:
            return 0
        if c.req.body_kind == BODY_LENGTH:
            take = avail if avail < c.req_left else c.req_left
            c.req_left -= take
            c.req_done = c.req_left == 0
            outlen = take
        else:
            take = chunked_feed(&c.req_chunk, c.rb.data + c.fwd, avail, 0, &outlen)
            if take < 0:
                self.client_request_error(c, 400)
                return -1
            c.req_done = c.req_chunk.done
            c.req_body_seen += take
            if self.max_body and c.req_body_seen > self.max_body + 64:
                self.client_request_error(c, 413)
                return -1
        u.out.body_off = c.fwd
        u.out.body_len = outlen
        u.out.body_consume = take
        c.deadline = 0
        return 1

    cdef int step_request(self, Client c):
        """Client -> backend. 1 progress, 0 nothing to do now, -1 the exchange changed state."""
        cdef Upstream u = c.up
        cdef Py_ssize_t n, shift
        cdef int r
        if u is None or u.state != US_ACTIVE:
            return 0
        if self.frame_request_body(c, u) < 0:
            return -1
        if out_pending(&u.out):
            r = flush_out(u.fd, &u.out, u.head, c.rb.data, &u.wr_ready)
            if r < 0:
                self.upstream_failed(c, F_STALE if u.reused else F_RESET)
                return -1
            if r == 0:
                return 0
            c.fwd += u.out.body_consume
            out_clear(&u.out)
            u.deadline = self.now + (self.t_read if c.req_done else self.t_send)
            if not c.replayable or c.resp_started:
                c.rb.start = c.fwd
            return 1
        if c.req_done:
            return 0
        # need more request body from the client
        if not c.rd_ready:
            if c.deadline == 0:
                c.deadline = self.now + self.t_client_body
            return 0
        if c.rb.end == c.rb.cap:
            if c.replayable:
                # The request outgrew the buffer: it can no longer be replayed elsewhere.
                c.replayable = 0
                c.rb.start = c.fwd
            shift = c.rb.start
            if not buffer_make_room(&c.rb):
                return 0
            c.fwd -= shift
            c.req_start -= shift
        n = sock_read(c.fd, c.rb.data + c.rb.end, c.rb.cap - c.rb.end)
        if n > 0:
            count_bytes_in(self.wc, n)
            if n < c.rb.cap - c.rb.end:
                c.rd_ready = c.hup
            c.rb.end += n
            c.deadline = self.now + self.t_client_body
            return 1
        if n == 0 or errno != EAGAIN and errno != EINTR:
            self.abort(c, ERR_CLIENT_ABORT)   # the client left in the middle of its request
            return -1
        if errno == EAGAIN:
            c.rd_ready = 0
        return 0

    cdef int frame_response(self, Client c, Upstream u):
        """Turn response bytes already read into output for the client: a rewritten head, then body.

        1 output queued or bytes consumed, 0 nothing to do until more is read, -1 exchange changed.
        """
        cdef Py_ssize_t avail, take, outlen, n
        cdef int progress = 0
        if c.resp_state == RS_WAIT_HEAD:
            avail = u.rb.end - u.rb.start
            if avail == 0:
                return 0
            n = parse_response_head(u.rb.data + u.rb.start, avail, &u.resp, c.req.method, &self.limits)
            if n < 0:
                self.upstream_failed(c, F_BAD_RESPONSE)
                return -1
            if n == 0:
                return 0
            if self.start_response(c, u, n) < 0:
                return -1
            if c.resp_state != RS_BODY:
                return 1                  # an interim response, or one without a body
            progress = 1
        while c.resp_state == RS_BODY and c.out.body_len == 0:
            avail = u.rb.end - u.rb.start
            if avail == 0:
                break
            if u.resp.body_kind == BODY_LENGTH:
                take = avail if avail < c.resp_left else c.resp_left
                c.resp_left -= take
                outlen = take
                if c.resp_left == 0:
                    c.resp_state = RS_DONE
            elif u.resp.body_kind == BODY_CHUNKED:
                take = chunked_feed(&c.resp_chunk, u.rb.data + u.rb.start, avail, c.dechunk, &outlen)
                if take < 0:
                    self.abort(c, ERR_SERVER_BAD_RESPONSE)   # broken framing mid-body: cut the client off
                    return -1
                if c.resp_chunk.done:
                    c.resp_state = RS_DONE
            else:
                take = outlen = avail
            progress = 1
            if outlen == 0:               # only framing (a chunk-size line): nothing to send
                u.rb.start += take
                continue
            c.out.body_off = u.rb.start
            c.out.body_len = outlen
            c.out.body_consume = take
        return progress

    cdef int step_response(self, Client c):
        """Backend -> client. 1 progress, 0 nothing to do now, -1 the exchange changed state."""
        cdef Upstream u = c.up
        cdef Py_ssize_t n, before
        cdef int r, framed
        if u is None or u.state != US_ACTIVE:
            return 0
        framed = 0
        if not out_pending(&c.out):
            framed = self.frame_response(c, u)
            if framed < 0:
                return -1
        if out_pending(&c.out):
            before = out_left(&c.out)
            r = flush_out(c.fd, &c.out, c.head, u.rb.data, &c.wr_ready)
            count_bytes_out(self.wc, c.rctr, self.server_ctr[u.server], before - out_left(&c.out))
            if c.log_open:
                c.log.bytes_sent += before - out_left(&c.out)
            if r < 0:
                self.abort(c, ERR_CLIENT_ABORT)
                return -1
            if r == 0:
                if c.deadline == 0:
                    c.deadline = self.now + self.t_send
                return framed
            u.rb.start += c.out.body_consume
            out_clear(&c.out)
            c.deadline = 0
            if c.resp_state == RS_DONE:
                self.finish_exchange(c)
                return -1
            return 1
        if c.resp_state == RS_DONE:
            self.finish_exchange(c)
            return -1
        if framed:
            return 1
        if not u.rd_ready:
            return 0
        if u.rb.start == u.rb.end:
            u.rb.start = u.rb.end = 0
        elif not buffer_make_room(&u.rb):
            if c.resp_state == RS_WAIT_HEAD:
                self.upstream_failed(c, F_BAD_RESPONSE)     # a head larger than the buffer
                return -1
            return 0
        n = sock_read(u.fd, u.rb.data + u.rb.end, u.rb.cap - u.rb.end)
        if n > 0:
            if n < u.rb.cap - u.rb.end:
                u.rd_ready = u.hup
            u.rb.end += n
            u.deadline = self.now + self.t_read
            return 1
        if n < 0 and errno == EAGAIN:
            u.rd_ready = 0
            return 0
        if n < 0 and errno == EINTR:
            return 1
        # the backend closed (or reset)
        if c.resp_state == RS_WAIT_HEAD:
            if u.rb.end == u.rb.start and u.reused and not c.resp_started:
                self.upstream_failed(c, F_STALE)
            else:
                self.upstream_failed(c, F_RESET)
            return -1
        if c.resp_state == RS_BODY and u.resp.body_kind == BODY_CLOSE:
            c.resp_state = RS_DONE
            u.resp.keep_alive = 0
            return 1
        self.release_pick(c, OUTCOME_RESET)
        self.abort(c, ERR_SERVER_RESET)   # a truncated body: the client must see the connection end
        return -1

    cdef int start_response(self, Client c, Upstream u, Py_ssize_t head_len):
        cdef ResponseRewrite rw
        cdef Py_ssize_t n
        cdef int status = u.resp.status
        if 100 <= status < 200 and status != 101:
            # Interim responses (RFC 9110 15.2) go to 1.1 clients as they are, except a 100 Continue
            # we already sent ourselves.
            if c.req.version_minor == 1 and not (status == 100 and c.sent_continue):
                if head_len > c.head_cap:
                    self.upstream_failed(c, F_BAD_RESPONSE)
                    return -1
                memcpy(c.head, u.rb.data + u.rb.start, head_len)
                c.out.head_off = 0
                c.out.head_len = head_len
            u.rb.start += head_len
            return 1
        if status == 101 and not c.req.upgrade:
            self.upstream_failed(c, F_BAD_RESPONSE)
            return -1
        c.dechunk = u.resp.body_kind == BODY_CHUNKED and c.req.version_minor == 0
        c.keep_alive = (c.req.keep_alive and c.req_done and not self.draining and not c.dechunk and
                        self.t_keepalive > 0 and
                        u.resp.body_kind != BODY_CLOSE and status != 101)
        rw.server = self.server_header_ptr
        rw.server_len = self.server_header_len
        rw.client_keep_alive = c.keep_alive
        rw.client_version_minor = c.req.version_minor
        rw.dechunk = c.dechunk
        n = write_response_head(u.rb.data + u.rb.start, &u.resp, &rw, c.head, c.head_cap)
        if n < 0:
            self.upstream_failed(c, F_BAD_RESPONSE)
            return -1
        c.response_seconds = self.now - c.picked_at
        if c.route_filters:
            n = self.response_filters(c, n)
        if (self.balancer.sticky_kind(c.upstream_group) == STICKY_COOKIE and
                c.cookie_server != u.server):
            n = self.add_sticky_cookie(c, u.server, n)
        count_response(self.wc, c.rctr, self.server_ctr[u.server], status)
        if c.log_open:
            c.log.status = status
            c.log.upstream_len = self.servers[u.server].text_len
            memcpy(c.log.upstream, self.servers[u.server].text, c.log.upstream_len)
        u.rb.start += head_len
        c.out.head_off = 0
        c.out.head_len = n
        c.resp_started = 1
        if c.req_done:
            c.rb.start = c.fwd           # the request can no longer be replayed: release it
            c.replayable = 0
        if u.resp.body_kind == BODY_NONE or status == 101:
            c.resp_state = RS_DONE
        elif u.resp.body_kind == BODY_LENGTH:
            c.resp_left = u.resp.content_length
            c.resp_state = RS_DONE if c.resp_left == 0 else RS_BODY
        else:
            memset(&c.resp_chunk, 0, sizeof(ChunkState))
            c.resp_state = RS_BODY
        return 1

    # --- the response filter seam -----------------------------------------------------------------

    cdef Py_ssize_t response_filters(self, Client c, Py_ssize_t n):
        """Run the route's response filters over the rewritten head c.head[0:n]; returns its new length."""
        cdef Route *r = &self.routes[c.route]
        if r.filters & FILTER_ADD_HEADERS and n + r.add_headers_len <= c.head_cap:
            # before the head's final CRLF
            memcpy(c.head + n - 2, r.add_headers, r.add_headers_len)
            n += r.add_headers_len
            memcpy(c.head + n - 2, b"\r\n", 2)
        return n

    cdef Py_ssize_t add_sticky_cookie(self, Client c, int srv, Py_ssize_t n):
        """Insert Set-Cookie before the head's final CRLF: the client was new here or has moved."""
        cdef Py_ssize_t k
        if n + 16 > c.head_cap:
            return n
        memcpy(c.head + n - 2, b"Set-Cookie: ", 12)
        k = self.balancer.sticky_cookie(c.upstream_group, srv, c.head + n + 10, c.head_cap - n - 14)
        if k <= 0:
            memcpy(c.head + n - 2, b"\r\n", 2)
            return n
        memcpy(c.head + n + 10 + k, b"\r\n\r\n", 4)
        return n + 14 + k

    cdef void finish_exchange(self, Client c):
        """The response is out. Keep or close both connections, then serve a pipelined request."""
        cdef Upstream u = c.up
        cdef UpstreamGroup *g
        if c.req.upgrade and u is not None and u.resp.status == 101:
            self.start_tunnel(c)
            return
        self.close_log(c, 0)
        self.release_pick(c, OUTCOME_HTTP_5XX if u is not None and u.resp.status >= 500 else OUTCOME_OK)
        c.up = None
        if u is not None:
            u.client = None
            g = &self.groups[self.servers[u.server].upstream]
            if (u.resp.keep_alive and c.req_done and u.rb.start == u.rb.end and not out_pending(&u.out)
                    and not self.draining and len(<list>self.pools[u.server]) < g.keepalive):
                u.state = US_IDLE
                self.free_buffers(&u.rb, &u.head)   # an idle connection holds no buffer
                u.deadline = self.now + g.keepalive_timeout
                (<list>self.pools[u.server]).append(u)
                gauge_add(&self.wc.backend_idle, 1)
            else:
                self.close_upstream(u)
        if not c.keep_alive or not c.req_done:
            self.finish_client(c)
            return
        c.state = CS_HEAD
        c.rctr = NULL                 # the next request is not routed yet
        if not c.nodelay:
            # A kept-alive connection's next response must not wait behind Nagle for the last ACK.
            set_nodelay(c.fd)
            c.nodelay = 1
        c.rb.start = c.fwd
        if c.rb.start == c.rb.end:
            self.free_buffers(&c.rb, &c.head)   # idle between requests: no buffer until bytes come
        c.deadline = self.now + self.t_keepalive
        c.idle_since = self.now       # while draining, the sweep closes it after a grace period
        self.client_read_head(c)

    # --- tunnels (Upgrade) ----------------------------------------------------------------------

    cdef void start_tunnel(self, Client c):
        c.state = CS_TUNNEL
        c.deadline = 0
        c.up.deadline = 0
        c.rb.start = c.fwd
        c.tunnel_client_eof = 0
        c.up_eof = 0
        self.tunnel(c)

    cdef void tunnel(self, Client c):
        cdef Upstream u = c.up
        cdef int a, b
        while c.state == CS_TUNNEL:
            a = self.tunnel_direction(c, 1, c.fd, &c.rb, &c.rd_ready, c.hup, &c.tunnel_client_eof,
                                      u.fd, &u.out, u.head, &u.wr_ready)
            b = self.tunnel_direction(c, 0, u.fd, &u.rb, &u.rd_ready, u.hup, &c.up_eof,
                                      c.fd, &c.out, c.head, &c.wr_ready)
            if a < 0 or b < 0 or (c.tunnel_client_eof and c.up_eof and
                                  not out_pending(&u.out) and not out_pending(&c.out)):
                self.detach_and_close(c)
                self.close_client(c)
                return
            if a == 0 and b == 0:
                return

    cdef int tunnel_direction(self, Client c, bint from_client, int src, Buffer *rb, bint *rd_ready, bint hup,
                              bint *eof, int dst, Outgoing *out, char *head, bint *wr_ready):
        cdef int r
        cdef Py_ssize_t n, before
        if out_pending(out):
            before = out_left(out)
            r = flush_out(dst, out, head, rb.data, wr_ready)
            if not from_client:
                count_bytes_out(self.wc, c.rctr, self.server_ctr[c.up.server], before - out_left(out))
            if r < 0:
                return -1
            if r == 0:
                return 0
            rb.start += out.body_consume
            out_clear(out)
            if eof[0] and rb.start == rb.end:
                shutdown(dst, SHUT_WR)
            return 1
        if rb.end > rb.start:
            out.body_off = rb.start
            out.body_len = rb.end - rb.start
            out.body_consume = out.body_len
            return 1
        if eof[0] or not rd_ready[0]:
            return 0
        rb.start = rb.end = 0
        n = sock_read(src, rb.data, rb.cap)
        if n > 0:
            if from_client:
                count_bytes_in(self.wc, n)
            if n < rb.cap:
                rd_ready[0] = hup
            rb.end = n
            return 1
        if n == 0:
            eof[0] = 1
            shutdown(dst, SHUT_WR)        # pass the half-close on
            return 1
        if errno == EAGAIN:
            rd_ready[0] = 0
            return 0
        return -1 if errno != EINTR else 1

    # --- errors, timeouts and closing -----------------------------------------------------------

    cdef void client_request_error(self, Client c, int status):
        """The request itself is bad (found while streaming its body)."""
        if c.resp_started:
            self.abort(c, ERR_BAD_REQUEST)
        else:
            count_error(self.wc, ERR_BAD_REQUEST)
            self.answer_error(c, status)

    cdef void answer_error(self, Client c, int status):
        """Answer with a small error response and close: framing may be in doubt."""
        cdef Py_ssize_t n
        if c.up is not None:
            self.detach_and_close(c)
        count_response(self.wc, c.rctr, NULL, status)
        if c.log_open:
            c.log.status = status
        n = write_error_response(status, 1, c.head, c.head_cap)
        out_clear(&c.out)
        if n > 0:
            c.out.head_len = n
        c.keep_alive = 0
        c.state = CS_CLOSING
        c.deadline = self.now + self.t_send
        self.closing(c)

    cdef void closing(self, Client c):
        cdef Py_ssize_t before = out_left(&c.out)
        cdef int r = flush_out(c.fd, &c.out, c.head, c.rb.data, &c.wr_ready)
        count_bytes_out(self.wc, c.rctr, NULL, before - out_left(&c.out))
        if c.log_open:
            c.log.bytes_sent += before - out_left(&c.out)
        if r < 0:
            self.close_client(c)
        elif r == 1:
            self.close_log(c, 0)
            # Half-close and keep reading for a while, so that unread request bytes do not turn our
            # answer into a reset (RFC 9112 9.6).
            shutdown(c.fd, SHUT_WR)
            c.state = CS_LINGER
            c.deadline = self.now + LINGER_SECONDS
            c.rb.start = c.rb.end = 0
            self.linger(c)

    cdef void linger(self, Client c):
        cdef Py_ssize_t n
        cdef int _
        for _ in range(16):
            if not c.rd_ready:
                return
            n = sock_read(c.fd, c.rb.data, c.rb.cap)
            if n > 0:
                count_bytes_in(self.wc, n)
                if n < c.rb.cap:
                    c.rd_ready = c.hup
                continue
            if n < 0 and errno == EAGAIN:
                c.rd_ready = 0
                return
            if n < 0 and errno == EINTR:
                continue
            self.close_client(c)
            return

    cdef void finish_client(self, Client c):
        """Close after the last response. A client that asked to close sends nothing more (RFC 9112
        9.6): close at once. Otherwise (we chose to close, a body not read to its end, bytes after the
        request) half-close and drain first, so that nothing unread turns the answer into a reset."""
        if not c.req.keep_alive and c.req_done and c.rb.end == c.fwd:
            self.close_client(c)
            return
        out_clear(&c.out)
        c.state = CS_CLOSING
        c.deadline = self.now + self.t_send
        self.closing(c)

    cdef void abort(self, Client c, int kind):
        """Something broke mid-exchange (an ErrorKind, counted): drop both connections without a word."""
        count_error(self.wc, kind)
        if c.up is not None:
            self.detach_and_close(c)
        self.close_client(c)

    cdef void detach_and_close(self, Client c):
        cdef Upstream u = c.up
        self.release_pick(c, OUTCOME_OK if c.state == CS_TUNNEL else OUTCOME_ABORTED)
        c.up = None
        out_clear(&c.out)
        if u is not None:
            u.client = None
            self.close_upstream(u)

    cdef void client_timeout(self, Client c):
        if c.state == CS_HEAD:
            if c.rb.end > c.rb.start:
                count_error(self.wc, ERR_CLIENT_TIMEOUT)
                self.answer_error(c, 408)
            else:
                self.close_client(c)      # idle keep-alive connection
        elif c.state == CS_PROXY:
            if c.resp_started or c.req_done:
                self.abort(c, ERR_CLIENT_TIMEOUT)   # the client stopped reading the response
            else:
                count_error(self.wc, ERR_CLIENT_TIMEOUT)
                self.answer_error(c, 408)   # the client stopped sending its body
        else:
            if c.state == CS_ANSWER:
                count_error(self.wc, ERR_CLIENT_TIMEOUT)    # it stopped reading the proxy's answer
            self.close_client(c)

    cdef void upstream_timeout(self, Upstream u):
        cdef Client c = u.client
        if u.state == US_IDLE or c is None:
            self.close_upstream(u)
        elif u.state == US_CONNECTING:
            self.upstream_failed(c, F_CONNECT_TIMEOUT)
        elif c.resp_started:
            self.abort(c, ERR_SERVER_TIMEOUT)
        else:
            self.upstream_failed(c, F_TIMEOUT)

    # close(2) also takes the socket out of the epoll set: no other process holds a copy of it.
    cdef void close_client(self, Client c):
        if c.state == CS_CLOSED:
            return
        self.graveyard.append(c)
        c.waiting = 0                 # serve_waiting() skips it
        self.close_log(c, 499)        # nginx's "client closed request" when nothing was answered
        if c.up is not None:
            self.detach_and_close(c)
        c.state = CS_CLOSED
        close(c.fd)
        self.live.pop(c.fd, None)
        self.free_buffers(&c.rb, &c.head)
        free(c.log)
        c.log = NULL
        count_client_close(self.wc)

    cdef void close_upstream(self, Upstream u):
        if u.state == US_CLOSED:
            return
        self.graveyard.append(u)
        if u.state == US_IDLE:
            gauge_add(&self.wc.backend_idle, -1)
            (<list>self.pools[u.server]).remove(u)
        u.state = US_CLOSED
        u.client = None
        close(u.fd)
        self.live.pop(u.fd, None)
        self.free_buffers(&u.rb, &u.head)
        count_backend_close(self.wc)


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


cdef inline void set_nodelay(int fd) noexcept nogil:
    cdef int one = 1
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))


cdef void fill_sockaddr(Server *s, str host, int port) except *:
    cdef sockaddr_in *a4
    cdef sockaddr_in6 *a6
    cdef bytes h = host.encode()
    memset(&s.addr, 0, sizeof(sockaddr_storage))
    if ":" in host:
        a6 = <sockaddr_in6 *>&s.addr
        a6.sin6_family = AF_INET6
        a6.sin6_port = htons(port)
        if inet_pton(AF_INET6, h, &a6.sin6_addr) != 1:
            raise ValueError("not an IPv6 address: %s" % host)
        s.addr_len = sizeof(sockaddr_in6)
    else:
        a4 = <sockaddr_in *>&s.addr
        a4.sin_family = AF_INET
        a4.sin_port = htons(port)
        if inet_pton(AF_INET, h, &a4.sin_addr) != 1:
            raise ValueError("not an IPv4 address: %s" % host)
        s.addr_len = sizeof(sockaddr_in)


cdef void format_addr(sockaddr_storage *addr, char *out, int *out_len) noexcept nogil:
    cdef const char *r
    cdef int i = 0
    if addr.ss_family == AF_INET6:
        r = inet_ntop(AF_INET6, &(<sockaddr_in6 *>addr).sin6_addr, out, 64)
    elif addr.ss_family == AF_INET:
        r = inet_ntop(AF_INET, &(<sockaddr_in *>addr).sin_addr, out, 64)
    else:
        r = NULL
    if r == NULL:
        memcpy(out, b"unknown", 7)
        out_len[0] = 7
        return
    while out[i] != 0 and i < 63:
        i += 1
    out_len[0] = i
