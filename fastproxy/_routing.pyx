# cython: language_level=3
"""The route table (rules in _routing.pxd)."""

from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy

from fastproxy._filters cimport FilterChain


cdef inline unsigned char lower(unsigned char c) noexcept nogil:
    return c + 32 if 65 <= c <= 90 else c


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


cdef class RouteTable:
    def __init__(self, config, group_index, chains):
        """config.routes in order; group_index maps upstream names to indexes; chains: a FilterChain
        (or None) per route."""
        self.n_routes = len(config.routes)
        self.routes = <Route *>calloc(max(1, self.n_routes), sizeof(Route))
        if self.routes == NULL:
            raise MemoryError()
        self.chains = list(chains)
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
            self.routes[i].group = group_index[r.upstream] if r.upstream is not None else -1
            self.routes[i].buffering = getattr(r, "request_buffering", True)
            chain = self.chains[i]
            self.routes[i].filters = (<FilterChain>chain).flags if chain is not None else 0

    def __dealloc__(self):
        free(self.routes)

    cdef int match(self, const char *host, Py_ssize_t host_len, const char *path,
                   Py_ssize_t path_len) noexcept nogil:
        cdef int i, best = -1, best_kind = -1, best_path = -1, best_host = -1
        cdef Route *r
        host_len = host_without_port(host, host_len)
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
