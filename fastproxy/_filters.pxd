# Filters: the per-route chain that sits at the seams of the data path (HAProxy's flt_ops, nginx's
# header and body filter chains).
#
# Rules of this module:
# - A route's filters form one FilterChain, run in config order. A filter implements only the hooks it
#   declares in `flags`; the chain calls only those. A route without filters has flags 0 and the data path
#   pays one test per seam.
# - The seams: on_request (the request head is routed: rewrite it, or answer it -- FILTER_ANSWERED -- with a
#   head in the client's head buffer and a body in the exchange's answer_*), on_backend_head (the head we
#   send the backend is written: edit it), on_response (the response head is rewritten for the client:
#   edit it), on_body (each piece of the response body, decoded; a transforming filter replaces the piece
#   and keeps its new bytes alive in ex.body_keep until they are written; a tee only looks).
# - A body that a filter transforms is re-framed by the core (chunked to HTTP/1.1 clients, close-delimited
#   to HTTP/1.0), with the backend's Content-Length and Transfer-Encoding dropped. Pieces flow one at a
#   time and the next piece is only read once the previous one is written: back-pressure, bounded memory.
# - A hook that fails returns FILTER_FAILED (-1): before the response head went out the client gets a 500,
#   after it the connection is cut. A failing filter never takes the worker down.

from fastproxy._client cimport Client
from fastproxy._exchange cimport Exchange

cdef enum FilterFlag:
    FILTER_REQUEST = 1          # on_request
    FILTER_BACKEND_HEAD = 2     # on_backend_head
    FILTER_RESPONSE = 4         # on_response
    FILTER_BODY = 8             # on_body
    FILTER_TRANSFORM = 16       # on_body changes the body: the response is re-framed

cdef enum:
    FILTER_GO_ON = 0
    FILTER_ANSWERED = 1
    FILTER_FAILED = -1


cdef class Filter:
    cdef int flags
    cdef int on_request(self, Exchange ex, Client c) except -2
    cdef Py_ssize_t on_backend_head(self, Exchange ex, Client c, char *head, Py_ssize_t n,
                                    Py_ssize_t cap) except -2
    cdef Py_ssize_t on_response(self, Exchange ex, Client c, char *head, Py_ssize_t n,
                                Py_ssize_t cap) except -2
    cdef int on_body(self, Exchange ex, Client c, const char **data, Py_ssize_t *n, bint end) except -2


cdef class FilterChain:
    cdef int flags
    cdef tuple filters

    cdef int run_request(self, Exchange ex, Client c) except -2
    cdef Py_ssize_t run_backend_head(self, Exchange ex, Client c, char *head, Py_ssize_t n,
                                     Py_ssize_t cap) except -2
    cdef Py_ssize_t run_response(self, Exchange ex, Client c, char *head, Py_ssize_t n,
                                 Py_ssize_t cap) except -2
    cdef int run_body(self, Exchange ex, Client c, const char **data, Py_ssize_t *n, bint end) except -2


cdef Py_ssize_t head_add_fields(char *head, Py_ssize_t n, Py_ssize_t cap, const char *fields,
                                Py_ssize_t len) noexcept nogil
#   Insert "Name: value\r\n" lines before the head's final CRLF; returns the new length (n if no room).
cdef Py_ssize_t head_remove_field(char *head, Py_ssize_t n, const char *name, Py_ssize_t len) noexcept nogil
#   Remove every field called name (lower-case, compared case-insensitively); returns the new length.
cdef Py_ssize_t head_end_answer(Exchange ex, char *head, Py_ssize_t n, Py_ssize_t cap) noexcept nogil
#   Close an answer head: "Connection: close" (or keep-alive to a 1.0 client) and the final CRLF.
