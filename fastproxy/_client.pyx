# cython: language_level=3
"""Client connections (rules in _client.pxd)."""

cimport cython
from libc.string cimport memcpy

from fastproxy._sys cimport AF_INET, AF_INET6, inet_ntop, sockaddr_in, sockaddr_in6


@cython.final
cdef class Client(Conn):
    pass


cdef void format_addr(sockaddr_storage *addr, char *out, int *out_len) noexcept nogil:
    cdef const char *r
    cdef int i = 0
    if addr.ss_family == AF_INET6:
        r = inet_ntop(AF_INET6, &(<sockaddr_in6 *>addr).sin6_addr, out, 46)
    elif addr.ss_family == AF_INET:
        r = inet_ntop(AF_INET, &(<sockaddr_in *>addr).sin_addr, out, 46)
    else:
        r = NULL
    if r == NULL:
        memcpy(out, b"unknown", 7)
        out_len[0] = 7
        return
    while out[i] != 0 and i < 45:
        i += 1
    out_len[0] = i
