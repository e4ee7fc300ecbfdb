"""A recording HTTP/1.1 backend, run as its own process: `python -m helpers.backend --name N --dir D [--port P]`.

It binds 127.0.0.1:0 (or P, to start again where a stopped one was), prints its port on stdout and serves
each connection in a thread; started again in the same --dir, it numbers on after the earlier connections
(a port it cannot bind: a message on stderr, exit 2, nothing on stdout). Every response carries its name
(an "X-Backend" field and in the default body) and "Server: secret-backend/1.0", so tests can check which
backend answered and that the proxy hides it.

Recording, read by the test process from --dir (see BackendProcess in helpers/proxy.py):
    conn-NNNN.raw     every byte received on accepted connection NNNN (the first 4 MiB), appended as it
                      arrives and before anything is answered; the file is created at accept(), so the
                      number of .raw files is the number of connections accepted
    conn-NNNN.closed  created when that connection is closed (by either side)

Behaviour by request path (the query string is ignored):
    /                    200, body "NAME\\n"
    /echo                200, body = the request body
    /echo-head           200, body = the raw request head
    /upload              reads and discards the body, 200 "NAME received N"
    /status/NNN          status NNN (no body for 1xx, 204, 304)
    /chunked/N           chunked response of N small chunks
    /trailers            chunked response with trailer fields
    /bytes/N             N bytes with Content-Length, streamed
    /chunked-bytes/N     N bytes chunked, streamed
    /slow/MS             waits MS milliseconds before answering
    /slow-body/MS        sends the head and half the body, waits MS milliseconds, sends the rest
    /close               answers with "Connection: close" and closes
    /noclose             close-delimited body: no Content-Length, no chunked, closes after it
    /close-after         an ordinary keep-alive response, then closes the connection (a stale pool entry)
    /drop-next           an ordinary response; the next request on this connection is dropped unanswered
    /drop                closes the connection without answering
    /reset               resets the connection (SO_LINGER 0) without answering
    /server              same as / (every response has the Server field)
    /ws                  "101 Switching Protocols" when asked to upgrade, then echoes bytes until close
    /100, /103           a 100 Continue or 103 Early Hints response first, then 200
    /head-test           Content-Length 10 and body "head-test\\n" (no body to HEAD)
    /hop                 response carrying hop-by-hop fields that a proxy must remove
An "Expect: 100-continue" request gets "100 Continue" before its body is read.
"""

import argparse
import os
import socket
import struct
import sys
import threading
import time

from helpers.http1 import CRLF, ConnectionClosed, Message, Reader, read_chunked, split_head

RECORD_LIMIT = 4 << 20
BLOCK = bytes(range(256)) * 1024  # 256 KiB of a recognisable pattern for streamed bodies


class Recorder:
    """Appends the bytes of one connection to its file, so the test can read them at any time."""

    def __init__(self, directory, index):
        self.path = os.path.join(directory, f"conn-{index:04d}")
        self.file = open(self.path + ".raw", "wb", buffering=0)
        self.size = 0

    def __call__(self, data):
        if self.size < RECORD_LIMIT:
            self.file.write(data[: RECORD_LIMIT - self.size])
        self.size += len(data)

    def close(self):
        self.file.close()
        with open(self.path + ".closed", "wb"):
            pass


class Handler:
    def __init__(self, sock, name, recorder):
        self.sock = sock
        self.name = name.encode()
        self.reader = Reader(sock, timeout=None, on_data=recorder)
        self.drop_next = False

    def serve(self):
        while True:
            try:
                head = self.reader.read_until(b"\r\n\r\n")
            except (ConnectionClosed, OSError, ValueError):
                return
            start, fields = split_head(head)
            req = Message(start, fields)
            req.raw = head
            if self.drop_next:
                return
            if not self.handle(req):
                return

    # -- helpers --------------------------------------------------------------------------------------

    def send(self, data):
        self.sock.sendall(data)

    def head(self, status, reason, fields, length=None, chunked=False, close=False):
        lines = [b"HTTP/1.1 %d %s" % (status, reason.encode())]
        lines.append(b"Server: secret-backend/1.0")
        lines.append(b"X-Backend: " + self.name)
        lines += fields
        if length is not None:
            lines.append(b"Content-Length: %d" % length)
        if chunked:
            lines.append(b"Transfer-Encoding: chunked")
        if close:
            lines.append(b"Connection: close")
        return CRLF.join(lines) + CRLF + CRLF

    def respond(self, status, body, fields=(), close=False, method=b"GET", reason="OK"):
        no_body = method == b"HEAD" or status in (204, 304) or status < 200
        length = None if status in (204, 304) or status < 200 else len(body)
        self.send(
            self.head(status, reason, list(fields), length=length, close=close) + (b"" if no_body else body)
        )

    def read_body(self, req, keep=True):
        if req.has_token("transfer-encoding", "chunked"):
            body, req.trailers, _ = read_chunked(self.reader, keep=keep)
            return body  # the length when not kept
        n = int(req.header("content-length") or 0)
        if keep:
            return self.reader.read_exact(n)
        self.reader.discard(n)
        return n

    # -- dispatch -------------------------------------------------------------------------------------

    def handle(self, req):
        """Answer one request; return False when the connection is to be closed."""
        method = req.start[0]
        target = req.start[1]
        if target.startswith(b"http://"):
            target = b"/" + target.split(b"/", 3)[3] if target.count(b"/") >= 3 else b"/"
        path = target.split(b"?", 1)[0].decode("latin-1")
        parts = path.strip("/").split("/")
        arg = parts[1] if len(parts) > 1 else ""
        base = "/" + parts[0]
        client_close = req.has_token("connection", "close") or (
            req.version == b"HTTP/1.0" and not req.has_token("connection", "keep-alive")
        )

        if req.has_token("expect", "100-continue"):
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")

        if base == "/upload":
            n = self.read_body(req, keep=False)
            self.respond(200, b"%s received %d" % (self.name, n), close=client_close, method=method)
            return not client_close
        body = self.read_body(req)

        if base == "/drop":
            return False
        if base == "/reset":
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if base == "/echo":
            self.respond(200, body, close=client_close, method=method)
        elif base == "/echo-head":
            self.respond(200, req.raw, close=client_close, method=method)
        elif base == "/status":
            code = int(arg)
            self.respond(code, self.name + b" status\n", close=client_close, method=method, reason="Status")
        elif base == "/chunked":
            self.send(self.head(200, "OK", [], chunked=True, close=client_close))
            if method != b"HEAD":
                for i in range(int(arg)):
                    data = b"%s chunk %d\n" % (self.name, i)
                    self.send(b"%x\r\n%s\r\n" % (len(data), data))
                self.send(b"0\r\n\r\n")
        elif base == "/trailers":
            self.send(self.head(200, "OK", [b"Trailer: X-Checksum"], chunked=True, close=client_close))
            self.send(b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc123\r\n\r\n")
        elif base == "/bytes":
            self.stream(int(arg), chunked=False, close=client_close, method=method)
        elif base == "/chunked-bytes":
            self.stream(int(arg), chunked=True, close=client_close, method=method)
        elif base == "/slow":
            time.sleep(int(arg) / 1000)
            self.respond(200, self.name + b" slow\n", close=client_close, method=method)
        elif base == "/slow-body":
            data = self.name + b" slow body\n"
            self.send(self.head(200, "OK", [], length=len(data), close=client_close) + data[:5])
            time.sleep(int(arg) / 1000)
            self.send(data[5:])
        elif base == "/close":
            self.respond(200, self.name + b" close\n", close=True, method=method)
            return False
        elif base == "/noclose":
            self.send(self.head(200, "OK", []))
            if method != b"HEAD":
                for i in range(3):
                    self.send(b"%s close-delimited %d\n" % (self.name, i))
            return False
        elif base == "/close-after":
            self.respond(200, self.name + b" close-after\n", method=method)
            return False
        elif base == "/drop-next":
            self.respond(200, self.name + b" drop-next\n", method=method)
            self.drop_next = True
        elif base == "/ws":
            if not req.has_token("connection", "upgrade") or req.header("upgrade") is None:
                self.respond(426, b"upgrade required\n", close=True, method=method, reason="Upgrade Required")
                return False
            self.send(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: "
                + req.header("upgrade")
                + b"\r\nConnection: Upgrade\r\nX-Backend: "
                + self.name
                + b"\r\n\r\n"
            )
            self.tunnel()
            return False
        elif base in ("/100", "/103"):
            if base == "/100":
                self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            else:
                self.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            self.respond(200, self.name + b" after 1xx\n", close=client_close, method=method)
        elif base == "/head-test":
            self.respond(200, b"head-test\n", close=client_close, method=method)
        elif base == "/hop":
            fields = [
                b"Connection: X-Hop-Secret, keep-alive",
                b"X-Hop-Secret: 1",
                b"Keep-Alive: timeout=5",
                b"Proxy-Authenticate: Basic",
                b"X-End-To-End: kept",
            ]
            self.respond(200, self.name + b" hop\n", fields=fields, close=client_close, method=method)
        else:
            self.respond(200, self.name + b"\n", close=client_close, method=method)
        return not client_close

    def stream(self, n, chunked, close, method):
        self.send(self.head(200, "OK", [], length=None if chunked else n, chunked=chunked, close=close))
        if method == b"HEAD":
            return
        view = memoryview(BLOCK)
        while n > 0:
            part = view[: min(n, len(BLOCK))]
            if chunked:
                self.send(b"%x\r\n" % len(part))
                self.send(part)
                self.send(CRLF)
            else:
                self.send(part)
            n -= len(part)
        if chunked:
            self.send(b"0\r\n\r\n")

    def tunnel(self):
        if self.reader.buf:
            self.send(bytes(self.reader.buf))
            self.reader.buf.clear()
        while self.reader.fill(None):
            self.send(bytes(self.reader.buf))
            self.reader.buf.clear()


def serve_connection(sock, name, recorder):
    try:
        Handler(sock, name, recorder).serve()
    except (OSError, ConnectionClosed, ValueError):
        pass  # the peer went away mid-request (a proxy aborting a bad request does that)
    finally:
        try:
            sock.close()
        finally:
            recorder.close()


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    args = parser.parse_args(argv)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", args.port))
    except OSError as e:
        print(f"bind: {e}", file=sys.stderr, flush=True)
        return 2  # nothing on stdout: the caller sees no port and may try again
    listener.listen(1024)
    print(listener.getsockname()[1], flush=True)
    # a backend started again in the same directory goes on numbering after what was recorded before
    index = len([f for f in os.listdir(args.dir) if f.endswith(".raw")])
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        index += 1
        recorder = Recorder(args.dir, index)
        threading.Thread(target=serve_connection, args=(sock, args.name, recorder), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
