# The pool of idle backend connections: per server, most recently used first (warm connections), an
# intrusive list through BackendConn.pool_prev/pool_next: no Python list per request.

from fastproxy._backend cimport BackendConn


cdef struct PoolList:
    void *first                 # most recently returned BackendConn (borrowed), NULL if none
    int count


cdef class BackendPool:
    cdef PoolList *lists
    cdef int n_servers
    cdef long long idle             # idle connections over all servers

    cdef BackendConn take(self, int server)
    cdef void put(self, BackendConn b) noexcept
    cdef void remove(self, BackendConn b) noexcept
    cdef inline int count(self, int server) noexcept:
        return self.lists[server].count
