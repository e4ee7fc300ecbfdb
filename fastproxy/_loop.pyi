"""The event loop (compiled from _loop.pyx); its interface is C-level (cimport), for the proxy in _core."""

def debug_live_conns() -> int:
    """Debug build: Client and BackendConn objects alive in this process (0 in a normal build)."""
