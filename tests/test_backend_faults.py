"""A misbehaving backend never reaches a client as-is (issue 8), through a running `fastproxy serve`.

The backend is a raw socket (helpers/rawbackend.py) answering exactly the bytes each case scripts. What
must happen:
- a response head that cannot be trusted (invalid status line, both Content-Length and
  Transfer-Encoding, differing duplicate Content-Length, a head that never ends, 1xx without end): the
  client gets 502 (or, once a head has been sent to it, a cut connection), never those bytes;
- a body shorter than announced: the client's connection is cut (its head was sent already), it never
  waits for bytes that cannot come, and it is never reused;
- bytes after a complete response on a kept-alive connection: the client gets the response, and the
  extra bytes are never taken as the answer to a later request;
- in every case the proxy closes that backend connection (it is not pooled): the next request goes over
  a new connection, and the backend saw one request on the faulty one.

Cases that need the event loop itself to change are kept here too, not skipped: they fail until the
core does it (see the notes on each).
"""

import socket
import time

import pytest
from helpers.config import proxy_config
from helpers.http1 import ConnectionClosed
from helpers.rawbackend import OK, Close, RawBackend, endless

GET = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"


@pytest.fixture
def raw():
    started = []

    def start(scripts, **kw):
        b = RawBackend(scripts, **kw)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def start(raw, proxy, fault, **timeouts):
    rb = raw([fault])
    p = proxy(proxy_config({"app": [rb.address]},
                           timeouts={"upstream_read": "3s", "upstream_send": "3s", **timeouts}))
    return rb, p


def read_for(sock, seconds):
    """Everything the proxy sends until it closes or `seconds` pass; (bytes, closed)."""
    deadline = time.monotonic() + seconds
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
        if len(data) > 1 << 20:
            return data, False
    return data, False


def assert_not_pooled(rb, p):
    """The faulty connection was closed by the proxy, with one request on it; a new request gets a new
    connection and a clean answer."""
    conn = rb.wait_closed(0)
    assert conn.closed_by_peer or conn.closed, "the proxy kept the faulty backend connection open"
    assert len(conn.requests) == 1, f"the faulty connection was reused: {conn.requests}"
    r = p.client().get("/")
    assert r.status == 200 and r.body == b"ok\n"
    assert len(rb.conns) >= 2 and len(rb.conns[0].requests) == 1


BAD_HEADS = {
    "status-not-digits": b"HTTP/1.1 2x0 OK\r\nContent-Length: 3\r\n\r\nbad",
    "status-line-garbage": b"HELLO WORLD\r\nContent-Length: 3\r\n\r\nbad",
    "no-status-line": b"Content-Length: 3\r\n\r\nbad",
    "version-garbage": b"HTPT/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad",
    "cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nbad\r\n0\r\n\r\n",
    "differing-duplicate-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nbad!",
    "cl-list": b"HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\nbad!",
    "bare-lf-head": b"HTTP/1.1 200 OK\nContent-Length: 3\n\nbad",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-A: 1\r\n 2\r\nContent-Length: 3\r\n\r\nbad",
}


@pytest.mark.parametrize("name", list(BAD_HEADS))
def test_an_invalid_response_head_gives_502_and_the_connection_is_not_pooled(raw, proxy, name):
    rb, p = start(raw, proxy, BAD_HEADS[name])
    r = p.client().get("/")
    assert r.status == 502 and b"bad" not in r.body
    assert_not_pooled(rb, p)


def test_a_head_that_never_ends_gives_502(raw, proxy):
    rb, p = start(raw, proxy, endless(b"HTTP/1.1 200 OK\r\nX-Long: ", b"a" * 4096))
    c = p.client()
    c.send(GET)
    data, closed = read_for(c.sock, 10)
    assert data.startswith(b"HTTP/1.1 502 "), data[:200]
    assert b"aaaa" not in data
    assert_not_pooled(rb, p)


def test_endless_interim_responses_give_502(raw, proxy):
    """A backend sending 1xx forever: the proxy must stop within a bound (a count of interim responses or
    the upstream read timeout: a stream of 1xx is no progress towards a response), answer 502 if it
    sent nothing yet, or cut the client off, and close that backend connection."""
    rb, p = start(raw, proxy, endless(b"", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" * 32))
    c = p.client()
    c.send(GET)
    data, closed = read_for(c.sock, 12)
    finals = [line for line in data.split(b"\r\n") if line.startswith(b"HTTP/1.1 ") and b" 103 " not in line]
    assert closed or finals, f"still receiving interim responses after 12 s ({data.count(b' 103 ')} so far)"
    assert not finals or finals[0].startswith(b"HTTP/1.1 502 ")
    assert_not_pooled(rb, p)


def test_a_body_cut_short_by_the_backend_cuts_the_client(raw, proxy):
    rb, p = start(raw, proxy, Close(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"))
    c = p.client()
    c.send(GET)
    data, closed = read_for(c.sock, 10)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"short"), data
    assert closed, "the client waits for body bytes that will never come"
    assert_not_pooled(rb, p)


def test_a_body_shorter_than_announced_then_silence_cuts_the_client(raw, proxy):
    """The backend sends part of the body and then nothing (keeping the connection): after the upstream
    read timeout the client's connection is cut and the backend's closed."""
    rb, p = start(raw, proxy, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", upstream_read="1s")
    c = p.client()
    c.send(GET)
    data, closed = read_for(c.sock, 10)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"short"), data
    assert closed, "the client was not cut off after the upstream read timeout"
    assert_not_pooled(rb, p)


def test_a_chunked_body_cut_short_cuts_the_client(raw, proxy):
    rb, p = start(raw, proxy, Close(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n64\r\nshort"))
    c = p.client()
    c.send(GET)
    data, closed = read_for(c.sock, 10)
    assert data.startswith(b"HTTP/1.1 200 ") and closed
    assert not data.endswith(b"0\r\n\r\n"), "a cut body was completed for the client"
    assert_not_pooled(rb, p)


def test_bytes_after_a_response_are_never_an_answer(raw, proxy):
    """A response followed by more bytes on a kept-alive connection (a desynchronised or malicious
    backend): the extra bytes must not be read as the response to the next request; the connection
    is closed instead of pooled (RFC 9112 9.3: a response is complete; what follows has no request)."""
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"
    rb, p = start(raw, proxy, OK + smuggled)
    c = p.client()
    r = c.get("/")
    assert r.status == 200 and r.body == b"ok\n"
    answers = [c.get("/") for _ in range(3)]
    assert all(a.body == b"ok\n" for a in answers), [a.body for a in answers]
    assert_not_pooled(rb, p)


def test_bytes_after_a_response_sent_a_moment_later_are_never_an_answer(raw, proxy):
    """The same, with the extra bytes arriving after the response, while the connection sits in the pool."""
    smuggled = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled"

    def late_extra(conn, n):
        conn.send(OK)
        time.sleep(0.3)             # (the backend's own pacing, not synchronisation of the test)
        conn.send(smuggled)
        return True

    rb, p = start(raw, proxy, late_extra)
    c = p.client()
    assert c.get("/").body == b"ok\n"
    conn = rb.wait_closed(0)
    assert len(conn.requests) == 1
    answers = [c.get("/") for _ in range(3)]
    assert all(a.body == b"ok\n" for a in answers), [a.body for a in answers]


def test_forbidden_response_trailers_are_dropped(raw, proxy):
    """RFC 9110 6.5.1: framing, routing and response-control fields in a trailer never reach the client."""
    response = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nok\n\r\n0\r\n"
                b"Content-Length: 99\r\nX-Checksum: abc\r\nLocation: http://evil/\r\nSet-Cookie-X: 1\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
    rb, p = start(raw, proxy, response)
    r = p.client().get("/")
    assert r.status == 200 and r.body == b"ok\n"
    assert r.trailers == [(b"X-Checksum", b"abc"), (b"Set-Cookie-X", b"1")]


def test_a_backend_that_closes_before_answering_gives_502(raw, proxy):
    rb, p = start(raw, proxy, Close(b""))
    r = p.client().get("/")
    assert r.status == 502
    r = p.client().get("/")
    assert r.status == 200


def test_a_101_to_a_request_that_did_not_ask_is_502(raw, proxy):
    rb, p = start(raw, proxy, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n")
    c = p.client()
    try:
        r = c.get("/")
        assert r.status == 502
    except ConnectionClosed:
        pass
    assert_not_pooled(rb, p)


def test_raw_backend_sanity():
    rb = RawBackend([])
    try:
        with socket.create_connection(("127.0.0.1", rb.port), timeout=5) as s:
            s.sendall(GET)
            assert s.recv(100).startswith(b"HTTP/1.1 200 OK")
    finally:
        rb.stop()


def test_the_access_log_names_the_cause(raw, proxy, tmp_path):
    """The JSON access log carries the failure kind of each exchange ("" when it went well)."""
    import json

    from helpers import procs

    access = tmp_path / "access.json"
    rb = raw([BAD_HEADS["cl-and-te"]])
    p = proxy(proxy_config({"app": [rb.address]}) + f'\n[log]\naccess_log = "{access}"\naccess_format = "json"\n')
    assert p.client().get("/").status == 502
    assert p.client().get("/").status == 200
    def ours():                 # (the fixture's readiness probe has a line of its own)
        lines = [json.loads(line) for line in access.read_text().splitlines()] if access.exists() else []
        return [e for e in lines if e["method"] == "GET"]

    procs.wait_for(lambda: len(ours()) >= 2, timeout=5, message="two access log lines")
    first, second = ours()[:2]
    assert (first["status"], first["error"]) == (502, "server_bad_response")
    assert (second["status"], second["error"]) == (200, "")
