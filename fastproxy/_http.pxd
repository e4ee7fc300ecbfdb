# HTTP/1.1 message heads and framing (RFC 9112), for the hot path.
#
# Rules of this module:
# - Every function here is `noexcept nogil`: no Python object per byte or per header.
# - A head is parsed in place: fields are Spans (offset, length) into the caller's buffer.
# - The parser is strict. Whatever is ambiguous (two framings, duplicate lengths, obs-fold, bare CR or
#   LF, control bytes) is an error with an HTTP status, never a guess. Nothing ambiguous reaches a backend.
# - Return convention (HAProxy's h1.c): > 0 bytes consumed, 0 need more bytes, -1 invalid (err_status set).

from libc.string cimport memset

cdef enum:
    MAX_HEADERS_HARD = 128        # size of the header array; the configured limit may be lower

# method codes; METHOD_OTHER is any other valid token
cdef enum Method:
    METHOD_OTHER = 0
    METHOD_GET
    METHOD_HEAD
    METHOD_POST
    METHOD_PUT
    METHOD_DELETE
    METHOD_OPTIONS
    METHOD_PATCH
    METHOD_TRACE
    METHOD_CONNECT

# request-target forms, RFC 9112 section 3.2
cdef enum TargetForm:
    TARGET_ORIGIN = 0             # /path?query
    TARGET_ABSOLUTE               # http://host[:port]/path?query
    TARGET_AUTHORITY              # host:port (CONNECT only)
    TARGET_ASTERISK               # * (OPTIONS only)

cdef enum BodyKind:
    BODY_NONE = 0                 # no body (request without framing, HEAD/1xx/204/304 response)
    BODY_LENGTH                   # Content-Length bytes follow
    BODY_CHUNKED                  # chunked transfer coding, ends with the last chunk and trailers
    BODY_CLOSE                    # response delimited by the server closing the connection

# bits in HeaderField.flags, set by the parser so the rewriters need no second look at names
cdef enum HeaderFlag:
    # hop-by-hop by RFC 9110 7.6.1 (Connection, Keep-Alive, Proxy-Connection, TE, Transfer-Encoding,
    # Upgrade, Trailer, Proxy-Authenticate, Proxy-Authorization)
    HF_HOP = 1
    HF_CONN_LISTED = 2            # named in a Connection header: also hop-by-hop
    HF_HOST = 4
    HF_CONTENT_LENGTH = 8
    HF_XFF = 16                   # X-Forwarded-For
    HF_XF_PROTO = 32              # X-Forwarded-Proto
    HF_XF_HOST = 64               # X-Forwarded-Host
    HF_FORWARDED = 128            # Forwarded (RFC 7239)
    HF_SERVER = 256               # Server (responses)
    HF_UPGRADE = 512              # Upgrade
    HF_EXPECT = 1024
    HF_TRANSFER_ENCODING = 2048   # Transfer-Encoding (also HF_HOP)
    HF_CONNECTION = 4096          # Connection (also HF_HOP)

cdef struct Span:
    Py_ssize_t off                # offset into the buffer the head was parsed from
    Py_ssize_t len

cdef struct HeaderField:
    Span name
    Span value                    # leading and trailing OWS removed
    int flags                     # HeaderFlag bits

cdef struct Limits:
    Py_ssize_t max_head           # whole head incl. request line and final CRLF; over it: 431
    Py_ssize_t max_target         # request-target length; over it: 414
    int max_headers               # header field lines; over it: 431 (at most MAX_HEADERS_HARD)

cdef struct RequestHead:
    int err_status                # set when the parser returns -1: 400, 414, 431, 501, 505, 417 ...
    int method                    # Method
    Span method_span
    int target_form               # TargetForm
    Span target                   # as received
    # origin-form path and query (for absolute-form: the part after the authority, "/" if empty)
    # -- what is sent to the backend
    Span path
    Span host                     # authority from an absolute-form target, else the Host field value
    int version_minor             # HTTP/1.<minor>: 0 or 1
    int n_headers
    HeaderField headers[MAX_HEADERS_HARD]
    int body_kind                 # BODY_NONE, BODY_LENGTH or BODY_CHUNKED
    long long content_length      # with BODY_LENGTH
    bint keep_alive               # 1.1 without "Connection: close", or 1.0 with "Connection: keep-alive"
    bint expect_continue          # Expect: 100-continue (any other expectation: 417)
    bint upgrade                  # Upgrade field and "Connection: upgrade" both present

cdef struct ResponseHead:
    int err_status                # 502 when the parser returns -1
    int status                    # 100..599 (anything else is refused with 502)
    Span reason
    int version_minor
    int n_headers
    HeaderField headers[MAX_HEADERS_HARD]
    int body_kind                 # BODY_NONE for HEAD/1xx/204/304, else LENGTH, CHUNKED or CLOSE
    long long content_length
    bint keep_alive               # the backend lets us reuse the connection
    bint upgrade                  # 101 Switching Protocols

cdef struct ChunkState:
    int state                     # private to the decoder; zero-initialise before the first call
    long long remaining           # bytes left in the current chunk (private)
    int size_digits               # private
    Py_ssize_t line_len           # private: length of the current trailer line
    unsigned long long trailer_mask   # private: dropped trailer names the current one may still be
    int trailer_line              # private: the current trailer line is held, kept or dropped
    bint done                     # set once the last chunk and the trailer section are complete


cdef inline void chunk_reset(ChunkState *st) noexcept nogil:
    """Ready a decoder for a new body: every field zero (the private ones included)."""
    memset(st, 0, sizeof(ChunkState))

# What the request rewriter adds; all text, prepared once per connection by the caller.
cdef struct ForwardInfo:
    const char *client_addr       # client IP as text, for X-Forwarded-For and Forwarded
    Py_ssize_t client_addr_len
    const char *proto             # "http" or "https"
    Py_ssize_t proto_len
    bint add_forwarded            # also add an RFC 7239 Forwarded field
    bint upgrade                  # keep Upgrade and send "Connection: upgrade"

cdef struct ResponseRewrite:
    const char *server            # replacement Server value; NULL or empty: drop the backend's Server
    Py_ssize_t server_len
    bint client_keep_alive        # the client connection stays open after this response
    int client_version_minor      # 0: a 1.0 client (chunked bodies are de-chunked, keep-alive said aloud)
    bint dechunk                  # the caller will de-chunk the body: drop Transfer-Encoding


cdef Py_ssize_t parse_request_head(const char *buf, Py_ssize_t n, RequestHead *out,
                                   const Limits *limits) noexcept nogil
#   > 0 head length consumed (request line through the empty line)
#   0   need more bytes; if n already reached limits.max_head the head is refused (-1, 431 or 414)
#   -1  invalid: out.err_status holds the status to answer with; the connection is then closed

cdef Py_ssize_t parse_response_head(const char *buf, Py_ssize_t n, ResponseHead *out,
                                    int request_method, const Limits *limits) noexcept nogil
#   same convention; request_method decides whether a body follows (HEAD, CONNECT)

cdef Py_ssize_t chunked_feed(ChunkState *st, char *buf, Py_ssize_t n, bint dechunk,
                             Py_ssize_t *out_len) noexcept nogil
#   Consumes the bytes of buf[0:n] that belong to the chunked body and returns how many (<= n), or -1
#   on malformed framing (bad size, missing CRLF, bare LF, oversize chunk size, bad trailer line).
#   Stops right after the trailer section once st.done is set: what follows is the next message.
#   dechunk = 0: buf[0:*out_len] are the bytes to forward: the framing verbatim, except chunk extensions
#   and trailer fields that RFC 9110 6.5.1 forbids (framing, routing, authentication, controls ...),
#   which are removed in place (*out_len < consumed then).
#   dechunk = 1: the payload bytes are moved to buf[0:*out_len] in place; framing and trailers dropped.

cdef Py_ssize_t write_request_head(const char *buf, const RequestHead *h, const ForwardInfo *fwd,
                                   char *out, Py_ssize_t cap) noexcept nogil
#   Writes the head to send to the backend into out[0:cap]: "METHOD path HTTP/1.1", Host first, every
#   end-to-end field in order, hop-by-hop fields and those named in Connection removed,
#   X-Forwarded-For appended to (all received XFF values joined, then client_addr), X-Forwarded-Proto
#   and X-Forwarded-Host set (replacing the client's), Forwarded added when asked,
#   "Transfer-Encoding: chunked" kept for a chunked body, "Connection: upgrade" + Upgrade when
#   fwd.upgrade. Returns the length written, or -1 if cap is too small.

cdef Py_ssize_t write_response_head(const char *buf, const ResponseHead *h, const ResponseRewrite *rw,
                                    char *out, Py_ssize_t cap) noexcept nogil
#   Writes the head to send to the client: "HTTP/1.1 status reason", end-to-end fields in order,
#   hop-by-hop fields removed, Server dropped or replaced, "Connection: close" when the client
#   connection will close (or "Connection: keep-alive" to a 1.0 client that keeps it), Transfer-Encoding
#   kept for chunked unless rw.dechunk; for 101 the Upgrade field and "Connection: upgrade" are kept.
#   Returns the length written, or -1 if cap is too small.

cdef Py_ssize_t write_error_response(int status, bint close, char *out, Py_ssize_t cap) noexcept nogil
#   A small complete response (status line, Content-Type: text/plain, Content-Length, a one-line body,
#   "Connection: close" when close). Returns the length written, or -1 if cap is too small.
