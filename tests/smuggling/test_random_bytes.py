"""Random and mutated requests never crash a worker: worker PIDs stay the same, the proxy still answers,
and (fixture) no connection is left open. Deterministic seeds, so a failure can be replayed."""

import random
import socket

from helpers.config import proxy_config
from helpers.http1 import connect

SEEDS = [
    b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n",
    b"GET http://app.test/a?b=c HTTP/1.1\r\nHost: app.test\r\nAccept: */*\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"HEAD /head-test HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"PUT /echo HTTP/1.1\r\nHost: app.test\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
]
INTERESTING = [
    b"\r",
    b"\n",
    b"\r\n",
    b"\x00",
    b" ",
    b"\t",
    b":",
    b",",
    b";",
    b"0",
    b"-",
    b"f",
    b"\x7f",
    b"\xff",
]


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(data) + 1)
        op = rng.randrange(5)
        if op == 0 and i < len(data):
            data[i : i + 1] = rng.choice(INTERESTING)
        elif op == 1:
            data[i:i] = rng.choice(INTERESTING)
        elif op == 2 and i < len(data):
            del data[i : i + rng.randint(1, 8)]
        elif op == 3:
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        else:
            # repeat a line: duplicate fields are a classic
            lines = bytes(data).split(b"\r\n")
            j = rng.randrange(len(lines))
            lines.insert(j, lines[j])
            data = bytearray(b"\r\n".join(lines))
    return bytes(data)


def corpus(n, seed):
    rng = random.Random(seed)
    out = []
    for k in range(n):
        if k % 5 == 0:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 300))))
        else:
            base = rng.choice(SEEDS)
            out.append(mutate(rng, base * rng.randint(1, 3)))
    return out


def blast(port, batch):
    """Send each input on its own connection, half-close, and read whatever comes back until close."""
    socks = []
    for data in batch:
        s = connect(port, timeout=15)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the proxy may already have refused and reset
        socks.append(s)
    for s in socks:
        try:
            while s.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            s.close()


def test_random_and_mutated_requests_never_crash_a_worker(proxy, backends):
    (b,) = backends(1)
    p = proxy(proxy_config({"app": [b]}, workers=2, timeouts={"client_header": "2s", "client_body": "2s"}))
    workers = p.worker_pids()
    inputs = corpus(400, seed=20241129)
    for i in range(0, len(inputs), 40):
        blast(p.port, inputs[i : i + 40])
        p.connections_made += 40
        assert p.worker_pids() == workers, f"a worker died within inputs {i}..{i + 39}"
    for _ in range(4):
        with p.client() as c:
            r = c.get("/")
            assert r.status == 200 and r.body == b"b0\n"
    assert p.worker_pids() == workers
