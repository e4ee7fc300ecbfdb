"""The request and response head parsers of fastproxy._http, against their corpus and against h11.

Corpus: tests/requests/{valid,invalid}/NNN.http and tests/responses/{valid,invalid}/NNN.http, each with an
NNN.py beside it holding the expectation (gunicorn's layout). In a .http file real newlines are for
reading only; bytes are written as escapes (\\r \\n \\t \\xNN \\\\).

Every case is fed whole, line by line, byte by byte and in random chunks: every prefix must give 0 (need
more) until the answer, and from then on exactly the whole-input answer (the same fields, or the same
error status).

h11 is the reference. A case may differ from h11 only by naming one of the DIFFERENCES below in its
``h11_differs``; the test then asserts that h11 really does decide otherwise, so the table stays true.
Any other difference fails.
"""

import codecs
import random
import runpy
from pathlib import Path

import h11
import pytest
from h11 import _connection as h11_connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastproxy import _http

# Where the parser is deliberately not h11, and why (RFC 9112 / RFC 9110 sections).
DIFFERENCES = {
    "leading-empty-lines": "RFC 9112 2.2: a server SHOULD ignore at least one empty line (CRLF) received "
    "before the request-line. We skip them; h11 refuses the message.",
    "bare-lf": "RFC 9112 2.2 lets a recipient accept a bare LF as a line terminator; we refuse it, since "
    "hops that disagree on line ends are a request smuggling vector (RFC 9112 11.2). h11 accepts.",
    "obs-fold": "RFC 9112 5.2: a server MUST either reject obs-fold with 400 or unfold it; a proxy that "
    "forwards heads byte-exact rejects. h11 unfolds.",
    "control-bytes": "RFC 9110 5.5: field values (and RFC 9112 4 the reason-phrase) are VCHAR, SP, HTAB "
    "and obs-text; CR, LF and NUL are also dangerous (RFC 9110 5.5). We refuse every control byte and DEL; "
    "h11 admits controls other than NUL and whitespace.",
    "host-syntax": "RFC 9112 3.2: a server MUST respond 400 to a Host field with an invalid value (and "
    "RFC 9110 4.2.4 deprecates userinfo). We check uri-host[:port]; h11 does not look at the value.",
    "target-form": "RFC 9112 3.2: origin-form, absolute-form (with a host and a path or nothing after "
    "the authority), authority-form for CONNECT only, asterisk-form for OPTIONS only. h11 takes any "
    "visible string.",
    "cl-and-te": "RFC 9112 6.1: Content-Length with Transfer-Encoding ought to be handled as an error "
    "(6.3: a likely smuggling attempt); a response with both is refused too. h11 lets TE win.",
    "duplicate-cl": "RFC 9112 6.3 rule 5 lets a recipient merge identical Content-Length values; in a "
    "request we refuse any repeat or list (deliberate strictness). h11 merges.",
    "cl-63-bit": "RFC 9110 8.6: a recipient MUST anticipate large values and not overflow; lengths that "
    "do not fit in 63 bits are refused. h11 takes up to 20 digits.",
    "te-in-http10": "RFC 9112 6.1: a server receiving Transfer-Encoding in an HTTP/1.0 request MUST treat "
    "the framing as faulty. h11 decodes it as chunked.",
    "expect-unknown": "RFC 9110 10.1.1: a server that does not support an expectation MAY answer 417; we "
    "do, rather than forward an expectation nobody answers. h11 ignores it.",
    "version-505": "RFC 9110 15.6.6 / RFC 9112 2.3: only HTTP/1.0 and 1.1 are spoken here; other "
    "well-formed versions get 505 (502 from a backend). h11 accepts any HTTP/d.d.",
    "connect": "A reverse proxy does not tunnel: CONNECT gets 501 (RFC 9110 9.3.6). h11 parses it.",
    "limits": "Configured limits: 414 for a long target (RFC 9112 3), 431 for a large head or too many "
    "fields (RFC 6585 5). h11 only limits its receive buffer.",
    "status-range": "RFC 9110 15: status codes are 100-599; h11 takes any three digits.",
    "underscore-framing": "Transfer_Encoding and Content_Length are valid names of unknown fields, but "
    "servers that map '_' to '-' (CGI-style) read them as framing: a desync (RFC 9112 11.2). We refuse "
    "them; h11 passes them as ordinary fields.",
    "upgrade-websocket-only": "RFC 9110 7.8 lets a server ignore Upgrade. A reverse proxy can only tunnel "
    "what it understands: a WebSocket upgrade (exactly \"websocket\", RFC 6455 4.1) becomes a tunnel; any "
    "other proposal (h2c: a tunnel to the backend's HTTP/2 past routing and checks, \"h2c smuggling\") is "
    "served as plain HTTP/1.1 with Upgrade and \"Connection: upgrade\" removed (both hop-by-hop). h11 "
    "records every proposal as a pending switch.",
    "http10-keep-alive": "RFC 9112 9.3: an HTTP/1.0 message with the keep-alive connection option is "
    "persistent (RFC 7230 A.1.2); nginx and HAProxy honour it. h11 never keeps 1.0 alive.",
}

HERE = Path(__file__).parent


def load_http(path):
    """Bytes of a corpus .http file: real newlines dropped, escapes decoded."""
    text = path.read_bytes().replace(b"\n", b"")
    return codecs.escape_decode(text)[0]


def corpus(kind, validity):
    cases = []
    for path in sorted((HERE / kind / validity).glob("*.http")):
        meta = runpy.run_path(str(path.with_suffix(".py")))
        cases.append(pytest.param(load_http(path), meta, id=f"{validity}/{path.stem}"))
    return cases


REQUESTS_VALID = corpus("requests", "valid")
REQUESTS_INVALID = corpus("requests", "invalid")
RESPONSES_VALID = corpus("responses", "valid")
RESPONSES_INVALID = corpus("responses", "invalid")


def test_corpus_is_there():
    assert len(REQUESTS_VALID) >= 25 and len(REQUESTS_INVALID) >= 50
    assert len(RESPONSES_VALID) >= 10 and len(RESPONSES_INVALID) >= 10


def test_difference_table_is_used_and_complete():
    used = set()
    for case in REQUESTS_VALID + REQUESTS_INVALID + RESPONSES_VALID + RESPONSES_INVALID:
        differs = case.values[1].get("h11_differs")
        if differs:
            assert differs in DIFFERENCES, differs
            used.add(differs)
    assert used == set(DIFFERENCES)


# ---- feeding in pieces -----------------------------------------------------------------------------------


def cut_points(data, how, seed=0):
    if how == "whole":
        return [len(data)]
    if how == "lines":
        cuts = [i + 1 for i, b in enumerate(data) if b == 0x0A]
    elif how == "bytes":
        cuts = list(range(1, len(data) + 1))
    else:
        rng = random.Random(seed)
        cuts, pos = [], 0
        while pos < len(data):
            pos += rng.randint(1, 17)
            cuts.append(min(pos, len(data)))
    if not cuts or cuts[-1] != len(data):
        cuts.append(len(data))
    return cuts


def check_incremental(parse, data, how):
    """Parse growing prefixes: 0 until the answer, then always the whole-input answer."""
    whole = parse(data)
    answered = False
    for cut in cut_points(data, how, seed=len(data)):
        r = parse(data[:cut])
        if r["consumed"] == 0 and not answered:
            assert r["error"] is None
            continue
        if r["consumed"] < 0 and r["error"] == whole["error"]:
            answered = True  # an error may show before the whole input: it must be the same one
            continue
        assert r == whole, (how, cut)
        answered = True
    return whole


SPLITS = ["whole", "lines", "bytes", "random"]


# ---- h11 as the reference -----------------------------------------------------------------------------


def h11_request(data):
    """(Request event, connection) from h11, or None when h11 refuses the bytes."""
    conn = h11.Connection(our_role=h11.SERVER)
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    assert event is not h11.NEED_DATA, "the corpus holds complete heads"
    return event, conn


def h11_response(data, method=b"GET"):
    conn = h11.Connection(our_role=h11.CLIENT)
    headers = [("Host", "example.com")]
    if data.startswith(b"HTTP/1.1 101"):
        headers += [("Connection", "upgrade"), ("Upgrade", "websocket")]  # h11 wants a proposal
    conn.send(h11.Request(method=method, target="/", headers=headers))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    if event is h11.NEED_DATA:
        return None  # not a head h11 can finish: as good as refused
    return event, conn


def h11_view(headers):
    """Our (name, value) list as h11 reports it: h11 lower-cases Transfer-Encoding values and merges
    repeated identical Content-Length fields into the first."""
    seen_cl = False
    out = []
    for name, value in headers:
        if name.lower() == b"transfer-encoding":
            value = value.lower()
        if name.lower() == b"content-length":
            if seen_cl:
                continue
            seen_cl = True
        out.append((name, value))
    return out


def h11_body_kind(method, event):
    if isinstance(event, h11.InformationalResponse):
        return "none", 0
    kind, args = h11_connection._body_framing(method, event)
    if kind == "chunked":
        return "chunked", 0
    if kind == "http/1.0":
        return "close", 0
    return "length", args[0]


def assert_request_matches_h11(ours, data):
    ref = h11_request(data)
    assert ref is not None, "h11 refuses what we accept"
    event, conn = ref
    assert ours["method"] == event.method
    assert ours["target"] == event.target
    assert ours["version"] == event.http_version
    assert h11_view(ours["headers"]) == [(name, value) for name, value in event.headers.raw_items()]
    if ours["target_form"] == "origin":
        hosts = [v for n, v in event.headers if n == b"host"]
        assert ours["host"] == (hosts[0] if hosts else b"")
    kind, length = h11_body_kind(event.method, event)
    if ours["body"] == "none":
        assert (kind, length) == ("length", 0)
    else:
        assert (ours["body"], ours["content_length"]) == (kind, length)
    assert_keep_alive(ours, event, h11_connection._keep_alive(event))
    assert ours["expect_continue"] == conn.they_are_waiting_for_100_continue
    if ours["upgrade"]:
        assert h11_connection._SWITCH_UPGRADE in conn._cstate.pending_switch_proposals


def assert_keep_alive(ours, event, h11_keep_alive):
    if event.http_version == b"1.0" and ours["keep_alive"]:
        assert not h11_keep_alive  # DIFFERENCES["http10-keep-alive"]
        assert b"keep-alive" in b",".join(v.lower() for n, v in event.headers if n == b"connection")
    else:
        assert ours["keep_alive"] == h11_keep_alive


def assert_response_matches_h11(ours, data, method):
    ref = h11_response(data, method)
    assert ref is not None, "h11 refuses what we accept"
    event, _conn = ref
    assert ours["status"] == event.status_code
    assert ours["reason"] == event.reason
    assert ours["version"] == event.http_version
    assert h11_view(ours["headers"]) == [(name, value) for name, value in event.headers.raw_items()]
    kind, length = h11_body_kind(method, event)
    if ours["body"] == "none":
        assert kind == "none" or length == 0
    else:
        assert (ours["body"], ours["content_length"] if ours["body"] == "length" else 0) == (kind, length)
    if not isinstance(event, h11.InformationalResponse):
        assert_keep_alive(ours, event, h11_connection._keep_alive(event) and kind != "close")


# ---- the request corpus ---------------------------------------------------------------------------------


def parser_for(meta):
    limits = meta.get("limits", {})
    return lambda data: _http.parse_request(data, **limits)


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("data,meta", REQUESTS_VALID)
def test_valid_request(data, meta, how):
    r = check_incremental(parser_for(meta), data, how)
    assert r["error"] is None and r["consumed"] > 0, r
    assert data[: r["consumed"]].endswith(b"\r\n\r\n")
    for key, value in meta["request"].items():
        assert r[key] == value, key


@pytest.mark.parametrize("data,meta", REQUESTS_VALID)
def test_valid_request_against_h11(data, meta):
    ours = _http.parse_request(data, **meta.get("limits", {}))
    differs = meta.get("h11_differs")
    if differs == "leading-empty-lines":
        assert h11_request(data) is None
        data = data.lstrip(b"\r\n")
        ours = _http.parse_request(data, **meta.get("limits", {}))
    elif differs == "upgrade-websocket-only":
        assert not ours["upgrade"]
        _event, conn = h11_request(data)
        assert h11_connection._SWITCH_UPGRADE in conn._cstate.pending_switch_proposals, "h11 agrees"
    else:
        assert differs in (None, "http10-keep-alive")
    assert_request_matches_h11(ours, data)


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("data,meta", REQUESTS_INVALID)
def test_invalid_request(data, meta, how):
    r = check_incremental(parser_for(meta), data, how)
    assert (r["consumed"], r["error"]) == (-1, meta["status"])


@pytest.mark.parametrize("data,meta", REQUESTS_INVALID)
def test_invalid_request_against_h11(data, meta):
    ref = h11_request(data)
    if meta.get("h11_differs"):
        assert ref is not None, "h11 refuses this too: drop h11_differs"
    else:
        assert ref is None, "h11 accepts this: name the difference or fix the parser"


# ---- the response corpus --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("data,meta", RESPONSES_VALID)
def test_valid_response(data, meta, how):
    method = meta.get("request_method", b"GET")
    r = check_incremental(lambda d: _http.parse_response(d, method), data, how)
    assert r["error"] is None and r["consumed"] > 0, r
    for key, value in meta["response"].items():
        assert r[key] == value, key
    assert_response_matches_h11(r, data, method)


@pytest.mark.parametrize("how", SPLITS)
@pytest.mark.parametrize("data,meta", RESPONSES_INVALID)
def test_invalid_response(data, meta, how):
    r = check_incremental(lambda d: _http.parse_response(d), data, how)
    assert (r["consumed"], r["error"]) == (-1, meta["status"])
    ref = h11_response(data)
    if meta.get("h11_differs"):
        assert ref is not None, "h11 refuses this too: drop h11_differs"
    else:
        assert ref is None, "h11 accepts this: name the difference or fix the parser"


# ---- flags and limits -----------------------------------------------------------------------------------


def flags_of(r, name):
    return [f for (n, _v), f in zip(r["headers"], r["flags"], strict=True) if n.lower() == name][0]


def test_header_flags():
    F = _http.FLAG_NAMES
    r = _http.parse_request(
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, x-hop, Host, content-length\r\n"
        b"X-Hop: 1\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Forwarded-For: 9.9.9.9\r\n"
        b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: h\r\nForwarded: for=1.1.1.1\r\nUpgrade: ws\r\n"
        b"Proxy-Authorization: x\r\nTrailer: X\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n"
    )
    assert r["error"] is None
    assert flags_of(r, b"host") == F["host"]  # never dropped by being named in Connection
    assert flags_of(r, b"content-length") == F["content_length"]
    assert flags_of(r, b"connection") == F["hop"] | F["connection"]
    assert flags_of(r, b"x-hop") == F["conn_listed"]
    assert flags_of(r, b"keep-alive") == F["hop"] | F["conn_listed"]
    assert flags_of(r, b"te") == F["hop"]
    assert flags_of(r, b"x-forwarded-for") == F["xff"]
    assert flags_of(r, b"x-forwarded-proto") == F["xf_proto"]
    assert flags_of(r, b"x-forwarded-host") == F["xf_host"]
    assert flags_of(r, b"forwarded") == F["forwarded"]
    assert flags_of(r, b"upgrade") == F["hop"] | F["upgrade"]
    assert flags_of(r, b"proxy-authorization") == F["hop"]
    assert flags_of(r, b"trailer") == F["hop"]
    assert flags_of(r, b"expect") == F["expect"]
    s = _http.parse_response(
        b"HTTP/1.1 200 OK\r\nSERVER: x\r\nProxy-Authenticate: y\r\nContent-Length: 0\r\n\r\n"
    )
    assert flags_of(s, b"server") == F["server"]
    assert flags_of(s, b"proxy-authenticate") == F["hop"]


def test_method_codes():
    codes = [
        _http.method_code(m)
        for m in (b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT")
    ]
    assert codes == list(range(1, 10))
    assert _http.method_code(b"get") == 0 and _http.method_code(b"PROPFIND") == 0


def test_head_limit_applies_before_the_head_is_complete():
    # n >= max_head without a complete head: refused at once, not after the client's next write
    assert _http.parse_request(b"GET /" + b"a" * 100, max_head=64)["error"] == 431
    assert _http.parse_request(b"GET /" + b"a" * 100, max_head=200, max_target=50)["error"] == 414
    assert _http.parse_request(b"GET /" + b"a" * 10, max_head=200, max_target=50)["consumed"] == 0
    head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
    assert _http.parse_request(head, max_head=len(head))["consumed"] == len(head)
    assert _http.parse_request(head, max_head=len(head) - 1)["error"] == 431
    assert _http.parse_request(b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 100, max_head=64)["error"] == 431
    assert _http.parse_response(b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 100, max_head=64)["error"] == 502


def test_max_headers_is_capped_by_the_hard_array_size():
    head = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: 1\r\n" * 200 + b"\r\n"
    assert _http.parse_request(head, max_head=1 << 20, max_headers=1000)["error"] == 431
    head = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: 1\r\n" * 127 + b"\r\n"
    assert _http.parse_request(head, max_head=1 << 20, max_headers=1000)["consumed"] == len(head)


def test_obviously_bad_bytes_are_refused_before_the_line_ends():
    # a slow client sending garbage is refused without waiting for CRLF
    assert _http.parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00")["error"] == 400
    assert _http.parse_request(b"\x16\x03\x01")["error"] == 400
    assert _http.parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r")["consumed"] == 0


# ---- hypothesis: generated valid requests parse like h11 ------------------------------------------------

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
SPECIAL = {b"host", b"content-length", b"transfer-encoding", b"connection", b"expect", b"upgrade"}
tokens = st.text(alphabet=TCHARS, min_size=1, max_size=12).map(str.encode)
field_names = tokens.filter(lambda n: n.lower() not in SPECIAL)
vchar = st.integers(0x21, 0x7E) | st.integers(0x80, 0xFF)
field_words = st.lists(vchar, min_size=1, max_size=10).map(bytes)
field_values = st.builds(
    lambda words, seps, lead, trail: (
        lead + b"".join(w + s for w, s in zip(words, seps, strict=False)).rstrip(b" \t") + trail
    ),
    st.lists(field_words, max_size=4),
    st.lists(st.sampled_from([b" ", b"\t", b"  "]), min_size=4, max_size=4),
    st.sampled_from([b"", b" ", b"\t"]),
    st.sampled_from([b"", b" ", b" \t"]),
)
targets = st.text(alphabet="".join(map(chr, range(0x21, 0x7F))), max_size=30).map(lambda t: b"/" + t.encode())
methods = st.sampled_from(
    [b"GET", b"POST", b"PUT", b"DELETE", b"PATCH", b"OPTIONS", b"HEAD"]
) | tokens.filter(lambda m: m != b"CONNECT")


@st.composite
def requests(draw):
    version = draw(st.sampled_from([b"1.1", b"1.0"]))
    head = [b"%s %s HTTP/%s" % (draw(methods), draw(targets), version)]
    fields = [(draw(field_names), draw(field_values)) for _ in range(draw(st.integers(0, 6)))]
    if version == b"1.1" or draw(st.booleans()):
        host = draw(st.sampled_from([b"example.com", b"a.b:8080", b"[::1]", b"127.0.0.1:1"]))
        fields.insert(
            draw(st.integers(0, len(fields))), (draw(st.sampled_from([b"Host", b"host", b"HOST"])), host)
        )
    body = draw(st.binary(max_size=40))
    framing = draw(st.sampled_from(["none", "length"] + (["chunked"] if version == b"1.1" else [])))
    wire = b""
    if framing == "length":
        fields.append((b"Content-Length", b"%d" % len(body)))
        wire = body
    elif framing == "chunked":
        fields.append((b"Transfer-Encoding", draw(st.sampled_from([b"chunked", b"Chunked"]))))
        rest = body
        while rest:
            k = draw(st.integers(1, len(rest)))
            wire += b"%x\r\n%s\r\n" % (k, rest[:k])
            rest = rest[k:]
        wire += b"0\r\n\r\n"
    if draw(st.booleans()):
        fields.append((b"Connection", draw(st.sampled_from([b"close", b"keep-alive", b"Keep-Alive, x-a"]))))
    head += [n + b":" + draw(st.sampled_from([b"", b" ", b"\t"])) + v for n, v in fields]
    return b"\r\n".join(head) + b"\r\n\r\n" + wire, framing, body


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests())
def test_generated_requests_parse_like_h11(generated):
    data, framing, body = generated
    ours = _http.parse_request(data)
    assert ours["error"] is None, ours
    assert_request_matches_h11(ours, data)
    assert ours["body"] == framing
    rest = data[ours["consumed"] :]
    if framing == "chunked":
        payload, consumed, done = _http.dechunk(rest)
        assert (payload, consumed, done) == (body, len(rest), True)
    elif framing == "length":
        assert ours["content_length"] == len(body) and rest == body


@settings(max_examples=300, deadline=None)
@given(
    requests(), st.integers(0, 10_000), st.integers(0, 255), st.sampled_from(["replace", "insert", "delete"])
)
def test_mutated_requests_we_accept_h11_accepts_the_same(generated, where, byte, how):
    data = generated[0]
    i = where % len(data)
    if how == "replace":
        data = data[:i] + bytes([byte]) + data[i + 1 :]
    elif how == "insert":
        data = data[:i] + bytes([byte]) + data[i:]
    else:
        data = data[:i] + data[i + 1 :]
    ours = _http.parse_request(data)
    if ours["consumed"] > 0 and not data.startswith(b"\r\n"):
        assert_request_matches_h11(ours, data[: ours["consumed"]])


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(data):
    r = _http.parse_request(data)
    assert r["consumed"] >= 0 or r["error"] in {400, 414, 417, 431, 501, 505}
    r = _http.parse_response(data)
    assert r["consumed"] >= 0 or r["error"] == 502
    _payload, consumed, _done = _http.dechunk(data)
    assert consumed >= -1


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"GET",
                b" ",
                b"/",
                b"HTTP/1.1",
                b"\r\n",
                b"\n",
                b"\r",
                b"Host",
                b":",
                b"a",
                b"Content-Length",
                b"Transfer-Encoding",
                b"chunked",
                b"0",
                b"\x00",
                b"\t",
                b",",
                b"HTTP/1.0",
                b"Connection",
                b"close",
            ]
        ),
        max_size=40,
    )
)
def test_http_shaped_noise_is_answered_like_h11_or_refused(parts):
    data = b"".join(parts)
    ours = _http.parse_request(data)
    assert ours["consumed"] >= 0 or ours["error"] in {400, 414, 417, 431, 501, 505}
    if ours["consumed"] > 0 and not data.startswith(b"\r\n"):
        assert_request_matches_h11(ours, data[: ours["consumed"]])


FIELD_BYTES = {9} | set(range(0x20, 0x7F)) | set(range(0x80, 0x100))


@pytest.mark.parametrize("pos", range(0, 18))
def test_every_byte_at_every_position_of_a_value(pos):
    # the value scan reads eight bytes at a time: check each byte in each lane
    for byte in range(256):
        value = bytearray(b"abcdefghijklmnopqr")
        value[pos] = byte
        data = b"GET / HTTP/1.1\r\nHost: a\r\nX: " + bytes(value) + b"\r\n\r\n"
        r = _http.parse_request(data)
        if byte in FIELD_BYTES:
            assert r["error"] is None, byte
        else:
            assert r["error"] == 400, byte


@pytest.mark.parametrize("pos", range(1, 18))
def test_every_byte_at_every_position_of_a_target(pos):
    for byte in range(256):
        target = bytearray(b"/abcdefghijklmnopq")
        target[pos] = byte
        r = _http.parse_request(b"GET " + bytes(target) + b" HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (r["error"] is None) == (0x21 <= byte <= 0x7E), byte
