# The access log: one line per request, buffered in C memory and written at most every flush interval.

cdef struct LogRecord:
    double started                # CLOCK_MONOTONIC when the request head was complete
    char remote[64]
    int remote_len
    char method[32]
    int method_len
    char uri[1024]                # truncated past this
    int uri_len
    int version_minor
    char host[256]
    int host_len
    char referer[512]
    int referer_len
    char user_agent[512]
    int user_agent_len
    char upstream[64]             # "ip:port" of the backend that answered, if any
    int upstream_len
    int status
    long long bytes_sent
    char error[24]                # why the exchange failed (an error kind name of fastproxy.counters)
    int error_len


cdef enum LogFormat:
    LOG_COMBINED = 0
    LOG_JSON = 1


cdef class AccessLog:
    cdef int fd
    cdef int fmt
    cdef char *buf
    cdef Py_ssize_t len
    cdef Py_ssize_t cap
    cdef char time_local[40]      # "29/Nov/2026:00:59:33 +0000", refreshed once a second
    cdef int time_local_len
    cdef char time_iso[40]        # "2026-11-29T00:59:33+00:00"
    cdef int time_iso_len
    cdef long last_second

    cdef void write(self, const LogRecord *rec, double now) noexcept
    cdef void flush(self) noexcept
    cdef void refresh_time(self)
