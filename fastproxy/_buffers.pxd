# Buffers: a connection's read buffer and head buffer are one block, taken from the worker's pool only
# while the connection has work, and given back while it is idle.
#
# Rules: a block is buffer_size + head_cap bytes; the pool keeps up to SPARE_BLOCKS of them for reuse, so
# steady state does no malloc/free per connection. `in_use` counts blocks out of the pool: a leak test
# asserts it falls back to zero.

from libc.string cimport memmove

cdef enum:
    SPARE_BLOCKS = 256

cdef struct Buffer:
    char *data
    Py_ssize_t cap
    Py_ssize_t start            # first byte still needed
    Py_ssize_t end              # end of the bytes read


cdef class BufferPool:
    cdef Py_ssize_t buffer_size     # read buffer bytes per block
    cdef Py_ssize_t head_cap        # head buffer bytes per block (a rewritten head, or an answer)
    cdef char *spare[SPARE_BLOCKS]
    cdef int n_spare
    cdef long long in_use

    cdef bint take(self, Buffer *rb, char **head) noexcept
    cdef void give(self, Buffer *rb, char **head) noexcept


cdef inline bint buffer_make_room(Buffer *b) noexcept nogil:
    """Slide the live bytes to the front when the tail is full. False if no room can be made.

    Only call it when no byte of the buffer is queued in an Outgoing: that queue points into it."""
    if b.end < b.cap:
        return 1
    if b.start == 0:
        return 0
    memmove(b.data, b.data + b.start, b.end - b.start)
    b.end -= b.start
    b.start = 0
    return 1
