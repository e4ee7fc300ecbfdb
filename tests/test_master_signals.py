"""The master's signals, pidfile and control commands, with real processes and real signals.

QUIT during a long response, pidfile stale/live detection and .oldbin, `fastproxy status|reload|reopen|quit|
stop|upgrade` (with its rollbacks), a second USR2 refused, TTIN/TTOU, a hung worker killed by heartbeat,
crash-loop backoff with its reason, and a reload that adds and removes listeners while the listener that
stays is never closed. The load-bearing versions of reload and upgrade are in test_master_load.py.
"""

import os
import signal
import subprocess
import sys

from helpers import procs
from helpers.client import Client
from helpers.load import serve_config
from helpers.running import REPO_DIR, free_port, port_answers


def cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "fastproxy", *args], cwd=REPO_DIR, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, PYTHONPATH=REPO_DIR))


def get(port, path="/"):
    with Client(port, timeout=10) as c:
        return c.get(path)


def test_quit_lets_a_long_streaming_response_complete(tmp_path, backends, served):
    (b,) = backends(1)
    p = served(serve_config(str(tmp_path / "proxy"), [b.address], workers=1))
    c = Client(p.port, timeout=10)
    c.send(b"GET /slow-body/1500 HTTP/1.1\r\nHost: app.test\r\n\r\n")
    head = c.reader.read_until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    first = c.reader.read_exact(5)             # the backend sent half the body and now waits
    os.kill(p.master(), signal.SIGQUIT)
    p.wait_log("graceful shutdown")
    rest = c.reader.read_until_close()
    c.close()
    assert first + rest == b"b0 slow body\n"
    assert p.proc.wait(timeout=30) == 0
    assert "graceful shutdown complete" in p.log()
    assert not os.path.exists(p.pidfile)
    assert not port_answers(p.port)


def test_pidfile_stale_is_replaced_and_a_live_one_refuses(tmp_path, demo, served):
    a = demo("A")
    workdir = tmp_path / "proxy"
    workdir.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    (workdir / "fp.pid").write_text(f"{dead.pid}\n")
    text = serve_config(str(workdir), [a.address])
    p = served(text)
    assert p.master() == p.pid
    assert f"removing stale pidfile {p.pidfile} (pid {dead.pid} is not a running fastproxy master)" in p.log()
    # a second master with the same pidfile (on another port) refuses to start
    other = tmp_path / "other.toml"
    other.write_text(text.replace(f"127.0.0.1:{p.port}", f"127.0.0.1:{free_port()}"))
    r = cli("serve", "-c", str(other), timeout=30)
    assert r.returncode == 1
    assert f"already running: pidfile {p.pidfile} names master {p.pid}" in r.stderr
    assert p.master() == p.pid


def test_control_commands_and_status(tmp_path, demo, served):
    a, b = demo("A"), demo("B")
    p = served(serve_config(str(tmp_path / "proxy"), [a.address]))
    r = cli("status", "-c", p.config_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"master {p.pid} (pidfile {p.pidfile}): fastproxy: master [{p.config_path}]"
    assert sorted(line.split(": ", 1)[1] for line in lines[1:]) == [
        "fastproxy: worker 0 (gen 1)", "fastproxy: worker 1 (gen 1)"]
    # reload -c checks the file first: a broken one is not sent
    good = open(p.config_path).read()
    p.write_config(good.replace("workers = 2", "workers = 0"))
    r = cli("reload", "-c", p.config_path)
    assert r.returncode == 1 and "[server] workers:" in r.stderr and "not sent" in r.stderr
    assert "reload (SIGHUP)" not in p.log()
    p.write_config(serve_config(str(tmp_path / "proxy"), [b.address], port=p.port))
    r = cli("reload", "--pid", p.pidfile)
    assert (r.returncode, r.stdout) == (0, f"sent SIGHUP (reload) to master {p.pid}\n")
    p.wait_log("reload complete: generation 2")
    procs.wait_for(lambda: sorted(p.workers().values()) == ["fastproxy: worker 0 (gen 2)",
                                                            "fastproxy: worker 1 (gen 2)"],
                   message="generation 2 workers only")
    assert get(p.port).header("x-backend") == b"B"
    r = cli("reopen", "-c", p.config_path)
    assert r.returncode == 0
    p.wait_log("SIGUSR1: reopened the error log")
    r = cli("quit", "-c", p.config_path)
    assert r.returncode == 0
    assert p.proc.wait(timeout=30) == 0
    r = cli("status", "-c", p.config_path)
    assert (r.returncode, r.stdout) == (3, f"not running (pidfile {p.pidfile})\n")
    r = cli("stop", "--pid", p.pidfile)
    assert r.returncode == 1 and "not running: no pidfile" in r.stderr
    # a pidfile naming a pid that is no fastproxy master is reported as stale
    with open(p.pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    r = cli("stop", "--pid", p.pidfile)
    assert r.returncode == 1 and "stale pidfile" in r.stderr
    os.unlink(p.pidfile)


def test_cli_upgrade_runs_the_whole_sequence(tmp_path, demo, served):
    a = demo("A")
    p = served(serve_config(str(tmp_path / "proxy"), [a.address], server={"upgrade_timeout": "20s"}))
    old = p.pid
    r = cli("upgrade", "-c", p.config_path)
    assert r.returncode == 0, r.stdout + r.stderr + p.log()
    new = p.master()
    assert new != old and r.stdout.endswith(f"upgrade complete: master {new} serves\n")
    assert p.proc.wait(timeout=10) == 0            # the old master is gone, the new one serves
    assert p.oldbin() is None
    assert procs.cmdline(new) == f"fastproxy: master [{p.config_path}]"
    assert len(p.workers(new)) == 2
    assert get(p.port).status == 200
    assert f"binary upgrade: inherited 2 listening socket(s) from master {old}" in p.log()


def test_cli_upgrade_rolls_back_when_the_new_master_fails(tmp_path, demo, served):
    a = demo("A")
    p = served(serve_config(str(tmp_path / "proxy"), [a.address]))
    good = open(p.config_path).read()
    p.write_config(good + "\n[bogus]\n")            # the new master will refuse this file and exit
    r = cli("upgrade", "--pid", p.pidfile)
    assert r.returncode == 1
    assert "exited before it was ready" in r.stderr and f"rolled back: master {p.pid} serves" in r.stderr
    assert p.master() == p.pid and p.oldbin() is None
    assert get(p.port).status == 200
    p.write_config(good)
    # too short a timeout: the new master is told to QUIT and the old one keeps serving
    r = cli("upgrade", "--pid", p.pidfile, "--timeout", "0.01")
    assert r.returncode == 1
    assert "not ready after 0.01s: rolling back" in r.stderr, r.stderr
    assert f"rolled back: master {p.pid} serves" in r.stderr
    # the old master took its pidfile back: it reaped the new master
    assert p.master() == p.pid and p.oldbin() is None
    assert len(p.workers(p.pid)) == 2
    assert get(p.port).status == 200


def fake_checkout(path):
    """A directory holding a `fastproxy/` source folder that must never be imported by the proxy."""
    pkg = path / "fastproxy"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('raise SystemExit("the fake checkout was imported")\n')
    (pkg / "__main__.py").write_text('raise SystemExit("the fake checkout was run")\n')
    return path


def maps_our_package(pid):
    """The process has this worktree's compiled fastproxy modules mapped (the package it must run)."""
    with open(f"/proc/{pid}/maps") as f:
        return os.path.join(REPO_DIR, "fastproxy", "_shm.") in f.read()


def upgrade_and_check(p):
    old = p.pid
    r = cli("upgrade", "--pid", p.pidfile)
    assert r.returncode == 0, r.stdout + r.stderr + p.log()
    new = p.master()
    assert new != old and p.proc.wait(timeout=10) == 0
    assert "the fake checkout" not in p.log()
    assert procs.cmdline(new) == f"fastproxy: master [{p.config_path}]"
    assert maps_our_package(new)
    assert get(p.port).status == 200
    return new


def test_upgrade_from_a_checkout_runs_the_installed_program(tmp_path, demo, served):
    """Issue 8: started (like the `fastproxy` console script) in a directory holding a `fastproxy/` source
    folder, the upgrade must exec the package that runs, not import the folder from the working directory."""
    a = demo("A")
    checkout = fake_checkout(tmp_path / "checkout")
    script = tmp_path / "bin" / "fastproxy"
    script.parent.mkdir()
    script.write_text("import sys\nfrom fastproxy.cli import main\nsys.exit(main())\n")
    p = served(serve_config(str(tmp_path / "proxy"), [a.address], workers=1),
               command=[sys.executable, str(script)], cwd=str(checkout))
    new = upgrade_and_check(p)
    assert os.readlink(f"/proc/{new}/cwd") == str(checkout)     # same working directory as the old one
    upgrade_and_check(p)                                        # and again, from the new master


def test_upgrade_keeps_the_package_found_through_the_working_directory(tmp_path, demo, served):
    """`python -m fastproxy` from the source tree with in-place builds and no PYTHONPATH: the package is
    found through sys.path[0]; the upgrade (which keeps the working directory out of sys.path) must still
    run that same package, not another installation (the venv may hold one elsewhere)."""
    a = demo("A")
    p = served(serve_config(str(tmp_path / "proxy"), [a.address], workers=1),
               cwd=REPO_DIR, pythonpath=None)
    upgrade_and_check(p)


def nofile_limits(pid):
    """(soft, hard) "Max open files" of a process, from /proc."""
    with open(f"/proc/{pid}/limits") as f:
        line = next(x for x in f if x.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def test_master_raises_the_open_files_limit_for_max_connections(tmp_path, demo, served):
    """Issue 8: [server] max_connections = 1000 needs 2 x 1000 + 64 descriptors (+ listening sockets) per
    process; started with a soft limit of 256 (hard 8192), the master raises it and its workers inherit it."""
    a = demo("A")
    text = serve_config(str(tmp_path / "proxy"), [a.address], workers=2, server={"max_connections": 1000})
    p = served(text, command=["prlimit", "--nofile=256:8192", sys.executable, "-m", "fastproxy"])
    assert nofile_limits(p.pid) == (2066, 8192)
    assert all(nofile_limits(w) == (2066, 8192) for w in p.workers())
    assert "raised the open-files limit (RLIMIT_NOFILE) from 256 to 2066 for [server] max_connections = 1000" \
        in p.log()
    assert get(p.port).status == 200


def test_master_says_when_the_hard_limit_is_too_low(tmp_path, demo, served):
    a = demo("A")
    text = serve_config(str(tmp_path / "proxy"), [a.address], workers=1, server={"max_connections": 5000})
    # without CAP_SYS_RESOURCE (root has it: it could raise the hard limit too)
    unprivileged = ["setpriv", "--bounding-set=-sys_resource", "--inh-caps=-sys_resource"]
    p = served(text, command=[*unprivileged, "prlimit", "--nofile=256:1024", sys.executable, "-m", "fastproxy"])
    assert nofile_limits(p.pid) == (1024, 1024)
    assert ("the hard limit 1024 is below the 10065 descriptors [server] max_connections = 5000 needs; raised "
            "the soft limit from 256 to 1024: a worker runs out of descriptors at about 480 connections") in p.log()
    assert get(p.port).status == 200


def test_second_usr2_is_refused_while_an_upgrade_is_in_flight(tmp_path, demo, served):
    a = demo("A")
    p = served(serve_config(str(tmp_path / "proxy"), [a.address], workers=1))
    old = p.pid
    os.kill(old, signal.SIGUSR2)
    procs.wait_for(lambda: p.master() not in (None, old), message="the new master's pidfile")
    new = p.master()
    since = p.log_size()
    os.kill(old, signal.SIGUSR2)
    p.wait_log(rf"\[master {old}\] SIGUSR2 refused: an upgrade is in progress \(new master {new}\)", since)
    os.kill(new, signal.SIGUSR2)
    p.wait_log(rf"\[master {new}\] SIGUSR2 refused: the old master {old} of the last upgrade still runs", since)
    assert p.oldbin() == old and p.master() == new


def test_ttin_and_ttou_add_and_remove_a_worker(tmp_path, demo, served):
    a = demo("A")
    p = served(serve_config(str(tmp_path / "proxy"), [a.address], workers=1))
    os.kill(p.pid, signal.SIGTTIN)
    p.wait_log(r"all 2 worker\(s\) of generation 1 ready")
    assert sorted(p.workers().values()) == ["fastproxy: worker 0 (gen 1)", "fastproxy: worker 1 (gen 1)"]
    os.kill(p.pid, signal.SIGTTOU)
    p.wait_log(r"worker 1 \(pid \d+, gen 1\) exited: exit code 0")
    p.wait_log("closed 1 listening socket")
    assert list(p.workers().values()) == ["fastproxy: worker 0 (gen 1)"]
    os.kill(p.pid, signal.SIGTTOU)
    p.wait_log("SIGTTOU ignored: already down to one worker")
    assert get(p.port).status == 200


def test_hung_worker_is_killed_and_replaced(tmp_path, demo, served):
    a = demo("A")
    p = served(serve_config(str(tmp_path / "proxy"), [a.address], workers=1,
                            server={"worker_heartbeat_timeout": "1s"}))
    (hung,) = p.workers()
    os.kill(hung, signal.SIGSTOP)               # its event loop stops beating
    p.wait_log(rf"worker 0 \(pid {hung}, gen 1\) hung: no heartbeat for [\d.]+s")
    p.wait_log(rf"worker 0 \(pid {hung}, gen 1\) died: killed by SIGKILL")
    p.wait_log(r"worker 0 \(pid \d+, gen 1\) ready", since=p.log().index(f"pid {hung}, gen 1) died"))
    assert hung not in p.workers()
    assert get(p.port).status == 200


def test_crash_loop_is_backed_off_with_its_reason(tmp_path, demo):
    a = demo("A")
    workdir = tmp_path / "proxy"
    workdir.mkdir()
    path = workdir / "proxy.toml"
    # the access log's directory does not exist: every worker fails at start, with exit code 3
    path.write_text(serve_config(str(workdir), [a.address], workers=1,
                                 log={"access_log": str(workdir / "missing" / "access.log")}))
    log_path = workdir / "proxy.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "fastproxy", "serve", "-c", str(path)], cwd=REPO_DIR,
                                env=dict(os.environ, PYTHONPATH=REPO_DIR), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        procs.wait_for(lambda: "dying repeatedly (3 times), respawning in 0.5s" in log_path.read_text(),
                       message="backoff")
        text = log_path.read_text()
        assert "cannot open access log" in text
        assert "died: exit code 3 (config error)" in text
        assert "dying repeatedly (2 times), respawning in 0.25s" in text
        assert not (workdir / "fp.pid").exists()       # never ready, so no pidfile
    finally:
        procs.kill_pid(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    procs.wait_for(lambda: not procs.group_members(proc.pid), message="every process gone")


def listener_inodes(port):
    """Socket inodes listening on 127.0.0.1:port (from /proc/net/tcp)."""
    out = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                out.add(inode)
    return out


def test_reload_opens_and_closes_listeners_and_never_closes_one_that_stays(tmp_path, demo, served):
    a = demo("A")
    workdir = str(tmp_path / "proxy")
    text = serve_config(workdir, [a.address])
    p = served(text)
    kept = listener_inodes(p.port)
    assert len(kept) == 2                           # one SO_REUSEPORT socket per worker slot
    second = free_port()
    p.write_config(text.replace("[[listen]]", f'[[listen]]\naddress = "127.0.0.1:{second}"\n\n[[listen]]', 1))
    os.kill(p.pid, signal.SIGHUP)
    p.wait_log("reload complete: generation 2")
    assert f"new listeners 127.0.0.1:{second}" in p.log()
    assert get(second).status == 200 and get(p.port).status == 200
    assert listener_inodes(p.port) == kept
    # drop the first address: its sockets close once the old workers are gone
    kept = listener_inodes(second)
    since = p.log_size()
    p.write_config(text.replace(f"127.0.0.1:{p.port}", f"127.0.0.1:{second}"))
    os.kill(p.pid, signal.SIGHUP)
    p.wait_log("reload complete: generation 3", since)
    p.wait_log("closed 2 listening socket", since)
    procs.wait_for(lambda: not listener_inodes(p.port), message="the removed listener to be closed")
    assert not port_answers(p.port)
    assert get(second).status == 200
    assert listener_inodes(second) == kept


def test_reload_whose_workers_are_not_ready_in_time_is_abandoned(tmp_path, demo, served):
    a, b = demo("A"), demo("B")
    workdir = str(tmp_path / "proxy")
    p = served(serve_config(workdir, [a.address]))
    workers = set(p.workers())
    # no worker can import and build its core within a millisecond of its fork
    p.write_config(serve_config(workdir, [b.address], port=p.port, server={"ready_timeout": "1ms"}))
    os.kill(p.pid, signal.SIGHUP)
    p.wait_log(r"reload abandoned: new workers not ready within 0\.001s; generation 1 keeps serving")
    p.wait_log(r"worker \d \(pid \d+, gen 2\) exited")
    procs.wait_for(lambda: set(p.workers()) == workers, message="only the generation 1 workers")
    assert get(p.port).header("x-backend") == b"A"
    # the same file with a sane timeout goes through
    p.write_config(serve_config(workdir, [b.address], port=p.port))
    os.kill(p.pid, signal.SIGHUP)
    p.wait_log("reload complete: generation 2")
    procs.wait_for(lambda: not workers & set(p.workers()), message="the old workers to retire")
    assert get(p.port).header("x-backend") == b"B"
