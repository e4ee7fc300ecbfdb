"""End-to-end: routing by host (exact, *.suffix, *) and longest path prefix; weighted round robin."""

import collections

from helpers.config import proxy_config


def test_routing_by_host_and_longest_prefix(proxy, backends, workers):
    bs = backends(5)
    upstreams = {f"u{i}": [b] for i, b in enumerate(bs)}
    routes = [
        ("*", "/", "u3"),
        ("*", "/static", "u2"),
        ("*.example.test", "/", "u1"),
        ("api.test", "/", "u0"),
        ("*", "/static/img", "u4"),
    ]
    p = proxy(proxy_config(upstreams, routes=routes, workers=workers))
    c = p.client()
    cases = [
        ("api.test", "/", b"b0"),
        ("api.test", "/static/x", b"b0"),  # an exact host beats the catch-all host
        ("API.Test", "/", b"b0"),  # host names are case-insensitive (RFC 9110 section 4.2.3)
        ("api.test:8080", "/", b"b0"),  # the port is not part of the name
        ("www.example.test", "/", b"b1"),
        ("a.b.example.test", "/x", b"b1"),
        ("other.test", "/static/app.js", b"b2"),
        ("other.test", "/static/img/logo.png", b"b4"),
        ("other.test", "/", b"b3"),
        ("other.test", "/anything", b"b3"),
    ]
    for host, path, expected in cases:
        r = c.get(path, host=host)
        assert r.status == 200 and r.header("x-backend") == expected, (host, path)


def test_weighted_round_robin(proxy, backends):
    b0, b1, b2 = backends(3)
    p = proxy(proxy_config({"app": [(b0, 3), (b1, 1), (b2, 2)]}))
    seen = collections.Counter()
    for _ in range(6):
        with p.client() as c:
            for _ in range(10):
                seen[c.get("/").header("x-backend")] += 1
    assert seen == {b"b0": 30, b"b1": 10, b"b2": 20}


def test_round_robin_spreads_each_window(proxy, backends):
    # weights 1:1 -- consecutive requests alternate, not bunch up
    b0, b1 = backends(2)
    p = proxy(proxy_config({"app": [b0, b1]}))
    c = p.client()
    names = [c.get("/").header("x-backend") for _ in range(10)]
    for i in range(0, 10, 2):
        assert sorted(names[i : i + 2]) == [b"b0", b"b1"]
