"""The filter chain under load: a body-transforming filter (the upper-casing body hook of test_hooks_e2e)
on 100 MB responses, for a client that reads slowly at first (back-pressure: the worker holds one piece,
not the body) and for an HTTP/1.0 client; the worker's RSS must stay bounded throughout."""

import time

import pytest
from helpers import procs
from test_hooks_e2e import BLOCK, hooked  # noqa: F401 (hooked: the fixture)

MB = 1 << 20
RSS_LIMIT_KIB = 50 * 1024
UPPER = BLOCK.upper()           # the backend repeats BLOCK; the hook upper-cases it


@pytest.fixture
def worker(hooked):  # noqa: F811 (the imported fixture, by name)
    """(proxy, worker pid) of test_hooks_e2e's hooked proxy (one worker, the routes of its ROUTES)."""
    p, _, _ = hooked
    (pid,) = p.worker_pids()
    return p, pid


class BodyCheck:
    """Compares a streamed body with UPPER repeated, piece by piece, without keeping it."""

    def __init__(self):
        self.n = 0

    def feed(self, data):
        view = memoryview(data)
        while view:
            off = self.n % len(UPPER)
            take = min(len(view), len(UPPER) - off)
            assert view[:take] == UPPER[off:off + take], f"body differs near byte {self.n}"
            self.n += take
            view = view[take:]


def read_chunked(c, check, on_read):
    """Decode a chunked body from the client's socket into check; returns when the last chunk is read."""
    r = c.reader
    while True:
        line = r.read_until(b"\r\n")
        size = int(line[:-2].split(b";")[0], 16)
        if size == 0:
            assert r.read_until(b"\r\n") == b"\r\n"      # no trailers after a re-framed body
            return
        left = size
        while left:
            if not r.buf:
                r.fill(r._deadline())
            piece = bytes(r.buf[:left])
            del r.buf[:len(piece)]
            check.feed(piece)
            left -= len(piece)
            on_read()
        assert r.read_exact(2) == b"\r\n"


def test_a_100mb_body_through_a_transforming_filter_to_a_slow_reader(worker):
    p, pid = worker
    c = p.client(timeout=60)
    assert c.get("/", host="body.test").body == b"B0\n"
    base = procs.rss_kib(pid)
    peak = [base]
    c.send(b"GET /chunked-bytes/%d HTTP/1.1\r\nHost: body.test\r\n\r\n" % (100 * MB))
    head = c.reader.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked\r\n" in head.lower()
    # a slow reader first: the proxy must wait for it, holding one piece, not the body
    time.sleep(1.0)
    peak[0] = max(peak[0], procs.rss_kib(pid))
    reads = [0]

    def on_read():
        reads[0] += 1
        if reads[0] % 200 == 0:
            peak[0] = max(peak[0], procs.rss_kib(pid))

    check = BodyCheck()
    read_chunked(c, check, on_read)
    assert check.n == 100 * MB
    peak[0] = max(peak[0], procs.rss_kib(pid))
    assert peak[0] - base < RSS_LIMIT_KIB, f"worker RSS grew by {(peak[0] - base) // 1024} MiB"
    assert c.get("/", host="body.test").body == b"B0\n"        # and the connection goes on


def test_a_100mb_content_length_body_reframed_close_delimited_for_http10(worker):
    p, pid = worker
    c = p.client(timeout=60)
    base = procs.rss_kib(pid)
    peak = base
    c.send(b"GET /bytes/%d HTTP/1.0\r\nHost: body.test\r\n\r\n" % (100 * MB))
    head = c.reader.read_until(b"\r\n\r\n").lower()
    assert head.startswith(b"http/1.1 200") and b"content-length" not in head
    assert b"transfer-encoding" not in head and b"connection: close" in head
    check = BodyCheck()
    check.feed(bytes(c.reader.buf))
    c.reader.buf.clear()
    buf = bytearray(MB)
    i = 0
    while True:
        n = c.sock.recv_into(buf)
        if not n:
            break
        check.feed(memoryview(buf)[:n])
        i += 1
        if i % 64 == 0:
            peak = max(peak, procs.rss_kib(pid))
    assert check.n == 100 * MB
    assert peak - base < RSS_LIMIT_KIB, f"worker RSS grew by {(peak - base) // 1024} MiB"
