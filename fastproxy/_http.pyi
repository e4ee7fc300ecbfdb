"""Python-visible helpers of the compiled HTTP/1.1 parser (for tests and tools; the hot path uses the
C functions declared in _http.pxd)."""

from collections.abc import Iterable
from typing import Any

FLAG_NAMES: dict[str, int]

def method_code(method: bytes) -> int: ...
def parse_request(
    data: bytes, max_head: int = 16384, max_target: int = 8192, max_headers: int = 100
) -> dict[str, Any]:
    """consumed (> 0 head length, 0 need more, -1 invalid), error (status or None), and when parsed:
    method, method_code, target, target_form, path, host, version, headers [(name, value)], flags,
    body ("none" | "length" | "chunked"), content_length, keep_alive, expect_continue, upgrade."""

def parse_response(
    data: bytes, request_method: bytes = b"GET", max_head: int = 16384, max_headers: int = 100
) -> dict[str, Any]:
    """consumed, error, and when parsed: status, reason, version, headers, flags,
    body ("none" | "length" | "chunked" | "close"), content_length, keep_alive, upgrade."""

def dechunk(
    data: bytes, pieces: Iterable[int] | None = None, decode: bool = True
) -> tuple[bytes, int, bool]:
    """(payload, consumed, done); consumed is -1 on malformed framing."""

def rewrite_request(
    data: bytes,
    client_addr: str = "1.2.3.4",
    proto: str = "http",
    forwarded: bool = False,
    upgrade: bool | None = None,
    cap: int = 65536,
) -> bytes | None: ...
def rewrite_response(
    data: bytes,
    request_method: bytes = b"GET",
    server: str = "",
    client_keep_alive: bool = True,
    client_version_minor: int = 1,
    dechunk: bool = False,
    cap: int = 65536,
) -> bytes | None: ...
def error_response(status: int, close: bool = True, cap: int = 512) -> bytes | None: ...
