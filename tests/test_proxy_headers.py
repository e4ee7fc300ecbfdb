"""End-to-end: header rewriting, checked on the bytes the backend received and the client got.

RFC 9110 section 7.6.1 (hop-by-hop fields and Connection), the de-facto X-Forwarded-* fields, RFC 7239.
"""

from helpers.checks import field_names, fields
from helpers.config import proxy_config


def test_hop_by_hop_request_fields_removed(proxy, backends, workers):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=workers))
    c = p.client()
    r = c.get(
        "/",
        headers=[
            "Connection: keep-alive, X-Secret-Hop",
            "X-Secret-Hop: must-not-pass",
            "Keep-Alive: timeout=300",
            "Proxy-Connection: keep-alive",
            "TE: trailers",
            "Upgrade: h2c",
            "Proxy-Authorization: Basic Zm9vOmJhcg==",
            "X-End-To-End: kept",
        ],
    )
    assert r.status == 200
    ((req, _, _),) = b.all_requests()
    names = field_names(req)
    for hop in (
        b"x-secret-hop",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"upgrade",
        b"proxy-authorization",
    ):
        assert hop not in names, hop
    for value in fields(req, "connection"):
        assert b"x-secret-hop" not in value.lower()
    assert fields(req, "x-end-to-end") == [b"kept"]
    assert fields(req, "host") == [b"app.test"]


def test_hop_by_hop_response_fields_removed(proxy, backends, workers):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=workers))
    r = p.client().get("/hop")
    assert r.status == 200 and r.body == b"b0 hop\n"
    for hop in ("x-hop-secret", "keep-alive", "proxy-authenticate"):
        assert r.header(hop) is None, hop
    assert not r.has_token("connection", "x-hop-secret")
    assert r.header("x-end-to-end") == b"kept"


def test_x_forwarded_fields(proxy, backends, workers):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=workers))
    c = p.client()
    c.get("/")
    c.get("/", headers=["X-Forwarded-For: 10.1.1.1"])
    c.get("/", headers=["X-Forwarded-For: 10.1.1.1", "X-Forwarded-For: 10.2.2.2, 10.3.3.3"])
    c.get("/", host="shop.test", headers=["X-Forwarded-Proto: https", "X-Forwarded-Host: evil.test"])
    r1, r2, r3, r4 = (req for req, _, _ in b.all_requests())
    assert fields(r1, "x-forwarded-for") == [b"127.0.0.1"]
    assert fields(r2, "x-forwarded-for") == [b"10.1.1.1, 127.0.0.1"]
    assert fields(r3, "x-forwarded-for") == [b"10.1.1.1, 10.2.2.2, 10.3.3.3, 127.0.0.1"]
    assert fields(r1, "x-forwarded-proto") == [b"http"]
    assert fields(r1, "x-forwarded-host") == [b"app.test"]
    # the client's claims are replaced, not passed on
    assert fields(r4, "x-forwarded-proto") == [b"http"]
    assert fields(r4, "x-forwarded-host") == [b"shop.test"]
    assert not fields(r1, "forwarded")


def test_forwarded_when_enabled(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, server={"forwarded": True}))
    p.client().get("/")
    ((req, _, _),) = b.all_requests()
    (value,) = fields(req, "forwarded")
    params = {
        k.strip().lower(): v.strip() for k, _, v in (part.partition(b"=") for part in value.split(b";"))
    }
    assert params[b"for"] in (b"127.0.0.1", b'"127.0.0.1"')
    assert fields(req, "x-forwarded-for") == [b"127.0.0.1"]


def test_server_header_dropped(proxy, backends, workers):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=workers, server={"server_header": ""}))
    r = p.client().get("/server")
    assert r.status == 200 and r.header("server") is None


def test_server_header_replaced(proxy, backends, workers):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=workers, server={"server_header": "fastproxy"}))
    c = p.client()
    for path in ("/server", "/chunked/1", "/status/204"):
        r = c.get(path)
        assert r.header_all("server") == [b"fastproxy"], path
