# cython: language_level=3
"""Plain TCP transport (the rules are in _transport.pxd). A TLS transport is a second TransportOps."""

from libc.errno cimport EAGAIN, EINTR, errno
from posix.unistd cimport close, read

from fastproxy._sys cimport (EPOLLERR, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP, SHUT_WR, iovec,
                             shutdown, writev)


cdef Py_ssize_t plain_read(Transport *t, char *buf, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t got
    while True:
        got = read(t.fd, buf, n)
        if got > 0:
            if got < n:
                t.rd_ready = t.hup      # a short read drained the socket, unless the peer also closed
            return got
        if got == 0:
            return 0
        if errno == EINTR:
            continue
        if errno == EAGAIN:
            t.rd_ready = 0
            return IO_AGAIN
        return IO_ERROR


cdef Py_ssize_t plain_writev(Transport *t, iovec *iov, int cnt) noexcept nogil:
    cdef Py_ssize_t n
    while True:
        n = writev(t.fd, iov, cnt)
        if n >= 0:
            return n
        if errno == EINTR:
            continue
        if errno == EAGAIN:
            t.wr_ready = 0
            return IO_AGAIN
        return IO_ERROR


cdef void plain_shutdown_write(Transport *t) noexcept nogil:
    shutdown(t.fd, SHUT_WR)


cdef void plain_close(Transport *t) noexcept nogil:
    # close(2) also takes the socket out of the epoll set: no other process holds a copy of it
    if t.fd >= 0:
        close(t.fd)
        t.fd = -1


cdef TransportOps PLAIN_OPS
PLAIN_OPS.read = plain_read
PLAIN_OPS.writev = plain_writev
PLAIN_OPS.shutdown_write = plain_shutdown_write
PLAIN_OPS.close = plain_close


cdef void tp_init_plain(Transport *t, int fd, const ListenerSettings *listener) noexcept nogil:
    t.fd = fd
    t.rd_ready = 0
    t.wr_ready = 0
    t.hup = 0
    t.want = 0
    t.ops = &PLAIN_OPS
    t.listener = listener


cdef void tp_note_events(Transport *t, unsigned int events) noexcept nogil:
    """Remember what an edge said: readable, writable, and whether the peer closed its side."""
    if events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR):
        t.rd_ready = 1
        if events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR):
            t.hup = 1
    if events & (EPOLLOUT | EPOLLHUP | EPOLLERR):
        t.wr_ready = 1


cdef Py_ssize_t out_left(const Outgoing *o) noexcept nogil:
    cdef Py_ssize_t n = 0
    cdef int i
    for i in range(o.first, o.count):
        n += o.iov[i].iov_len
    return n


cdef int out_flush(Transport *t, Outgoing *o) noexcept nogil:
    cdef Py_ssize_t n
    while o.first < o.count:
        if not t.wr_ready:
            return 0
        n = tp_writev(t, &o.iov[o.first], o.count - o.first)
        if n == IO_AGAIN:
            return 0
        if n < 0:
            return -1
        while n > 0 and o.first < o.count:
            if <size_t>n >= o.iov[o.first].iov_len:
                n -= o.iov[o.first].iov_len
                o.first += 1
            else:
                o.iov[o.first].iov_base = <char *>o.iov[o.first].iov_base + n
                o.iov[o.first].iov_len -= n
                n = 0
        if o.first < o.count:
            t.wr_ready = 0          # a cut write means the send buffer is full: EPOLLOUT will tell
            return 0
    return 1
