"""The head writers of fastproxy._http: what reaches the backend, what reaches the client, error replies.

Rules checked (RFC 9110 7.6.1 hop-by-hop fields, RFC 7239 Forwarded, the X-Forwarded-* conventions):
end-to-end fields pass byte-exact and in order; hop-by-hop fields and those named in Connection never
pass; X-Forwarded-For is appended to, X-Forwarded-Proto/Host and the backend's Server are replaced; the
output is itself a valid message for our parser and for h11.
"""

import h11
import pytest

from fastproxy import _http


def request(*fields, line=b"GET /p?q=1 HTTP/1.1", host=b"example.com", body=b""):
    head = line + b"\r\n"
    if host is not None:
        head += b"Host: " + host + b"\r\n"
    return head + b"".join(f + b"\r\n" for f in fields) + b"\r\n" + body


def response(*fields, line=b"HTTP/1.1 200 OK"):
    return line + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


def field_lines(head):
    return head.split(b"\r\n")[1:-2]


def h11_accepts_request(head):
    conn = h11.Connection(our_role=h11.SERVER)
    conn.receive_data(head)
    return isinstance(conn.next_event(), h11.Request)


# ---- requests -------------------------------------------------------------------------------------------


def test_plain_request_exactly():
    out = _http.rewrite_request(request(b"Accept: */*"), client_addr="10.0.0.7")
    assert out == (
        b"GET /p?q=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.7\r\n"
        b"X-Forwarded-Proto: http\r\nX-Forwarded-Host: example.com\r\n\r\n"
    )
    assert h11_accepts_request(out)


def test_end_to_end_fields_pass_byte_exact_and_in_order():
    fields = [
        b"aCCept: text/html",
        b"X-Custom:  spaced  value",
        b"Cookie: a=1",
        b"cookie: b=2",
        b"User-Agent: caf\xc3\xa9",
    ]
    out = _http.rewrite_request(request(*fields))
    assert field_lines(out)[1:6] == [
        b"aCCept: text/html",
        b"X-Custom: spaced  value",
        b"Cookie: a=1",
        b"cookie: b=2",
        b"User-Agent: caf\xc3\xa9",
    ]


HOP = [
    b"Connection: keep-alive, X-Secret, x-other",
    b"Keep-Alive: timeout=5",
    b"Proxy-Connection: keep-alive",
    b"TE: trailers",
    b"Trailer: X-T",
    b"Upgrade: h2c",
    b"Proxy-Authorization: Basic eA==",
    b"X-Secret: 1",
    b"X-Other: 2",
]


def test_hop_by_hop_and_connection_listed_fields_are_stripped():
    out = _http.rewrite_request(request(*HOP, b"X-Kept: yes"))
    names = [line.split(b":")[0].lower() for line in field_lines(out)]
    assert names == [b"host", b"x-kept", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"]


def test_connection_cannot_strip_host_or_content_length():
    out = _http.rewrite_request(
        request(
            b"Connection: Host, Content-Length", b"Content-Length: 3", line=b"POST / HTTP/1.1", body=b"abc"
        )
    )
    assert b"Host: example.com\r\n" in out and b"Content-Length: 3\r\n" in out


def test_x_forwarded_for_is_appended_to_all_received_values():
    out = _http.rewrite_request(
        request(b"X-Forwarded-For: 1.1.1.1", b"Accept: */*", b"x-forwarded-for: 2.2.2.2, 3.3.3.3"),
        client_addr="4.4.4.4",
    )
    assert b"X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4\r\n" in out
    assert out.lower().count(b"x-forwarded-for") == 1


def test_client_x_forwarded_proto_and_host_are_replaced():
    out = _http.rewrite_request(
        request(b"X-Forwarded-Proto: https", b"X-Forwarded-Host: evil.example"), proto="http"
    )
    assert b"X-Forwarded-Proto: http\r\n" in out and b"X-Forwarded-Host: example.com\r\n" in out
    assert b"evil" not in out and b"https" not in out


def test_forwarded_ipv4_ipv6_and_quoted_host():
    out = _http.rewrite_request(request(), client_addr="192.0.2.60", proto="https", forwarded=True)
    assert b"Forwarded: for=192.0.2.60;host=example.com;proto=https\r\n" in out
    out = _http.rewrite_request(request(host=b"example.com:8080"), client_addr="2001:db8::1", forwarded=True)
    assert b'Forwarded: for="[2001:db8::1]";host="example.com:8080";proto=http\r\n' in out
    assert h11_accepts_request(out)


def test_forwarded_is_appended_to_when_added_and_passed_on_otherwise():
    data = request(b"Forwarded: for=198.51.100.17")
    out = _http.rewrite_request(data, client_addr="10.1.1.1", forwarded=True)
    assert b"Forwarded: for=198.51.100.17, for=10.1.1.1;host=example.com;proto=http\r\n" in out
    assert out.count(b"Forwarded:") == 1
    assert b"Forwarded: for=198.51.100.17\r\n" in _http.rewrite_request(data)


def test_absolute_form_becomes_origin_form_with_the_authority_as_host():
    out = _http.rewrite_request(request(line=b"GET http://backend.example:81/x?y HTTP/1.1", host=b"other"))
    assert out.startswith(b"GET /x?y HTTP/1.1\r\nHost: backend.example:81\r\n")
    assert b"Host: other" not in out
    out = _http.rewrite_request(request(line=b"GET http://backend.example HTTP/1.1"))
    assert out.startswith(b"GET / HTTP/1.1\r\nHost: backend.example\r\n")


def test_http10_request_goes_out_as_http11():
    out = _http.rewrite_request(request(line=b"GET / HTTP/1.0", host=None))
    assert out.startswith(b"GET / HTTP/1.1\r\nHost: \r\n")  # RFC 9110 7.2: empty Host, no authority
    assert b"X-Forwarded-Host" not in out
    assert h11_accepts_request(out)


def test_chunked_request_keeps_a_clean_transfer_encoding():
    out = _http.rewrite_request(request(b"Transfer-Encoding:\tChunked", line=b"POST / HTTP/1.1"))
    assert b"Transfer-Encoding: chunked\r\n" in out and b"Chunked" not in out
    assert _http.parse_request(out)["body"] == "chunked"


def test_content_length_is_kept():
    out = _http.rewrite_request(request(b"Content-Length: 5", line=b"PUT /f HTTP/1.1", body=b"hello"))
    assert b"Content-Length: 5\r\n" in out and out.endswith(b"\r\n\r\n")


def test_upgrade_is_kept_only_when_asked():
    data = request(b"Connection: Upgrade", b"Upgrade: websocket", b"Sec-WebSocket-Version: 13")
    out = _http.rewrite_request(data)
    assert b"Upgrade: websocket\r\nConnection: upgrade\r\n" in out
    assert b"Sec-WebSocket-Version: 13\r\n" in out
    out = _http.rewrite_request(data, upgrade=False)
    assert b"pgrade" not in out.split(b"\r\n", 1)[1]


def test_only_a_websocket_upgrade_is_forwarded():
    # issue 8: h2c (or a list offering it) is never forwarded: the request goes on as plain HTTP/1.1
    for upgrade in (b"h2c", b"websocket, h2c", b"h2c, websocket", b"HTTP/2.0", b"websocket2", b"TLS/1.2"):
        data = request(b"Connection: Upgrade, HTTP2-Settings", b"Upgrade: " + upgrade,
                       b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA")
        out = _http.rewrite_request(data)
        head = out.split(b"\r\n", 1)[1].lower()
        assert b"upgrade" not in head and b"http2-settings" not in head, upgrade
    for upgrade in (b"websocket", b"WebSocket", b" websocket "):
        out = _http.rewrite_request(request(b"Connection: Upgrade", b"Upgrade: " + upgrade))
        assert b"Connection: upgrade\r\n" in out, upgrade


def test_rewritten_request_parses_the_same():
    data = request(b"Accept: */*", b"Connection: close", b"Content-Length: 2", line=b"POST /a HTTP/1.1")
    out = _http.rewrite_request(data)
    before, after = _http.parse_request(data), _http.parse_request(out)
    for key in ("method", "path", "host", "body", "content_length"):
        assert before[key] == after[key]
    assert after["keep_alive"]  # the upstream connection is ours to keep


def test_request_capacity():
    data = request(b"Accept: */*")
    full = _http.rewrite_request(data)
    assert _http.rewrite_request(data, cap=len(full)) == full
    assert _http.rewrite_request(data, cap=len(full) - 1) is None
    assert _http.rewrite_request(data, cap=0) is None


# ---- responses ------------------------------------------------------------------------------------------


def test_plain_response_exactly():
    out = _http.rewrite_response(response(b"Content-Length: 2", b"Content-Type: text/plain"))
    assert out == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\n"


def test_server_is_dropped_or_replaced():
    data = response(b"Server: Apache/2.4.1 (Unix)", b"Content-Length: 0")
    assert b"Server" not in _http.rewrite_response(data)
    out = _http.rewrite_response(data, server="fastproxy")
    assert b"Server: fastproxy\r\n" in out and b"Apache" not in out


def test_response_hop_by_hop_stripped():
    out = _http.rewrite_response(
        response(
            b"Connection: keep-alive, X-Internal",
            b"Keep-Alive: timeout=5",
            b"X-Internal: 1",
            b"Proxy-Authenticate: Basic",
            b"Content-Length: 0",
            b"Trailer: X",
            b'ETag: "x"',
        )
    )
    assert field_lines(out) == [b"Content-Length: 0", b'ETag: "x"']


def test_connection_close_and_keep_alive_to_the_client():
    data = response(b"Content-Length: 0")
    assert b"Connection: close\r\n" in _http.rewrite_response(data, client_keep_alive=False)
    assert b"Connection" not in _http.rewrite_response(data, client_keep_alive=True)
    out = _http.rewrite_response(data, client_keep_alive=True, client_version_minor=0)
    assert b"Connection: keep-alive\r\n" in out
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")


def test_chunked_response_kept_or_dechunked():
    data = response(b"Transfer-Encoding: chunked", b"Content-Type: text/plain")
    assert b"Transfer-Encoding: chunked\r\n" in _http.rewrite_response(data)
    out = _http.rewrite_response(data, dechunk=True, client_keep_alive=False, client_version_minor=0)
    assert b"Transfer-Encoding" not in out and b"Connection: close\r\n" in out


def test_101_keeps_upgrade():
    data = response(
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Accept: abc",
        line=b"HTTP/1.1 101 Switching Protocols",
    )
    out = _http.rewrite_response(data, client_keep_alive=False)
    assert out == (
        b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: abc\r\nUpgrade: websocket\r\n"
        b"Connection: upgrade\r\n\r\n"
    )


def test_status_line_is_http11_and_keeps_reason():
    out = _http.rewrite_response(response(b"Content-Length: 0", line=b"HTTP/1.0 404 Not Here"))
    assert out.startswith(b"HTTP/1.1 404 Not Here\r\n")
    out = _http.rewrite_response(response(b"Content-Length: 0", line=b"HTTP/1.1 204"))
    assert out.startswith(b"HTTP/1.1 204 \r\n")


def test_response_capacity():
    data = response(b"Content-Length: 0", b"Content-Type: text/plain")
    full = _http.rewrite_response(data, server="fp", client_keep_alive=False)
    assert _http.rewrite_response(data, server="fp", client_keep_alive=False, cap=len(full)) == full
    assert _http.rewrite_response(data, server="fp", client_keep_alive=False, cap=len(full) - 1) is None


# ---- error responses ------------------------------------------------------------------------------------

STATUSES = {
    400: b"Bad Request",
    408: b"Request Timeout",
    411: b"Length Required",
    413: b"Content Too Large",
    414: b"URI Too Long",
    417: b"Expectation Failed",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


@pytest.mark.parametrize("close", [True, False])
@pytest.mark.parametrize("status", sorted(STATUSES))
def test_error_response_is_a_complete_message(status, close):
    out = _http.error_response(status, close)
    conn = h11.Connection(our_role=h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(out)
    event = conn.next_event()
    assert (event.status_code, event.reason) == (status, STATUSES[status])
    body = conn.next_event().data
    assert body == b"%d %s\n" % (status, STATUSES[status])
    assert isinstance(conn.next_event(), h11.EndOfMessage)
    assert (b"Connection: close\r\n" in out) == close
    assert b"Content-Type: text/plain\r\n" in out


def test_error_response_capacity_and_unknown_status():
    out = _http.error_response(400)
    assert _http.error_response(400, cap=len(out)) == out
    assert _http.error_response(400, cap=len(out) - 1) is None
    assert _http.error_response(42).startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
