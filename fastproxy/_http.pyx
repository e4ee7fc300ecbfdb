# HTTP/1.1 message heads and framing (RFC 9112) for the hot path. The contract is _http.pxd.
#
# Rules of this file:
# - Parsers and writers are `noexcept nogil`: no Python object per byte or per header. The Python
#   functions at the bottom exist for tests only.
# - Strict: anything ambiguous is refused with a status, never guessed (RFC 9112 11.2, request smuggling).
# - A head is judged on the first min(n, max_head) bytes, scanned in order; syntax errors are reported as
#   soon as the bytes showing them are present, semantic checks (Host, framing, Expect) once the head is
#   complete. So any split of the input gives 0 until the same final answer (or that same error earlier).
# - Line endings are CRLF only: a bare LF or bare CR anywhere in a head or chunk line is an error.
# - Field names and values are forwarded byte-exact; the writers only drop and add whole field lines.
# - A chunked body passed on keeps its framing byte-exact, minus chunk extensions and the trailer fields
#   RFC 9110 6.5.1 forbids (chunked_feed drops them in place). Only a WebSocket Upgrade is ever tunnelled.

from libc.string cimport memchr, memcpy, memmove, memset

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #define FP_LLONG_MAX 9223372036854775807LL
    #define FP_ONES 0x0101010101010101ULL
    #define FP_HIGHS 0x8080808080808080ULL
    /* Eight bytes at a time (SWAR): exact "is there a byte < n" / "a byte > n" tests, n <= 127. */
    static inline int fp_field_word(const unsigned char *p) {
        /* 1 when all 8 bytes are SP..~ or obs-text: no control byte (HTAB too takes the slow path), no DEL */
        uint64_t w, x;
        memcpy(&w, p, 8);
        x = w ^ (FP_ONES * 0x7F);
        return (((w - FP_ONES * 0x20) & ~w) | ((x - FP_ONES) & ~x)) & FP_HIGHS ? 0 : 1;
    }
    static inline int fp_vchar_word(const unsigned char *p) {
        /* 1 when all 8 bytes are visible ASCII 0x21..0x7E */
        uint64_t w;
        memcpy(&w, p, 8);
        return ((((w - FP_ONES * 0x21) & ~w) | ((w + FP_ONES) | w)) & FP_HIGHS) ? 0 : 1;
    }
    """
    long long FP_LLONG_MAX
    bint fp_field_word(const unsigned char *p) noexcept nogil
    bint fp_vchar_word(const unsigned char *p) noexcept nogil

# ---- byte classes (one 256-entry table, filled once at import) -------------------------------------

cdef enum:
    C_TCHAR = 1     # token char, RFC 9110 5.6.2
    C_VCHAR = 2     # visible ASCII 0x21-0x7E: request-target bytes
    C_FIELD = 4     # allowed in a field value: HTAB, SP, VCHAR, obs-text (RFC 9110 5.5)
    C_HOST = 8      # reg-name / IPv4 chars: unreserved, sub-delims, '%' (RFC 3986 3.2.2)
    C_HEX = 16
    C_DIGIT = 32
    C_REASON = 64   # reason-phrase: HTAB, SP, VCHAR, obs-text

cdef unsigned char CLS[256]
cdef unsigned char LOWER[256]


cdef void _init_tables() noexcept:
    cdef int c
    cdef const char *tspecial = b"!#$%&'*+-.^_`|~"
    cdef const char *hostchars = b"-._~!$&'()*+,;=%"
    cdef const char *p
    for c in range(256):
        CLS[c] = 0
        LOWER[c] = c + 32 if 65 <= c <= 90 else c
        if 0x21 <= c <= 0x7E:
            CLS[c] |= C_VCHAR
        if c == 9 or 0x20 <= c <= 0x7E or c >= 0x80:
            CLS[c] |= C_FIELD | C_REASON
        if 48 <= c <= 57:
            CLS[c] |= C_DIGIT | C_HEX | C_TCHAR | C_HOST
        if 65 <= c <= 90 or 97 <= c <= 122:
            CLS[c] |= C_TCHAR | C_HOST
        if 65 <= c <= 70 or 97 <= c <= 102:
            CLS[c] |= C_HEX
    p = tspecial
    while p[0]:
        CLS[<unsigned char>p[0]] |= C_TCHAR
        p += 1
    p = hostchars
    while p[0]:
        CLS[<unsigned char>p[0]] |= C_HOST
        p += 1


_init_tables()

cdef enum:
    CR = 13
    LF = 10
    SP = 32
    HTAB = 9

# private flag bits are not used: every kind the second pass needs has its HeaderFlag (see _http.pxd)


cdef inline bint _ieq(const unsigned char *s, const char *lit, Py_ssize_t n) noexcept nogil:
    # case-insensitive compare against a lower-case literal made of letters, digits and '-'. Safe
    # because the caller's bytes are tokens or validated values: no byte other than a letter ORs to a
    # letter, and the control bytes that OR to '-' or a digit (0x0D, 0x10-0x19) were refused already.
    cdef Py_ssize_t i
    for i in range(n):
        if (s[i] | 0x20) != <unsigned char>lit[i]:
            return False
    return True


cdef inline bint _ieq_any(const unsigned char *a, const unsigned char *b, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if LOWER[a[i]] != LOWER[b[i]]:
            return False
    return True


cdef inline bint _is_ows(unsigned char c) noexcept nogil:
    return c == SP or c == HTAB


cdef int _method_code(const unsigned char *s, Py_ssize_t n) noexcept nogil:
    # methods are case-sensitive (RFC 9110 9.1)
    if n == 3:
        if s[0] == b'G' and s[1] == b'E' and s[2] == b'T':
            return METHOD_GET
        if s[0] == b'P' and s[1] == b'U' and s[2] == b'T':
            return METHOD_PUT
    elif n == 4:
        if s[0] == b'P' and s[1] == b'O' and s[2] == b'S' and s[3] == b'T':
            return METHOD_POST
        if s[0] == b'H' and s[1] == b'E' and s[2] == b'A' and s[3] == b'D':
            return METHOD_HEAD
    elif n == 5:
        if memcmp_(s, b"PATCH", 5):
            return METHOD_PATCH
        if memcmp_(s, b"TRACE", 5):
            return METHOD_TRACE
    elif n == 6:
        if memcmp_(s, b"DELETE", 6):
            return METHOD_DELETE
    elif n == 7:
        if memcmp_(s, b"OPTIONS", 7):
            return METHOD_OPTIONS
        if memcmp_(s, b"CONNECT", 7):
            return METHOD_CONNECT
    return METHOD_OTHER


cdef inline bint memcmp_(const unsigned char *s, const char *lit, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if s[i] != <unsigned char>lit[i]:
            return False
    return True


cdef bint _ieq_underscore(const unsigned char *s, const char *lit, Py_ssize_t n) noexcept nogil:
    # like _ieq, with '_' standing for '-': "Transfer_Encoding" is a distinct, valid name to us, but
    # servers that map '_' to '-' (CGI-style environments) would take it as framing
    cdef Py_ssize_t i
    for i in range(n):
        if not ((s[i] | 0x20) == <unsigned char>lit[i] or (s[i] == b'_' and lit[i] == b'-')):
            return False
    return True


cdef int _name_flags(const unsigned char *s, Py_ssize_t n) noexcept nogil:
    # known field names: compare the length first, then case-insensitively. -1: a name that must be
    # refused (a framing field spelt with underscores, RFC 9112 11.2 smuggling)
    if n == 4:
        if _ieq(s, b"host", 4):
            return HF_HOST
    elif n == 14:
        if _ieq(s, b"content-length", 14):
            return HF_CONTENT_LENGTH
        if _ieq_underscore(s, b"content-length", 14):
            return -1
    elif n == 10:
        if _ieq(s, b"connection", 10):
            return HF_HOP | HF_CONNECTION
        if _ieq(s, b"keep-alive", 10):
            return HF_HOP
    elif n == 17:
        if _ieq(s, b"transfer-encoding", 17):
            return HF_HOP | HF_TRANSFER_ENCODING
        if _ieq_underscore(s, b"transfer-encoding", 17):
            return -1
        if _ieq(s, b"x-forwarded-proto", 17):
            return HF_XF_PROTO
    elif n == 15:
        if _ieq(s, b"x-forwarded-for", 15):
            return HF_XFF
    elif n == 16:
        if _ieq(s, b"x-forwarded-host", 16):
            return HF_XF_HOST
        if _ieq(s, b"proxy-connection", 16):
            return HF_HOP
    elif n == 6:
        if _ieq(s, b"server", 6):
            return HF_SERVER
        if _ieq(s, b"expect", 6):
            return HF_EXPECT
    elif n == 7:
        if _ieq(s, b"upgrade", 7):
            return HF_HOP | HF_UPGRADE
        if _ieq(s, b"trailer", 7):
            return HF_HOP
    elif n == 2:
        if _ieq(s, b"te", 2):
            return HF_HOP
    elif n == 9:
        if _ieq(s, b"forwarded", 9):
            return HF_FORWARDED
    elif n == 18:
        if _ieq(s, b"proxy-authenticate", 18):
            return HF_HOP
    elif n == 19:
        if _ieq(s, b"proxy-authorization", 19):
            return HF_HOP
    return 0


cdef bint _valid_host(const unsigned char *s, Py_ssize_t n) noexcept nogil:
    # RFC 9110 7.2 / RFC 3986 3.2.2: uri-host [ ":" port ]; an empty value is allowed (no authority).
    # Whitespace, '/', '@', '?', '#', '\\' and the like are refused: they make the host ambiguous.
    cdef Py_ssize_t i = 0
    if n == 0:
        return True
    if s[0] == b'[':
        i = 1
        while i < n and s[i] != b']':
            if not (CLS[s[i]] & C_HEX or s[i] == b':' or s[i] == b'.'):
                return False
            i += 1
        if i >= n or i == 1:
            return False
        i += 1
    else:
        while i < n and CLS[s[i]] & C_HOST:
            i += 1
        if i == 0:
            return False
    if i == n:
        return True
    if s[i] != b':':
        return False
    i += 1
    while i < n:
        if not CLS[s[i]] & C_DIGIT:
            return False
        i += 1
    return True


cdef bint _parse_length(const unsigned char *s, Py_ssize_t n, long long *out) noexcept nogil:
    # Content-Length = 1*DIGIT (RFC 9110 8.6), at most 63 bits; no sign, no list, no inner spaces
    cdef long long v = 0
    cdef int d
    cdef Py_ssize_t i
    if n == 0:
        return False
    for i in range(n):
        if not CLS[s[i]] & C_DIGIT:
            return False
        d = s[i] - 48
        if v > (FP_LLONG_MAX - d) // 10:
            return False
        v = v * 10 + d
    out[0] = v
    return True


cdef enum:
    TE_CHUNKED = 1      # the codings end with a single "chunked"
    TE_BAD = 2          # empty element, chunked not last or more than once, final coding not chunked
    TE_UNSUPPORTED = 3  # other codings before a final chunked (gzip, chunked): 501


cdef int _transfer_coding(const unsigned char *s, Py_ssize_t n) noexcept nogil:
    # RFC 9112 6.1 / 7: transfer-coding list; chunked must be last and applied once
    cdef Py_ssize_t i = 0, a, e
    cdef bint chunked_seen = False, other = False, last_chunked = False
    while True:
        while i < n and _is_ows(s[i]):
            i += 1
        a = i
        while i < n and s[i] != b',':
            i += 1
        e = i
        while e > a and _is_ows(s[e - 1]):
            e -= 1
        if e == a:
            return TE_BAD
        if e - a == 7 and _ieq(s + a, b"chunked", 7):
            if chunked_seen:
                return TE_BAD
            chunked_seen = True
            last_chunked = True
        else:
            if chunked_seen:
                return TE_BAD
            other = True
            last_chunked = False
        if i >= n:
            break
        i += 1      # the comma
    if not last_chunked:
        return TE_BAD
    if other:
        return TE_UNSUPPORTED
    return TE_CHUNKED


# Connection option bits
cdef enum:
    CO_CLOSE = 1
    CO_KEEP_ALIVE = 2
    CO_UPGRADE = 4


cdef int _connection(const unsigned char *b, const HeaderField *hf, HeaderField *headers,
                     int n_headers) noexcept nogil:
    # RFC 9110 7.6.1: every option names a hop-by-hop field. Host and Content-Length are never
    # dropped that way: they route and frame the message for every hop.
    cdef const unsigned char *s = b + hf.value.off
    cdef Py_ssize_t n = hf.value.len, i = 0, a, e, k
    cdef int opts = 0, j
    while i < n:
        while i < n and (_is_ows(s[i]) or s[i] == b','):
            i += 1
        a = i
        while i < n and s[i] != b',':
            i += 1
        e = i
        while e > a and _is_ows(s[e - 1]):
            e -= 1
        k = e - a
        if k == 0:
            continue
        if k == 5 and _ieq(s + a, b"close", 5):
            opts |= CO_CLOSE
        elif k == 10 and _ieq(s + a, b"keep-alive", 10):
            opts |= CO_KEEP_ALIVE
        elif k == 7 and _ieq(s + a, b"upgrade", 7):
            opts |= CO_UPGRADE
        for j in range(n_headers):
            if (headers[j].name.len == k and not (headers[j].flags & (HF_HOST | HF_CONTENT_LENGTH))
                    and _ieq_any(b + headers[j].name.off, s + a, k)):
                headers[j].flags |= HF_CONN_LISTED
    return opts


cdef bint _is_websocket(const unsigned char *s, Py_ssize_t n) noexcept nogil:
    # the whole Upgrade value, OWS aside, is the one protocol "websocket" (case-insensitive, RFC 6455 4.2.1)
    while n and _is_ows(s[0]):
        s += 1
        n -= 1
    while n and _is_ows(s[n - 1]):
        n -= 1
    return n == 9 and _ieq(s, b"websocket", 9)


# ---- the field-line loop shared by requests and responses --------------------------------------------

cdef Py_ssize_t _parse_fields(const unsigned char *b, Py_ssize_t p, Py_ssize_t lim,
                              HeaderField *headers, int *n_headers, int max_headers,
                              int *err) noexcept nogil:
    # Parses field lines from p through the empty line. Returns the offset after it, 0 when more bytes
    # are needed, -1 with *err = 400 (syntax) or 431 (too many fields).
    cdef Py_ssize_t start, le, vs, ve
    cdef int nh = 0
    cdef unsigned char c
    if max_headers > MAX_HEADERS_HARD:
        max_headers = MAX_HEADERS_HARD
    while True:
        if p >= lim:
            n_headers[0] = nh
            return 0
        c = b[p]
        if c == CR:
            if p + 1 >= lim:
                n_headers[0] = nh
                return 0
            if b[p + 1] != LF:
                err[0] = 400
                return -1
            n_headers[0] = nh
            return p + 2
        if not CLS[c] & C_TCHAR:
            # bare LF, obs-fold (RFC 9112 5.2: SP/HTAB at line start), empty name, control bytes
            err[0] = 400
            return -1
        if nh >= max_headers:
            err[0] = 431
            return -1
        start = p
        p += 1
        while p < lim and CLS[b[p]] & C_TCHAR:
            p += 1
        if p >= lim:
            return 0
        if b[p] != b':':
            # RFC 9112 5.1: no whitespace between the field name and the colon
            err[0] = 400
            return -1
        headers[nh].name.off = start
        headers[nh].name.len = p - start
        p += 1
        while p < lim and _is_ows(b[p]):
            p += 1
        vs = p
        # one pass: field bytes up to the first byte that is not one; it must be the CR of CRLF
        # (a NUL, a bare LF or CR, another control byte or DEL is refused, RFC 9110 5.5)
        while p < lim:
            if p + 8 <= lim and fp_field_word(b + p):
                p += 8
            elif CLS[b[p]] & C_FIELD:
                p += 1
            else:
                break
        if p + 1 >= lim:
            if p < lim and b[p] != CR:
                err[0] = 400
                return -1
            return 0
        if b[p] != CR or b[p + 1] != LF:
            err[0] = 400
            return -1
        ve = p
        le = p + 1
        while ve > vs and _is_ows(b[ve - 1]):
            ve -= 1
        headers[nh].value.off = vs
        headers[nh].value.len = ve - vs
        headers[nh].flags = _name_flags(b + start, headers[nh].name.len)
        if headers[nh].flags < 0:
            err[0] = 400
            return -1
        nh += 1
        p = le + 1


cdef inline Py_ssize_t _need_more(Py_ssize_t n, Py_ssize_t max_head, int *err, int status) noexcept nogil:
    if n >= max_head:
        err[0] = status
        return -1
    return 0


cdef inline Py_ssize_t _version(const unsigned char *b, Py_ssize_t p, Py_ssize_t lim,
                                int *major, int *minor) noexcept nogil:
    # "HTTP/" DIGIT "." DIGIT (RFC 9112 2.3, case-sensitive). Returns the offset after it,
    # 0 when more bytes are needed, -1 when malformed.
    cdef const char *name = b"HTTP/"
    cdef int i
    for i in range(5):
        if p >= lim:
            return 0
        if b[p] != <unsigned char>name[i]:
            return -1
        p += 1
    if p >= lim:
        return 0
    if not CLS[b[p]] & C_DIGIT:
        return -1
    major[0] = b[p] - 48
    p += 1
    if p >= lim:
        return 0
    if b[p] != b'.':
        return -1
    p += 1
    if p >= lim:
        return 0
    if not CLS[b[p]] & C_DIGIT:
        return -1
    minor[0] = b[p] - 48
    return p + 1


# ---- requests -----------------------------------------------------------------------------------------

cdef Py_ssize_t parse_request_head(const char *buf, Py_ssize_t n, RequestHead *out,
                                   const Limits *limits) noexcept nogil:
    cdef const unsigned char *b = <const unsigned char *>buf
    cdef Py_ssize_t lim = n if n < limits.max_head else limits.max_head
    cdef Py_ssize_t p = 0, start, tlen, i, a, end
    cdef int major = 0, minor = 0, err = 0, nh = 0, host_count = 0, cl_count = 0, te_count = 0
    cdef int te = 0, opts = 0, bad = 0, j, f
    cdef int upgrade_fields = 0
    cdef bint websocket = False, expect_other = False
    cdef HeaderField *hf

    out.err_status = 0
    out.n_headers = 0
    out.method = METHOD_OTHER
    out.target_form = TARGET_ORIGIN
    out.host.off = 0
    out.host.len = 0
    out.version_minor = 1
    out.body_kind = BODY_NONE
    out.content_length = 0
    out.keep_alive = False
    out.expect_continue = False
    out.upgrade = False

    # RFC 9112 2.2: empty lines (CRLF) before the request-line are ignored
    while p < lim and b[p] == CR:
        if p + 1 >= lim:
            return _need_more(n, limits.max_head, &out.err_status, 431)
        if b[p + 1] != LF:
            out.err_status = 400
            return -1
        p += 2

    # method SP
    start = p
    while p < lim and CLS[b[p]] & C_TCHAR:
        p += 1
    if p >= lim:
        return _need_more(n, limits.max_head, &out.err_status, 431)
    if p == start or b[p] != SP:
        out.err_status = 400
        return -1
    out.method_span.off = start
    out.method_span.len = p - start
    out.method = _method_code(b + start, p - start)
    p += 1

    # request-target SP (visible ASCII only; 414 as soon as it is longer than allowed)
    start = p
    end = lim
    if limits.max_target < lim - start:
        end = start + limits.max_target + 1
    while p + 8 <= end and fp_vchar_word(b + p):
        p += 8
    while p < end and CLS[b[p]] & C_VCHAR:
        p += 1
    tlen = p - start
    if tlen > limits.max_target:
        out.err_status = 414
        return -1
    if p >= lim:
        return _need_more(n, limits.max_head, &out.err_status, 431)
    if tlen == 0 or b[p] != SP:
        out.err_status = 400
        return -1
    out.target.off = start
    out.target.len = tlen
    p += 1

    # HTTP-version CRLF
    p = _version(b, p, lim, &major, &minor)
    if p == 0:
        return _need_more(n, limits.max_head, &out.err_status, 431)
    if p < 0 or p >= lim:
        if p < 0:
            out.err_status = 400
            return -1
        return _need_more(n, limits.max_head, &out.err_status, 431)
    if b[p] != CR:
        out.err_status = 400
        return -1
    if p + 1 >= lim:
        return _need_more(n, limits.max_head, &out.err_status, 431)
    if b[p + 1] != LF:
        out.err_status = 400
        return -1
    p += 2
    if major != 1 or minor > 1:
        out.err_status = 505     # well-formed but not HTTP/1.0 or 1.1 (RFC 9110 15.6.6)
        return -1
    out.version_minor = minor

    # a reverse proxy does not tunnel: CONNECT is not implemented here
    if out.method == METHOD_CONNECT:
        out.err_status = 501
        return -1

    # request-target forms, RFC 9112 3.2
    if b[start] == b'/':
        out.target_form = TARGET_ORIGIN
        out.path = out.target
    elif tlen == 1 and b[start] == b'*':
        if out.method != METHOD_OPTIONS:
            out.err_status = 400
            return -1
        out.target_form = TARGET_ASTERISK
        out.path = out.target
    else:
        # absolute-form: "http://" or "https://" (scheme case-insensitive), authority, path
        if tlen >= 7 and _ieq(b + start, b"http://", 7):
            a = start + 7
        elif tlen >= 8 and _ieq(b + start, b"https://", 8):
            a = start + 8
        else:
            out.err_status = 400     # authority-form is for CONNECT only, anything else is garbage
            return -1
        i = a
        end = start + tlen
        while i < end and b[i] != b'/' and b[i] != b'?' and b[i] != b'#':
            i += 1
        if i == a or not _valid_host(b + a, i - a) or (i < end and b[i] != b'/'):
            out.err_status = 400
            return -1
        out.target_form = TARGET_ABSOLUTE
        out.host.off = a
        out.host.len = i - a
        if i < end:
            out.path.off = i
            out.path.len = end - i
        else:
            out.path.off = a - 1     # the second '/' of "//": the empty path becomes "/"
            out.path.len = 1

    # field lines
    p = _parse_fields(b, p, lim, out.headers, &nh, limits.max_headers, &err)
    out.n_headers = nh
    if p == 0:
        return _need_more(n, limits.max_head, &out.err_status, 431)
    if p < 0:
        out.err_status = err
        return -1

    # the head is complete: semantics (RFC 9112 3.2 Host, 6 framing; RFC 9110 10.1.1 Expect)
    for j in range(nh):
        hf = &out.headers[j]
        f = hf.flags
        if f == 0:
            continue
        if f & HF_HOST:
            host_count += 1
            if not _valid_host(b + hf.value.off, hf.value.len):
                bad = 400
            if out.target_form != TARGET_ABSOLUTE:
                out.host = hf.value
        elif f & HF_CONTENT_LENGTH:
            cl_count += 1
            if not _parse_length(b + hf.value.off, hf.value.len, &out.content_length):
                bad = 400
        elif f & HF_TRANSFER_ENCODING:
            te_count += 1
            te = _transfer_coding(b + hf.value.off, hf.value.len)
        elif f & HF_CONNECTION:
            opts |= _connection(b, hf, out.headers, nh)
        elif f & HF_UPGRADE:
            upgrade_fields += 1
            websocket = _is_websocket(b + hf.value.off, hf.value.len)
        elif f & HF_EXPECT:
            if hf.value.len == 12 and _ieq(b + hf.value.off, b"100-continue", 12):
                out.expect_continue = True
            else:
                expect_other = True
    if minor == 1 and host_count != 1:
        bad = 400                   # RFC 9112 3.2: exactly one Host in HTTP/1.1
    if host_count > 1 or cl_count > 1 or te_count > 1 or (cl_count and te_count):
        bad = 400                   # RFC 9112 6.3: one framing, stated once
    if te_count and minor == 0:
        bad = 400                   # RFC 9112 6.1: Transfer-Encoding in 1.0 is faulty framing
    if te == TE_BAD:
        bad = 400                   # RFC 9112 6.3: final coding not chunked
    if bad:
        out.err_status = bad
        return -1
    if te == TE_UNSUPPORTED:
        out.err_status = 501        # RFC 9112 6.1: unknown transfer coding
        return -1
    if minor == 0:
        out.expect_continue = False     # RFC 9110 10.1.1: ignore 100-continue from 1.0
    elif expect_other:
        out.err_status = 417
        return -1

    if te_count:
        out.body_kind = BODY_CHUNKED
    elif cl_count:
        out.body_kind = BODY_LENGTH
    if minor == 1:
        out.keep_alive = not (opts & CO_CLOSE)
        # RFC 9110 7.8: 1.1 only. Only a WebSocket upgrade (RFC 6455 4.1: exactly "websocket") is
        # tunnelled: any other proposal (h2c above all: a tunnel to the backend's HTTP/2 past our routing
        # and checks, "h2c smuggling") loses its Upgrade and "Connection: upgrade" (both hop-by-hop) and
        # is served as the plain HTTP/1.1 request it also is. RFC 9110 7.8 lets a server ignore Upgrade.
        out.upgrade = upgrade_fields == 1 and websocket and (opts & CO_UPGRADE) != 0
    else:
        out.keep_alive = (opts & CO_KEEP_ALIVE) != 0 and not (opts & CO_CLOSE)
    return p


# ---- responses ----------------------------------------------------------------------------------------

cdef Py_ssize_t parse_response_head(const char *buf, Py_ssize_t n, ResponseHead *out,
                                    int request_method, const Limits *limits) noexcept nogil:
    cdef const unsigned char *b = <const unsigned char *>buf
    cdef Py_ssize_t lim = n if n < limits.max_head else limits.max_head
    cdef Py_ssize_t p = 0, start
    cdef int major = 0, minor = 0, err = 0, nh = 0, cl_count = 0, te_count = 0, te = 0, opts = 0
    cdef int j, f, status
    cdef long long cl = 0, first_cl = -1
    cdef bint bad = False
    cdef HeaderField *hf

    out.err_status = 0
    out.status = 0
    out.reason.off = 0
    out.reason.len = 0
    out.version_minor = 1
    out.n_headers = 0
    out.body_kind = BODY_CLOSE
    out.content_length = 0
    out.keep_alive = False
    out.upgrade = False

    # status-line = HTTP-version SP status-code SP [ reason-phrase ] (RFC 9112 4); like h11 and every
    # browser we also take a missing SP before an empty reason
    p = _version(b, 0, lim, &major, &minor)
    if p == 0:
        return _need_more(n, limits.max_head, &out.err_status, 502)
    if p < 0 or major != 1 or minor > 1:
        out.err_status = 502
        return -1
    out.version_minor = minor
    if p + 4 >= lim:
        return _need_more(n, limits.max_head, &out.err_status, 502)
    if (b[p] != SP or not CLS[b[p + 1]] & C_DIGIT or not CLS[b[p + 2]] & C_DIGIT
            or not CLS[b[p + 3]] & C_DIGIT):
        out.err_status = 502
        return -1
    status = (b[p + 1] - 48) * 100 + (b[p + 2] - 48) * 10 + (b[p + 3] - 48)
    if status < 100 or status > 599:
        out.err_status = 502
        return -1
    out.status = status
    p += 4
    if b[p] == SP:
        p += 1
    elif b[p] != CR:
        out.err_status = 502
        return -1
    start = p
    while p < lim and CLS[b[p]] & C_REASON:
        p += 1
    if p >= lim:
        return _need_more(n, limits.max_head, &out.err_status, 502)
    if b[p] != CR:
        out.err_status = 502
        return -1
    out.reason.off = start
    out.reason.len = p - start
    if p + 1 >= lim:
        return _need_more(n, limits.max_head, &out.err_status, 502)
    if b[p + 1] != LF:
        out.err_status = 502
        return -1
    p += 2

    p = _parse_fields(b, p, lim, out.headers, &nh, limits.max_headers, &err)
    out.n_headers = nh
    if p == 0:
        return _need_more(n, limits.max_head, &out.err_status, 502)
    if p < 0:
        out.err_status = 502
        return -1

    for j in range(nh):
        hf = &out.headers[j]
        f = hf.flags
        if f & HF_CONTENT_LENGTH:
            cl_count += 1
            if not _parse_length(b + hf.value.off, hf.value.len, &cl):
                bad = True
            elif first_cl >= 0 and cl != first_cl:
                bad = True          # RFC 9112 6.3: differing lengths are unrecoverable
            first_cl = cl
        elif f & HF_TRANSFER_ENCODING:
            te_count += 1
            te = _transfer_coding(b + hf.value.off, hf.value.len)
        elif f & HF_CONNECTION:
            opts |= _connection(b, hf, out.headers, nh)
    if te_count > 1 or (te_count and te == TE_BAD) or (te_count and cl_count):
        bad = True
    if bad:
        out.err_status = 502
        return -1

    if (request_method == METHOD_HEAD or status < 200 or status == 204 or status == 304
            or (request_method == METHOD_CONNECT and status < 300)):
        out.body_kind = BODY_NONE   # RFC 9112 6.3 rules 1 and 2
    elif te_count:
        out.body_kind = BODY_CHUNKED
    elif cl_count:
        out.body_kind = BODY_LENGTH
        out.content_length = first_cl
    else:
        out.body_kind = BODY_CLOSE
    if minor == 1:
        out.keep_alive = not (opts & CO_CLOSE)
    else:
        out.keep_alive = (opts & CO_KEEP_ALIVE) != 0 and not (opts & CO_CLOSE)
    if out.body_kind == BODY_CLOSE or (te_count and minor == 0):
        out.keep_alive = False
    out.upgrade = status == 101
    return p


# ---- chunked transfer coding (RFC 9112 7.1) -------------------------------------------------------------

cdef enum:
    CS_SIZE = 0         # at the start of a chunk-size line
    CS_SIZE_MORE        # inside the hex digits
    CS_SIZE_BWS         # whitespace after the digits: only BWS before ';' may follow (RFC 9112 7.1.1)
    CS_EXT              # inside chunk extensions, up to CR
    CS_SIZE_LF          # CR seen, LF expected
    CS_DATA
    CS_DATA_CR
    CS_DATA_LF
    CS_TRAILER          # at the start of a trailer line (or the final empty line)
    CS_TRAILER_NAME
    CS_TRAILER_VALUE
    CS_TRAILER_LF
    CS_END_LF
    CS_DONE

cdef enum:
    MAX_CHUNK_DIGITS = 15       # 60 bits
    MAX_CHUNK_LINE = 4096       # chunk-size line including extensions
    MAX_TRAILER_LINE = 8192

# What happens to the trailer line being read when the body is passed on chunked (dechunk = 0)
cdef enum:
    TL_UNDECIDED = 0    # its name could still be one of TRAILER_DROP: its bytes are held back
    TL_KEEP             # forwarded
    TL_DROP             # not forwarded

# RFC 9110 6.5.1: a trailer field must not be one that frames, routes, modifies or authenticates the
# request, controls the response or says how to process the content; a sender MUST NOT generate them and
# a recipient must not let them act as header fields. A proxy forwarding trailers drops these (and the
# connection-specific ones, RFC 9110 7.6.1), so no hop behind it can be made to honour them.
DEF N_TRAILER_DROP = 33
cdef const char *TRAILER_DROP[N_TRAILER_DROP]
cdef Py_ssize_t TRAILER_DROP_LEN[N_TRAILER_DROP]
cdef unsigned long long TRAILER_DROP_ALL = 0


_TRAILER_DROP_NAMES = (
    # framing and routing (RFC 9110 6.5.1)
    b"content-length", b"transfer-encoding", b"host",
    # request modifiers: controls and conditionals (RFC 9110 7.6.2, 10.1, 13; RFC 9111 5)
    b"cache-control", b"expect", b"max-forwards", b"pragma", b"range", b"te", b"if-match",
    b"if-none-match", b"if-modified-since", b"if-unmodified-since", b"if-range",
    # authentication (RFC 9110 11)
    b"authorization", b"proxy-authorization", b"www-authenticate", b"proxy-authenticate",
    b"authentication-info", b"proxy-authentication-info",
    # response control data (RFC 9110 10.2, RFC 9111 5)
    b"age", b"expires", b"date", b"location", b"retry-after", b"vary",
    # how to process the content (RFC 9110 6.5.1)
    b"content-encoding", b"content-type", b"content-range", b"trailer",
    # connection-specific (RFC 9110 7.6.1)
    b"connection", b"keep-alive", b"upgrade",
)


cdef void _init_trailer_drop() except *:
    global TRAILER_DROP_ALL
    cdef int j
    assert len(_TRAILER_DROP_NAMES) == N_TRAILER_DROP
    for j in range(N_TRAILER_DROP):
        TRAILER_DROP[j] = _TRAILER_DROP_NAMES[j]      # the tuple lives as long as the module
        TRAILER_DROP_LEN[j] = len(_TRAILER_DROP_NAMES[j])
        TRAILER_DROP_ALL |= 1ULL << j


_init_trailer_drop()


cdef inline unsigned long long _trailer_match(unsigned long long mask, Py_ssize_t pos,
                                              unsigned char c) noexcept nogil:
    # the names of TRAILER_DROP (bits of mask) that still match once byte pos of the name is c
    cdef int j
    c = LOWER[c]
    for j in range(N_TRAILER_DROP):
        if mask & (1ULL << j) and (pos >= TRAILER_DROP_LEN[j] or
                                   <unsigned char>TRAILER_DROP[j][pos] != c):
            mask &= ~(1ULL << j)
    return mask


cdef inline bint _trailer_is_dropped(unsigned long long mask, Py_ssize_t name_len) noexcept nogil:
    cdef int j
    for j in range(N_TRAILER_DROP):
        if mask & (1ULL << j) and TRAILER_DROP_LEN[j] == name_len:
            return True
    return False


cdef Py_ssize_t chunked_feed(ChunkState *st, char *buf, Py_ssize_t n, bint dechunk,
                             Py_ssize_t *out_len) noexcept nogil:
    # Every byte consumed is either emitted (moved down to buf[w], w <= i always, so in place) or dropped.
    # dechunk: only chunk data is emitted. Otherwise everything is, except chunk extensions (with the BWS
    # before them) and trailer lines whose name is in TRAILER_DROP. Extensions are dropped as nginx and
    # HAProxy do when they re-frame: RFC 9112 7.1.1 makes recipients ignore unknown ones, and a hop behind
    # us that reads their syntax otherwise (BWS, quoted ';') can then never be desynchronised by them.
    # A trailer name is known only at its ':', so the line's bytes are held (left where they are in buf)
    # until then; a line whose name could still be a dropped one when the input ends is
    # dropped whole, since its held bytes are gone with this call (lossy only for a harmless field split
    # there: RFC 9112 7.1.2 lets a recipient discard trailers; a dropped name never passes, whatever the
    # split).
    cdef unsigned char *b = <unsigned char *>buf
    cdef Py_ssize_t i = 0, w = 0, take, line_start = -1
    cdef int s = st.state
    cdef unsigned char c
    cdef int d
    cdef bint emit
    while i < n and s != CS_DONE:
        if s == CS_DATA:
            take = n - i
            if take > st.remaining:
                take = <Py_ssize_t>st.remaining
            if w != i:
                memmove(b + w, b + i, take)
            w += take
            i += take
            st.remaining -= take
            if st.remaining == 0:
                s = CS_DATA_CR
            continue
        c = b[i]
        i += 1
        emit = not dechunk
        if s == CS_SIZE or s == CS_SIZE_MORE:
            if CLS[c] & C_HEX:
                if st.size_digits >= MAX_CHUNK_DIGITS:
                    return -1
                d = c - 48 if c <= 57 else (c | 0x20) - 87
                st.remaining = st.remaining * 16 + d
                st.size_digits += 1
                st.line_len += 1
                s = CS_SIZE_MORE
            elif s == CS_SIZE:
                return -1
            elif c == b';':
                st.line_len += 1
                s = CS_EXT
                emit = False
            elif c == CR:
                s = CS_SIZE_LF
            elif c == SP or c == HTAB:
                st.line_len += 1
                s = CS_SIZE_BWS
                emit = False
            else:
                return -1       # "0x10", bare LF ...
        elif s == CS_SIZE_BWS:
            # chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] ): whitespace after the size
            # is only valid before a ';' ("5 \r\n" stays refused: nothing in the grammar allows it)
            st.line_len += 1
            if st.line_len > MAX_CHUNK_LINE:
                return -1
            if c == b';':
                s = CS_EXT
            elif c != SP and c != HTAB:
                return -1
            emit = False
        elif s == CS_EXT:
            st.line_len += 1
            if st.line_len > MAX_CHUNK_LINE:
                return -1
            if c == CR:
                s = CS_SIZE_LF
            elif not CLS[c] & C_FIELD:
                return -1
            else:
                emit = False
        elif s == CS_SIZE_LF:
            if c != LF:
                return -1
            st.size_digits = 0
            st.line_len = 0
            s = CS_DATA if st.remaining > 0 else CS_TRAILER
        elif s == CS_DATA_CR:
            if c != CR:
                return -1
            s = CS_DATA_LF
        elif s == CS_DATA_LF:
            if c != LF:
                return -1
            s = CS_SIZE
        elif s == CS_TRAILER:
            if c == CR:
                s = CS_END_LF
            elif CLS[c] & C_TCHAR:
                st.line_len = 1
                s = CS_TRAILER_NAME
                if not dechunk:
                    line_start = i - 1
                    st.trailer_mask = _trailer_match(TRAILER_DROP_ALL, 0, c)
                    st.trailer_line = TL_UNDECIDED if st.trailer_mask else TL_KEEP
                    emit = st.trailer_line == TL_KEEP
            else:
                return -1       # obs-fold, bare LF, empty name
        elif s == CS_TRAILER_NAME:
            st.line_len += 1
            if c == b':':
                s = CS_TRAILER_VALUE
            elif not CLS[c] & C_TCHAR or st.line_len > MAX_TRAILER_LINE:
                return -1
            if not dechunk and st.trailer_line == TL_UNDECIDED:
                if c == b':':
                    st.trailer_line = (TL_DROP if _trailer_is_dropped(st.trailer_mask, st.line_len - 1)
                                       else TL_KEEP)
                else:
                    st.trailer_mask = _trailer_match(st.trailer_mask, st.line_len - 1, c)
                    if not st.trailer_mask:
                        st.trailer_line = TL_KEEP
                if st.trailer_line == TL_KEEP:
                    # the held bytes of the line, still in buf (the line began in this call)
                    take = i - 1 - line_start
                    if w != line_start:
                        memmove(b + w, b + line_start, take)
                    w += take
            if not dechunk:
                emit = st.trailer_line == TL_KEEP
        elif s == CS_TRAILER_VALUE:
            st.line_len += 1
            if c == CR:
                s = CS_TRAILER_LF
            elif not CLS[c] & C_FIELD or st.line_len > MAX_TRAILER_LINE:
                return -1
            if not dechunk:
                emit = st.trailer_line == TL_KEEP
        elif s == CS_TRAILER_LF:
            if c != LF:
                return -1
            s = CS_TRAILER
            if not dechunk:
                emit = st.trailer_line == TL_KEEP
        elif s == CS_END_LF:
            if c != LF:
                return -1
            s = CS_DONE
            st.done = True
        if emit:
            b[w] = c        # w <= i - 1: in place
            w += 1
    if s == CS_TRAILER_NAME and not dechunk and st.trailer_line == TL_UNDECIDED:
        st.trailer_line = TL_DROP       # its held bytes go with this call: the whole line is dropped
    st.state = s
    out_len[0] = w
    return i


# ---- writers --------------------------------------------------------------------------------------------

cdef struct Out:
    char *p
    char *end
    bint over


cdef inline void _put(Out *o, const void *s, Py_ssize_t n) noexcept nogil:
    if o.end - o.p < n:
        o.over = True
        return
    memcpy(o.p, s, n)
    o.p += n


cdef inline void _puts(Out *o, const char *s) noexcept nogil:
    cdef Py_ssize_t n = 0
    while s[n]:
        n += 1
    _put(o, s, n)


cdef inline void _span(Out *o, const char *buf, Span sp) noexcept nogil:
    _put(o, buf + sp.off, sp.len)


cdef inline void _field(Out *o, const char *buf, const HeaderField *hf) noexcept nogil:
    _put(o, buf + hf.name.off, hf.name.len)
    _put(o, b": ", 2)
    _put(o, buf + hf.value.off, hf.value.len)
    _put(o, b"\r\n", 2)


cdef bint _is_token(const char *s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    if n == 0:
        return False
    for i in range(n):
        if not CLS[<unsigned char>s[i]] & C_TCHAR:
            return False
    return True


cdef Py_ssize_t write_request_head(const char *buf, const RequestHead *h, const ForwardInfo *fwd,
                                   char *out, Py_ssize_t cap) noexcept nogil:
    cdef Out o
    cdef int j
    cdef int skip = HF_HOP | HF_CONN_LISTED | HF_HOST | HF_XFF | HF_XF_PROTO | HF_XF_HOST
    o.p = out
    o.end = out + cap
    o.over = False
    if fwd.add_forwarded:
        skip |= HF_FORWARDED

    _span(&o, buf, h.method_span)
    _put(&o, b" ", 1)
    _span(&o, buf, h.path)
    _put(&o, b" HTTP/1.1\r\nHost: ", 17)
    _span(&o, buf, h.host)
    _put(&o, b"\r\n", 2)
    for j in range(h.n_headers):
        if not h.headers[j].flags & skip:
            _field(&o, buf, &h.headers[j])
    if h.body_kind == BODY_CHUNKED:
        _put(&o, b"Transfer-Encoding: chunked\r\n", 28)
    if fwd.upgrade:
        for j in range(h.n_headers):
            if h.headers[j].flags & HF_UPGRADE:
                _field(&o, buf, &h.headers[j])
        _put(&o, b"Connection: upgrade\r\n", 21)

    # X-Forwarded-For: what earlier proxies said, then the peer we see
    _put(&o, b"X-Forwarded-For: ", 17)
    for j in range(h.n_headers):
        if h.headers[j].flags & HF_XFF and h.headers[j].value.len:
            _span(&o, buf, h.headers[j].value)
            _put(&o, b", ", 2)
    _put(&o, fwd.client_addr, fwd.client_addr_len)
    _put(&o, b"\r\nX-Forwarded-Proto: ", 21)
    _put(&o, fwd.proto, fwd.proto_len)
    _put(&o, b"\r\n", 2)
    if h.host.len:
        _put(&o, b"X-Forwarded-Host: ", 18)
        _span(&o, buf, h.host)
        _put(&o, b"\r\n", 2)

    if fwd.add_forwarded:
        # RFC 7239 4: a proxy appends its element to the list; IPv6 and host:port are quoted
        _put(&o, b"Forwarded: ", 11)
        for j in range(h.n_headers):
            if h.headers[j].flags & HF_FORWARDED and h.headers[j].value.len:
                _span(&o, buf, h.headers[j].value)
                _put(&o, b", ", 2)
        if memchr(fwd.client_addr, b':', fwd.client_addr_len) != NULL:
            _put(&o, b"for=\"[", 6)
            _put(&o, fwd.client_addr, fwd.client_addr_len)
            _put(&o, b"]\"", 2)
        elif fwd.client_addr_len:
            _put(&o, b"for=", 4)
            _put(&o, fwd.client_addr, fwd.client_addr_len)
        else:
            _put(&o, b"for=unknown", 11)
        if h.host.len:
            if _is_token(buf + h.host.off, h.host.len):
                _put(&o, b";host=", 6)
                _span(&o, buf, h.host)
            else:
                _put(&o, b";host=\"", 7)
                _span(&o, buf, h.host)
                _put(&o, b"\"", 1)
        _put(&o, b";proto=", 7)
        _put(&o, fwd.proto, fwd.proto_len)
        _put(&o, b"\r\n", 2)
    _put(&o, b"\r\n", 2)
    if o.over:
        return -1
    return o.p - out


cdef inline void _status3(Out *o, int status) noexcept nogil:
    cdef char d[3]
    d[0] = <char>(48 + (status // 100) % 10)
    d[1] = <char>(48 + (status // 10) % 10)
    d[2] = <char>(48 + status % 10)
    _put(o, d, 3)


cdef Py_ssize_t write_response_head(const char *buf, const ResponseHead *h, const ResponseRewrite *rw,
                                    char *out, Py_ssize_t cap) noexcept nogil:
    cdef Out o
    cdef int j
    cdef int skip = HF_HOP | HF_CONN_LISTED | HF_SERVER
    o.p = out
    o.end = out + cap
    o.over = False
    _put(&o, b"HTTP/1.1 ", 9)
    _status3(&o, h.status)
    _put(&o, b" ", 1)
    _span(&o, buf, h.reason)
    _put(&o, b"\r\n", 2)
    for j in range(h.n_headers):
        if not h.headers[j].flags & skip:
            _field(&o, buf, &h.headers[j])
    if h.body_kind == BODY_CHUNKED and not rw.dechunk:
        # the backend's codings are kept as sent ("gzip, chunked" stays), only chunked is framing
        for j in range(h.n_headers):
            if h.headers[j].flags & HF_TRANSFER_ENCODING:
                _field(&o, buf, &h.headers[j])
    if rw.server != NULL and rw.server_len > 0:
        _put(&o, b"Server: ", 8)
        _put(&o, rw.server, rw.server_len)
        _put(&o, b"\r\n", 2)
    if h.status == 101:
        for j in range(h.n_headers):
            if h.headers[j].flags & HF_UPGRADE:
                _field(&o, buf, &h.headers[j])
        _put(&o, b"Connection: upgrade\r\n", 21)
    elif not rw.client_keep_alive:
        _put(&o, b"Connection: close\r\n", 19)
    elif rw.client_version_minor == 0:
        _put(&o, b"Connection: keep-alive\r\n", 24)
    _put(&o, b"\r\n", 2)
    if o.over:
        return -1
    return o.p - out


cdef const char *_reason(int status) noexcept nogil:
    if status == 400:
        return b"Bad Request"
    if status == 408:
        return b"Request Timeout"
    if status == 411:
        return b"Length Required"
    if status == 413:
        return b"Content Too Large"
    if status == 414:
        return b"URI Too Long"
    if status == 417:
        return b"Expectation Failed"
    if status == 431:
        return b"Request Header Fields Too Large"
    if status == 500:
        return b"Internal Server Error"
    if status == 501:
        return b"Not Implemented"
    if status == 502:
        return b"Bad Gateway"
    if status == 503:
        return b"Service Unavailable"
    if status == 504:
        return b"Gateway Timeout"
    if status == 505:
        return b"HTTP Version Not Supported"
    return b"Error"


cdef Py_ssize_t write_error_response(int status, bint close, char *out, Py_ssize_t cap) noexcept nogil:
    cdef Out o
    cdef const char *reason
    cdef Py_ssize_t rlen = 0, blen
    cdef char num[4]
    if status < 100 or status > 999:
        status = 500
    reason = _reason(status)
    while reason[rlen]:
        rlen += 1
    blen = 3 + 1 + rlen + 1         # "400 Bad Request\n"
    o.p = out
    o.end = out + cap
    o.over = False
    _put(&o, b"HTTP/1.1 ", 9)
    _status3(&o, status)
    _put(&o, b" ", 1)
    _put(&o, reason, rlen)
    _put(&o, b"\r\nContent-Type: text/plain\r\nContent-Length: ", 44)
    num[0] = <char>(48 + blen // 10)
    num[1] = <char>(48 + blen % 10)
    _put(&o, num, 2)                # blen is always two digits (the longest reason is 31 bytes)
    _put(&o, b"\r\n", 2)
    if close:
        _put(&o, b"Connection: close\r\n", 19)
    _put(&o, b"\r\n", 2)
    _status3(&o, status)
    _put(&o, b" ", 1)
    _put(&o, reason, rlen)
    _put(&o, b"\n", 1)
    if o.over:
        return -1
    return o.p - out


# ---- Python wrappers, for tests and tools (never on the hot path) ----------------------------------------

from libc.stdlib cimport free, malloc  # noqa: E402

_BODY_NAMES = {BODY_NONE: "none", BODY_LENGTH: "length", BODY_CHUNKED: "chunked", BODY_CLOSE: "close"}
_FORM_NAMES = {TARGET_ORIGIN: "origin", TARGET_ABSOLUTE: "absolute", TARGET_AUTHORITY: "authority",
               TARGET_ASTERISK: "asterisk"}
FLAG_NAMES = {
    "hop": HF_HOP, "conn_listed": HF_CONN_LISTED, "host": HF_HOST, "content_length": HF_CONTENT_LENGTH,
    "xff": HF_XFF, "xf_proto": HF_XF_PROTO, "xf_host": HF_XF_HOST, "forwarded": HF_FORWARDED,
    "server": HF_SERVER, "upgrade": HF_UPGRADE, "expect": HF_EXPECT,
    "transfer_encoding": HF_TRANSFER_ENCODING, "connection": HF_CONNECTION,
}


cdef Limits _limits(Py_ssize_t max_head, Py_ssize_t max_target, int max_headers):
    cdef Limits lim
    lim.max_head = max_head
    lim.max_target = max_target
    lim.max_headers = max_headers
    return lim


cdef bytes _b(bytes data, Span sp):
    return data[sp.off:sp.off + sp.len]


def method_code(bytes method):
    """The Method enum value for a method name (METHOD_OTHER = 0 for an unknown token)."""
    return _method_code(<const unsigned char *>method, len(method))


def parse_request(bytes data, Py_ssize_t max_head=16384, Py_ssize_t max_target=8192, int max_headers=100):
    """Parse a request head. Returns a dict; consumed 0 = need more, -1 = invalid (see "error")."""
    cdef RequestHead *h = <RequestHead *>malloc(sizeof(RequestHead))
    cdef Limits lim = _limits(max_head, max_target, max_headers)
    cdef Py_ssize_t r
    try:
        r = parse_request_head(data, len(data), h, &lim)
        if r <= 0:
            return {"consumed": r, "error": h.err_status if r < 0 else None}
        return {
            "consumed": r,
            "error": None,
            "method": _b(data, h.method_span),
            "method_code": h.method,
            "target": _b(data, h.target),
            "target_form": _FORM_NAMES[h.target_form],
            "path": _b(data, h.path),
            "host": _b(data, h.host),
            "version": b"1.%d" % h.version_minor,
            "headers": [(_b(data, h.headers[j].name), _b(data, h.headers[j].value))
                        for j in range(h.n_headers)],
            "flags": [h.headers[j].flags for j in range(h.n_headers)],
            "body": _BODY_NAMES[h.body_kind],
            "content_length": h.content_length,
            "keep_alive": bool(h.keep_alive),
            "expect_continue": bool(h.expect_continue),
            "upgrade": bool(h.upgrade),
        }
    finally:
        free(h)


def parse_response(bytes data, bytes request_method=b"GET", Py_ssize_t max_head=16384, int max_headers=100):
    """Parse a response head to a request with request_method. Same dict convention as parse_request."""
    cdef ResponseHead *h = <ResponseHead *>malloc(sizeof(ResponseHead))
    cdef Limits lim = _limits(max_head, max_head, max_headers)
    cdef Py_ssize_t r
    try:
        r = parse_response_head(data, len(data), h, method_code(request_method), &lim)
        if r <= 0:
            return {"consumed": r, "error": h.err_status if r < 0 else None}
        return {
            "consumed": r,
            "error": None,
            "status": h.status,
            "reason": _b(data, h.reason),
            "version": b"1.%d" % h.version_minor,
            "headers": [(_b(data, h.headers[j].name), _b(data, h.headers[j].value))
                        for j in range(h.n_headers)],
            "flags": [h.headers[j].flags for j in range(h.n_headers)],
            "body": _BODY_NAMES[h.body_kind],
            "content_length": h.content_length,
            "keep_alive": bool(h.keep_alive),
            "upgrade": bool(h.upgrade),
        }
    finally:
        free(h)


def dechunk(bytes data, pieces=None, bint decode=True):
    """Run chunked_feed over data, split into pieces of the given sizes (default: one piece).

    Returns (payload, consumed, done): payload is the de-chunked body (decode=True) or the bytes to
    forward (decode=False: the framing verbatim but for dropped trailer fields); consumed is -1 on
    malformed framing.
    """
    cdef ChunkState st
    cdef bytearray piece
    cdef Py_ssize_t r, out_len = 0, pos = 0, size
    memset(&st, 0, sizeof(ChunkState))
    sizes = list(pieces) if pieces else [len(data)]
    payload = bytearray()
    for size in sizes + [len(data)]:
        if st.done or pos >= len(data):
            break
        piece = bytearray(data[pos:pos + size])
        r = chunked_feed(&st, piece, len(piece), decode, &out_len)
        if r < 0:
            return b"", -1, False
        payload += piece[:out_len]
        pos += r
        if r < len(piece) and not st.done:
            raise AssertionError("chunked_feed stopped early without being done")
    return bytes(payload), pos, bool(st.done)


def rewrite_request(bytes data, str client_addr="1.2.3.4", str proto="http", bint forwarded=False,
                    upgrade=None, Py_ssize_t cap=65536):
    """Parse a request head and return the head write_request_head makes for the backend.

    Raises ValueError when the head is incomplete or invalid; returns None when cap is too small."""
    cdef RequestHead *h = <RequestHead *>malloc(sizeof(RequestHead))
    cdef Limits lim = _limits(65536, 65536, MAX_HEADERS_HARD)
    cdef ForwardInfo fwd
    cdef bytes addr = client_addr.encode(), prot = proto.encode()
    cdef bytearray out = bytearray(cap)
    cdef Py_ssize_t r
    try:
        r = parse_request_head(data, len(data), h, &lim)
        if r <= 0:
            raise ValueError(f"request head not parsed: {r} {h.err_status}")
        fwd.client_addr = addr
        fwd.client_addr_len = len(addr)
        fwd.proto = prot
        fwd.proto_len = len(prot)
        fwd.add_forwarded = forwarded
        fwd.upgrade = h.upgrade if upgrade is None else bool(upgrade)
        r = write_request_head(data, h, &fwd, out, cap)
        return None if r < 0 else bytes(out[:r])
    finally:
        free(h)


def rewrite_response(bytes data, bytes request_method=b"GET", str server="", bint client_keep_alive=True,
                     int client_version_minor=1, bint dechunk=False, Py_ssize_t cap=65536):
    """Parse a response head and return the head write_response_head makes for the client."""
    cdef ResponseHead *h = <ResponseHead *>malloc(sizeof(ResponseHead))
    cdef Limits lim = _limits(65536, 65536, MAX_HEADERS_HARD)
    cdef ResponseRewrite rw
    cdef bytes srv = server.encode()
    cdef bytearray out = bytearray(cap)
    cdef Py_ssize_t r
    try:
        r = parse_response_head(data, len(data), h, method_code(request_method), &lim)
        if r <= 0:
            raise ValueError(f"response head not parsed: {r} {h.err_status}")
        rw.server = srv
        rw.server_len = len(srv)
        rw.client_keep_alive = client_keep_alive
        rw.client_version_minor = client_version_minor
        rw.dechunk = dechunk
        r = write_response_head(data, h, &rw, out, cap)
        return None if r < 0 else bytes(out[:r])
    finally:
        free(h)


def error_response(int status, bint close=True, Py_ssize_t cap=512):
    """The complete response write_error_response makes for status (None when cap is too small)."""
    cdef bytearray out = bytearray(cap)
    cdef Py_ssize_t r = write_error_response(status, close, out, cap)
    return None if r < 0 else bytes(out[:r])
