"""Buffered access log lines (compiled from _accesslog.pyx); the core writes to it."""

class AccessLog:
    def __init__(self, fd: int, fmt: str = "combined") -> None: ...
