"""End-to-end: bodies streamed in both directions (Content-Length, chunked, close-delimited, trailers),
and 1 GB each way through one worker whose RSS must grow by less than 50 MB."""

import os

from helpers import procs
from helpers.config import proxy_config
from helpers.running import settle

GB = 1 << 30
RSS_LIMIT_KIB = 50 * 1024


def streaming(text):
    """The config with request_buffering = false on its routes: bodies go to the backend as they come."""
    return text.replace('upstream = "app"\n', 'upstream = "app"\nrequest_buffering = false\n')


def test_chunked_request_body_streamed(proxy, backends, workers):
    (b,) = backends(1)
    p = proxy(streaming(proxy_config({"app": [b]}, workers=workers)))
    c = p.client()
    c.send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
    # the first chunk reaches the backend before the client has sent the rest: nothing waits for the
    # whole body
    procs.wait_for(lambda: any(b"first" in data for data in b.received()), message="first chunk at backend")
    c.send(b"6;ext=1\r\nsecond\r\n0\r\nX-Req-Trailer: t1\r\n\r\n")
    r = c.response()
    assert r.status == 200 and r.body == b"firstsecond"
    ((req, body, trailers),) = b.all_requests()
    assert body == b"firstsecond"
    assert (b"x-req-trailer", b"t1") in trailers
    assert not any(n == b"content-length" for n, _ in req.headers)


def test_forbidden_request_trailers_are_dropped(proxy, backends, workers):
    """Issue 8, RFC 9110 6.5.1: framing, routing and authentication fields sent as trailers never reach the
    backend; other trailers do. Chunk extensions (BWS included, RFC 9112 7.1.1) are accepted and not passed on."""
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=workers))
    c = p.client()
    c.send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5 ; a = b\r\nfirst\r\n0\r\nContent-Length: 50\r\nHost: admin.internal\r\nX-Req-Trailer: t1\r\n"
           b"Transfer-Encoding: chunked\r\nAuthorization: Basic eA==\r\n\r\n")
    r = c.response()
    assert r.status == 200 and r.body == b"first"
    ((req, body, trailers),) = b.all_requests()
    assert body == b"first" and trailers == [(b"x-req-trailer", b"t1")]
    assert b"a = b" not in b.received()[0]


def test_chunked_response_and_trailers(proxy, backends, workers):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=workers))
    c = p.client()
    r = c.get("/chunked/50")
    assert r.body == b"".join(b"b0 chunk %d\n" % i for i in range(50))
    for _ in range(3):              # one connection: each response starts its decoder afresh
        r = c.get("/trailers")
        assert r.body == b"hello world"
        assert r.trailers == [(b"X-Checksum", b"abc123")]
    assert c.get("/").body == b"b0\n"


def test_close_delimited_response(proxy, backends, workers):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=workers))
    c = p.client()
    r = c.get("/noclose")
    assert r.status == 200
    assert r.body == b"b0 close-delimited 0\nb0 close-delimited 1\nb0 close-delimited 2\n"
    if r.header("content-length") is None and not r.has_token("transfer-encoding", "chunked"):
        # relayed close-delimited: the proxy must close to end it
        assert c.closed()
    else:
        assert c.get("/").body == b"b0\n"


def test_large_bodies_both_directions(proxy, backends, workers):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=workers))
    c = p.client()
    size = 20 << 20
    data = os.urandom(1 << 20) * 20
    c.send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % size)
    c.send(data)
    r = c.response()
    assert r.status == 200 and len(r.body) == size and r.body == data
    r = c.get(f"/chunked-bytes/{size}")
    assert len(r.body) == size


def _worker(p):
    (pid,) = p.worker_pids()
    return pid


def test_1gb_upload_bounded_memory(proxy, backends):
    (b,) = backends(1)
    p = proxy(streaming(proxy_config({"app": [b]})))
    pid = _worker(p)
    c = p.client(timeout=30)
    assert c.get("/").status == 200  # warm up: pool, buffers
    base = procs.rss_kib(pid)
    peak = base
    block = memoryview(os.urandom(1 << 20))
    c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % GB)
    for i in range(GB >> 20):
        c.sock.sendall(block)
        if i % 32 == 0:
            peak = max(peak, procs.rss_kib(pid))
    r = c.response()
    peak = max(peak, procs.rss_kib(pid))
    assert r.status == 200 and r.body == b"b0 received %d" % GB
    assert peak - base < RSS_LIMIT_KIB, f"worker RSS grew by {(peak - base) // 1024} MiB"


def test_1gb_download_bounded_memory(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}))
    pid = _worker(p)
    c = p.client(timeout=30)
    assert c.get("/").status == 200
    base = procs.rss_kib(pid)
    peak = base
    c.send(b"GET /bytes/%d HTTP/1.1\r\nHost: app.test\r\n\r\n" % GB)
    head = c.reader.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"content-length: %d\r\n" % GB in head.lower()
    # count and discard: the test process must not hold 1 GB either
    got = len(c.reader.buf)
    c.reader.buf.clear()
    buf = bytearray(1 << 20)
    i = 0
    while got < GB:
        n = c.sock.recv_into(buf)
        assert n, f"connection closed after {got} bytes"
        got += n
        i += 1
        if i % 256 == 0:
            peak = max(peak, procs.rss_kib(pid))
    assert got == GB
    peak = max(peak, procs.rss_kib(pid))
    assert peak - base < RSS_LIMIT_KIB, f"worker RSS grew by {(peak - base) // 1024} MiB"
    assert c.get("/").body == b"b0\n"


def test_chunked_download_dechunked_for_http10(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}))
    c = p.client(timeout=30)
    size = 8 << 20
    c.send(b"GET /chunked-bytes/%d HTTP/1.0\r\nHost: app.test\r\n\r\n" % size)
    r = c.response()
    assert r.header("transfer-encoding") is None
    assert len(r.body) == size
    settle(p, [b])
