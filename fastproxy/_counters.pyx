# cython: language_level=3
"""Names for the counters of _counters.pxd, for readers (fastproxy/counters.py, metrics, tests).

The layout and the enum live in _counters.pxd; this module only names them, keyed by the enum values
themselves so a renumbering cannot leave a name behind (tests/test_counters.py checks the tables cover
every kind and bucket).
"""

from libc.stdint cimport int64_t

# ErrorKind -> (name, side). Sides as HAProxy's termination states: client, local (this proxy), server.
ERROR_KINDS = {
    ERR_CLIENT_ABORT: ("client_abort", "client"),
    ERR_CLIENT_TIMEOUT: ("client_timeout", "client"),
    ERR_BAD_REQUEST: ("bad_request", "client"),
    ERR_LOCAL_RESOURCE: ("local_resource", "local"),
    ERR_SERVER_CONNECT: ("server_connect", "server"),
    ERR_SERVER_RESET: ("server_reset", "server"),
    ERR_SERVER_TIMEOUT: ("server_timeout", "server"),
    ERR_SERVER_BAD_RESPONSE: ("server_bad_response", "server"),
}
ERROR_NAMES = tuple(ERROR_KINDS[k][0] for k in range(N_ERROR_KINDS))

CLASS_NAMES = ("1xx", "2xx", "3xx", "4xx", "5xx")

# upper bounds of the latency buckets in seconds (Prometheus `le`); the last bucket is +Inf
LATENCY_BOUNDS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))

GAUGES = ("client_open", "backend_open", "backend_idle", "buffers_in_use", "debug_conn_objects",
          "exchanges_in_use")

assert len(ERROR_KINDS) == N_ERROR_KINDS and len(CLASS_NAMES) == N_CLASSES
assert len(LATENCY_BOUNDS) == N_BUCKETS and len(GAUGES) == N_GAUGES


def bucket_of(double seconds):
    """The histogram bucket the core's count_latency() puts a latency in (for tests)."""
    cdef int64_t us = <int64_t>(seconds * 1e6 + 0.5) if seconds > 0 else 0
    return latency_bucket(us)
