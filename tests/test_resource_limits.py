"""Resource limits of a worker, through a running `fastproxy serve` with one worker.

[server] max_connections: at the limit the worker stops accepting (the listener leaves its epoll set, so
nothing spins), new clients wait in the kernel's listen queue, and the first close lets one in. The limit
stops short of the open-files limit by a reserve for backend connections. Out of descriptors anyway
(EMFILE, here forced by lowering a running worker's limit with prlimit): the worker stops polling the
listener, backs off, retries when a descriptor frees up, and says so once in the log; it spends next to
no CPU while the condition lasts, and serves again as soon as connections close.
"""

import socket
import subprocess
import sys
import time

from helpers import procs
from helpers.load import serve_config
from test_health_e2e import servers

REQUEST = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n"


def cpu_seconds(pid):
    fields = procs._stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / 100.0      # utime + stime, clock ticks


def answered(sock, wait):
    sock.settimeout(wait)
    try:
        return sock.recv(65536)
    except TimeoutError:
        return None


def open_client(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(REQUEST)
    return s


def test_at_max_connections_new_clients_wait_in_the_queue_until_one_closes(tmp_path, backends, served):
    (b,) = backends(1)
    p = served(serve_config(str(tmp_path / "proxy"), [b.address], workers=1, server={"max_connections": 3}))
    held = [open_client(p.port) for _ in range(3)]
    for s in held:
        assert answered(s, 5).startswith(b"HTTP/1.1 200")
    waiting = open_client(p.port)          # connect() completes in the kernel; the worker does not accept
    assert answered(waiting, 0.7) is None
    p.wait_log(r"max_connections \(3\) reached")
    (worker,) = p.workers()
    before = cpu_seconds(worker)
    time.sleep(1.0)
    assert cpu_seconds(worker) - before < 0.2, "the worker spins while at its limit"
    held.pop().close()                     # one leaves: the waiting one is served
    reply = answered(waiting, 5)
    assert reply is not None and reply.startswith(b"HTTP/1.1 200")
    for s in held + [waiting]:
        s.close()


def test_out_of_descriptors_the_worker_backs_off_and_serves_again(tmp_path, backends, served):
    (b,) = backends(1)
    # one failure would take the server out: running out of descriptors is ours, and must not count
    text = serve_config(str(tmp_path / "proxy"), [b.address], workers=1).replace(
        "[upstreams.app]\n", '[upstreams.app]\npassive = { max_fails = 1, fail_timeout = "60s" }\n')
    p = served(text)
    (worker,) = p.workers()
    # the worker sized itself for the limit it started with; taking descriptors away now (as another
    # part of the process or the system could) makes accept() fail with EMFILE
    subprocess.run(["prlimit", f"--pid={worker}", "--nofile=64:64"], check=True)
    clients = [open_client(p.port) for _ in range(100)]     # more than 64 descriptors
    p.wait_log("out of file descriptors")
    before = cpu_seconds(worker)
    time.sleep(1.0)
    assert cpu_seconds(worker) - before < 0.2, "the worker spins while out of descriptors"
    for s in clients:
        s.close()
    # connections close, descriptors free up: the worker accepts again
    deadline = time.monotonic() + 10
    while True:
        s = open_client(p.port)
        reply = answered(s, 2)
        s.close()
        if reply and reply.startswith(b"HTTP/1.1 200"):
            break
        assert time.monotonic() < deadline, "the worker did not serve again after the connections closed"
    assert list(p.workers()) == [worker], "the worker died while out of descriptors"
    (row,) = servers(p).values()
    assert row["state"] == "up" and row["errors"] == 0, row


def test_a_worker_accepts_only_what_its_open_files_limit_can_serve(tmp_path, backends, served):
    """Under `ulimit -n 200` a worker holds at most 200 - 64 connections (clients and backends: 64 stay
    free for the backend connections its clients need), answers every client it takes, and leaves the
    rest in the listen queue instead of accepting clients it could only answer 503 for want of a
    descriptor."""
    (b,) = backends(1)
    text = serve_config(str(tmp_path / "proxy"), [b.address], workers=1)
    # without CAP_SYS_RESOURCE, so that the master (run as root here) cannot raise the hard limit
    unprivileged = ["setpriv", "--bounding-set=-sys_resource", "--inh-caps=-sys_resource"]
    p = served(text, command=[*unprivileged, "prlimit", "--nofile=200:200", sys.executable, "-m", "fastproxy"])
    clients = [open_client(p.port) for _ in range(200)]
    p.wait_log(r"the open-files limit \(200\) less a reserve of 64")
    replies = collect(clients, 3.0)
    served_now = [s for s in clients if s in replies]
    assert all(r.startswith(b"HTTP/1.1 200") for r in replies.values()), "a client got an error"
    assert 60 <= len(served_now) <= 136, len(served_now)
    waiting = [s for s in clients if s not in replies]
    for s in served_now:
        s.close()
    deadline = time.monotonic() + 15       # the rest are accepted as the others leave
    while waiting:
        assert time.monotonic() < deadline, f"{len(waiting)} clients never answered"
        later = collect(waiting, 1.0)
        assert all(r.startswith(b"HTTP/1.1 200") for r in later.values()), "a client got an error"
        for s in later:
            s.close()
        waiting = [s for s in waiting if s not in later]


def collect(socks, seconds):
    """{socket: first bytes} of the clients answered within `seconds` (all waited on together)."""
    import selectors

    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    out = {}
    deadline = time.monotonic() + seconds
    while len(out) < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=max(0.01, deadline - time.monotonic())):
            out[key.fileobj] = key.fileobj.recv(100)
            sel.unregister(key.fileobj)
    sel.close()
    return out
