# The transport: every byte in or out of a connection passes here, and only here.
#
# Rules of this module:
# - A Transport owns the readiness of its socket (nginx's `ready` flags): `rd_ready` / `wr_ready` say
#   what the kernel last told us, and only a read that came back short (or EAGAIN), or a write that was
#   cut, clears them. Callers never reason about short reads themselves.
# - One ops table per kind of transport (HAProxy's xprt_ops): plain TCP today; TLS plugs in as a second
#   entry with the same four calls. A TLS read may need the socket writable first (and a write readable):
#   `want` says which readiness the transport waits for, whatever the caller asked.
# - Return convention of tp_read / tp_writev: >= 0 bytes (0 from tp_read is the peer's end of stream),
#   IO_AGAIN nothing now (wait for readiness), IO_ERROR the connection is broken (errno says why).
# - Outgoing is a queue of at most OUT_PIECES byte ranges on their way out, written with one writev;
#   the bytes stay where they are (a head buffer, a read buffer, a filter's output) until written.

from fastproxy._sys cimport iovec

cdef enum:
    IO_AGAIN = -1
    IO_ERROR = -2

cdef enum:
    WANT_READ = 1
    WANT_WRITE = 2

cdef enum:
    OUT_PIECES = 4

# What a listener hands to every connection it accepts (TLS, PROXY protocol and the like come here).
cdef struct ListenerSettings:
    int fd
    int index                   # position in config.listens
    const char *proto           # "http" (X-Forwarded-Proto); "https" once TLS terminates here
    Py_ssize_t proto_len

cdef struct Transport
ctypedef Py_ssize_t (*read_fn)(Transport *t, char *buf, Py_ssize_t n) noexcept nogil
ctypedef Py_ssize_t (*writev_fn)(Transport *t, iovec *iov, int cnt) noexcept nogil
ctypedef void (*shutdown_fn)(Transport *t) noexcept nogil
ctypedef void (*close_fn)(Transport *t) noexcept nogil

cdef struct TransportOps:
    read_fn read
    writev_fn writev
    shutdown_fn shutdown_write  # half-close: our side is done sending
    close_fn close

cdef struct Transport:
    int fd
    bint rd_ready
    bint wr_ready
    bint hup                    # the peer closed its side: reading goes on until read() says 0
    int want                    # WANT_* the transport waits for (TLS: may differ from the caller's)
    const TransportOps *ops
    const ListenerSettings *listener   # the listener a client came from; NULL for backends

cdef struct Outgoing:
    iovec iov[OUT_PIECES]
    int first                   # the first piece not fully written
    int count
    Py_ssize_t consume          # read-buffer bytes the sender releases once everything is written
    char chunk_line[24]         # room for a chunk-size line of a re-framed body ("1a2b\r\n")


cdef void tp_init_plain(Transport *t, int fd, const ListenerSettings *listener) noexcept nogil
cdef void tp_note_events(Transport *t, unsigned int events) noexcept nogil

cdef inline Py_ssize_t tp_read(Transport *t, char *buf, Py_ssize_t n) noexcept nogil:
    return t.ops.read(t, buf, n)

cdef inline Py_ssize_t tp_writev(Transport *t, iovec *iov, int cnt) noexcept nogil:
    return t.ops.writev(t, iov, cnt)

cdef inline void tp_shutdown_write(Transport *t) noexcept nogil:
    t.ops.shutdown_write(t)

cdef inline void tp_close(Transport *t) noexcept nogil:
    t.ops.close(t)


cdef inline bint out_pending(const Outgoing *o) noexcept nogil:
    return o.first < o.count

cdef inline void out_clear(Outgoing *o) noexcept nogil:
    o.first = 0
    o.count = 0
    o.consume = 0

cdef inline void out_push(Outgoing *o, const char *p, Py_ssize_t n) noexcept nogil:
    """Queue n bytes at p (nothing if n is 0). The caller keeps them in place until written."""
    if n > 0:
        o.iov[o.count].iov_base = <void *>p
        o.iov[o.count].iov_len = n
        o.count += 1

cdef Py_ssize_t out_left(const Outgoing *o) noexcept nogil
cdef int out_flush(Transport *t, Outgoing *o) noexcept nogil
#   1 everything written, 0 the socket is full (wait for writability), -1 broken
