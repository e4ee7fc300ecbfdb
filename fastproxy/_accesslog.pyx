# cython: language_level=3
"""The access log.

Lines are formatted straight into a C buffer and written with one write(2) when the buffer is nearly
full or when the event loop's sweep calls flush() (every 100 ms), never per request: a log file on a
slow disk costs the loop one write per flush, not one per request. Strings from the request are
escaped so that a hostile client cannot forge lines: in "combined" a quote, backslash or control byte
becomes \\xHH (as nginx does), in "json" the JSON escapes.
"""

import time

from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from posix cimport unistd

cdef enum:
    BUFFER_SIZE = 131072
    LINE_MAX = 16384            # a line never exceeds this: fields are bounded, escaping at most 6x

cdef const char *HEX = b"0123456789abcdef"


cdef inline Py_ssize_t put(char *out, const char *s, Py_ssize_t n) noexcept nogil:
    memcpy(out, s, n)
    return n


cdef Py_ssize_t put_escaped(char *out, const char *s, Py_ssize_t n, bint json) noexcept nogil:
    cdef Py_ssize_t i, k = 0
    cdef unsigned char ch
    if n == 0 and not json:
        out[0] = b'-'
        return 1
    for i in range(n):
        ch = <unsigned char>s[i]
        if ch == b'"' or ch == b'\\':
            out[k] = b'\\'
            out[k + 1] = ch if json else b'x'
            if json:
                k += 2
            else:
                out[k + 2] = HEX[ch >> 4]
                out[k + 3] = HEX[ch & 15]
                k += 4
        elif ch < 0x20 or ch == 0x7f or (json and ch >= 0x80):
            if json:
                memcpy(out + k, b"\\u00", 4)
                out[k + 4] = HEX[ch >> 4]
                out[k + 5] = HEX[ch & 15]
                k += 6
            else:
                out[k] = b'\\'
                out[k + 1] = b'x'
                out[k + 2] = HEX[ch >> 4]
                out[k + 3] = HEX[ch & 15]
                k += 4
        else:
            out[k] = ch
            k += 1
    return k


cdef Py_ssize_t put_int(char *out, long long v) noexcept nogil:
    cdef char tmp[24]
    cdef int i = 0, k = 0
    if v < 0:
        out[0] = b'-'
        return 1 + put_int(out + 1, -v)
    while True:
        tmp[i] = <char>(48 + v % 10)
        i += 1
        v //= 10
        if v == 0:
            break
    while i > 0:
        i -= 1
        out[k] = tmp[i]
        k += 1
    return k


cdef class AccessLog:
    def __cinit__(self, int fd, str fmt="combined"):
        self.fd = fd
        self.fmt = LOG_JSON if fmt == "json" else LOG_COMBINED
        self.cap = BUFFER_SIZE
        self.buf = <char *>malloc(self.cap)
        if self.buf == NULL:
            raise MemoryError()
        self.len = 0
        self.last_second = -1
        self.refresh_time()

    def __dealloc__(self):
        free(self.buf)

    cdef void refresh_time(self):
        cdef long second = <long>time.time()
        if second == self.last_second:
            return
        self.last_second = second
        t = time.localtime(second)
        local = time.strftime("%d/%b/%Y:%H:%M:%S %z", t).encode()
        iso = time.strftime("%Y-%m-%dT%H:%M:%S%z", t).encode()
        iso = iso[:len(iso) - 2] + b":" + iso[len(iso) - 2:]
        self.time_local_len = len(local)
        memcpy(self.time_local, <char *>local, self.time_local_len)
        self.time_iso_len = len(iso)
        memcpy(self.time_iso, <char *>iso, self.time_iso_len)

    cdef void write(self, const LogRecord *r, double now) noexcept:
        cdef char *o
        cdef Py_ssize_t k = 0
        cdef long long ms
        if self.fd < 0:
            return
        if self.len + LINE_MAX > self.cap:
            self.flush()
        o = self.buf + self.len
        if self.fmt == LOG_COMBINED:
            # $remote_addr - - [$time_local] "$request" $status $bytes_sent "$http_referer" "$http_user_agent"
            k += put(o + k, r.remote, r.remote_len)
            k += put(o + k, b" - - [", 6)
            k += put(o + k, self.time_local, self.time_local_len)
            k += put(o + k, b"] \"", 3)
            if r.method_len == 0:
                o[k] = b'-'               # refused before a request line could be read
                k += 1
            else:
                k += put_escaped(o + k, r.method, r.method_len, 0)
                o[k] = b' '
                k += 1
                k += put_escaped(o + k, r.uri, r.uri_len, 0)
                k += put(o + k, b" HTTP/1.", 8)
                o[k] = <char>(48 + r.version_minor)
                k += 1
            k += put(o + k, b"\" ", 2)
            k += put_int(o + k, r.status)
            o[k] = b' '
            k += 1
            k += put_int(o + k, r.bytes_sent)
            k += put(o + k, b" \"", 2)
            k += put_escaped(o + k, r.referer, r.referer_len, 0)
            k += put(o + k, b"\" \"", 3)
            k += put_escaped(o + k, r.user_agent, r.user_agent_len, 0)
            k += put(o + k, b"\"\n", 2)
        else:
            ms = <long long>((now - r.started) * 1000.0) if r.started > 0 else 0
            k += put(o + k, b"{\"time\":\"", 9)
            k += put(o + k, self.time_iso, self.time_iso_len)
            k += put(o + k, b"\",\"remote_addr\":\"", 17)
            k += put(o + k, r.remote, r.remote_len)
            k += put(o + k, b"\",\"method\":\"", 12)
            k += put_escaped(o + k, r.method, r.method_len, 1)
            k += put(o + k, b"\",\"uri\":\"", 9)
            k += put_escaped(o + k, r.uri, r.uri_len, 1)
            k += put(o + k, b"\",\"version\":\"1.", 15)
            o[k] = <char>(48 + r.version_minor)
            k += 1
            k += put(o + k, b"\",\"status\":", 11)
            k += put_int(o + k, r.status)
            k += put(o + k, b",\"bytes_sent\":", 14)
            k += put_int(o + k, r.bytes_sent)
            k += put(o + k, b",\"referer\":\"", 12)
            k += put_escaped(o + k, r.referer, r.referer_len, 1)
            k += put(o + k, b"\",\"user_agent\":\"", 16)
            k += put_escaped(o + k, r.user_agent, r.user_agent_len, 1)
            k += put(o + k, b"\",\"host\":\"", 10)
            k += put_escaped(o + k, r.host, r.host_len, 1)
            k += put(o + k, b"\",\"upstream\":\"", 14)
            k += put(o + k, r.upstream, r.upstream_len)
            k += put(o + k, b"\",\"duration_ms\":", 16)
            k += put_int(o + k, ms)
            k += put(o + k, b",\"error\":\"", 10)
            k += put(o + k, r.error, r.error_len)
            k += put(o + k, b"\"}\n", 3)
        self.len += k

    cdef void flush(self) noexcept:
        cdef Py_ssize_t off = 0, n
        while off < self.len and self.fd >= 0:
            n = unistd.write(self.fd, self.buf + off, self.len - off)
            if n <= 0:
                break             # a full disk must not stop the proxy: the lines are dropped
            off += n
        self.len = 0
