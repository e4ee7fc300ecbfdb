"""A client's fault is never charged to a backend (issue 8), through a running `fastproxy serve`.

A client that sends its request body slowly (here: a byte every 2 s, well within [timeouts] client_body)
while the proxy streams it to the backend leaves the backend waiting for the client. The proxy's upstream
timers (upstream_read, upstream_send: 1 s here) must not fire for that wait, and if anything times out
it is the client's timeout, recorded as the client's fault: the backend is not charged a failure, so a
slow-body attacker cannot make passive checks take servers out.

Both ways are checked: a route that streams the body (request_buffering = false: the core stops the
backend's timers while the exchange waits for the client), and the default, which buffers the body before
a backend is picked (nginx's proxy_request_buffering). [limits] min_rate is off here: this client is
slow on purpose, within client_body.
"""

import time

import pytest
from helpers.config import proxy_config
from test_health_e2e import servers


@pytest.mark.parametrize("buffering", [False, True], ids=["streamed", "buffered"])
def test_a_slow_request_body_is_not_charged_to_the_backend(proxy, backends, buffering):
    a, b = backends(2)
    text = proxy_config({"app": [a, b]}, limits={"min_rate": 0},
                        timeouts={"upstream_read": "1s", "upstream_send": "1s", "client_body": "30s"},
                        upstream_options={"passive": {"max_fails": 1, "fail_timeout": "30s"}})
    if not buffering:
        text = text.replace('upstream = "app"\n', 'upstream = "app"\nrequest_buffering = false\n')
    p = proxy(text)
    c = p.client(timeout=20)
    c.send(b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n\r\n")
    sent = 0
    for _ in range(3):
        time.sleep(2)           # the client's pace: the point of the test, not a synchronisation
        try:
            c.send(b"x")
            sent += 1
        except OSError:
            break
    r = c.response(b"POST")
    assert (r.status, sent) == (200, 3), f"{r.status} {r.body[:100]!r} after {sent} body bytes"
    assert r.body.endswith(b"received 3")
    rows = servers(p)
    assert all(row["errors"] == 0 and row["state"] == "up" for row in rows.values()), rows
