# The one clock of the hot path: CLOCK_MONOTONIC in seconds (the shared table uses the same clock in ms).

from fastproxy._sys cimport CLOCK_MONOTONIC, clock_gettime, timespec


cdef inline double monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return ts.tv_sec + ts.tv_nsec * 1e-9
