"""A raw-socket HTTP client for tests: send exact bytes, read exact responses, each read with a deadline."""

import socket

from helpers.http1 import Reader, connect, read_response


class Client:
    """One client connection to the proxy. Close it (or let the proxy fixture close it) when done."""

    def __init__(self, port, timeout=10.0):
        self.sock = connect(port, timeout=timeout)
        self.reader = Reader(self.sock, timeout=timeout)

    def send(self, data):
        self.sock.sendall(data)

    def response(self, method=b"GET"):
        """Read one final response (1xx before it are in .informational)."""
        return read_response(self.reader, method)

    def request(self, data, method=None):
        """Send raw request bytes and read one response (method from the request line unless given)."""
        self.send(data)
        return self.response(method or data.split(b" ", 1)[0])

    def get(self, path="/", host="app.test", headers=(), version=b"1.1", method=b"GET", body=None):
        """Build and send a simple request, return the response."""
        lines = [method + b" " + path.encode() + b" HTTP/" + version]
        if host is not None:
            lines.append(b"Host: " + host.encode())
        lines += [h if isinstance(h, bytes) else h.encode() for h in headers]
        if body is not None:
            lines.append(b"Content-Length: %d" % len(body))
        return self.request(b"\r\n".join(lines) + b"\r\n\r\n" + (body or b""), method)

    def read_until_close(self):
        return self.reader.read_until_close()

    def closed(self):
        """True when the proxy closed the connection with nothing more to say (waits up to the timeout)."""
        return self.reader.at_eof()

    def shutdown_write(self):
        self.sock.shutdown(socket.SHUT_WR)

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
