"""Replays the smuggling corpus (cases.py) through a running proxy to a recording backend.

Every case is either refused (4xx/501/505, connection closed, nothing of it reaches the backend) or
forwarded as exactly one clean request per client request: the bytes the backend recorded are parsed by
h11, must hold nothing but well-framed requests, and must carry the method, target and body a correct
proxy would send.
"""

import os
import sys

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
    settle(p, [b])
    received = b.all_requests()  # h11-parsed; any malformed or leftover byte fails here
    got = [(req.method, req.target, body) for req, body, _ in received]
    assert got == forwarded
    for req, _, _ in received:
        assert len(fields(req, "host")) == 1
        assert not (fields(req, "content-length") and fields(req, "transfer-encoding"))
