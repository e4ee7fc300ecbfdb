"""Start and stop the processes a benchmark needs: the backend and the proxies.

Every process is started in its own session with its output in a log file (never a pipe nobody reads),
is waited for by polling with a deadline until it answers a real request, and is stopped by its PID.
Generated configs live in a temporary directory given by the caller.

The backend is a separate nginx instance with 1 worker that serves `GET /100` and `GET /10k` as static
files from the page cache with cached descriptors: no logging, unlimited keep-alive, so it costs a few
microseconds per request and is the same for every proxy.

The proxies: nginx, HAProxy, and fastproxy in three variants that differ only by the one route's filters,
so that what a filter costs is measured against plain fastproxy in the same run:

    fastproxy              no filter on the route
    fastproxy-addheaders   the route adds one response field (`add_headers`)
    fastproxy-hook         the route calls a trivial Python request hook (`hooks = { request = ... }`,
                           with `[server] python_path`); a fastproxy without hooks refuses this config,
                           and check_fastproxy_config() says so before a run starts
    fastproxy-baseline     plain fastproxy's config, run from another checkout (`baseline`, e.g. the
                           commit before a change, built in place): is the change slower?
"""

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Response bodies of the scenarios, by URL path. Fixed content so a proxy that mangles bodies is caught
# by the readiness check.
BODIES = {
    "/100": b"x" * 99 + b"\n",
    "/10k": (b"0123456789abcdef" * 640)[:10239] + b"\n",
}


def free_port():
    """A port that was free a moment ago (bind port 0); the small race is acceptable for a benchmark."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _taskset(cpus):
    return ["taskset", "-c", cpus] if cpus else []


@dataclass
class Proc:
    """One started process (the master for nginx/fastproxy) and where its output goes."""

    name: str
    port: int
    popen: subprocess.Popen
    log: Path
    # Every PID ever seen under this process, so that a child that outlives its parent is still found.
    seen: set = field(default_factory=set)

    @property
    def pid(self):
        return self.popen.pid

    def tree(self):
        """PIDs of the process and all its live descendants (nginx master + workers, fastproxy ditto)."""
        pids = descendants(self.pid)
        self.seen.update(pids)
        return pids

    def cpu_ticks(self):
        """(utime, stime) clock ticks summed over the tree. /proc/PID/stat of a process sums its threads."""
        user = system = 0
        for pid in self.tree():
            times = proc_times(pid)
            if times:
                user += times[0]
                system += times[1]
        return user, system


def proc_times(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after "(comm)": state is field 3, utime 14 and stime 15 (proc(5)); comm may contain spaces.
    rest = stat[stat.rindex(")") + 2 :].split()
    return int(rest[11]), int(rest[12])


def _ppids():
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            table[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    return table


def descendants(root):
    ppids = _ppids()
    if root not in ppids:
        return []
    found = [root]
    for pid in found:
        found.extend(p for p, pp in ppids.items() if pp == pid)
    return found


def alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start(name, argv, port, logdir, cpus=None, cwd=None, env=None):
    log = Path(logdir) / f"{name}.log"
    with open(log, "wb") as out:
        popen = subprocess.Popen(
            _taskset(cpus) + argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
            env=env,
        )
    return Proc(name, port, popen, log)


def stop(proc, timeout=10.0):
    """TERM the process by PID, wait with a deadline, then KILL it and any descendant that survived.

    Returns the list of PIDs that had to be killed after the deadline (a finding worth reporting)."""
    proc.tree()
    if proc.popen.poll() is None:
        proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            proc.popen.wait()
    survivors = []
    deadline = time.monotonic() + timeout
    for pid in sorted(proc.seen - {proc.pid}):
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if alive(pid):
            survivors.append(pid)
            os.kill(pid, signal.SIGKILL)
    return survivors


def get(port, path, timeout=2.0):
    """GET path: (status, body, headers as an http.client.HTTPMessage)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": "bench.local"})
        resp = conn.getresponse()
        return resp.status, resp.read(), resp.headers
    finally:
        conn.close()


def wait_ready(proc, path="/100", timeout=20.0, header=None):
    """Poll until the process answers `path` with 200 and the expected body (and, if given, the response
    field header = (name, value)), or fail with its log."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{tail(proc.log)}")
        try:
            status, body, headers = get(proc.port, path)
            if status == 200 and body == BODIES[path] and (header is None or headers.get(header[0]) == header[1]):
                return
            last = f"status {status}, {len(body)} body bytes"
            if header is not None:
                last += f", {header[0]}: {headers.get(header[0])!r} (expected {header[1]!r})"
        except OSError as e:
            last = repr(e)
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} not ready on port {proc.port} after {timeout}s ({last}):\n{tail(proc.log)}")


def tail(path, lines=30):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- nginx, as backend and as proxy ---------------------------------------------------------------

def _nginx_main(prefix, workers, connections=4096):
    """The main context. Above 4096 connections per worker also worker_rlimit_nofile: a proxied client
    takes a descriptor, and the pooled backend connections a few more."""
    prefix = Path(prefix)
    for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "temp" / d).mkdir(parents=True, exist_ok=True)
    # As root nginx would switch its workers to "nobody"; stay root so the temp dirs stay writable.
    user = "user root;\n" if os.geteuid() == 0 else ""
    nofile = f"worker_rlimit_nofile {connections + 1024};\n" if connections > 4096 else ""
    return f"""{user}daemon off;
master_process on;
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{nofile}events {{ worker_connections {connections}; }}
"""


def _nginx_http_common(prefix):
    return f"""    access_log off;
    client_body_temp_path {prefix}/temp/client_body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
"""


def start_backend(tmp, logdir, cpus=None):
    """The shared backend: nginx, 1 worker, two static files."""
    prefix = Path(tmp) / "backend"
    prefix.mkdir()
    port = free_port()
    docroot = prefix / "www"
    docroot.mkdir()
    for path, body in BODIES.items():
        (docroot / path.lstrip("/")).write_bytes(body)
    # Static files (nginx's `return` cannot hold a 10 KB string); open_file_cache keeps the descriptors
    # open, so a request costs no open()/stat().
    conf = _nginx_main(prefix, 1) + f"""http {{
{_nginx_http_common(prefix)}    default_type application/octet-stream;
    sendfile on;
    open_file_cache max=16 inactive=1h;
    open_file_cache_valid 1h;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {docroot};
    }}
}}
"""
    (prefix / "nginx.conf").write_text(conf)
    proc = start("backend", ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")], port, logdir, cpus)
    wait_ready(proc)
    wait_ready(proc, "/10k")
    return proc


def start_mixed_backend(tmp, logdir, big, client_body_timeout="60s"):
    """The backend of the slow-client and soak scripts: nginx, 1 worker, serving /100 and /10k, /big (`big`
    bytes) and /upload, which reads the whole request body first (nginx's request buffering) and then
    answers like /100."""
    prefix = Path(tmp) / "backend"
    prefix.mkdir()
    port = free_port()
    www = prefix / "www"
    www.mkdir()
    for path, body in BODIES.items():
        (www / path.lstrip("/")).write_bytes(body)
    (www / "big").write_bytes(b"b" * big)
    conf = _nginx_main(prefix, 1) + f"""http {{
{_nginx_http_common(prefix)}    default_type application/octet-stream;
    sendfile on;
    client_body_timeout {client_body_timeout};
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {www};
        location = /upload {{
            client_max_body_size 0;
            proxy_pass http://127.0.0.1:{port}/100;
            proxy_method GET;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }}
    }}
}}
"""
    (prefix / "nginx.conf").write_text(conf)
    proc = start("backend", ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")], port, logdir)
    wait_ready(proc)
    return proc


def nginx_proxy_config(prefix, port, backend_port, workers, connections=4096):
    # proxy_buffering stays on (nginx's default): with 100 B and 10 KB bodies the response fits the
    # default buffers, so nothing touches disk either way.
    return _nginx_main(prefix, workers, connections) + f"""http {{
{_nginx_http_common(prefix)}    upstream b {{
        server 127.0.0.1:{backend_port};
        keepalive 64;
        keepalive_requests 100000000;
    }}
    server {{
        # reuseport: one listening socket per worker, as fastproxy does (SO_REUSEPORT).
        listen 127.0.0.1:{port} backlog=4096 reuseport;
        location / {{
            proxy_pass http://b;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def haproxy_config(port, backend_port, workers):
    return f"""global
    nbthread {workers}
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    timeout http-request 60s

frontend fe
    bind 127.0.0.1:{port}
    default_backend be

backend be
    server b1 127.0.0.1:{backend_port}
"""


# fastproxy-addheaders adds this field to every response; the readiness check looks for it.
ADD_HEADER = ("X-Frame-Options", "DENY")

# fastproxy-hook's request hook: the cheapest one there is, so its cost is the cost of calling Python.
HOOK_MODULE = """\
def noop(request):
    return None
"""


def fastproxy_config(port, backend_port, workers, variant="fastproxy", hook_dir=None, server_extra="", extra=""):
    """variant: one of FASTPROXY_VARIANTS; hook_dir: where benchhooks.py is (fastproxy-hook only);
    server_extra: more [server] lines; extra: more tables at the end (idle.py sets timeouts)."""
    server, route = server_extra, ""
    if variant == "fastproxy-addheaders":
        route = f'add_headers = {{ "{ADD_HEADER[0]}" = "{ADD_HEADER[1]}" }}\n'
    elif variant == "fastproxy-hook":
        server += f'python_path = ["{hook_dir}"]\n'
        route = 'hooks = { request = "benchhooks:noop" }\n'
    elif variant not in ("fastproxy", "fastproxy-baseline"):
        raise ValueError(f"unknown fastproxy variant {variant!r}")
    return f"""[server]
workers = {workers}
{server}
[[listen]]
address = "127.0.0.1:{port}"

[upstreams.b]
servers = [{{ address = "127.0.0.1:{backend_port}" }}]
keepalive = 64

[[routes]]
host = "*"
path = "/"
upstream = "b"
{route}{extra}"""


def write_fastproxy_config(name, d, port, backend_port, workers):
    """Write d/proxy.toml for variant `name` (and d/hooks/benchhooks.py for the hook); returns the path."""
    hook_dir = None
    if name == "fastproxy-hook":
        hook_dir = d / "hooks"
        hook_dir.mkdir(exist_ok=True)
        (hook_dir / "benchhooks.py").write_text(HOOK_MODULE)
    path = d / "proxy.toml"
    path.write_text(fastproxy_config(port, backend_port, workers, name, hook_dir))
    return path


def fastproxy_root(name, baseline=None):
    """The checkout a fastproxy variant runs from: this one, or `baseline` for fastproxy-baseline."""
    if name != "fastproxy-baseline":
        return REPO
    if baseline is None:
        raise RuntimeError("fastproxy-baseline needs --baseline DIR: a checkout of the commit to compare with")
    root = Path(baseline).resolve()
    if not list((root / "fastproxy").glob("_core.*.so")):
        raise RuntimeError(f"fastproxy-baseline: no built fastproxy in {root} (there: python setup.py "
                           "build_ext --inplace)")
    return root


def fastproxy_argv(root, *args):
    """`python -m fastproxy ARGS` importing fastproxy from root. Run with cwd=root: `-m` puts the working
    directory first on sys.path, before PYTHONPATH."""
    return [sys.executable, "-m", "fastproxy", *args], dict(os.environ, PYTHONPATH=str(root))


def check_fastproxy_config(name, tmp, baseline=None):
    """Run `fastproxy check` on variant `name`'s config; RuntimeError with fastproxy's own words if refused.

    Run before anything is started, so that a variant this fastproxy cannot run (the hook variant before
    hooks exist) stops the benchmark at once instead of after minutes of the other proxies."""
    root = fastproxy_root(name, baseline)
    d = Path(tmp) / f"check-{name}"
    d.mkdir()
    path = write_fastproxy_config(name, d, free_port(), free_port(), 1)
    argv, env = fastproxy_argv(root, "check", "-c", str(path))
    done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: this fastproxy refuses the config:\n" + (done.stdout + done.stderr).strip()
                           + f"\n\n{name} cannot run with the fastproxy in {root}; leave it out of --proxies.")


FASTPROXY_VARIANTS = ("fastproxy", "fastproxy-addheaders", "fastproxy-hook", "fastproxy-baseline")
PROXIES = (*FASTPROXY_VARIANTS, "nginx", "haproxy")


def start_proxy(name, tag, tmp, logdir, backend_port, workers, cpus=None, baseline=None):
    """Write the proxy's config into tmp/NAME-TAG, start it and wait until it proxies both bodies.
    baseline: the checkout fastproxy-baseline runs from."""
    d = Path(tmp) / f"{name}-{tag}"
    d.mkdir()
    port = free_port()
    if name == "nginx":
        (d / "nginx.conf").write_text(nginx_proxy_config(d, port, backend_port, workers))
        argv = ["nginx", "-p", str(d), "-c", str(d / "nginx.conf")]
        env, cwd = None, REPO
    elif name == "haproxy":
        (d / "haproxy.cfg").write_text(haproxy_config(port, backend_port, workers))
        argv = ["haproxy", "-f", str(d / "haproxy.cfg"), "-db"]
        env, cwd = None, REPO
    elif name in FASTPROXY_VARIANTS:
        cwd = fastproxy_root(name, baseline)
        path = write_fastproxy_config(name, d, port, backend_port, workers)
        argv, env = fastproxy_argv(cwd, "serve", "-c", str(path))
    else:
        raise ValueError(f"unknown proxy {name!r}")
    proc = start(f"{name}-{tag}", argv, port, logdir, cpus, cwd=cwd, env=env)
    header = ADD_HEADER if name == "fastproxy-addheaders" else None
    try:
        wait_ready(proc, header=header)
        wait_ready(proc, "/10k", header=header)
    except BaseException:
        stop(proc)
        raise
    return proc
