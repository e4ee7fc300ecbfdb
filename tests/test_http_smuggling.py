"""Request smuggling at the parser level (RFC 9112 11.2): every ambiguous framing is refused with its
status, and what is accepted has exactly one reading.

The end-to-end smuggling corpus (what a recording backend receives through a running proxy) lives in
tests/smuggling/; this file pins the parser's verdict on each trick.
"""

import pytest

from fastproxy import _http

H = b"POST / HTTP/1.1\r\nHost: a\r\n"

HEADS = [
    # (name, bytes, expected status or the accepted body kind)
    ("CL.TE", H + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG", 400),
    ("TE.CL", H + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", 400),
    ("TE xchunked", H + b"Transfer-Encoding: xchunked\r\n\r\n", 400),
    ("TE chunkedx", H + b"Transfer-Encoding: chunkedx\r\n\r\n", 400),
    ("TE on an obs-fold line", H + b"X: a\r\n Transfer-Encoding: chunked\r\n\r\n", 400),
    ("TE folded value", H + b"Transfer-Encoding:\r\n chunked\r\n\r\n", 400),
    ("TE space before colon", H + b"Transfer-Encoding : chunked\r\n\r\n", 400),
    ("TE tab before colon", H + b"Transfer-Encoding\t: chunked\r\n\r\n", 400),
    ("TE chunked, chunked", H + b"Transfer-Encoding: chunked, chunked\r\n\r\n", 400),
    ("TE identity", H + b"Transfer-Encoding: identity\r\n\r\n", 400),
    ("TE chunked then identity", H + b"Transfer-Encoding: chunked, identity\r\n\r\n", 400),
    ("TE twice", H + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", 400),
    ("TE with vertical tab", H + b"Transfer-Encoding: chunked\x0b\r\n\r\n", 400),
    ("TE with NUL", H + b"Transfer-Encoding: \x00chunked\r\n\r\n", 400),
    ("TE quoted", H + b'Transfer-Encoding: "chunked"\r\n\r\n', 400),
    ("TE with underscore", H + b"Transfer_Encoding: chunked\r\n\r\n", 400),
    ("TE gzip, chunked", H + b"Transfer-Encoding: gzip, chunked\r\n\r\n", 501),
    ("TE in HTTP/1.0", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("TE with HTAB OWS", H + b"Transfer-Encoding:\tchunked\r\n\r\n", "chunked"),
    ("TE upper case", H + b"Transfer-Encoding: CHUNKED \r\n\r\n", "chunked"),
    ("CL +5", H + b"Content-Length: +5\r\n\r\nhello", 400),
    ("CL -5", H + b"Content-Length: -5\r\n\r\n", 400),
    ("CL 5,5", H + b"Content-Length: 5,5\r\n\r\nhello", 400),
    ("CL 5, 5", H + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    ("CL 0x5", H + b"Content-Length: 0x5\r\n\r\nhello", 400),
    ("CL 5 5", H + b"Content-Length: 5 5\r\n\r\nhello", 400),
    ("CL 5.0", H + b"Content-Length: 5.0\r\n\r\nhello", 400),
    ("CL twice, equal", H + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400),
    ("CL twice, different", H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400),
    ("CL overflow", H + b"Content-Length: 18446744073709551621\r\n\r\n", 400),
    ("CL with underscore", H + b"Content_Length: 5\r\n\r\nhello", 400),
    ("CL space before colon", H + b"Content-Length : 5\r\n\r\nhello", 400),
    ("CL with OWS", H + b"Content-Length: \t5 \r\n\r\nhello", "length"),
    ("bare LF ends a field", H + b"Content-Length: 5\nX: y\r\n\r\nhello", 400),
    ("bare LF ends the head", H + b"Content-Length: 5\r\n\nhello", 400),
    ("bare CR in a value", H + b"X: a\rContent-Length: 5\r\n\r\nhello", 400),
    ("NUL in a value", H + b"X: a\x00b\r\n\r\n", 400),
    ("space before colon", H + b"X-Thing : 1\r\n\r\n", 400),
    ("two Hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("Host with a path", b"GET / HTTP/1.1\r\nHost: a/../b\r\n\r\n", 400),
    ("request line with a bare LF", b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400),
    ("HTTP/0.9 line", b"GET /\r\n", 400),
]


@pytest.mark.parametrize("name,data,expected", HEADS, ids=[h[0] for h in HEADS])
def test_smuggling_heads(name, data, expected):
    r = _http.parse_request(data)
    if isinstance(expected, int):
        assert (r["consumed"], r["error"]) == (-1, expected)
    else:
        assert r["error"] is None and r["body"] == expected
        # the accepted head is rewritten to exactly one framing header for the backend
        out = _http.rewrite_request(data)
        framing = [
            line
            for line in out.split(b"\r\n")
            if line.lower().startswith((b"content-length", b"transfer-encoding"))
        ]
        assert len(framing) == 1


CHUNKS = [
    ("size 0x10", b"0x10\r\n0123456789abcdef\r\n0\r\n\r\n"),
    ("size with bare LF and extension", b"1;ext\nx\r\n0\r\n\r\n"),
    ("size with bare LF", b"1\nx\r\n0\r\n\r\n"),
    ("size overlong (16 digits)", b"0000000000000001\r\nx\r\n0\r\n\r\n"),
    ("size 2**64+1", b"10000000000000001\r\nx\r\n0\r\n\r\n"),
    ("size negative", b"-1\r\nx\r\n0\r\n\r\n"),
    ("size with leading space", b" 1\r\nx\r\n0\r\n\r\n"),
    ("size with trailing space", b"1 \r\nx\r\n0\r\n\r\n"),
    ("data longer than the size", b"1\r\nxx\r\n0\r\n\r\n"),
    ("data without CRLF", b"1\r\nx0\r\n\r\n"),
    ("data with bare LF", b"1\r\nx\n0\r\n\r\n"),
    ("last chunk with bare LF", b"1\r\nx\r\n0\n\r\n"),
    ("trailer with bare LF", b"1\r\nx\r\n0\r\nX: y\n\r\n"),
    ("trailer obs-fold", b"1\r\nx\r\n0\r\nX: y\r\n z\r\n\r\n"),
    ("empty size", b"\r\nx\r\n0\r\n\r\n"),
]


@pytest.mark.parametrize("name,data", CHUNKS, ids=[c[0] for c in CHUNKS])
def test_smuggling_chunks(name, data):
    assert _http.dechunk(data)[1] == -1
    assert _http.dechunk(data, [1] * len(data))[1] == -1


def test_pipelined_prefix_is_one_request_at_a_time():
    first = b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"
    second = b"GET /admin HTTP/1.1\r\nHost: internal\r\n\r\n"
    r = _http.parse_request(first + second)
    assert r["consumed"] == len(first) and r["content_length"] == 0
    r2 = _http.parse_request(first + second[: r["consumed"] - len(first)] + second)
    assert r2["consumed"] == len(first)
    assert _http.parse_request(second)["path"] == b"/admin"


def test_body_that_looks_like_a_request_is_body():
    body = b"GET /admin HTTP/1.1\r\nHost: internal\r\n\r\n"
    data = H + b"Content-Length: %d\r\n\r\n" % len(body) + body
    r = _http.parse_request(data)
    assert r["consumed"] == len(data) - len(body) and r["content_length"] == len(body)


def test_chunked_body_ends_exactly_at_the_last_chunk():
    body = b"5\r\nhello\r\n0\r\n\r\n"
    after = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
    payload, consumed, done = _http.dechunk(body + after)
    assert (payload, consumed, done) == (b"hello", len(body), True)
