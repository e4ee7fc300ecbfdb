"""Resource limits of a worker, through a running `fastproxy serve` with one worker.

[server] max_connections: at the limit the worker stops accepting (the listener leaves its epoll set, so
nothing spins), new clients wait in the kernel's listen queue, and the first close lets one in. Out of
descriptors (EMFILE, here forced with prlimit on the whole process): the worker stops polling the
listener, backs off, retries when a descriptor frees up, and says so once in the log; it spends next to
no CPU while the condition lasts, and serves again as soon as connections close.
"""

import socket
import sys
import time

from helpers import procs
from helpers.load import serve_config

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
    text = serve_config(str(tmp_path / "proxy"), [b.address], workers=1)
    # without CAP_SYS_RESOURCE, so that the master (run as root here) cannot raise the hard limit
    unprivileged = ["setpriv", "--bounding-set=-sys_resource", "--inh-caps=-sys_resource"]
    p = served(text, command=[*unprivileged, "prlimit", "--nofile=64:64", sys.executable, "-m", "fastproxy"])
    clients = []
    for _ in range(100):                   # more than 64 descriptors: some cannot be accepted
        clients.append(open_client(p.port))
    p.wait_log("out of file descriptors")
    (worker,) = p.workers()
    before = cpu_seconds(worker)
    time.sleep(1.0)
    assert cpu_seconds(worker) - before < 0.2, "the worker spins while out of descriptors"
    assert "open-files limit" in p.log()      # the master said it could not raise the limit
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
