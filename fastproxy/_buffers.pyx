# cython: language_level=3
"""The worker's pool of buffer blocks (rules in _buffers.pxd)."""

from libc.stdlib cimport free, malloc


cdef class BufferPool:
    def __init__(self, Py_ssize_t buffer_size, Py_ssize_t head_cap):
        self.buffer_size = buffer_size
        self.head_cap = head_cap

    def __dealloc__(self):
        while self.n_spare > 0:
            self.n_spare -= 1
            free(self.spare[self.n_spare])

    cdef bint take(self, Buffer *rb, char **head) noexcept:
        """Give a connection its read buffer and head buffer. False when out of memory."""
        cdef char *block
        if self.n_spare > 0:
            self.n_spare -= 1
            block = self.spare[self.n_spare]
        else:
            block = <char *>malloc(self.buffer_size + self.head_cap)
            if block == NULL:
                return 0
        rb.data = block
        rb.cap = self.buffer_size
        rb.start = rb.end = 0
        head[0] = block + self.buffer_size
        self.in_use += 1
        return 1

    cdef void give(self, Buffer *rb, char **head) noexcept:
        rb.start = rb.end = 0
        if rb.data != NULL:
            self.in_use -= 1
            if self.n_spare < SPARE_BLOCKS:
                self.spare[self.n_spare] = rb.data
                self.n_spare += 1
            else:
                free(rb.data)
        rb.data = NULL
        head[0] = NULL

    @property
    def blocks_in_use(self):
        return self.in_use
