"""The chunked transfer coding decoder (chunked_feed, RFC 9112 7.1), through _http.dechunk.

Every case is fed whole, in every fixed piece size and in random pieces: the payload, the bytes consumed
and the verdict must not depend on how the input was split. h11 is the reference for payloads; where we
are deliberately stricter, DIFFERENCES says why and the test checks that h11 really differs.
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
]

INVALID = [
    (b"0x10\r\n", None),
    (b"-5\r\nhello\r\n0\r\n\r\n", None),
    (b"+5\r\nhello\r\n0\r\n\r\n", None),
    (b" 5\r\nhello\r\n0\r\n\r\n", None),
    (b"5 \r\nhello\r\n0\r\n\r\n", "size-ows"),
    (b"5\t;x\r\nhello\r\n0\r\n\r\n", None),
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


def ids(cases):
    return [f"{i:02d}" for i in range(len(cases))]


@pytest.mark.parametrize("data,payload", VALID, ids=ids(VALID))
def test_valid(data, payload):
    trailing = b"GET /next HTTP/1.1\r\n"
    for pieces in splits(len(data), len(data)):
        assert _http.dechunk(data + trailing, pieces) == (payload, len(data), True), pieces
        # not de-chunking: the framing is passed on verbatim
        assert _http.dechunk(data + trailing, pieces, decode=False) == (data, len(data), True), pieces
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


def test_difference_table_is_used():
    assert {d for _data, d in INVALID if d} == set(DIFFERENCES)


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
