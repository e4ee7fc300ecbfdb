"""A raw-socket backend that answers with exactly the bytes a test scripts: misbehaving on purpose.

    RawBackend(scripts, default=OK)    listens on 127.0.0.1 (a free port) in a thread of the test process
        scripts[i] says what the i-th accepted connection does after reading each request head (and a
        Content-Length body); connections beyond the list use `default`. A script is bytes (sent as-is
        once per request), or a callable script(conn, request_number) that sends what it likes, may loop
        until the peer closes, and returns False to close the connection. After bytes, the connection
        stays open for the next request unless close=True was given for it (wrap it in Close(...)).
    backend.conns                      one RawConn per accepted connection: .requests (raw heads read),
                                       .closed_by_peer (the proxy closed it: recv gave b"" or a reset),
                                       .closed (closed either way), .extra (bytes after the last request)
    backend.wait_closed(i)             poll until connection i is closed, with a deadline
    backend.stop()                     close the listener and every connection, join the threads

tools/fuzz.py passes one function as `default`: it answers every connection of a fuzz run.
Everything is real sockets; nothing sleeps to synchronise (polling with a deadline only).
"""

import socket
import threading
import time

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-Backend: raw\r\n\r\nok\n"


class Close:
    """Send these bytes, then close the connection."""

    def __init__(self, data):
        self.data = data


def endless(first, unit, seconds=10.0):
    """A script that sends `first`, then `unit` again and again until the peer closes (or a deadline)."""

    def script(conn, _n):
        conn.send(first)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not conn.send(unit):
                return False
        return False

    return script


class RawConn:
    def __init__(self, sock, index):
        self.sock = sock
        self.index = index
        self.requests = []
        self.closed_by_peer = False
        self.closed = False
        self.extra = b""
        self.buf = b""

    def send(self, data):
        """Send all of data; False when the peer is gone."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            self.closed_by_peer = True
            return False

    def read_request(self, timeout):
        """The next request head (its Content-Length body read and dropped), or None at EOF/reset/timeout."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            data = self._recv(deadline)
            if data is None:
                return None
            self.buf += data
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        while len(self.buf) < length:
            data = self._recv(deadline)
            if data is None:
                return None
            self.buf += data
        self.buf = self.buf[length:]
        self.requests.append(head + b"\r\n\r\n")
        return head

    def _recv(self, deadline):
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(min(left, 0.5))
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                self.closed_by_peer = True
                return None
            if not data:
                self.closed_by_peer = True
                return None
            return data

    def wait_peer_close(self, timeout):
        """After the last answer: read (and keep) whatever comes until the peer closes or the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            data = self._recv(deadline)
            if data is None:
                return
            self.extra += data


class RawBackend:
    def __init__(self, scripts=(), default=OK, idle_timeout=30.0):
        self.scripts = list(scripts)
        self.default = default
        self.idle_timeout = idle_timeout
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1024)
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.conns = []
        self.lock = threading.Lock()
        self.stopping = False
        self.threads = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self):
        while not self.stopping:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                conn = RawConn(sock, len(self.conns))
                self.conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def script_for(self, index):
        return self.scripts[index] if index < len(self.scripts) else self.default

    def _serve(self, conn):
        script = self.script_for(conn.index)
        n = 0
        try:
            while not self.stopping:
                if conn.read_request(self.idle_timeout) is None:
                    break
                if callable(script):
                    keep = script(conn, n)
                elif isinstance(script, Close):
                    conn.send(script.data)
                    keep = False
                else:
                    keep = conn.send(script)
                n += 1
                if keep is False:
                    break
        finally:
            if not conn.closed_by_peer:
                # we end it: half-close, then keep what the proxy still sends until it closes too
                try:
                    conn.sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                conn.wait_peer_close(2.0)
            conn.sock.close()
            conn.closed = True

    def wait_closed(self, index, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if index < len(self.conns) and self.conns[index].closed:
                    return self.conns[index]
            time.sleep(0.01)
        raise AssertionError(f"raw backend connection {index} still open after {timeout}s")

    def wait_connections(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.conns) >= n:
                return
            time.sleep(0.01)
        raise AssertionError(f"raw backend: {len(self.conns)} connections, waited for {n}")

    def stop(self):
        self.stopping = True
        self.listener.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in self.threads:
            t.join(timeout=5)
