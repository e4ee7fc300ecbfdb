# Routing: a request's host and path pick a route (a plain C lookup, no Python per request).
#
# The rule (README "Routing"): the route whose host matches most exactly wins (an exact name, then the
# longest `*.suffix`, then `*`), and among those the longest path prefix. No match: 404.

cdef struct Route:
    int host_kind               # 0 any, 1 suffix (*.x matches x and a.x), 2 exact
    char host[256]
    int host_len
    char path[1024]
    int path_len
    int group                   # upstream index, -1 for a route that only its filters answer
    int filters                 # the route's FilterFlag bits (0: no filter, the fast path)
    bint buffering              # read a request body whole before picking a backend


cdef class RouteTable:
    cdef Route *routes
    cdef int n_routes
    cdef list chains                # per route: its FilterChain, or None

    cdef int match(self, const char *host, Py_ssize_t host_len, const char *path,
                   Py_ssize_t path_len) noexcept nogil


cdef Py_ssize_t host_without_port(const char *host, Py_ssize_t n) noexcept nogil
