# Client connections: what one accepted connection holds across its requests.
#
# The per-request state is in its Exchange (None between requests). What stays here is small on purpose:
# an idle kept-alive client is this object and a timer, no buffer (given back to the pool) and no
# exchange.

from fastproxy._backend cimport BackendConn
from fastproxy._buffers cimport Buffer
from fastproxy._exchange cimport Exchange
from fastproxy._loop cimport Conn
from fastproxy._sys cimport sockaddr_storage
from fastproxy._transport cimport Outgoing

cdef enum ClientState:
    CS_HEAD = 1                 # reading a request head (idle while no byte of it has come)
    CS_BODY                     # reading a request body whole before a backend is picked (buffering)
    CS_PROXY                    # a request is being proxied
    CS_TUNNEL                   # after 101 Switching Protocols: bytes both ways
    CS_ANSWER                   # writing an answer of the proxy's own, then the next request
    CS_CLOSING                  # writing a final answer, then close
    CS_LINGER                   # answered and half-closed; reading what the client still sends
    CS_CLOSED


cdef class Client(Conn):
    cdef int state
    cdef Buffer rb                  # request bytes (and pipelined ones after them)
    cdef char *head                 # the rewritten response head, or an answer's head
    cdef Outgoing out               # response bytes on their way to the client
    cdef Exchange ex                # the request under way, or None
    cdef BackendConn backend        # the backend connection serving ex, or None
    cdef bint nodelay               # TCP_NODELAY is set (once it is kept alive, as nginx does)
    cdef bint tunnel_eof            # tunnel: the client closed its side
    cdef bint backend_eof           # tunnel: the backend closed its side
    cdef double idle_since          # when it last became idle between requests
    cdef double head_start          # when the current request head began (the min_rate clock)
    cdef long long head_bytes       # its bytes received so far
    cdef char addr[46]              # the client's IP as text (INET6_ADDRSTRLEN)
    cdef int addr_len


cdef void format_addr(sockaddr_storage *addr, char *out, int *out_len) noexcept nogil
