"""The test infrastructure itself, against a backend directly (no proxy): if these fail, nothing else
in test_proxy_*.py can be trusted."""

from helpers.client import Client


def test_backend_tags_records_and_counts(backends):
    (b,) = backends(1)
    with Client(b.port) as c:
        r = c.get("/")
        assert r.status == 200 and r.body == b"b0\n" and r.header("x-backend") == b"b0"
        r = c.get("/echo", method=b"POST", body=b"hello")
        assert r.body == b"hello"
    with Client(b.port) as c:
        assert c.get("/chunked/3").body == b"b0 chunk 0\nb0 chunk 1\nb0 chunk 2\n"
    assert b.connections() == 2
    reqs = b.requests()
    assert [r.target for r, _, _ in reqs[0]] == [b"/", b"/echo"]
    assert reqs[0][1][1] == b"hello"


def test_backend_special_paths(backends):
    (b,) = backends(1)
    with Client(b.port) as c:
        r = c.get("/trailers")
        assert r.body == b"hello world" and r.trailers == [(b"X-Checksum", b"abc123")]
        assert c.get("/status/204").status == 204
        assert c.get("/head-test", method=b"HEAD").header("content-length") == b"10"
        assert c.get("/bytes/1000000").body[:3] == b"\x00\x01\x02"
        r = c.get("/103")
        assert [i.status for i in r.informational] == [103] and r.status == 200
    with Client(b.port) as c:
        assert c.get("/noclose").body.count(b"close-delimited") == 3
    with Client(b.port) as c:
        c.send(b"GET /drop HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.closed()
