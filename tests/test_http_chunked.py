"""The chunked transfer coding decoder (chunked_feed, RFC 9112 7.1), through _http.dechunk.

Every case is fed whole, in every fixed piece size and in random pieces: the payload, the bytes consumed
and the verdict must not depend on how the input was split. h11 is the reference for payloads; where we
deliberately differ (stricter, or, for BWS in chunk extensions, closer to the RFC), DIFFERENCES says why
and the test checks that h11 really differs.

When the body is passed on chunked (decode=False), the framing is forwarded verbatim except chunk
extensions (dropped, as nginx and HAProxy do: nothing behind us can read their syntax differently) and
trailer fields RFC 9110 6.5.1 forbids (framing, routing, controls, authentication ...): those are dropped
whatever the split; other trailer fields are kept (a harmless one whose name is cut by the end of a
read while it could still become a forbidden name is dropped too: RFC 9112 7.1.2 allows discarding).
"""

import random

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastproxy import _http

DIFFERENCES = {
    "size-ows": "RFC 9112 7.1: chunk-size = 1*HEXDIG followed by chunk-ext or CRLF; whitespace after the "
    "size is not in the grammar (only BWS before ';'). Hops that disagree on it can be desynchronised; we "
    "refuse it, h11 tolerates trailing whitespace.",
    "ext-bws": "RFC 9112 7.1.1: chunk-ext = *( BWS \";\" BWS chunk-ext-name [ BWS \"=\" BWS chunk-ext-val ] ): "
    "whitespace before ';' (and around '=') is valid and we accept it; h11 refuses whitespace before ';'.",
    "size-digits": "We bound chunk-size to 15 hex digits (60 bits, RFC 9112 7.1 asks recipients to guard "
    "against overflow); h11 allows 20.",
    "ext-syntax": "RFC 9112 7.1.1: chunk-ext is made of tokens and quoted strings; we only bound its length "
    "and refuse control bytes (h11 takes anything up to CRLF).",
    "trailer-bare-lf": "RFC 9112 2.2 / 7.1.2: trailer lines end with CRLF like field lines; h11 accepts a "
    "bare LF.",
    "trailer-obs-fold": "RFC 9112 5.2: obs-fold is refused in trailers as in heads; h11 unfolds.",
    "line-bounds": "RFC 9112 7.1.1 lets a server limit chunk extensions; we bound the chunk-size line to "
    "4096 bytes and each trailer line to 8192 so a peer cannot make us scan without end. h11 only bounds "
    "its receive buffer.",
}

VALID = [
    (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"3\r\nabc\r\nA\r\n0123456789\r\n1\r\nz\r\n0\r\n\r\n", b"abc0123456789z"),
    (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
    (b"5;name=value\r\nhello\r\n0;last\r\n\r\n", b"hello"),
    (b'5;a="b c";d\r\nhello\r\n0\r\n\r\n', b"hello"),
    (b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\nY:  two \r\n\r\n", b"hello"),
    (b"005\r\nhello\r\n0\r\n\r\n", b"hello"),
    (b"000000000000005\r\nhello\r\n000\r\n\r\n", b"hello"),
    (b"0\r\n\r\n", b""),
    (b"2\r\n\r\n\r\n0\r\n\r\n", b"\r\n"),
    (b"5; a = b ;c\t=\t\"d\"\r\nhello\r\n0\r\n\r\n", b"hello"),
]

# valid by RFC 9112 7.1.1, refused by h11: (data, payload, the DIFFERENCES key)
VALID_BEYOND_H11 = [
    (b"5 ;name=value\r\nhello\r\n0\r\n\r\n", b"hello", "ext-bws"),
    (b"5\t;x\r\nhello\r\n0\r\n\r\n", b"hello", "ext-bws"),
    (b"5 \t ; a = b\r\nhello\r\n0 ;last\r\n\r\n", b"hello", "ext-bws"),
]

INVALID = [
    (b"0x10\r\n", None),
    (b"-5\r\nhello\r\n0\r\n\r\n", None),
    (b"+5\r\nhello\r\n0\r\n\r\n", None),
    (b" 5\r\nhello\r\n0\r\n\r\n", None),
    (b"5 \r\nhello\r\n0\r\n\r\n", "size-ows"),
    (b"5 x\r\nhello\r\n0\r\n\r\n", None),
    (b"5 ;x\r\nhello\r\n0 \r\n\r\n", None),
    (b"5 \n;x\r\nhello\r\n0\r\n\r\n", None),
    (b"5 " + b" " * 5000 + b";x\r\nhello\r\n0\r\n\r\n", None),
    (b"\r\nhello\r\n0\r\n\r\n", None),
    (b"g\r\n", None),
    (b"5\nhello\r\n0\r\n\r\n", None),
    (b"1;ext\nx\r\n0\r\n\r\n", None),
    (b"5\rhello\r\n0\r\n\r\n", None),
    (b"5\r\nhelloXX0\r\n\r\n", None),
    (b"5\r\nhello\n0\r\n\r\n", None),
    (b"5\r\nhello\r0\r\n\r\n", None),
    (b"5\r\nhelloo\r\n0\r\n\r\n", None),
    (b"0000000000000005\r\nhello\r\n0\r\n\r\n", "size-digits"),
    (b"ffffffffffffffffffff\r\n", None),
    (b"5;" + b"e" * 5000 + b"\r\nhello\r\n0\r\n\r\n", "line-bounds"),
    (b"5;a\x01b\r\nhello\r\n0\r\n\r\n", "ext-syntax"),
    (b"5;a\x00b\r\nhello\r\n0\r\n\r\n", "ext-syntax"),
    (b"5\r\nhello\r\n0\r\nX: 1\n\r\n", "trailer-bare-lf"),
    (b"5\r\nhello\r\n0\r\nX: 1\r\n y\r\n\r\n", "trailer-obs-fold"),
    (b"5\r\nhello\r\n0\r\nNoColon\r\n\r\n", None),
    (b"5\r\nhello\r\n0\r\nX : 1\r\n\r\n", None),
    (b"5\r\nhello\r\n0\r\nX: a\x00b\r\n\r\n", None),
    (b"5\r\nhello\r\n0\r\n\rx", None),
    (b"5\r\nhello\r\n0\r\n\n", "trailer-bare-lf"),
    (b"5\r\nhello\r\n0\r\nX: " + b"v" * 9000 + b"\r\n\r\n", "line-bounds"),
]


def splits(n, seed):
    yield None
    for size in range(1, min(n, 12) + 1):
        yield [size] * (n // size + 1)
    rng = random.Random(seed)
    for _ in range(5):
        yield [rng.randint(1, 9) for _ in range(n)]


def h11_dechunk(data):
    """Payload h11 decodes from data as a chunked request body, or None when it refuses it."""
    conn = h11.Connection(our_role=h11.SERVER)
    conn.receive_data(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + data)
    payload = b""
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Data):
                payload += event.data
            elif isinstance(event, h11.EndOfMessage):
                return payload
            elif event is h11.NEED_DATA:
                return None
    except h11.RemoteProtocolError:
        return None


def forwarded(data):
    """What passing a valid chunked body on should send: its framing with every chunk extension (and the
    BWS before it) removed, the rest byte for byte (a plain reference walk of RFC 9112 7.1)."""
    out, pos = b"", 0
    while True:
        eol = data.index(b"\r\n", pos)
        size_text = data[pos:eol].split(b";")[0].rstrip(b" \t")
        size = int(size_text, 16)
        out += size_text + b"\r\n"
        pos = eol + 2
        if size == 0:
            return out + data[pos:]
        out += data[pos:pos + size + 2]
        pos += size + 2


def ids(cases):
    return [f"{i:02d}" for i in range(len(cases))]


@pytest.mark.parametrize("data,payload", VALID, ids=ids(VALID))
def test_valid(data, payload):
    trailing = b"GET /next HTTP/1.1\r\n"
    for pieces in splits(len(data), len(data)):
        assert _http.dechunk(data + trailing, pieces) == (payload, len(data), True), pieces
        # not de-chunking: the framing is passed on verbatim, chunk extensions aside
        assert _http.dechunk(data + trailing, pieces, decode=False) == (forwarded(data), len(data), True), pieces
    assert h11_dechunk(data) == payload


@pytest.mark.parametrize("data,payload", VALID, ids=ids(VALID))
def test_incomplete_is_not_done(data, payload):
    for cut in range(len(data)):
        got, consumed, done = _http.dechunk(data[:cut])
        assert (consumed, done) == (cut, False)
        assert payload.startswith(got)


@pytest.mark.parametrize("data,differs", INVALID, ids=ids(INVALID))
def test_invalid(data, differs):
    for pieces in splits(len(data), len(data)):
        assert _http.dechunk(data, pieces)[1] == -1, pieces
    if differs:
        assert differs in DIFFERENCES
        assert h11_dechunk(data) is not None, "h11 refuses it too: drop the difference"
    else:
        assert h11_dechunk(data) is None


@pytest.mark.parametrize("data,payload,differs", VALID_BEYOND_H11, ids=ids(VALID_BEYOND_H11))
def test_valid_beyond_h11(data, payload, differs):
    for pieces in splits(len(data), len(data)):
        assert _http.dechunk(data, pieces) == (payload, len(data), True), pieces
        out = _http.dechunk(data, pieces, decode=False)
        assert out == (forwarded(data), len(data), True), pieces
        assert h11_dechunk(out[0]) == payload           # what we pass on, h11 (a strict backend) reads
    assert differs in DIFFERENCES
    assert h11_dechunk(data) is None, "h11 accepts it too: drop the difference"


def test_difference_table_is_used():
    used = {d for _data, d in INVALID if d} | {d for _data, _p, d in VALID_BEYOND_H11}
    assert used == set(DIFFERENCES)


# ---- trailer fields when forwarding (RFC 9110 6.5.1) -----------------------------------------------------

FORBIDDEN_TRAILERS = [
    b"Content-Length: 50", b"Transfer-Encoding: chunked", b"Host: admin.internal", b"TE: trailers",
    b"Cache-Control: no-cache", b"Expect: 100-continue", b"Max-Forwards: 0", b"Pragma: no-cache",
    b"Range: bytes=0-1", b"If-Match: *", b"If-None-Match: *", b"If-Modified-Since: x",
    b"If-Unmodified-Since: x", b"If-Range: x", b"Authorization: Basic eA==",
    b"Proxy-Authorization: Basic eA==", b"WWW-Authenticate: Basic", b"Proxy-Authenticate: Basic",
    b"Authentication-Info: x", b"Proxy-Authentication-Info: x", b"Age: 1", b"Expires: 0", b"Date: x",
    b"Location: /x", b"Retry-After: 1", b"Vary: *", b"Content-Encoding: gzip", b"Content-Type: text/x",
    b"Content-Range: bytes 0-1/2", b"Trailer: X", b"Connection: close", b"Keep-Alive: 1",
    b"Upgrade: h2c", b"content-LENGTH: 1", b"HOST:x",
]
KEPT_TRAILERS = [
    b"X-Checksum: abc", b"Server-Timing: db;dur=1", b"Hostile: 1", b"Hos: 1", b"Content-Lengths: 2",
    b"Content-Length-X: 3", b"T: 4", b"TEE: 5", b"Date-X:", b"X-Host: y", b"Digest: sha-256=x",
]


def chunked_with_trailers(lines):
    return b"5\r\nhello\r\n0\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


def test_forbidden_trailers_are_dropped_and_others_kept():
    pairs = list(zip(FORBIDDEN_TRAILERS, (KEPT_TRAILERS * 4)[:len(FORBIDDEN_TRAILERS)], strict=True))
    data = chunked_with_trailers([x for pair in pairs for x in pair])
    out, consumed, done = _http.dechunk(data, decode=False)
    assert (consumed, done) == (len(data), True)
    kept = [x for _f, x in pairs]
    assert out == chunked_with_trailers(kept)
    assert h11_dechunk(out) == b"hello"
    # de-chunking drops every trailer, as before
    assert _http.dechunk(data) == (b"hello", len(data), True)


def test_a_forbidden_trailer_never_passes_whatever_the_split():
    for forbidden in FORBIDDEN_TRAILERS:
        data = chunked_with_trailers([b"X-A: 1", forbidden, b"X-B: 2"])
        for pieces in splits(len(data), len(data)):
            out, consumed, done = _http.dechunk(data, pieces, decode=False)
            assert (consumed, done) == (len(data), True)
            assert forbidden not in out, (forbidden, pieces)
            assert out.startswith(b"5\r\nhello\r\n0\r\n") and out.endswith(b"\r\n\r\n")
            assert h11_dechunk(out) == b"hello"


def test_a_kept_trailer_split_outside_its_name_passes():
    data = chunked_with_trailers([b"Content-Lengths: 2", b"X-Checksum: abc"])
    assert forwarded(data) == data
    name_end = data.index(b": 2")
    for cut in range(name_end, len(data)):
        out, _, done = _http.dechunk(data, [cut, len(data)], decode=False)
        assert done and out == data, cut


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(FORBIDDEN_TRAILERS + KEPT_TRAILERS), max_size=8),
    st.lists(st.integers(1, 20), min_size=1),
)
def test_forwarded_trailers_are_a_clean_subset(lines, pieces):
    data = chunked_with_trailers(lines)
    out, consumed, done = _http.dechunk(data, pieces * (len(data) // len(pieces) + 1), decode=False)
    assert (consumed, done) == (len(data), True)
    assert h11_dechunk(out) == b"hello"
    got = out[len(b"5\r\nhello\r\n0\r\n"):-2].split(b"\r\n")[:-1] if out.count(b"\r\n") > 4 else []
    allowed = [x for x in lines if x in KEPT_TRAILERS]
    it = iter(allowed)
    assert all(g in it for g in got), (got, allowed)      # a subsequence of the allowed lines, in order
    whole = _http.dechunk(data, decode=False)[0]
    assert whole == chunked_with_trailers(allowed)


def test_huge_chunk_streams_without_being_done():
    data = b"fffffffffffffff\r\n" + b"x" * 1000
    assert _http.dechunk(data, [7] * 200) == (b"x" * 1000, len(data), False)


def test_chunk_line_bound_is_4096_bytes():
    ok = b"5;" + b"e" * 4090 + b"\r\nhello\r\n0\r\n\r\n"  # size line of 4093 bytes before CRLF
    assert _http.dechunk(ok)[1] == len(ok)
    bad = b"5;" + b"e" * 4100 + b"\r\nhello\r\n0\r\n\r\n"
    assert _http.dechunk(bad)[1] == -1


bodies = st.binary(max_size=300)
exts = st.sampled_from([b"", b";a", b";a=b", b';q="x y"', b";" + b"k" * 50])


@settings(max_examples=300, deadline=None)
@given(
    bodies,
    st.lists(st.integers(1, 64), min_size=1),
    exts,
    st.lists(st.integers(1, 20), min_size=1),
    st.booleans(),
)
def test_generated_bodies_decode_like_h11(body, sizes, ext, pieces, upper):
    wire, rest, i = b"", body, 0
    while rest:
        k = min(sizes[i % len(sizes)], len(rest))
        size = (b"%X" if upper else b"%x") % k
        wire += size + ext + b"\r\n" + rest[:k] + b"\r\n"
        rest, i = rest[k:], i + 1
    wire += b"0" + ext + b"\r\n\r\n"
    assert _http.dechunk(wire, pieces * (len(wire) // len(pieces) + 1)) == (body, len(wire), True)
    assert h11_dechunk(wire) == body


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(1, 20), min_size=1))
def test_random_bytes_never_crash_and_do_not_depend_on_the_split(data, pieces):
    whole = _http.dechunk(data)
    split = _http.dechunk(data, pieces * (len(data) // len(pieces) + 1))
    assert whole == split
