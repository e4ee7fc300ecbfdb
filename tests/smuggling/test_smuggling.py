"""Replays the smuggling corpus (cases.py) through a running proxy to a recording backend.

Every case is either refused (4xx/501/505, connection closed, nothing of it reaches the backend) or
forwarded as exactly one clean request per client request: the bytes the backend recorded are parsed by
h11, must hold nothing but well-framed requests, and must carry the method, target and body a correct
proxy would send.

A streaming proxy sends a request's head before it has seen the body, so a body whose framing turns out
bad (a chunk-size trick) can only be refused after its head went out: then the backend may have received
a clean prefix of that one request, and the proxy must have closed that upstream connection, so the
backend can never complete it or read anything after it.
"""

import os
import sys

import h11
import pytest

sys.path.insert(0, os.path.dirname(__file__))

from cases import CASES  # noqa: E402
from helpers.checks import REFUSAL_STATUSES, fields  # noqa: E402
from helpers.config import proxy_config  # noqa: E402
from helpers.http1 import ConnectionClosed  # noqa: E402
from helpers.running import settle  # noqa: E402


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_smuggling_case(case, proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, timeouts={"client_header": "2s", "client_body": "2s"}))
    c = p.client()
    c.send(case.data)
    forwarded = []
    for i, expect in enumerate(case.expect):
        kind = expect[0]
        try:
            r = c.response()
        except ConnectionClosed as e:
            raise AssertionError(
                f"request {i}: connection closed without a response ({e.args[0][:200]!r})"
            ) from None
        if r.status in REFUSAL_STATUSES:
            assert kind in ("refuse", "either"), f"request {i} refused with {r.status}, expected it forwarded"
            # refused: the connection closes after the error response (nothing after it is read)
            assert c.closed(), "connection left open after a refusal"
            break
        assert kind != "refuse", (
            f"request {i} answered {r.status} from {r.header('x-backend')}, expected a refusal"
        )
        assert r.status == 200 and r.header("x-backend") == b"b0", r.raw[:300]
        forwarded.append(expect[1:])
    refused = len(forwarded) < len(case.expect)
    settle(p, [b])
    conns = b.messages()  # h11-parsed; any malformed byte fails here
    received = [r for rec in conns for r in rec.requests]
    got = [(req.method, req.target, body) for req, body, _ in received]
    assert got == forwarded
    partial = [rec for rec in conns if rec.partial is not None]
    if partial:
        assert refused and len(partial) == 1, (
            f"incomplete requests at the backend: {[r.data for r in partial]}"
        )
        assert partial[0].closed, "a refused request's upstream connection was left open"
        assert isinstance(partial[0].partial, h11.Request), partial[0].partial
    for req, _, trailers in received:
        assert len(fields(req, "host")) == 1
        assert not (fields(req, "content-length") and fields(req, "transfer-encoding"))
        # RFC 9110 6.5.1: no framing or routing field arrives as a trailer
        names = {name.lower() for name, _ in trailers}
        assert not names & {b"host", b"content-length", b"transfer-encoding"}, trailers
        # only a WebSocket upgrade is ever proposed to a backend (no h2c smuggling)
        assert all(v.lower() == b"websocket" for v in fields(req, "upgrade")), fields(req, "upgrade")
