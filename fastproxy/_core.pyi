"""The proxy on the worker's event loop (compiled from _core.pyx; the loop itself is _loop.pyx)."""

from collections.abc import Sequence

from fastproxy._balancer import Balancer
from fastproxy.config import Config
from fastproxy.hooks import RouteHooks

class Core:
    def __init__(self, config: Config, listen_fds: Sequence[int], worker_id: int = 0,
                 balancer: Balancer | None = None, hooks: Sequence[RouteHooks | None] | None = None) -> None:
        """hooks: per route, its loaded Python hooks (fastproxy.hooks.load(config) when not given)."""
    def run(self, wakeup_fd: int = -1) -> None:
        """Run the loop until stop(); wakeup_fd is the read end of signal.set_wakeup_fd's pipe."""
    def stop(self, graceful: bool = False) -> None:
        """Fast: close everything now. Graceful: stop accepting, finish in-flight requests, then return."""
    def set_access_log(self, fd: int, fmt: str = "combined") -> None:
        """Log one line per request to fd ("combined" or "json"); -1 turns the log off."""
    # counters: in this worker's row of the shared table; read them with fastproxy.counters
