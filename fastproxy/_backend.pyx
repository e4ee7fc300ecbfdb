# cython: language_level=3
"""Backend connections: opening them (the rules are in _backend.pxd)."""

cimport cython
from libc.errno cimport EACCES, EADDRNOTAVAIL, EINPROGRESS, EMFILE, ENFILE, ENOBUFS, ENOMEM, EPERM, errno
from libc.string cimport memset
from posix.unistd cimport close

from fastproxy._sys cimport (AF_INET, AF_INET6, IPPROTO_TCP, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_STREAM,
                             TCP_NODELAY, connect, htons, inet_pton, setsockopt, sockaddr, sockaddr_in,
                             sockaddr_in6, socket)


@cython.final
cdef class BackendConn(Conn):
    pass


cdef inline bint local_errno(int e) noexcept nogil:
    """Errors that say our worker ran out of something, not that the server failed."""
    return (e == EMFILE or e == ENFILE or e == ENOBUFS or e == ENOMEM or e == EADDRNOTAVAIL or
            e == EPERM or e == EACCES)


cdef int open_socket(const Server *s, int *fd) noexcept nogil:
    cdef int one = 1
    cdef int rc
    fd[0] = socket(s.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
    if fd[0] < 0:
        return -2
    # backend connections are kept alive: requests go out at once
    setsockopt(fd[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one))
    rc = connect(fd[0], <sockaddr *>&s.addr, s.addr_len)
    if rc == 0:
        return 1
    if errno == EINPROGRESS:
        return 0
    rc = -2 if local_errno(errno) else -1
    close(fd[0])
    fd[0] = -1
    return rc


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
