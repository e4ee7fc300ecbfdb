# The debug build: `FASTPROXY_DEBUG=1 python setup.py build_ext --inplace` (tools/test.sh builds the suite
# this way). It counts live connection objects (Client, BackendConn), so a leak test can assert that
# none outlives its connection; in a normal build DEBUG is a C constant 0 and the compiler drops the counting.

cdef extern from *:
    """
    #ifndef FASTPROXY_DEBUG
    #define FASTPROXY_DEBUG 0
    #endif
    """
    const bint DEBUG "FASTPROXY_DEBUG"
