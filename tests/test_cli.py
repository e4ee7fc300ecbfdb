"""The command line (check, --version) and the demo backend, as real processes over real sockets."""

import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

import fastproxy

GOOD = """\
[[listen]]
address = "127.0.0.1:8080"

[upstreams.app]
servers = [{ address = "127.0.0.1:9001", weight = 2 }]

[[routes]]
upstream = "app"
"""


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fastproxy", *args], capture_output=True, text=True, timeout=60)


def test_version():
    r = run_cli("--version")
    assert (r.returncode, r.stdout.strip()) == (0, f"fastproxy {fastproxy.__version__}")


def test_check_good_config(tmp_path):
    path = tmp_path / "proxy.toml"
    path.write_text(GOOD)
    r = run_cli("check", "-c", str(path))
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{path}: ok\n", "")


def test_check_bad_config_prints_each_error_on_its_own_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace("weight = 2", "weight = 0") + '\n[server]\nworkers = "lots"\ncolour = 1\n')
    r = run_cli("check", "-c", str(path))
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"{path}:5: [upstreams.app] servers[0].weight: must be an integer >= 1 and <= 1000",
        f'{path}:11: [server] workers: must be "auto" or an integer >= 1',
        f"{path}:12: [server] colour: unknown key (expected one of: workers, pidfile, server_header, "
        "forwarded, drain_timeout, worker_heartbeat_timeout, ready_timeout, upgrade_timeout, max_connections)",
    ]


def test_check_syntax_error(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[server\n")
    r = run_cli("check", "-c", str(path))
    assert r.returncode == 1
    assert r.stderr.startswith(f"{path}:1: TOML syntax error: ")


def test_check_missing_file(tmp_path):
    r = run_cli("check", "-c", str(tmp_path / "nope.toml"))
    assert r.returncode == 1
    assert "cannot read" in r.stderr


def test_serve_refuses_a_bad_config_before_starting(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(GOOD.replace('upstream = "app"', 'upstream = "gone"'))
    r = run_cli("serve", "-c", str(path))
    assert r.returncode == 1
    assert r.stderr == f"{path}:8: [routes[0]] upstream: no upstream named 'gone'\n"


def test_serve_refuses_an_address_another_process_listens_on(tmp_path):
    # as a second fastproxy would: SO_REUSEPORT alone would let both bind and share the port silently
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        path = tmp_path / "proxy.toml"
        path.write_text(GOOD.replace("8080", str(port)))
        r = run_cli("serve", "-c", str(path))
    assert r.returncode == 1
    assert f"cannot start: cannot listen on 127.0.0.1:{port}: Address already in use" in r.stderr


def test_usage_errors_exit_2():
    assert run_cli().returncode == 2
    assert run_cli("check").returncode == 2


# --- the demo backend -------------------------------------------------------------------------------

@pytest.fixture
def demo_backend():
    """`python -m fastproxy.demo` on a free port; yields (process, port); stopped by PID afterwards."""
    proc = subprocess.Popen([sys.executable, "-m", "fastproxy.demo", "--name", "demo-7", "--port", "0"],
                            stdout=subprocess.PIPE)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        assert ready, "demo backend did not report its port"
        line = proc.stdout.readline().decode()
        assert line.startswith("demo-7 listening on 127.0.0.1:")
        yield proc, int(line.rsplit(":", 1)[1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def exchange(sock, request, buf=b"", head_request=False):
    """Send request (if any), read one Content-Length framed response; (status line, fields, body, leftover)."""
    if request:
        sock.sendall(request)
    sock.settimeout(10)
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-head: {buf!r}"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    length = 0 if head_request else int(fields["Content-Length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    return lines[0], fields, rest[:length], rest[length:]


def test_demo_backend_answers_with_its_name_and_keeps_alive(demo_backend):
    proc, port = demo_backend
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head, fields, body, left = exchange(sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert head == "HTTP/1.1 200 OK"
        assert (fields["X-Backend"], body, left) == ("demo-7", b"hello from demo-7\n", b"")
        # same connection: a Content-Length body, then a chunked one pipelined with a HEAD
        head, fields, body, left = exchange(sock, b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        assert body == b"hello from demo-7\n"
        sock.sendall(b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                     b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        head, fields, body, left = exchange(sock, None, left)
        assert body == b"hello from demo-7\n"
        head, fields, body, left = exchange(sock, None, left, head_request=True)
        assert (head, fields["Content-Length"], body) == ("HTTP/1.1 200 OK", "18", b"")
        # Connection: close is honoured
        head, fields, body, left = exchange(sock, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", left)
        assert fields["Connection"] == "close"
        sock.settimeout(10)
        assert sock.recv(1) == b""


def test_demo_backend_stops_on_term(demo_backend):
    proc, port = demo_backend
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=10).close()


# --- fastproxy demo, end to end (needs the compiled core) --------------------------------------------

def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo_balances_over_three_backends_and_stops_everything():
    from helpers.running import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "fastproxy", "demo", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        seen = []
        while len(seen) < 3:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the demo never answered"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                    _, fields, body, _ = exchange(sock, b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n")
                    seen.append(fields["X-Backend"])
            except ConnectionRefusedError:
                select.select([], [], [], 0.05)     # not listening yet: poll again
        # one worker: its round robin visits each backend once per three requests
        assert sorted(seen) == ["demo-1", "demo-2", "demo-3"]
        os.killpg(proc.pid, signal.SIGINT)          # what Ctrl-C in a terminal does
        out = proc.communicate(timeout=30)[0]
        assert proc.returncode == 0, out
        assert "started demo-1 on 127.0.0.1:" in out and "fast shutdown (SIGINT)" in out
        assert not group_alive(proc.pid), "a process of the demo outlived it"
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
