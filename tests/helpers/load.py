"""Helpers for the master's tests: fast demo backends, a `fastproxy serve` with a pidfile whose masters may
multiply (USR2), and wrk runs whose output is parsed into counts.

    DemoBackend(name)             `python -m fastproxy.demo` (asyncio, fast enough for wrk); stop() by PID
    Served(config_text, workdir)  the proxy, its log, its pidfile and every master an upgrade starts;
                                  stop() ends them all by PID and checks that nothing of theirs is left
    Wrk(url, seconds, ...)        wrk in the background with a Lua script that counts responses per status
                                  and per backend (X-Backend); result() parses its output into a WrkResult

Everything is polled with a deadline; nothing sleeps to synchronise.
"""

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from fastproxy import counters
from helpers import procs
from helpers.running import REPO_DIR, free_port

WRK_SCRIPT = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {}; backends = {} end
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local name = headers["X-Backend"] or headers["x-backend"] or "-"
  backends[name] = (backends[name] or 0) + 1
end
function done(summary, latency, requests)
  local s, b = {}, {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do s[k] = (s[k] or 0) + v end
    for k, v in pairs(t:get("backends")) do b[k] = (b[k] or 0) + v end
  end
  for k, v in pairs(s) do io.write(string.format("STATUS %s %d\n", k, v)) end
  for k, v in pairs(b) do io.write(string.format("BACKEND %s %d\n", k, v)) end
end
"""


class DemoBackend:
    def __init__(self, name):
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastproxy.demo", "--name", name, "--port", "0"],
            cwd=REPO_DIR,
            stdout=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=REPO_DIR),
            start_new_session=True,
        )
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            self.stop()
            raise RuntimeError(f"demo backend {name} did not start: {line!r}")
        self.port = int(line.rsplit(":", 1)[1])
        self.address = f"127.0.0.1:{self.port}"

    def stop(self):
        procs.kill_pid(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            procs.kill_pid(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        self.proc.stdout.close()


def serve_config(workdir, servers, workers=2, port=None, server=None, log=None, extra=""):
    """TOML for one listener on 127.0.0.1, one upstream "app" over servers (addresses), a pidfile in workdir."""
    port = port or free_port()
    lines = ["[server]", f"workers = {workers}", f'pidfile = "{os.path.join(workdir, "fp.pid")}"']
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in (server or {}).items()]
    if log:
        lines += ["", "[log]"] + [f'{k} = "{v}"' for k, v in log.items()]
    lines += ["", "[[listen]]", f'address = "127.0.0.1:{port}"', "", "[upstreams.app]"]
    lines += ["servers = [" + ", ".join(f'{{ address = "{a}" }}' for a in servers) + "]"]
    lines += ["", "[[routes]]", 'upstream = "app"', "", extra]
    return "\n".join(lines) + "\n"


class Served:
    """`python -m fastproxy serve -c FILE` (its own session; stderr to a log file), run until stop()."""

    def __init__(self, config_text, workdir, command=None, cwd=None, pythonpath=REPO_DIR):
        """command: how fastproxy is started (default `python -m fastproxy`); cwd: where (default workdir);
        pythonpath: PYTHONPATH (None: unset, the package must then be found some other way)."""
        os.makedirs(workdir, exist_ok=True)
        self.dir = workdir
        self.config_path = os.path.join(workdir, "proxy.toml")
        self.write_config(config_text)
        self.port = int(re.search(r'address = "127\.0\.0\.1:(\d+)"', config_text).group(1))
        self.pidfile = os.path.join(workdir, "fp.pid")
        self.log_path = os.path.join(workdir, "proxy.log")
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        if pythonpath is not None:
            env["PYTHONPATH"] = pythonpath
        command = command or [sys.executable, "-m", "fastproxy"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*command, "serve", "-c", self.config_path],
                cwd=cwd or workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.proc.pid      # the first master; every later one is in its process group
        try:
            procs.wait_for(lambda: self.master() == self.pid or self.proc.poll() is not None, timeout=15,
                           message="the pidfile (written once the workers are ready)")
            if self.proc.poll() is not None:
                raise AssertionError(f"fastproxy exited with {self.proc.returncode}:\n{self.log()}")
        except BaseException:
            self.stop(check=False)
            raise

    def write_config(self, text):
        tmp = self.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.config_path)

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def log_size(self):
        return os.path.getsize(self.log_path)

    def wait_log(self, pattern, since=0, timeout=15.0):
        """The first match of pattern in the log after byte offset since (polled until the deadline)."""
        regex = re.compile(pattern)

        def found():
            return regex.search(self.log()[since:])

        try:
            return procs.wait_for(found, timeout=timeout, message=f"log line {pattern!r}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.log()[-6000:]}") from None

    def master(self):
        """The pid the pidfile names, or None."""
        try:
            with open(self.pidfile) as f:
                return int(f.read().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def oldbin(self):
        try:
            with open(self.pidfile + ".oldbin") as f:
                return int(f.read().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def workers(self, master=None):
        """{pid: title} of the live workers of a master (default: the one the pidfile names)."""
        master = master or self.master()
        out = {}
        for pid in procs.children(master) if master else []:
            title = procs.cmdline(pid)
            if title.startswith("fastproxy: worker"):
                out[pid] = title
        return out

    def requests_served(self, pids=None):
        """Requests counted in the shared table: by every worker, dead ones included (the retired totals),
        or by the live workers among pids. Every master of this config file uses the same table."""
        try:
            if pids is None:
                return counters.read(self.config_path)["requests"]
            return sum(c["requests"] for pid, c in counters.per_worker(self.config_path).items() if pid in pids)
        except FileNotFoundError:
            return 0

    def alive(self, pid):
        if pid is None:
            return False
        try:
            return procs._stat_fields(pid)[0] != "Z"
        except (FileNotFoundError, ProcessLookupError):    # gone (or going) meanwhile
            return False

    def stop(self, check=True):
        """TERM every master there is (pidfile, .oldbin, the first one), wait, and check none of their
        processes is left (zombies reparented to init aside)."""
        for pid in {self.pid, self.master(), self.oldbin()} - {None}:
            if pid == self.pid or procs.cmdline(pid).startswith("fastproxy: master"):
                procs.kill_pid(pid, signal.SIGTERM)
        problems = []
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            problems.append("first master did not exit within 10 s of SIGTERM")
            procs.kill_pid(self.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

        def live_members():
            return [p for p in procs.group_members(self.pid) if self.alive(p)]

        try:
            procs.wait_for(lambda: not live_members(), timeout=10, message="every master and worker to exit")
        except AssertionError:
            left = live_members()
            problems.append(f"processes left: {[(p, procs.cmdline(p)) for p in left]}")
            for p in left:
                procs.kill_pid(p)
        if check and problems:
            raise AssertionError("; ".join(problems) + "\n" + self.log()[-6000:])


@dataclass
class WrkResult:
    output: str
    requests: int = 0
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeouts: int = 0
    non_2xx: int = 0
    statuses: dict = field(default_factory=dict)
    backends: dict = field(default_factory=dict)

    @property
    def socket_errors(self):
        return self.connect_errors + self.read_errors + self.write_errors + self.timeouts

    def summary(self):
        return (f"{self.requests} requests, socket errors connect {self.connect_errors} read {self.read_errors} "
                f"write {self.write_errors} timeout {self.timeouts}, non-2xx {self.non_2xx}, "
                f"statuses {self.statuses}, backends {self.backends}")


def parse_wrk(output):
    r = WrkResult(output)
    if m := re.search(r"(\d+) requests in", output):
        r.requests = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        r.connect_errors, r.read_errors, r.write_errors, r.timeouts = map(int, m.groups())
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        r.non_2xx = int(m.group(1))
    r.statuses = {int(s): int(n) for s, n in re.findall(r"^STATUS (\d+) (\d+)$", output, re.M)}
    r.backends = {b: int(n) for b, n in re.findall(r"^BACKEND (\S+) (\d+)$", output, re.M)}
    return r


class Wrk:
    """wrk in the background: `Wrk(url, seconds, connections, close=True)` adds "Connection: close"."""

    def __init__(self, url, seconds, workdir, connections=16, threads=2, close=False):
        self.script = os.path.join(workdir, "count.lua")
        with open(self.script, "w") as f:
            f.write(WRK_SCRIPT)
        args = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", "-s", self.script]
        if close:
            args += ["-H", "Connection: close"]
        self.out_path = os.path.join(workdir, f"wrk-{time.monotonic_ns()}.out")
        self.out = open(self.out_path, "wb")
        self.proc = subprocess.Popen(args + [url], stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.seconds = seconds

    def running(self):
        return self.proc.poll() is None

    def result(self):
        try:
            self.proc.wait(timeout=self.seconds + 30)
        except subprocess.TimeoutExpired:
            procs.kill_pid(self.proc.pid)
            self.proc.wait()
        self.out.close()
        with open(self.out_path) as f:
            output = f.read()
        assert self.proc.returncode == 0, f"wrk failed ({self.proc.returncode}):\n{output}"
        return parse_wrk(output)

    def stop(self):
        if self.proc.poll() is None:
            procs.kill_pid(self.proc.pid)
            self.proc.wait()
        if not self.out.closed:
            self.out.close()
