"""Request buffering and the minimum transfer rate, through a running `fastproxy serve`.

A request body is read whole before a backend is picked (route request_buffering, on by default): in the
connection's buffer when it fits, else in an unlinked file of [limits] spool_dir; a route with
request_buffering = false streams it. A client that keeps less than [limits] min_rate bytes/s once
[timeouts] rate_grace has passed is answered 408 (head or body), and none of that reaches a backend.
"""

import os
import time

from helpers import procs
from helpers.config import proxy_config
from helpers.running import free_port

MB = 1 << 20


def answered(c, wait):
    """What the proxy has sent on c so far (b"" if it closed silently), or None if nothing came in wait s."""
    try:
        c.reader.fill(time.monotonic() + wait)
    except TimeoutError:
        return None
    return bytes(c.reader.buf)


def body_of(n):
    return bytes((i * 7) & 0xFF for i in range(256)) * (n // 256) + b"x" * (n % 256)


def test_a_body_is_read_whole_before_a_backend_sees_the_request(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}))
    c = p.client()
    body = b"hello, slowly"
    c.send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:5])
    time.sleep(0.5)
    assert b.connections() == 0, "the backend was picked before the body was in"
    c.send(body[5:])
    r = c.response()
    assert r.status == 200 and r.body == body
    assert b.connections() == 1


def test_a_route_without_buffering_streams_the_body(proxy, backends):
    (b,) = backends(1)
    text = proxy_config({"app": [b]}).replace('upstream = "app"\n', 'upstream = "app"\nrequest_buffering = false\n')
    p = proxy(text)
    c = p.client()
    c.send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10\r\n\r\nhello")
    procs.wait_for(lambda: b.connections() == 1, timeout=5, message="the backend to see the streamed request")
    c.send(b"world")
    assert c.response().body == b"helloworld"


def test_a_body_larger_than_the_buffer_goes_through_a_file_and_reaches_the_backend_whole(
        proxy, backends, tmp_path):
    (b,) = backends(1)
    spool = tmp_path / "spool"
    spool.mkdir()
    p = proxy(proxy_config({"app": [b]}, limits={"spool_dir": str(spool)}))
    c = p.client(timeout=30)
    body = body_of(5 * MB + 123)
    head = b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % len(body)
    c.send(head + body[: 3 * MB])
    time.sleep(0.3)
    assert b.connections() == 0, "the backend was picked before the body was in"
    assert os.listdir(spool) == [], "the spooled body must be an unlinked file"
    c.send(body[3 * MB:])
    r = c.response()
    assert r.status == 200 and len(r.body) == len(body) and r.body == body
    # the connection goes on, and a pipelined request after a spooled body is served in order
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(part), part)
                       for part in (body[i:min(i + 70000, 2 * MB)] for i in range(0, 2 * MB, 70000))) + b"0\r\n\r\n"
    c.send(b"PUT /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked
           + b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
    r = c.response()
    assert r.status == 200 and r.body == body[:2 * MB]
    assert c.response().body == b"b0\n"
    assert os.listdir(spool) == []


def test_a_spooled_body_is_replayed_to_the_next_server_when_the_first_refuses(proxy, backends):
    (b,) = backends(1)
    dead = f"127.0.0.1:{free_port()}"
    p = proxy(proxy_config({"app": [dead, b]}))     # round robin: half the requests try the dead one first
    body = body_of(1 * MB)
    for _ in range(2):          # one of the two goes to the dead server first
        c = p.client(timeout=30)
        r = c.request(b"PUT /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        assert r.status == 200 and r.body == body
    assert p.counters()["errors"]["server_connect"] >= 1, "no request tried the dead server first"


def test_a_client_dribbling_its_head_is_cut_off_by_the_minimum_rate(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, limits={"min_rate": 100}, timeouts={"rate_grace": "1s",
                                                                            "client_header": "60s"}))
    slow = p.client(timeout=10)
    start = time.monotonic()
    head = b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Pad: " + b"a" * 200
    answer = b""
    for byte in head:
        try:
            slow.send(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        got = answered(slow, 0.1)
        if got is not None:
            answer = got
            break
    elapsed = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert elapsed < 5, f"cut off after {elapsed:.1f} s (the grace is 1 s, then 100 B/s)"
    assert p.client().get("/").status == 200          # a normal client meanwhile is fine
    assert b.connections() == 1


def test_a_client_dribbling_its_body_gets_408_and_no_backend_sees_it(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, limits={"min_rate": 1000}, timeouts={"rate_grace": "1s"}))
    slow = p.client(timeout=10)
    slow.send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100000\r\n\r\n")
    start = time.monotonic()
    answer = b""
    while time.monotonic() - start < 8:
        try:
            slow.send(b"z" * 10)
        except (BrokenPipeError, ConnectionResetError):
            break
        got = answered(slow, 0.2)
        if got is not None:
            answer = got
            break
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - start < 5
    assert b.connections() == 0
    counters = p.counters()
    assert counters["errors"]["client_timeout"] >= 1 and counters["errors"]["server_timeout"] == 0


def test_a_body_over_the_spool_limit_is_streamed(proxy, backends, tmp_path):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, limits={"spool_max_size": "100k"}))
    c = p.client(timeout=30)
    body = body_of(1 * MB)
    c.send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:200000])
    procs.wait_for(lambda: b.connections() == 1, timeout=5, message="the backend to see the streamed request")
    c.send(body[200000:])
    assert c.response().body == body
    # chunked: past the limit it is refused (the part already in the file cannot be streamed back)
    c = p.client(timeout=30)
    part = b"y" * 60000
    r = c.request(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                  + b"%x\r\n%s\r\n" % (len(part), part) * 4 + b"0\r\n\r\n")
    assert r.status == 413
    assert b.connections() == 1
