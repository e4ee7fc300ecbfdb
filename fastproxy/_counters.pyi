"""Names for the per-worker counters of the shared table (fastproxy/_counters.pyx; layout in _counters.pxd)."""

ERROR_KINDS: dict[int, tuple[str, str]]     # ErrorKind -> (name, side: "client" | "local" | "server")
ERROR_NAMES: tuple[str, ...]                # in ErrorKind order
CLASS_NAMES: tuple[str, ...]                # "1xx" .. "5xx"
LATENCY_BOUNDS: tuple[float, ...]           # bucket upper bounds in seconds; the last is inf
GAUGES: tuple[str, ...]                     # WorkerCounters fields dropped (not folded) with a released row

def bucket_of(seconds: float) -> int: ...
