"""The built-in demo backend: a small HTTP/1.1 server that answers every request with its own name.

    python -m fastproxy.demo --name demo-1 --port 9001     (--port 0 picks a free port)

It prints one line "NAME listening on HOST:PORT" once it accepts connections (fastproxy demo reads the port
from it), keeps connections alive (RFC 9112 section 9.3), reads request bodies framed by Content-Length or
chunked (RFC 9112 sections 6.3, 7.1) and answers "hello from NAME" with an X-Backend field, so repeated
requests through the proxy show the balancing. TERM or INT stops it.
It trusts its input more than the proxy does: it is a demo and test peer, not a server for the internet.
"""

import argparse
import asyncio
import signal
import sys


class DemoProtocol(asyncio.Protocol):
    def __init__(self, name):
        self.name = name
        self.body = f"hello from {name}\n".encode()
        self.buf = b""
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buf += data
        while self.transport is not None and not self.transport.is_closing():
            consumed = self.handle_one()
            if consumed == 0:
                return
            self.buf = self.buf[consumed:]

    def handle_one(self):
        """Answer the first complete request in the buffer; bytes consumed, or 0 if it is incomplete."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return 0
        lines = self.buf[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            self.respond(400, b"bad request\n", close=True)
            return 0
        method, target, version = parts
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        consumed = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            size = self.chunked_size(consumed)
            if size == 0:
                return 0
            consumed = size
        else:
            consumed += int(headers.get("content-length", "0") or 0)
            if len(self.buf) < consumed:
                return 0
        conn = headers.get("connection", "").lower()
        close = "close" in conn or (version == "HTTP/1.0" and "keep-alive" not in conn)
        self.respond(200, b"" if method == "HEAD" else self.body, close, keep_alive_10=version == "HTTP/1.0",
                     length=len(self.body))
        return consumed

    def chunked_size(self, pos):
        """End offset of a complete chunked body starting at pos (trailers included), or 0 if incomplete."""
        while True:
            eol = self.buf.find(b"\r\n", pos)
            if eol < 0:
                return 0
            size = int(self.buf[pos:eol].split(b";")[0].strip() or b"0", 16)
            pos = eol + 2
            if size == 0:
                end = self.buf.find(b"\r\n\r\n", pos - 2)   # trailers end with an empty line
                return 0 if end < 0 else end + 4
            pos += size + 2
            if len(self.buf) < pos:
                return 0

    def respond(self, status, body, close, keep_alive_10=False, length=None):
        reason = {200: "OK", 400: "Bad Request"}[status]
        head = [f"HTTP/1.1 {status} {reason}", "Server: fastproxy-demo", f"X-Backend: {self.name}",
                "Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body) if length is None else length}"]
        if close:
            head.append("Connection: close")
        elif keep_alive_10:
            head.append("Connection: keep-alive")
        self.transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        if close:
            self.transport.close()


async def serve(name, host, port):
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    server = await loop.create_server(lambda: DemoProtocol(name), host, port, reuse_address=True)
    bound = server.sockets[0].getsockname()
    print(f"{name} listening on {bound[0]}:{bound[1]}", flush=True)
    await stop
    server.close()
    await server.wait_closed()


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastproxy.demo", description="fastproxy's demo backend")
    p.add_argument("--name", default="demo", help="name to answer with (default: demo)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one (default: 0)")
    args = p.parse_args(argv)
    try:
        asyncio.run(serve(args.name, args.host, args.port))
    except OSError as e:
        print(f"{args.name}: cannot listen on {args.host}:{args.port}: {e.strerror}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
