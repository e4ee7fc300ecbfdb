"""End-to-end: requests through a running `fastproxy serve` to recording backends (issue 2, "The core").

Each test runs with one and with two workers. What the backend received is checked on its raw bytes,
parsed by h11.
"""

from helpers.checks import fields
from helpers.config import proxy_config
from helpers.running import settle, wait_closed_backend_side


def start(proxy, backends, workers, n=1, **kw):
    bs = backends(n)
    return proxy(proxy_config({"app": bs}, workers=workers, **kw)), bs


def test_get_and_post_keep_alive(proxy, backends, workers):
    p, (b,) = start(proxy, backends, workers)
    c = p.client()
    for _ in range(3):
        r = c.get("/")
        assert r.status == 200 and r.body == b"b0\n" and r.header("x-backend") == b"b0"
        assert not r.has_token("connection", "close")
    r = c.get("/echo", method=b"POST", body=b"x" * 1000)
    assert r.status == 200 and r.body == b"x" * 1000
    reqs = b.all_requests()
    assert [(r.method, r.target) for r, _, _ in reqs] == [(b"GET", b"/")] * 3 + [(b"POST", b"/echo")]
    assert reqs[-1][1] == b"x" * 1000


def test_http10_client(proxy, backends, workers):
    p, (b,) = start(proxy, backends, workers)
    # HTTP/1.0 without keep-alive: one response, then the proxy closes (RFC 9112 section 9.3)
    c = p.client()
    c.send(b"GET / HTTP/1.0\r\n\r\n")
    r = c.response()
    assert r.status == 200 and r.body == b"b0\n"
    assert c.closed()
    # HTTP/1.0 with keep-alive: stays open, and says so
    c = p.client()
    for _ in range(2):
        r = c.get("/", version=b"1.0", headers=["Connection: keep-alive"])
        assert r.status == 200 and r.body == b"b0\n"
        assert r.has_token("connection", "keep-alive")
    # a chunked backend response reaches a 1.0 client without Transfer-Encoding (RFC 9112 section 6.1)
    c = p.client()
    c.send(b"GET /chunked/3 HTTP/1.0\r\nHost: app.test\r\n\r\n")
    r = c.response()
    assert r.header("transfer-encoding") is None
    assert r.body == b"b0 chunk 0\nb0 chunk 1\nb0 chunk 2\n"


def test_absolute_form_target(proxy, backends, workers):
    p, (b,) = start(proxy, backends, workers)
    c = p.client()
    r = c.request(b"GET http://app.test/echo-head?x=1 HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert r.status == 200
    # a conflicting Host is replaced by the target's authority (RFC 9112 section 3.2.2)
    r = c.request(b"GET http://real.test/ HTTP/1.1\r\nHost: other.test\r\n\r\n")
    assert r.status == 200
    (first, _, _), (second, _, _) = b.all_requests()
    assert first.target == b"/echo-head?x=1" and fields(first, "host") == [b"app.test"]
    assert second.target == b"/" and fields(second, "host") == [b"real.test"]


def test_pipelined_requests_answered_in_order(proxy, backends, workers):
    p, (b,) = start(proxy, backends, workers)
    c = p.client()
    c.send(
        b"GET /slow/200 HTTP/1.1\r\nHost: app.test\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello"
        b"HEAD /head-test HTTP/1.1\r\nHost: app.test\r\n\r\n"
        b"GET /chunked/2 HTTP/1.1\r\nHost: app.test\r\n\r\n"
    )
    assert c.response().body == b"b0 slow\n"
    assert c.response().body == b"hello"
    r = c.response(b"HEAD")
    assert r.status == 200 and r.header("content-length") == b"10"
    assert c.response().body == b"b0 chunk 0\nb0 chunk 1\n"
    assert [r.target for r, _, _ in b.all_requests()] == [
        b"/slow/200",
        b"/echo",
        b"/head-test",
        b"/chunked/2",
    ]


def test_sequential_requests_share_one_upstream_connection(proxy, backends, workers):
    p, (b,) = start(proxy, backends, workers)
    c = p.client()
    for i in range(20):
        assert c.get(f"/n{i}").status == 200
    assert b.connections() == 1
    assert len(b.requests()[0]) == 20


def test_pool_reused_across_client_connections(proxy, backends):
    p, (b,) = start(proxy, backends, 1)
    for _ in range(5):
        with p.client() as c:
            assert c.get("/").status == 200
    assert b.connections() == 1


def test_stale_pooled_connection_closed_by_backend(proxy, backends, workers):
    p, (b,) = start(proxy, backends, workers)
    c = p.client()
    assert c.get("/close-after").status == 200
    # the backend has closed the connection the proxy keeps in its pool
    wait_closed_backend_side(b)
    r = c.get("/")
    assert r.status == 200 and r.body == b"b0\n"
    assert b.connections() == 2


def test_pooled_connection_dying_before_response_is_retried(proxy, backends, workers):
    p, (b,) = start(proxy, backends, workers)
    c = p.client()
    assert c.get("/drop-next").status == 200
    # the backend reads the next request on that connection and closes without a byte of response:
    # a GET is idempotent, so the proxy sends it again on a fresh connection
    r = c.get("/again")
    assert r.status == 200 and r.body == b"b0\n"
    assert [r.target for r, _, _ in b.all_requests()] == [b"/drop-next", b"/again", b"/again"]


def test_expect_100_continue(proxy, backends, workers):
    p, (b,) = start(proxy, backends, workers)
    c = p.client()
    c.send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n")
    interim = c.reader.read_until(b"\r\n\r\n")
    assert interim.startswith(b"HTTP/1.1 100 ")
    c.send(b"hello world")
    r = c.response()
    assert r.status == 200 and r.body == b"hello world"
    ((req, body, _),) = b.all_requests()
    assert body == b"hello world"


def test_head_204_304_have_no_body(proxy, backends, workers):
    p, (b,) = start(proxy, backends, workers)
    c = p.client()
    r = c.get("/head-test", method=b"HEAD")
    assert r.status == 200 and r.header("content-length") == b"10"
    for status in (204, 304):
        r = c.get(f"/status/{status}")
        assert r.status == status and r.body == b""
    # had any body byte leaked after those heads, this response would be garbled
    r = c.get("/head-test")
    assert r.status == 200 and r.body == b"head-test\n"


def test_1xx_forwarded_before_final_response(proxy, backends, workers):
    p, (b,) = start(proxy, backends, workers)
    c = p.client()
    r = c.get("/103")
    # RFC 9110 section 15.2: a proxy forwards 1xx responses to an HTTP/1.1 client
    assert [i.status for i in r.informational] == [103]
    assert r.informational[0].header("link") == b"</style.css>; rel=preload"
    assert r.status == 200 and r.body == b"b0 after 1xx\n"
    r = c.get("/100")
    assert r.status == 200 and r.body == b"b0 after 1xx\n"
    assert c.get("/").body == b"b0\n"


def test_connection_close_from_client(proxy, backends, workers):
    p, (b,) = start(proxy, backends, workers)
    c = p.client()
    r = c.get("/", headers=["Connection: close"])
    assert r.status == 200 and r.has_token("connection", "close")
    assert c.closed()


def test_connection_close_from_backend(proxy, backends, workers):
    p, (b,) = start(proxy, backends, workers)
    c = p.client()
    r = c.get("/close")
    assert r.status == 200 and r.body == b"b0 close\n"
    # the backend's Connection: close concerns the upstream connection; the proxy must not reuse it
    wait_closed_backend_side(b)
    if r.has_token("connection", "close"):
        assert c.closed()
    else:
        assert c.get("/").body == b"b0\n"
        assert b.connections() == 2


def test_upgrade_becomes_a_tunnel(proxy, backends, workers):
    p, (b,) = start(proxy, backends, workers)
    c = p.client()
    c.send(b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
    r = c.response()
    assert r.status == 101 and r.header("upgrade") == b"websocket" and r.has_token("connection", "upgrade")
    c.send(b"ping 1")
    assert c.reader.read_exact(6) == b"ping 1"
    data = bytes(range(256)) * 4096  # 1 MiB, both directions at once
    c.send(data)
    assert c.reader.read_exact(len(data)) == data
    c.shutdown_write()
    assert c.read_until_close() == b""
    ((req, _, _),) = b.requests()[0]
    assert fields(req, "upgrade") == [b"websocket"]
    assert any(v.lower() == b"upgrade" for v in fields(req, "connection"))
    settle(p, [b])


def test_h2c_upgrade_is_served_as_plain_http(proxy, backends, workers):
    """Issue 8 (h2c smuggling): an Upgrade the proxy cannot tunnel safely is never forwarded. The backend's
    /ws switches to any protocol it is asked for; without Upgrade it answers 426. The request is served as
    the plain HTTP/1.1 request it also is (RFC 9110 7.8: a server may ignore Upgrade)."""
    p, (b,) = start(proxy, backends, workers)
    c = p.client()
    c.send(b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
           b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
    r = c.response()
    assert r.status == 426 and r.header("upgrade") is None
    ((req, _, _),) = b.requests()[0]
    assert fields(req, "upgrade") == [] and fields(req, "http2-settings") == []
    assert not any(b"upgrade" in v.lower() for v in fields(req, "connection"))
    settle(p, [b])


def test_non_idempotent_request_not_replayed(proxy, backends, workers):
    p, (b,) = start(proxy, backends, workers)
    c = p.client()
    assert c.get("/drop-next").status == 200
    # the backend reads this whole POST, then closes without answering: the proxy cannot know whether it
    # acted on it, so it must not send it again (RFC 9110 section 9.2.2) -- the client gets an error
    r = c.get("/once", method=b"POST", body=b"pay 100")
    assert r.status == 502
    posts = [req for req, _, _ in b.all_requests() if req.method == b"POST"]
    assert len(posts) == 1


def test_client_abort_mid_download_closes_upstream(proxy, backends, workers):
    p, (b,) = start(proxy, backends, workers)
    c = p.client()
    c.send(b"GET /bytes/1073741824 HTTP/1.1\r\nHost: app.test\r\n\r\n")
    c.reader.read_exact(1 << 20)
    c.close()
    # the rest of the gigabyte is not wanted: the proxy drops the upstream connection (the fixture also
    # checks that no connection is left open)
    wait_closed_backend_side(b)
    settle(p, [b])


def test_no_1xx_to_http10_client(proxy, backends, workers):
    p, (b,) = start(proxy, backends, workers)
    c = p.client()
    c.send(b"GET /103 HTTP/1.0\r\nHost: app.test\r\n\r\n")
    r = c.response()
    # RFC 9110 section 15.2: a server must not send a 1xx response to an HTTP/1.0 client
    assert r.informational == [] and r.status == 200 and r.body == b"b0 after 1xx\n"


def test_upgrade_declined_by_backend_stays_http(proxy, backends, workers):
    p, (b,) = start(proxy, backends, workers)
    c = p.client()
    r = c.get("/", headers=["Connection: Upgrade", "Upgrade: websocket"])
    # no 101: the exchange is an ordinary response and the connection goes on as HTTP/1.1
    assert r.status == 200 and r.body == b"b0\n"
    assert c.get("/echo", method=b"POST", body=b"still http").body == b"still http"
