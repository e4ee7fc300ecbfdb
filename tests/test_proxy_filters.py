"""The filter seams, through a running `fastproxy serve`: a route the proxy answers itself (`respond`, a
request filter) and fields added to a route's responses (`add_headers`, a response filter). Routes without
filters are untouched by them."""

from helpers.config import proxy_config

FILTERS = """
[[routes]]
host = "app.test"
upstream = "app"
add_headers = { "X-Frame-Options" = "DENY", "Strict-Transport-Security" = "max-age=63072000" }

[[routes]]
host = "app.test"
path = "/healthz"
respond = { status = 200, body = "ok\\n" }

[[routes]]
host = "app.test"
path = "/gone"
respond = { status = 410, body = "gone for good\\n", content_type = "text/plain" }
"""


def test_add_headers_on_the_routes_responses_only(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}) + FILTERS)
    c = p.client()
    r = c.get("/x")
    assert r.status == 200 and r.header("x-backend") == b"b0"
    assert r.header("x-frame-options") == b"DENY"
    assert r.header("strict-transport-security") == b"max-age=63072000"
    r = c.get("/x", host="other.test")        # the "*" "/" route has no filters
    assert r.status == 200 and r.header("x-frame-options") is None
    # chunked and HEAD responses get them too, and stay well framed on the same connection
    r = c.get("/chunked/3")
    assert r.header("x-frame-options") == b"DENY" and r.header("transfer-encoding") == b"chunked"
    r = c.get("/head-test", method=b"HEAD")
    assert r.header("x-frame-options") == b"DENY" and r.body == b""
    assert c.get("/y").status == 200
    assert b.connections() == 1               # one upstream connection for all of it


def test_respond_answers_without_a_backend_and_keeps_alive(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}) + FILTERS)
    c = p.client()
    for _ in range(3):
        r = c.get("/healthz")
        assert (r.status, r.body, r.header("content-type")) == (200, b"ok\n", b"text/plain; charset=utf-8")
        assert r.header("connection") is None  # HTTP/1.1: kept alive
    r = c.get("/gone/page", method=b"HEAD")
    assert r.status == 410 and r.header("content-length") == b"14" and r.body == b""
    r = c.get("/gone/page")
    assert (r.status, r.body, r.header("content-type")) == (410, b"gone for good\n", b"text/plain")
    assert c.get("/z").status == 200          # the same connection goes on to a backend route
    assert b.connections() == 1 and len(b.all_requests()) == 1


def test_respond_to_http10_and_to_a_request_with_a_body(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}) + FILTERS)
    c = p.client()
    r = c.get("/healthz", version=b"1.0", headers=["Connection: keep-alive"])
    assert r.status == 200 and r.header("connection") == b"keep-alive"
    r = c.get("/healthz", version=b"1.0")
    assert r.status == 200 and r.header("connection") == b"close"
    assert c.closed()
    # a body the proxy does not read: answered, then the connection is closed (cleanly, after draining)
    c = p.client()
    c.send(b"POST /gone HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello")
    r = c.response()
    assert r.status == 410 and r.header("connection") == b"close"
    assert c.closed()
    assert b.connections() == 0
