"""One request and its response (compiled from _exchange.pyx); C-level, cimported by _core and _filters."""

class ExchangePool:
    exchanges_in_use: int
