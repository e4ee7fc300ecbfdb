"""One request and its response (compiled from _exchange.pyx); C-level, cimported by _core and _filters."""

def debug_live_exchanges() -> int:
    """Debug build: Exchange objects alive in this process (0 in a normal build)."""
