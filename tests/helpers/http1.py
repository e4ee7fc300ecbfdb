"""A small HTTP/1.1 reader shared by the test client and the recording backend.

It is deliberately plain and lenient about what it reads (the parser under test is the strict one); it
exists so that tests see exact bytes, not a library's interpretation of them. Framing follows RFC 9112
section 6.3.
"""

import socket
import time

CRLF = b"\r\n"


class ConnectionClosed(Exception):
    """The peer closed the connection before the expected bytes arrived."""


class Reader:
    """Buffered reads from a socket, each bounded by a deadline (None: block forever).

    on_data, when given, sees every chunk received (the backend records raw bytes through it).
    """

    def __init__(self, sock, timeout=10.0, on_data=None):
        self.sock = sock
        self.timeout = timeout
        self.buf = bytearray()
        self.on_data = on_data
        self.eof = False

    def _deadline(self):
        return None if self.timeout is None else time.monotonic() + self.timeout

    def fill(self, deadline):
        """Receive once; return False at EOF."""
        if self.eof:
            return False
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no data before the deadline")
            self.sock.settimeout(left)
        try:
            data = self.sock.recv(262144)
        except TimeoutError:
            raise TimeoutError(f"no data before the deadline; buffered {bytes(self.buf[:200])!r}") from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        if self.on_data:
            self.on_data(data)
        self.buf += data
        return True

    def read_until(self, marker, limit=1 << 20):
        deadline = self._deadline()
        while True:
            i = self.buf.find(marker)
            if i >= 0:
                out = bytes(self.buf[: i + len(marker)])
                del self.buf[: i + len(marker)]
                return out
            if len(self.buf) > limit:
                raise ValueError("line or head too long")
            if not self.fill(deadline):
                raise ConnectionClosed(bytes(self.buf))

    def read_exact(self, n):
        deadline = self._deadline()
        while len(self.buf) < n:
            if not self.fill(deadline):
                raise ConnectionClosed(bytes(self.buf))
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def discard(self, n):
        """Read and drop n bytes without keeping them (for large bodies)."""
        deadline = self._deadline()
        take = min(n, len(self.buf))
        del self.buf[:take]
        n -= take
        while n > 0:
            if not self.fill(deadline):
                raise ConnectionClosed(b"")
            take = min(n, len(self.buf))
            del self.buf[:take]
            n -= take

    def read_until_close(self):
        deadline = self._deadline()
        while self.fill(deadline):
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def at_eof(self):
        """True when the peer closed the connection with nothing more sent (waits up to the timeout)."""
        if self.buf:
            return False
        return not self.fill(self._deadline())


def parse_fields(lines):
    """Header field lines -> list of (name, value) bytes, value stripped of OWS (RFC 9112 section 5)."""
    fields = []
    for line in lines:
        name, _, value = line.partition(b":")
        fields.append((name, value.strip(b" \t")))
    return fields


class Message:
    """A parsed request or response: start line parts, fields, body, trailers and the raw bytes."""

    def __init__(self, start, fields):
        self.start = start
        self.fields = fields
        self.body = b""
        self.trailers = []
        self.raw = b""
        self.informational = []

    def header(self, name):
        """The first value of a field (case-insensitive), or None."""
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name):
        name = name.lower().encode() if isinstance(name, str) else name.lower()
        return [v for n, v in self.fields if n.lower() == name]

    def has_token(self, name, token):
        """Whether a comma-separated list field contains token (case-insensitive)."""
        token = token.lower().encode()
        return any(t.strip().lower() == token for v in self.header_all(name) for t in v.split(b","))

    # response view
    @property
    def version(self):
        return self.start[0]

    @property
    def status(self):
        return int(self.start[1])

    @property
    def reason(self):
        return self.start[2]

    @property
    def text(self):
        return self.body.decode("latin-1")

    def __repr__(self):
        return f"<Message {self.start!r} {len(self.body)} body bytes>"


def split_head(head):
    """The raw head (through the empty line) -> (start line parts, fields)."""
    lines = head.split(CRLF)
    # drop the final empty lines
    while lines and lines[-1] == b"":
        lines.pop()
    start = lines[0].split(b" ", 2)
    while len(start) < 3:
        start.append(b"")
    return start, parse_fields(lines[1:])


def read_chunked(reader, keep=True):
    """Read a chunked body (RFC 9112 section 7.1); returns (body, trailers, raw bytes).

    keep=False drops the payload as it arrives and returns its length in place of the body.
    """
    body = bytearray()
    size_total = 0
    raw = bytearray()
    while True:
        line = reader.read_until(CRLF)
        raw += line
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            break
        size_total += size
        if keep:
            data = reader.read_exact(size)
            body += data
            raw += data
        else:
            reader.discard(size)
        crlf = reader.read_exact(2)
        raw += crlf
        if crlf != CRLF:
            raise ValueError(f"chunk not followed by CRLF: {crlf!r}")
    trailer_lines = []
    while True:
        line = reader.read_until(CRLF)
        raw += line
        if line == CRLF:
            break
        trailer_lines.append(line[:-2])
    return (bytes(body) if keep else size_total), parse_fields(trailer_lines), bytes(raw)


def read_response(reader, method=b"GET"):
    """Read one final response (with any 1xx before it in .informational); RFC 9112 section 6.3 framing."""
    informational = []
    while True:
        head = reader.read_until(b"\r\n\r\n")
        start, fields = split_head(head)
        msg = Message(start, fields)
        msg.raw = head
        if 100 <= msg.status < 200 and msg.status != 101:
            informational.append(msg)
            continue
        break
    msg.informational = informational
    if method == b"HEAD" or msg.status in (101, 204, 304):
        return msg
    if msg.has_token("transfer-encoding", "chunked"):
        msg.body, msg.trailers, raw = read_chunked(reader)
        msg.raw += raw
    elif msg.header("content-length") is not None:
        msg.body = reader.read_exact(int(msg.header("content-length")))
        msg.raw += msg.body
    else:
        msg.body = reader.read_until_close()
        msg.raw += msg.body
    return msg


def connect(port, host="127.0.0.1", timeout=10.0):
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
