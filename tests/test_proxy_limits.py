"""End-to-end: limits (431, 414, 413), client timeouts (408, keep-alive idle), upstream failures
(next server, 502, 504). Error responses are small, well-formed, and close the connection."""

import socket

import pytest
from helpers import procs
from helpers.config import proxy_config
from helpers.running import free_port, settle, wait_closed_backend_side


def assert_refused(c, status):
    """A small well-formed error response, then the connection closes."""
    r = c.response()
    assert r.status == status, r.raw[:300]
    assert int(r.header("content-length")) == len(r.body) < 1024
    assert r.has_token("connection", "close")
    assert c.closed()
    return r


REFUSALS = [
    # (name, request, status) -- RFC 9112 / RFC 9110 sections say which status
    ("version_2_0", b"GET / HTTP/2.0\r\nHost: app.test\r\n\r\n", 505),  # 9110 15.6.6
    ("missing_host", b"GET / HTTP/1.1\r\n\r\n", 400),  # 9112 3.2
    ("duplicate_host", b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n", 400),  # 9112 3.2
    (
        "cl_and_te",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    (
        "chunked_not_final",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        400,
    ),  # 9112 6.3
    (
        "unknown_coding",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
    ),  # 9112 6.1
    (
        "bad_content_length",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 1x\r\n\r\nx",
        400,
    ),  # 9112 6.3
    ("obs_fold", b"GET / HTTP/1.1\r\nHost: a.test\r\nX-A: 1\r\n 2\r\n\r\n", 400),  # 9112 5.2
    ("space_before_colon", b"GET / HTTP/1.1\r\nHost : a.test\r\n\r\n", 400),  # 9112 5.1
    (
        "unknown_expectation",
        b"POST / HTTP/1.1\r\nHost: a.test\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\nx",
        417,
    ),  # 9110 10.1.1
]


@pytest.mark.parametrize("data, status", [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_refused_with_the_right_status(proxy, backends, data, status):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}))
    c = p.client()
    c.send(data)
    assert_refused(c, status)
    assert b.connections() == 0


def test_head_too_large_431(proxy, backends, workers):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=workers, limits={"max_head_size": 4096}))
    c = p.client()
    c.send(b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n")
    assert_refused(c, 431)
    # within the limit it passes
    assert p.client().get("/", headers=["X-Big: " + "a" * 3000]).status == 200
    assert b.connections() == 1


def test_too_many_headers_431(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, limits={"max_headers": 10}))
    c = p.client()
    c.send(
        b"GET / HTTP/1.1\r\nHost: app.test\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(20)) + b"\r\n"
    )
    assert_refused(c, 431)
    assert p.client().get("/", headers=[f"X-H{i}: v" for i in range(5)]).status == 200


def test_uri_too_long_414(proxy, backends, workers):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=workers, limits={"max_uri_size": 1024}))
    c = p.client()
    c.send(b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert_refused(c, 414)
    assert b.connections() == 0


def test_body_too_large_413(proxy, backends, workers):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=workers, limits={"max_body_size": 1000}))
    c = p.client()
    c.send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2000\r\n\r\n")
    assert_refused(c, 413)
    assert p.client().get("/echo", method=b"POST", body=b"y" * 1000).body == b"y" * 1000
    assert b.connections() == 1


def test_client_header_timeout_408(proxy, backends, workers):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=workers, timeouts={"client_header": "1s"}))
    c = p.client()
    c.send(b"GET / HTTP/1.1\r\nHost: app.te")
    assert_refused(c, 408)
    assert b.connections() == 0


def test_client_body_timeout_408(proxy, backends, workers):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=workers, timeouts={"client_body": "1s"}))
    c = p.client()
    c.send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n0123456789")
    assert_refused(c, 408)
    # the half-sent request must not leave its upstream connection behind
    settle(p, [b])
    assert b.open_connections() == 0


def test_keepalive_idle_timeout_closes_quietly(proxy, backends, workers):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=workers, timeouts={"keepalive": "1s"}))
    c = p.client()
    assert c.get("/").status == 200
    # an idle keep-alive connection is closed without a response a client could take for its next one
    assert c.read_until_close() == b""


def test_dead_server_skipped_for_the_next(proxy, backends, workers):
    (b,) = backends(1)
    dead = f"127.0.0.1:{free_port()}"
    p = proxy(proxy_config({"app": [dead, b]}, workers=workers))
    c = p.client()
    for _ in range(6):
        r = c.get("/")
        assert r.status == 200 and r.header("x-backend") == b"b0"
    with p.client() as c2:
        assert c2.get("/echo", method=b"POST", body=b"abc").body == b"abc"


def test_all_servers_dead_502(proxy, backends, workers):
    dead = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    p = proxy(proxy_config({"app": dead}, workers=workers))
    r = p.client().get("/")
    assert r.status == 502
    assert int(r.header("content-length")) == len(r.body)


def test_upstream_read_timeout_504(proxy, backends, workers):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=workers, timeouts={"upstream_read": "1s"}))
    c = p.client()
    r = c.get("/slow/4000")
    assert r.status == 504
    assert int(r.header("content-length")) == len(r.body)
    # the late backend is not kept: its connection is closed, and the next request uses a fresh one
    if not r.has_token("connection", "close"):
        assert c.get("/").body == b"b0\n"


def test_upstream_keepalive_pool_idle_timeout(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, upstream_options={"keepalive_timeout": "1s"}))
    assert p.client().get("/").status == 200
    # the idle pooled connection is closed by the proxy after keepalive_timeout
    wait_closed_backend_side(b)
    assert p.client().get("/").status == 200
    assert b.connections() == 2


@pytest.fixture
def blackhole():
    """An address whose connect() hangs: a listener that never accepts, its accept queue filled, so the
    kernel drops further SYNs (a connect timeout without leaving 127.0.0.1)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    # the queue holds backlog + 1 connections; connect until one no longer completes
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(listener.getsockname())
        fillers.append(s)
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    for s in fillers:
        s.close()
    listener.close()


def test_upstream_connect_timeout_moves_to_next_server(proxy, backends, blackhole):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [blackhole, b]}, timeouts={"upstream_connect": "1s"}))
    c = p.client()
    for _ in range(3):
        r = c.get("/")
        assert r.status == 200 and r.header("x-backend") == b"b0"


def test_upstream_connect_timeout_504(proxy, backends, blackhole):
    p = proxy(proxy_config({"app": [blackhole]}, timeouts={"upstream_connect": "1s"}))
    r = p.client().get("/")
    assert r.status == 504


def test_chunked_body_over_limit_413(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, limits={"max_body_size": 1000}))
    c = p.client()
    c.send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n")
    c.send(b"258\r\n" + b"a" * 600 + b"\r\n" + b"258\r\n" + b"b" * 600 + b"\r\n0\r\n\r\n")
    assert_refused(c, 413)
    settle(p, [b])
    # the head may have gone out before the body grew too large; then that upstream connection is closed
    # and the backend never got a complete request
    for rec in b.messages():
        assert rec.requests == []
        assert rec.closed


def test_upstream_pool_size_limit(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, upstream_options={"keepalive": 1}))
    clients = [p.client() for _ in range(3)]
    # three requests in flight at once need three upstream connections
    for c in clients:
        c.send(b"GET /slow/300 HTTP/1.1\r\nHost: app.test\r\n\r\n")
    for c in clients:
        assert c.response().status == 200
    assert b.connections() == 3
    # afterwards the pool keeps at most one of them
    procs.wait_for(lambda: b.open_connections() == 1, message="pool trimmed to keepalive = 1")
    procs.wait_for(lambda: p.total("backend_idle") == 1, message="one idle upstream connection")
