# cython: language_level=3
"""The filter chain and the built-in filters (rules in _filters.pxd).

Built-ins: RespondFilter (the route answers itself: nginx's `return`), AddHeadersFilter (nginx's
`add_header`), StickyCookieFilter (the balancer's Set-Cookie when a client is new or has moved) and
PythonHooks (the route's `hooks`: Python callables run in the worker, see fastproxy/hooks.py).
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeLatin1
from libc.string cimport memcpy, memmove

from http import HTTPStatus

from fastproxy._balancer cimport STICKY_COOKIE, Balancer
from fastproxy._http cimport METHOD_HEAD


# Every head buffer has at least this much room (limits.max_head_size is at least 1 KB, plus the slack).
cdef Py_ssize_t HEAD_ROOM = 4096


cdef inline unsigned char lower(unsigned char c) noexcept nogil:
    return c + 32 if 65 <= c <= 90 else c


# --- editing a head in place ------------------------------------------------------------------------

cdef Py_ssize_t head_add_fields(char *head, Py_ssize_t n, Py_ssize_t cap, const char *fields,
                                Py_ssize_t len) noexcept nogil:
    if len == 0 or n + len > cap or n < 4:
        return n
    memcpy(head + n - 2, fields, len)
    n += len
    memcpy(head + n - 2, b"\r\n", 2)
    return n


cdef Py_ssize_t head_remove_field(char *head, Py_ssize_t n, const char *name, Py_ssize_t len) noexcept nogil:
    cdef Py_ssize_t line = 0, end, i
    cdef bint same
    # skip the start line
    while line < n - 1 and not (head[line] == b'\r' and head[line + 1] == b'\n'):
        line += 1
    line += 2
    while line < n - 2:
        end = line
        while end < n - 1 and not (head[end] == b'\r' and head[end + 1] == b'\n'):
            end += 1
        end += 2                    # past this line's CRLF
        same = end - line > len and head[line + len] == b':'
        i = 0
        while same and i < len:
            same = lower(head[line + i]) == <unsigned char>name[i]
            i += 1
        if same:
            memmove(head + line, head + end, n - end)
            n -= end - line
        else:
            line = end
    return n


cdef Py_ssize_t head_end_answer(Exchange ex, char *head, Py_ssize_t n, Py_ssize_t cap) noexcept nogil:
    if n + 26 > cap:
        return -1
    if not ex.keep_alive:
        memcpy(head + n, b"Connection: close\r\n", 19)
        n += 19
    elif ex.req.version_minor == 0:
        memcpy(head + n, b"Connection: keep-alive\r\n", 24)
        n += 24
    memcpy(head + n, b"\r\n", 2)
    return n + 2


# --- the chain --------------------------------------------------------------------------------------

cdef class Filter:
    cdef int on_request(self, Exchange ex, Client c) except -2:
        return FILTER_GO_ON

    cdef Py_ssize_t on_backend_head(self, Exchange ex, Client c, char *head, Py_ssize_t n,
                                    Py_ssize_t cap) except -2:
        return n

    cdef Py_ssize_t on_response(self, Exchange ex, Client c, char *head, Py_ssize_t n,
                                Py_ssize_t cap) except -2:
        return n

    cdef int on_body(self, Exchange ex, Client c, const char **data, Py_ssize_t *n, bint end) except -2:
        return FILTER_GO_ON


cdef class FilterChain:
    def __init__(self, filters):
        cdef Filter f
        self.filters = tuple(filters)
        self.flags = 0
        for f in self.filters:
            self.flags |= f.flags

    def __len__(self):
        return len(self.filters)

    cdef int run_request(self, Exchange ex, Client c) except -2:
        cdef Filter f
        cdef int r
        for f in self.filters:
            if f.flags & FILTER_REQUEST:
                r = f.on_request(ex, c)
                if r != FILTER_GO_ON:
                    return r
        return FILTER_GO_ON

    cdef Py_ssize_t run_backend_head(self, Exchange ex, Client c, char *head, Py_ssize_t n,
                                     Py_ssize_t cap) except -2:
        cdef Filter f
        for f in self.filters:
            if f.flags & FILTER_BACKEND_HEAD:
                n = f.on_backend_head(ex, c, head, n, cap)
                if n < 0:
                    return n
        return n

    cdef Py_ssize_t run_response(self, Exchange ex, Client c, char *head, Py_ssize_t n,
                                 Py_ssize_t cap) except -2:
        cdef Filter f
        for f in self.filters:
            if f.flags & FILTER_RESPONSE:
                n = f.on_response(ex, c, head, n, cap)
                if n < 0:
                    return n
        return n

    cdef int run_body(self, Exchange ex, Client c, const char **data, Py_ssize_t *n, bint end) except -2:
        cdef Filter f
        for f in self.filters:
            if f.flags & FILTER_BODY:
                if f.on_body(ex, c, data, n, end) < 0:
                    return FILTER_FAILED
        return FILTER_GO_ON


# --- built-in filters -------------------------------------------------------------------------------

cdef class RespondFilter(Filter):
    """The route answers every request itself (config `respond`)."""
    cdef bytes head                 # status line and fields, without Connection and the final CRLF
    cdef bytes body
    cdef int status

    def __init__(self, int status, str content_type, str body, bytes extra_fields=b""):
        self.flags = FILTER_REQUEST
        self.status = status
        self.body = body.encode()
        self.head = (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (
            status, HTTPStatus(status).phrase.encode(), content_type.encode("latin-1"),
            len(self.body))) + extra_fields

    cdef int on_request(self, Exchange ex, Client c) except -2:
        cdef Py_ssize_t n = len(self.head)
        memcpy(c.head, <const char *>self.head, n)
        ex.answer_head_len = head_end_answer(ex, c.head, n, HEAD_ROOM)
        ex.status = self.status
        if ex.req.method != METHOD_HEAD:
            ex.answer_owner = self.body
            ex.answer_body = self.body
            ex.answer_len = len(self.body)
        return FILTER_ANSWERED


cdef class AddHeadersFilter(Filter):
    """Fields added to every response of the route (config `add_headers`)."""
    cdef bytes fields               # "Name: value\r\n" lines

    def __init__(self, pairs):
        self.flags = FILTER_RESPONSE
        self.fields = b"".join(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
                               for name, value in pairs)

    cdef Py_ssize_t on_response(self, Exchange ex, Client c, char *head, Py_ssize_t n,
                                Py_ssize_t cap) except -2:
        return head_add_fields(head, n, cap, self.fields, len(self.fields))


cdef class StickyCookieFilter(Filter):
    """Set-Cookie naming the server that answered, when the client was new here or has moved."""
    cdef Balancer balancer

    def __init__(self, Balancer balancer):
        self.flags = FILTER_RESPONSE
        self.balancer = balancer

    cdef Py_ssize_t on_response(self, Exchange ex, Client c, char *head, Py_ssize_t n,
                                Py_ssize_t cap) except -2:
        cdef Py_ssize_t k
        if ex.server < 0 or ex.cookie_server == ex.server or n + 16 > cap:
            return n
        memcpy(head + n - 2, b"Set-Cookie: ", 12)
        k = self.balancer.sticky_cookie(ex.group, ex.server, head + n + 10, cap - n - 14)
        if k <= 0:
            memcpy(head + n - 2, b"\r\n", 2)
            return n
        memcpy(head + n + 10 + k, b"\r\n\r\n", 4)
        return n + 14 + k


def built_in_filters(route, Balancer balancer, int group):
    """The built-in filters a config route asks for, in the order they run."""
    fields = b"".join(b"%s: %s\r\n" % (name.encode("latin-1"), value.encode("latin-1"))
                      for name, value in route.add_headers)
    out = []
    if route.respond is not None:
        out.append(RespondFilter(route.respond.status, route.respond.content_type, route.respond.body,
                                 fields))
        return out
    if group >= 0 and balancer.sticky_kind(group) == STICKY_COOKIE:
        out.append(StickyCookieFilter(balancer))
    if route.add_headers:
        out.append(AddHeadersFilter(route.add_headers))
    return out


# --- Python hooks -----------------------------------------------------------------------------------

cdef inline str latin1(const char *p, Py_ssize_t n):
    return PyUnicode_DecodeLatin1(p, n, NULL)


cdef class PythonHooks(Filter):
    """A route's `hooks`: Python callables run in the worker (the API is fastproxy/hooks.py). Only routes
    that have them pay for the Python objects (Request, ResponseHead, body pieces as bytes)."""
    cdef object request_fn
    cdef object response_fn
    cdef object body_fn
    cdef object tee_fn
    cdef object api                 # the fastproxy.hooks module

    def __init__(self, route_hooks):
        from fastproxy import hooks
        self.api = hooks
        self.request_fn = route_hooks.request
        self.response_fn = route_hooks.response
        self.body_fn = route_hooks.body
        self.tee_fn = route_hooks.tee
        self.flags = FILTER_REQUEST              # every hook gets the Request
        if self.request_fn is not None:
            self.flags |= FILTER_BACKEND_HEAD    # its edits go into the head sent to the backend
        if self.response_fn is not None or self.body_fn is not None or self.tee_fn is not None:
            self.flags |= FILTER_RESPONSE
        if self.body_fn is not None:
            self.flags |= FILTER_BODY | FILTER_TRANSFORM
        if self.tee_fn is not None:
            self.flags |= FILTER_BODY

    # The seams: a failure of our own glue (not of the hook: call_* catch those) must not reach the loop.

    cdef int on_request(self, Exchange ex, Client c) except -2:
        try:
            return self.on_request_hooks(ex, c)
        except Exception:
            self.glue_failed("request")
            return FILTER_FAILED

    cdef Py_ssize_t on_backend_head(self, Exchange ex, Client c, char *head, Py_ssize_t n,
                                    Py_ssize_t cap) except -2:
        try:
            return self.on_backend_head_hooks(ex, c, head, n, cap)
        except Exception:
            self.glue_failed("request head")
            return FILTER_FAILED

    cdef Py_ssize_t on_response(self, Exchange ex, Client c, char *head, Py_ssize_t n,
                                Py_ssize_t cap) except -2:
        try:
            return self.on_response_hooks(ex, c, head, n, cap)
        except Exception:
            self.glue_failed("response head")
            return FILTER_FAILED

    cdef int on_body(self, Exchange ex, Client c, const char **data, Py_ssize_t *n, bint end) except -2:
        try:
            return self.on_body_hooks(ex, c, data, n, end)
        except Exception:
            self.glue_failed("body")
            return FILTER_FAILED

    cdef void glue_failed(self, str where):
        import traceback
        from fastproxy.log import log
        log("python hooks: %s handling failed:\n%s" % (where, traceback.format_exc().rstrip()))

    cdef object make_request(self, Exchange ex, Client c):
        cdef const char *base = c.rb.data + ex.req_start
        cdef int i
        headers = [(latin1(base + ex.req.headers[i].name.off, ex.req.headers[i].name.len),
                    latin1(base + ex.req.headers[i].value.off, ex.req.headers[i].value.len))
                   for i in range(ex.req.n_headers)]
        return self.api.Request(latin1(base + ex.req.method_span.off, ex.req.method_span.len),
                                latin1(base + ex.req.target.off, ex.req.target.len),
                                latin1(c.addr, c.addr_len), "1.1" if ex.req.version_minor == 1 else "1.0",
                                headers)

    cdef int on_request_hooks(self, Exchange ex, Client c):
        cdef bytes head
        ex.hook_request = self.make_request(ex, c)
        if self.request_fn is None:
            return FILTER_GO_ON
        answer = self.api.call_request(self.request_fn, ex.hook_request)
        if answer is None:
            return FILTER_GO_ON
        # A failed hook answers INTERNAL_ERROR (logged by call_request) like any answer: the request
        # itself was fine, so the connection may stay open.
        try:
            head = answer.head(ex.keep_alive, ex.req.version_minor)
            source = answer.body_source() if ex.req.method != METHOD_HEAD else b""
        finally:
            answer.close()
        if len(head) > HEAD_ROOM:
            return FILTER_FAILED
        memcpy(c.head, <const char *>head, len(head))
        ex.answer_head_len = len(head)
        ex.status = answer.status
        if type(source) is bytes:
            ex.answer_owner = source
            ex.answer_body = <const char *>(<bytes>source)
            ex.answer_len = len(<bytes>source)
        else:
            ex.answer_fd, ex.answer_file_left = source
        return FILTER_ANSWERED

    cdef Py_ssize_t on_backend_head_hooks(self, Exchange ex, Client c, char *head, Py_ssize_t n,
                                          Py_ssize_t cap):
        cdef bytes new
        req = ex.hook_request
        if req is None or not req.edited:
            return n
        new = req.apply(PyBytes_FromStringAndSize(head, n))
        if len(new) > cap:
            return FILTER_FAILED
        memcpy(head, <const char *>new, len(new))
        return len(new)

    cdef Py_ssize_t on_response_hooks(self, Exchange ex, Client c, char *head, Py_ssize_t n,
                                      Py_ssize_t cap):
        cdef bytes new
        lines = PyBytes_FromStringAndSize(head, n - 4).decode("latin-1").split("\r\n")[1:]
        resp = self.api.ResponseHead(ex.status, [tuple(part.strip(" \t") for part in line.split(":", 1))
                                                 for line in lines])
        ex.hook_response = resp
        if self.response_fn is None:
            return n
        if not self.api.call_response(self.response_fn, ex.hook_request, resp):
            return FILTER_FAILED
        if not resp.edited:
            return n
        new = resp.apply(PyBytes_FromStringAndSize(head, n))
        if len(new) > cap:
            return FILTER_FAILED
        memcpy(head, <const char *>new, len(new))
        return len(new)

    cdef int on_body_hooks(self, Exchange ex, Client c, const char **data, Py_ssize_t *n, bint end):
        chunk = PyBytes_FromStringAndSize(data[0], n[0])
        if self.body_fn is not None:
            out = self.api.call_body(self.body_fn, ex.hook_request, ex.hook_response, chunk, end)
            if out is None:
                return FILTER_FAILED
            if ex.body_keep is None:
                ex.body_keep = []
            ex.body_keep.append(out)
            data[0] = <const char *>(<bytes>out)
            n[0] = len(<bytes>out)
            chunk = out
        if self.tee_fn is not None and not ex.tee_off:
            if not self.api.call_tee(self.tee_fn, ex.hook_request, ex.hook_response, chunk, end):
                ex.tee_off = 1
        return FILTER_GO_ON


def python_hooks_filter(route_hooks):
    """A route's RouteHooks (fastproxy.hooks) as one filter, or None when it has none."""
    if route_hooks is None:
        return None
    return PythonHooks(route_hooks)
