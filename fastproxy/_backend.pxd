# Backend servers and the connections to them.
#
# Servers are numbered 0..N-1 in config order (config.upstreams order, then each upstream's `servers`):
# one number for a server across the config, the balancer, the pool and the counters ("server"); an
# upstream is a pool of servers ("group" is its index). A BackendConn is one TCP connection to a server.

from fastproxy._buffers cimport Buffer
from fastproxy._loop cimport Conn
from fastproxy._sys cimport sockaddr_storage, socklen_t
from fastproxy._transport cimport Outgoing

cdef enum BackendState:
    BS_CONNECTING = 1
    BS_ACTIVE                   # attached to a client's exchange
    BS_IDLE                     # in the keep-alive pool
    BS_CLOSED

cdef struct Server:
    sockaddr_storage addr
    socklen_t addr_len
    int group
    char text[64]               # "ip:port", for the access log
    int text_len

cdef struct UpstreamGroup:
    int first_server
    int n_servers
    int keepalive               # idle connections kept per server (per worker)
    double keepalive_timeout


cdef class BackendConn(Conn):
    cdef int state
    cdef int server
    cdef bint reused                # taken from the pool (a failure may just be a stale connection)
    cdef Buffer rb                  # response bytes
    cdef char *head                 # the rewritten request head
    cdef Outgoing out               # request bytes on their way to the server
    cdef Conn client                # the Client whose exchange it serves (None when idle)
    # the pool's intrusive list (borrowed: the loop holds every open connection)
    cdef void *pool_prev
    cdef void *pool_next
    cdef double idle_since


cdef int open_socket(const Server *s, int *fd) noexcept nogil
#   A non-blocking socket connecting to s: 1 connected, 0 in progress, -1 refused or failed at once
#   (the server's side), -2 a local failure (socket() or its options: out of descriptors or memory).

cdef void fill_sockaddr(Server *s, str host, int port) except *
