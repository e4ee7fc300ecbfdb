# cython: language_level=3
"""The idle backend connection pool (rules in _pool.pxd)."""

from libc.stdlib cimport calloc, free


cdef class BackendPool:
    def __cinit__(self, int n_servers):
        self.n_servers = n_servers
        self.lists = <PoolList *>calloc(max(1, n_servers), sizeof(PoolList))
        if self.lists == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.lists)

    cdef BackendConn take(self, int server):
        """The most recently pooled connection to that server, unlinked; None if there is none."""
        cdef PoolList *pl = &self.lists[server]
        if pl.first == NULL:
            return None
        cdef BackendConn b = <BackendConn>pl.first
        self.remove(b)
        return b

    cdef void put(self, BackendConn b) noexcept:
        cdef PoolList *pl = &self.lists[b.server]
        b.pool_prev = NULL
        b.pool_next = pl.first
        if pl.first != NULL:
            (<BackendConn>pl.first).pool_prev = <void *>b
        pl.first = <void *>b
        pl.count += 1
        self.idle += 1

    cdef void remove(self, BackendConn b) noexcept:
        cdef PoolList *pl = &self.lists[b.server]
        if b.pool_prev != NULL:
            (<BackendConn>b.pool_prev).pool_next = b.pool_next
        elif pl.first == <void *>b:
            pl.first = b.pool_next
        else:
            return                  # not in the pool
        if b.pool_next != NULL:
            (<BackendConn>b.pool_next).pool_prev = b.pool_prev
        b.pool_prev = b.pool_next = NULL
        pl.count -= 1
        self.idle -= 1
