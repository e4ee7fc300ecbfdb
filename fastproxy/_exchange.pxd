# An exchange: one request and its response, with everything that lives exactly as long as they do.
#
# A client connection holds an Exchange only while a request is under way (an idle kept-alive
# connection holds none: that is most of its memory), and the backend side and the filters speak in
# exchanges. HTTP/2 to clients will carry several at once on one connection. start() resets every field
# in one place; nothing of one request leaks into the next.
# An Exchange is big (two parsed heads and a log record: ~13 KB), so the worker keeps used ones in an
# ExchangePool and hands them out again as they are: no allocation and no zeroing per request.

cimport cython
from libc.stdint cimport uint64_t

from fastproxy._accesslog cimport LogRecord
from fastproxy._counters cimport RouteCounters
from fastproxy._http cimport ChunkState, RequestHead, ResponseHead

cdef enum:
    TRIED_MAX = 32              # servers one request may try (the balancer's `tries` is capped by it)

# Where the response is.
cdef enum ResponseState:
    RS_WAIT_HEAD = 1
    RS_BODY
    RS_DONE

# How the response body reaches the client.
cdef enum Framing:
    FRAME_AS_IS = 0             # the backend's framing, forwarded verbatim
    FRAME_DECHUNK               # chunked from the backend, close-delimited to an HTTP/1.0 client
    FRAME_CHUNKED               # re-framed by us as chunked (a filter changed the body)
    FRAME_CLOSE                 # re-framed by us as close-delimited (a filter changed it, 1.0 client)

# Why a backend attempt failed (server side), or why an exchange ended early (client or local side).
# One table in _core.pyx maps each to a status, a retry rule and the balancer's outcome.
cdef enum Failure:
    F_NONE = 0
    F_CONNECT                   # connect refused/failed: nothing was sent
    F_CONNECT_TIMEOUT
    F_STALE                     # a reused pooled connection closed before any response byte
    F_RESET                     # connection lost before any response byte (request may have run)
    F_TIMEOUT                   # no response within upstream_read / upstream_send
    F_BAD_RESPONSE              # unparseable or ambiguous response head
    F_LOCAL                     # our own resources (socket(), memory, epoll_ctl): not the server's fault


@cython.final
cdef class Exchange:
    # --- the request (spans into the client's read buffer) --------------------------------------------
    cdef RequestHead req
    cdef Py_ssize_t req_start       # where the request starts in the client buffer
    cdef Py_ssize_t req_head_len
    cdef Py_ssize_t fwd             # client-buffer offset up to which request bytes went to the backend
    cdef bint replayable            # the whole request is still in the buffer: it can go elsewhere
    cdef bint req_done              # the whole request body was handed to the backend
    cdef long long req_left         # Content-Length bytes still to come
    cdef long long req_body_seen
    cdef ChunkState req_chunk
    cdef bint sent_continue
    # request buffering (route request_buffering): the body is read whole before a backend is picked
    cdef Py_ssize_t scanned         # client-buffer offset up to which the body's framing was checked
    cdef double body_start          # when its body began (the min_rate clock)
    cdef long long body_bytes       # body bytes received so far
    cdef int spool_fd               # the body is in this unlinked file (-1: in the buffer)
    cdef long long spool_len        # bytes in it
    cdef long long spool_off        # bytes of it sent to the backend
    cdef int route                  # index of the matched route (-1: none)
    cdef int filters                # the route's FilterFlag bits (0: the fast path)
    cdef object chain               # the route's FilterChain when filters != 0

    # --- choosing a server -----------------------------------------------------------------------------
    cdef int group                  # upstream index
    cdef uint64_t key               # hash of the balancing key (hash / sticky hash)
    cdef int tried[TRIED_MAX]
    cdef int n_tried
    cdef int picked                 # the server the balancer gave us (-1: none held); released once
    cdef int server                 # the server that answered (-1: none)
    cdef double picked_at
    cdef double response_seconds    # pick to response head, for least_time
    cdef int sticky_server          # taken for this request by its sticky cookie, not yet used
    cdef int cookie_server          # the server the request's sticky cookie names (-1: none or gone)
    cdef bint waiting               # queued: every candidate server is at max_conns
    cdef double wait_deadline
    cdef int last_failure
    cdef bint no_pool               # after a stale pooled connection: connect afresh

    # --- the response ---------------------------------------------------------------------------------
    cdef ResponseHead resp
    cdef int resp_state
    cdef int n_interim              # 1xx responses seen
    cdef bint resp_started          # a byte of the response went to the client
    cdef bint keep_alive            # the client connection stays open after this response
    cdef int framing                # Framing
    cdef long long resp_left
    cdef ChunkState resp_chunk
    cdef int status                 # what the client was answered (0: nothing yet)
    cdef long long bytes_out        # body and head bytes written to the client

    # --- an answer of the proxy's own (a filter answered, or an error) ---------------------------------
    cdef Py_ssize_t answer_head_len  # the answer's head, in the client's head buffer
    cdef object answer_owner        # keeps answer_body alive (bytes), or None
    cdef const char *answer_body
    cdef Py_ssize_t answer_len
    cdef int answer_fd              # a file body: read from here (-1: none); closed at the end
    cdef long long answer_file_left

    # --- filters' per-exchange state ------------------------------------------------------------------
    cdef object hook_request        # fastproxy.hooks.Request, built once for the Python hooks
    cdef object hook_response       # fastproxy.hooks.ResponseHead
    cdef list body_keep             # filter outputs queued to the client, kept alive until written
    cdef bint tee_off               # a tee hook failed: it sees nothing more of this response

    # --- counters ---------------------------------------------------------------------------------------
    cdef RouteCounters *rctr        # the counters of the request's route (NULL until routed)
    cdef double started             # when its head was parsed (the latency histogram's start)
    cdef bint timed                 # its latency is not counted yet

    # --- the access log ---------------------------------------------------------------------------------
    cdef LogRecord log
    cdef bint log_open              # a request is under way and not logged yet

    cdef void start(self, Py_ssize_t req_start, Py_ssize_t head_len) noexcept
    cdef void rewind(self) noexcept
    cdef void end(self) noexcept


cdef class ExchangePool:
    cdef list spare                 # Exchanges given back, reused last-in first-out (warm in the cache)
    cdef int cap
    cdef long long in_use

    cdef Exchange take(self)
    cdef void give(self, Exchange ex)
