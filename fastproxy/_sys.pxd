# Every `cdef extern` for the system headers the hot path uses, in one place.
# (libc/posix pieces that Cython ships declarations for -- string.h, stdlib.h, errno.h, unistd.h -- are
# cimported from Cython's own libc/posix packages.)

from libc.stdint cimport uint32_t, uint64_t


cdef extern from "<sys/epoll.h>" nogil:
    enum:
        EPOLLIN
        EPOLLOUT
        EPOLLERR
        EPOLLHUP
        EPOLLRDHUP
        EPOLLET
        EPOLL_CTL_ADD
        EPOLL_CTL_MOD
        EPOLL_CTL_DEL
        EPOLL_CLOEXEC

    ctypedef union epoll_data_t:
        void *ptr
        int fd
        uint32_t u32
        uint64_t u64

    struct epoll_event:
        uint32_t events
        epoll_data_t data

    int epoll_create1(int flags)
    int epoll_ctl(int epfd, int op, int fd, epoll_event *event)
    int epoll_wait(int epfd, epoll_event *events, int maxevents, int timeout)


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t

    struct sockaddr:
        sa_family_t sa_family

    struct sockaddr_storage:
        sa_family_t ss_family

    enum:
        AF_INET
        AF_INET6
        SOCK_STREAM
        SOCK_NONBLOCK
        SOCK_CLOEXEC
        SOL_SOCKET
        SO_ERROR
        SHUT_WR
        SHUT_RDWR

    int socket(int domain, int type, int protocol)
    int accept4(int fd, sockaddr *addr, socklen_t *addrlen, int flags)
    int connect(int fd, const sockaddr *addr, socklen_t addrlen)
    int getsockopt(int fd, int level, int name, void *value, socklen_t *length)
    int setsockopt(int fd, int level, int name, const void *value, socklen_t length)
    int shutdown(int fd, int how)


cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

    ssize_t writev(int fd, const iovec *iov, int iovcnt)


cdef extern from "<netinet/in.h>" nogil:
    enum:
        IPPROTO_TCP

    struct in_addr:
        uint32_t s_addr

    struct sockaddr_in:
        sa_family_t sin_family
        unsigned short sin_port
        in_addr sin_addr

    struct in6_addr:
        unsigned char s6_addr[16]

    struct sockaddr_in6:
        sa_family_t sin6_family
        unsigned short sin6_port
        in6_addr sin6_addr

    unsigned short htons(unsigned short)


cdef extern from "<netinet/tcp.h>" nogil:
    enum:
        TCP_NODELAY
        TCP_DEFER_ACCEPT


cdef extern from "<arpa/inet.h>" nogil:
    int inet_pton(int af, const char *src, void *dst)
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)


cdef extern from "<time.h>" nogil:
    ctypedef long time_t

    struct timespec:
        time_t tv_sec
        long tv_nsec

    enum:
        CLOCK_MONOTONIC

    int clock_gettime(int clk, timespec *tp)


# --- GCC __atomic_* builtins (used by _shm.pxd for every field several processes write) -------------
# Typed names for the generic builtins; times and counters in the shared table are all int64_t.

from libc.stdint cimport int64_t


cdef extern from * nogil:
    enum:
        ATOMIC_RELAXED "__ATOMIC_RELAXED"
        ATOMIC_ACQUIRE "__ATOMIC_ACQUIRE"
        ATOMIC_RELEASE "__ATOMIC_RELEASE"
        ATOMIC_SEQ_CST "__ATOMIC_SEQ_CST"

    int64_t atomic_load_i64 "__atomic_load_n"(const int64_t *p, int order)
    void atomic_store_i64 "__atomic_store_n"(int64_t *p, int64_t v, int order)
    int64_t atomic_add_fetch_i64 "__atomic_add_fetch"(int64_t *p, int64_t v, int order)
    int64_t atomic_fetch_add_i64 "__atomic_fetch_add"(int64_t *p, int64_t v, int order)
    int64_t atomic_exchange_i64 "__atomic_exchange_n"(int64_t *p, int64_t v, int order)
    bint atomic_cas_i64 "__atomic_compare_exchange_n"(int64_t *p, int64_t *expected, int64_t desired,
                                                      bint weak, int success_order, int failure_order)
