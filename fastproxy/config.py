"""The configuration: TOML in, frozen dataclasses out.

CONTRACT (shapes other modules rely on; the core reads these attribute names):

    Config.path                      str, the file it came from ("<demo>" for the built-in one)
    Config.server.workers            int >= 1 ("auto" resolved to os.cpu_count())
    Config.server.pidfile            str | None
    Config.server.server_header      str: "" drops the backend's Server field, else replaces its value
    Config.server.forwarded          bool: also add an RFC 7239 Forwarded field
    Config.server.drain_timeout      float seconds a graceful stop (QUIT) may take before workers are killed
    Config.server.worker_heartbeat_timeout  float seconds without a heartbeat before a worker is killed as hung
    Config.server.ready_timeout      float seconds a reload's new workers get to report ready (else abandoned)
    Config.server.upgrade_timeout    float seconds `fastproxy upgrade` waits for the new master's workers
    Config.server.python_path        tuple[str, ...] absolute directories searched first for hook modules
                                     (relative entries of the file are resolved against its directory)
    Config.server.max_connections    int >= 1: client connections per worker (nginx worker_connections); the
                                     master raises RLIMIT_NOFILE for it (fastproxy/resources.py)
    Config.log.error_log             str | None: file for master and worker events; None = stderr
    Config.log.access_log            str | None: file for one line per request; None = off
    Config.log.access_format         str: "combined" or "json"
    Config.limits.max_head_size      int bytes (431)
    Config.limits.max_headers        int (431), 1..128 (the parser's MAX_HEADERS_HARD)
    Config.limits.max_uri_size       int bytes (414)
    Config.limits.max_body_size      int bytes, 0 = unlimited (413)
    Config.limits.buffer_size        int bytes per connection side (>= max_head_size)
    Config.timeouts.client_header    float seconds (408)
    Config.timeouts.client_body      float seconds between body reads (408)
    Config.timeouts.keepalive        float seconds a client connection may sit idle (0 = no keep-alive)
    Config.timeouts.upstream_connect float seconds
    Config.timeouts.upstream_read    float seconds between reads from the backend (504)
    Config.timeouts.upstream_send    float seconds between writes to the backend
    Config.listens                   tuple[Listen, ...]; Listen(address, host, port, backlog, family)
    Config.upstreams                 dict[str, Upstream]
        Upstream(name, balance, servers: tuple[Server, ...], keepalive, keepalive_timeout, tries,
                 hash_key, hash_load_factor, health, passive, retries, sticky, queue_size, queue_timeout)
            balance      one of BALANCES; hash_key: "client_ip" | "uri" | "header:NAME" | "cookie:NAME"
            tries        int, = retries.tries (the upstream-level `tries` key is an alias of it)
            health       Health(path, interval, timeout, rise, fall, status: (lo, hi), host) | None (no checks)
            passive      Passive(max_fails (0 = off), fail_timeout, http_5xx)
            retries      Retries(tries, budget: fraction of requests that may be retries)
            sticky       Sticky(cookie: str | None, hash: str | None, secure, max_age (0 = session),
                                drain_timeout) | None; exactly one of cookie/hash is set
            queue_size   int requests waiting for a server at max_conns, per worker; queue_timeout float s (503)
        Server(address, host, port, weight, family, max_conns (0 = unlimited, global across workers),
               slow_start (seconds, 0 = off), backup)   host is a numeric IP after loading
    Config.routes                    tuple[Route, ...]; Route(host, path, upstream, respond, add_headers, hooks)
                                     upstream: str | None; respond: Respond(status, body, content_type) |
                                     None (exactly one of the two); add_headers: ((name, value), ...)
                                     hooks: Hooks(request, response, body, tee) | None, each "module:name"
                                     or None; only on upstream routes. Loading validates that each one
                                     imports (fastproxy/hooks.py); hooks.load(config) gives the callables.
                                     host is lowercase: "*", "exact.name" or "*.suffix" (suffix keeps its dot)

    family is socket.AF_INET or socket.AF_INET6; address is the text as written in the file.
    Durations are floats in seconds; sizes are ints in bytes (the file may say 16384, "16k" or "1m").

The loader (below this contract) fills these in; each field carries its doc and validator.
"""

import dataclasses
import os
import re
import socket
import tomllib
from dataclasses import dataclass, field
from typing import NamedTuple

from fastproxy import hooks as hooks_mod
from fastproxy.errors import ConfigError, ConfigErrors

# Balancing algorithms (fastproxy/_balancer.pyx implements each).
BALANCES = ("round_robin", "least_conn", "p2c", "hash", "least_time")


# --- validators: each takes the TOML value and returns the converted one, or raises ValueError ---------

def integer(lo, hi=None):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
            raise ValueError(f"must be an integer >= {lo}" + (f" and <= {hi}" if hi is not None else ""))
        return v
    return check


_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)b?\s*$", re.I)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def size(lo, hi=None):
    """Bytes: an integer, or a string like "16k", "1m", "2g" (binary units, as nginx reads them)."""
    def check(v):
        if isinstance(v, str) and (m := _SIZE.match(v)):
            v = int(m.group(1)) * _SIZE_UNITS[m.group(2).lower()]
        elif isinstance(v, bool) or not isinstance(v, int):
            raise ValueError('must be a size in bytes: an integer or a string like "16k" or "1m"')
        return integer(lo, hi)(v)
    return check


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(allow_zero=False):
    """Seconds: a number, or a string like "500ms", "10s", "2m", "1h"."""
    def check(v):
        if isinstance(v, str) and (m := _DURATION.match(v)):
            v = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        elif isinstance(v, bool) or not isinstance(v, int | float):
            raise ValueError('must be a duration: seconds as a number, or a string like "500ms", "10s", "2m"')
        if v < 0 or (v == 0 and not allow_zero):
            raise ValueError("must be " + ("zero or more" if allow_zero else "more than zero"))
        return float(v)
    return check


def string(v):
    if not isinstance(v, str):
        raise ValueError("must be a string")
    if any(c in v for c in "\r\n\0"):
        raise ValueError("must not contain CR, LF or NUL")
    return v


def boolean(v):
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def choice(options):
    def check(v):
        if v not in options:
            raise ValueError("must be one of: " + ", ".join(f'"{o}"' for o in options))
        return v
    return check


def workers(v):
    if v == "auto":
        return os.cpu_count() or 1
    try:
        return integer(1)(v)
    except ValueError:
        raise ValueError('must be "auto" or an integer >= 1') from None


def path_list(v):
    if not isinstance(v, list) or not all(isinstance(p, str) and p and "\0" not in p for p in v):
        raise ValueError('must be an array of directory paths, e.g. ["hooks"]')
    return tuple(v)


def optional_path(v):
    if v is None:
        return None
    if not isinstance(v, str) or not v:
        raise ValueError("must be a non-empty path")
    return v


class Address(NamedTuple):
    text: str
    host: str      # numeric IP
    port: int
    family: int


_HOSTPORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.%\w]+)\]|(?P<host>[A-Za-z0-9.\-_*]+)):(?P<port>\d{1,5})$")


def address(v, any_host=False):
    """ "host:port" or "[v6]:port"; the host is resolved to a numeric IP now, so workers never resolve."""
    if not isinstance(v, str) or not (m := _HOSTPORT.match(v.strip())):
        raise ValueError('must be "host:port" or "[ipv6]:port"')
    port = int(m.group("port"))
    if not 1 <= port <= 65535:
        raise ValueError("port must be 1..65535")
    host = m.group("v6") or m.group("host")
    if host == "*":
        if not any_host:
            raise ValueError('"*" (all addresses) is only allowed for listen addresses')
        host = "0.0.0.0"
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as e:
        raise ValueError(f"cannot resolve host {host!r}: {e}") from None
    family, _, _, _, sockaddr = info[0]
    return Address(v, sockaddr[0], port, family)


def listen_address(v):
    return address(v, any_host=True)


_HOSTNAME = re.compile(r"^(\*|(\*\.)?[a-z0-9_]([a-z0-9_\-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_\-]*[a-z0-9_])?)*)$")


def route_host(v):
    if not isinstance(v, str) or not _HOSTNAME.match(v.lower()):
        raise ValueError('must be "*", "exact.name" or "*.suffix" (no port)')
    if len(v) > 255:
        raise ValueError("must be at most 255 characters")     # the core's Route.host
    return v.lower()


def route_path(v):
    if not isinstance(v, str) or not v.startswith("/"):
        raise ValueError('must be a path prefix starting with "/"')
    if any(c <= " " or c == "\x7f" for c in v) or "?" in v or "#" in v:
        raise ValueError("must not contain spaces, control bytes, ? or #")
    if len(v.encode()) > 1023:
        raise ValueError("must be at most 1023 bytes")          # the core's Route.path
    return v


_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


def upstream_name(v):
    if not isinstance(v, str) or not _NAME.match(v):
        raise ValueError("must be an upstream name (letters, digits, _ and -)")
    return v


# --- declaring fields ----------------------------------------------------------------------------------

def opt(default, doc, check):
    """A TOML key with a default. The default is written as in the file and converted by its own check."""
    value = default if default is None else check(default)
    return field(default=value, metadata={"doc": doc, "check": check, "toml_default": default})


def req(doc, check=None, items=None):
    """A required TOML key. items=Table class: the value is an array of inline tables of that kind."""
    return field(metadata={"doc": doc, "check": check, "items": items, "required": True})


def sub(cls, doc, present=True):
    """A key whose value is an inline table of kind cls; when absent: cls() with its defaults, or None."""
    return field(default=cls() if present else None,
                 metadata={"doc": doc, "table": cls, "toml_default": "{ ... }" if present else None})


def derived(default):
    """An attribute computed by the loader, not a TOML key."""
    return field(default=default)


def toml_fields(cls):
    return [f for f in dataclasses.fields(cls) if "doc" in f.metadata]


class Table:
    """Base of every config table: from_values builds the instance from checked TOML values."""

    @classmethod
    def from_values(cls, values, **extra):
        return cls(**values, **extra)


def _from_address(cls, values, extra):
    a = values.pop("address")
    return cls(address=a.text, host=a.host, port=a.port, family=a.family, **values, **extra)


# --- the tables ----------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class ServerTable(Table):
    """[server]: Process-wide settings."""
    workers: int = opt("auto", 'Worker processes; "auto" = one per CPU core.', workers)
    pidfile: str | None = opt(None, "File the master writes its PID to (none by default).", optional_path)
    server_header: str = opt("", 'Server field sent to clients: "" removes the backend\'s, a string replaces it.',
                             string)
    forwarded: bool = opt(False, "Also add an RFC 7239 Forwarded field (X-Forwarded-* are always set).", boolean)
    drain_timeout: float = opt("30s", "How long a graceful stop (QUIT) waits for in-flight requests.",
                               duration(allow_zero=True))
    worker_heartbeat_timeout: float = opt("10s", "A worker whose event loop has not beaten for this long is "
                                          "killed as hung and replaced.", duration())
    ready_timeout: float = opt("10s", "How long the new workers of a reload get to report ready; a reload "
                               "whose workers are not ready by then is abandoned and the old workers keep "
                               "serving.", duration())
    upgrade_timeout: float = opt("30s", "How long `fastproxy upgrade` waits for the new master's workers to "
                                 "report ready before it rolls back to the old master.", duration())
    python_path: tuple = opt([], "Directories searched first for hook modules ([[routes]] hooks), relative "
                             "to the config file's directory.", path_list)
    # 10,000: a bound on descriptors and fairness, not on memory (an idle connection gives its buffers
    # back). Two descriptors each (client + backend) stay under the usual hard limits (524288 systemd,
    # 1048576 Docker), and it is the 10,000 idle keep-alive clients issue 8 measures.
    max_connections: int = opt(10000, "Client connections per worker (nginx's worker_connections); the master "
                               "raises the open-files limit (RLIMIT_NOFILE) to 2 x this + 64 and logs when the "
                               "hard limit does not allow it.", integer(1, 1_000_000))


def log_path(v):
    """A log file path; "" means the default (stderr for the error log, off for the access log)."""
    return optional_path(v) if v != "" else None


ACCESS_FORMATS = ("combined", "json")


@dataclass(frozen=True, kw_only=True)
class LogTable(Table):
    """[log]: Error log (master and worker events) and access log (one line per request). USR1 reopens both
    (log rotation). Relative paths are relative to the directory fastproxy was started in."""
    error_log: str | None = opt("", 'File for start, reload, upgrade, respawn and config error events; "" = '
                                "stderr.", log_path)
    access_log: str | None = opt("", 'File for one line per request; "" = no access log.', log_path)
    access_format: str = opt("combined", 'Access log line format: "combined" (nginx\'s) or "json" (one object '
                             "per line).", choice(ACCESS_FORMATS))


@dataclass(frozen=True, kw_only=True)
class Limits(Table):
    """[limits]: Request size limits (the status sent when one is exceeded is in brackets)."""
    max_head_size: int = opt(16384, "Request line + headers, bytes [431].", size(256))
    max_headers: int = opt(100, "Header field lines per request [431]; at most 128.", integer(1, 128))
    max_uri_size: int = opt(8192, "Request-target length, bytes [414].", size(1))
    max_body_size: int = opt(0, "Request body, bytes; 0 = unlimited, bodies are streamed [413].", size(0))
    buffer_size: int = opt(65536, "Buffer per connection side, bytes; at least max_head_size.", size(1024))
    min_rate: int = opt(500, "Bytes per second a client must keep up while it sends a request head or body, "
                        "once [timeouts] rate_grace has passed (Apache's mod_reqtimeout MinRate): a client "
                        "dribbling bytes is cut off early; 0 = off [408].", size(0))
    spool_dir: str | None = opt(None, "Directory for request bodies larger than the connection buffer while "
                                "they are buffered (route request_buffering); none = the system's temporary "
                                "directory.", optional_path)
    spool_max_size: int = opt("1g", "Largest request body buffered in a file; a larger body is streamed to "
                              "the backend as it comes (Content-Length), or refused (chunked) [413]. 0: never "
                              "to a file.", size(0))


@dataclass(frozen=True, kw_only=True)
class Timeouts(Table):
    """[timeouts]: Each timeout (but client_header) is between two reads or writes, not for a whole exchange."""
    client_header: float = opt("10s", "Time to receive a whole request head [408].", duration())
    client_body: float = opt("60s", "Time between two reads of a request body [408].", duration())
    rate_grace: float = opt("5s", "How long a request head or body may take before [limits] min_rate applies.",
                            duration(allow_zero=True))
    keepalive: float = opt("75s", "Idle time of a kept-alive client connection; 0 disables keep-alive.",
                           duration(allow_zero=True))
    upstream_connect: float = opt("5s", "Time to connect to a backend (then the next server is tried).",
                                  duration())
    upstream_read: float = opt("60s", "Time between two reads from a backend [504].", duration())
    upstream_send: float = opt("60s", "Time between two writes to a backend [504].", duration())


@dataclass(frozen=True, kw_only=True)
class Listen(Table):
    """[[listen]]: One listening address (each worker gets its own SO_REUSEPORT socket for it)."""
    address: str = req('"host:port", "[ipv6]:port" or "*:port" (all IPv4 addresses).', listen_address)
    backlog: int = opt(511, "Accept queue length per socket (capped by net.core.somaxconn).", integer(1))
    host: str = derived("")
    port: int = derived(0)
    family: int = derived(socket.AF_INET)

    @classmethod
    def from_values(cls, values, **extra):
        return _from_address(cls, values, extra)


@dataclass(frozen=True, kw_only=True)
class Server(Table):
    """servers: One backend of an upstream, an inline table like { address = "127.0.0.1:9001", weight = 2 }."""
    address: str = req('"host:port" or "[ipv6]:port"; names are resolved once, at load.', address)
    weight: int = opt(1, "Relative share of requests.", integer(1, 1000))
    max_conns: int = opt(0, "Requests in flight to it at most, over all workers; 0 = unlimited (excess waits "
                         "in the queue).", integer(0))
    slow_start: float = opt(0, "After it comes back up its weight ramps from 0 to full over this time; 0 = off.",
                            duration(allow_zero=True))
    backup: bool = opt(False, "Used only when no primary (non-backup) server is available.", boolean)
    host: str = derived("")
    port: int = derived(0)
    family: int = derived(socket.AF_INET)

    @classmethod
    def from_values(cls, values, **extra):
        return _from_address(cls, values, extra)


_HASH_KEY = re.compile(r"^(client_ip|uri|(header|cookie):[!#$%&'*+\-.^_`|~0-9A-Za-z]+)$")


def hash_key(v):
    if not isinstance(v, str) or not _HASH_KEY.match(v):
        raise ValueError('must be "client_ip", "uri", "header:NAME" or "cookie:NAME"')
    return v


def status_range(v):
    """A status code (200) or an inclusive range ("200-399"); returns (lo, hi)."""
    if isinstance(v, int) and not isinstance(v, bool):
        lo = hi = v
    elif isinstance(v, str) and (m := re.match(r"^\s*(\d{3})\s*(?:-\s*(\d{3}))?\s*$", v)):
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    else:
        raise ValueError('must be a status code or a range like "200-399"')
    if not 100 <= lo <= hi <= 599:
        raise ValueError("must be within 100..599, low end first")
    return (lo, hi)


def probe_path(v):
    if not isinstance(v, str) or not v.startswith("/") or any(c <= " " or c == "\x7f" for c in v):
        raise ValueError('must be a path starting with "/", without spaces or control bytes')
    return v


def fraction(v):
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 <= v <= 1:
        raise ValueError("must be a number from 0 to 1")
    return float(v)


def load_factor(v):
    if isinstance(v, bool) or not isinstance(v, int | float) or (v != 0 and v <= 1):
        raise ValueError("must be 0 (off) or a number above 1")
    return float(v)


def cookie_name(v):
    if not isinstance(v, str) or not re.match(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$", v):
        raise ValueError("must be a cookie name (an RFC 9110 token)")
    return v


@dataclass(frozen=True, kw_only=True)
class Health(Table):
    """health: Active checks, run by one health-checker process (not once per worker)."""
    path: str = opt("/", "Path probed with GET.", probe_path)
    interval: float = opt("2s", "Time between two probes of one server.", duration())
    timeout: float = opt("1s", "Time a probe may take (connect and response head).", duration())
    rise: int = opt(2, "Good probes in a row that mark a down server up.", integer(1))
    fall: int = opt(3, "Bad probes in a row that mark an up server down.", integer(1))
    status: tuple = opt("200-399", 'Good statuses: a code or a range like "200-399".', status_range)
    host: str = opt("", 'Host field of the probe; "" = the server\'s address.', string)


@dataclass(frozen=True, kw_only=True)
class Passive(Table):
    """passive: Failures seen by real requests (connect errors, resets, timeouts, optionally 5xx)."""
    max_fails: int = opt(3, "Failures within fail_timeout that mark a server down; 0 = off.", integer(0))
    fail_timeout: float = opt("10s", "The window failures are counted in, and how long a server then stays "
                              "down before one trial request decides.", duration())
    http_5xx: bool = opt(False, "Count 5xx responses as failures too.", boolean)


@dataclass(frozen=True, kw_only=True)
class Retries(Table):
    """retries: Failover of a request that failed before any response byte, when safe."""
    tries: int = opt(3, "Servers tried per request at most.", integer(1))
    budget: float = opt(0.2, "Retries at most this fraction of requests (plus a few per second), so a sick "
                        "pool is not hammered.", fraction)


@dataclass(frozen=True, kw_only=True)
class Sticky(Table):
    """sticky: Session persistence; set exactly one of cookie and hash."""
    cookie: str | None = opt(None, "Cookie that names the client's server by an opaque value.", cookie_name)
    hash: str | None = opt(None, 'Or a key through the consistent hash: "client_ip", "uri", "header:NAME", '
                           '"cookie:NAME".', hash_key)
    secure: bool = opt(False, "Cookie mode: add Secure to the cookie.", boolean)
    max_age: float = opt(0, "Cookie mode: Max-Age of the cookie; 0 = a session cookie.",
                         duration(allow_zero=True))
    drain_timeout: float = opt("10m", "How long a draining server keeps serving its sticky clients.",
                               duration(allow_zero=True))


@dataclass(frozen=True, kw_only=True)
class Upstream(Table):
    """[upstreams.NAME]: A pool of backends (NAME: letters, digits, _ and -)."""
    servers: tuple = req("Array of { address, weight } tables; at least one.", items=Server)
    balance: str = opt("round_robin", "Balancing algorithm: " + ", ".join(BALANCES) + ".", choice(BALANCES))
    keepalive: int = opt(64, "Idle connections to this upstream kept per worker; 0 = none.", integer(0))
    keepalive_timeout: float = opt("60s", "How long an idle upstream connection is kept.", duration())
    tries: int = opt(3, "Servers tried per request at most (connect failures, resets before a response); "
                     "an alias of retries.tries.", integer(1))
    hash_key: str = opt("client_ip", 'With balance = "hash": "client_ip", "uri", "header:NAME" or "cookie:NAME".',
                        hash_key)
    hash_load_factor: float = opt(0, "With balance = \"hash\": skip a server above this factor x the average "
                                  "load (bounded load); 0 = off.", load_factor)
    health: Health | None = sub(Health, "Active health checks { path, interval, timeout, rise, fall, status, "
                                "host }; none by default.", present=False)
    passive: Passive = sub(Passive, "Passive checks { max_fails, fail_timeout, http_5xx }.")
    retries: Retries = sub(Retries, "Failover { tries, budget }.")
    sticky: Sticky | None = sub(Sticky, 'Session persistence { cookie = "NAME" } or { hash = "client_ip" }; '
                                "none by default.", present=False)
    queue_size: int = opt(100, "Requests per worker that may wait for a server at max_conns.", integer(0))
    queue_timeout: float = opt("10s", "How long a request waits in that queue before a 503.", duration())
    name: str = derived("")

    @classmethod
    def from_values(cls, values, **extra):
        # `retries = { tries }` is the contract; the upstream-level `tries` key stays as its alias.
        if "retries" in values:
            values["tries"] = values["retries"].tries
        else:
            values["retries"] = Retries(tries=values.get("tries", 3))
        return cls(**values, **extra)


_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# fields the proxy itself manages: a route may not add them (RFC 9110 7.6.1 hop-by-hop, and framing)
_MANAGED_FIELDS = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                   "upgrade", "content-length"}


def field_value(v):
    """An HTTP field value: visible ASCII, spaces and tabs (RFC 9110 5.5), no leading or trailing space."""
    if not isinstance(v, str) or v != v.strip(" \t") or any(c < " " and c != "\t" or c == "\x7f" for c in v):
        raise ValueError("must be a field value: no control bytes, no leading or trailing space")
    v.encode("latin-1")
    return v


def header_table(v):
    """{ "Name" = "value", ... } -> ((name, value), ...) in file order."""
    if not isinstance(v, dict):
        raise ValueError('must be a table like { "X-Frame-Options" = "DENY" }')
    out = []
    for name, value in v.items():
        if not _TOKEN.match(name):
            raise ValueError(f"{name!r} is not a field name (an RFC 9110 token)")
        if name.lower() in _MANAGED_FIELDS:
            raise ValueError(f"{name} is managed by the proxy and cannot be added")
        try:
            out.append((name, field_value(value)))
        except (ValueError, UnicodeEncodeError):
            raise ValueError(f"{name}: must be a field value: no control bytes, no leading or trailing space, "
                             "Latin-1 only") from None
    return tuple(out)


def text(v):
    if not isinstance(v, str):
        raise ValueError("must be a string")
    return v


def status_code(v):
    if isinstance(v, bool) or not isinstance(v, int) or not 200 <= v <= 599 or v in (204, 304):
        raise ValueError("must be a status code from 200 to 599 (not 204 or 304: they have no body)")
    return v


@dataclass(frozen=True, kw_only=True)
class Respond(Table):
    """respond: The proxy answers the route itself, without a backend (nginx's `return`)."""
    status: int = opt(200, "Status code of the answer.", status_code)
    body: str = opt("", "Body of the answer (UTF-8).", text)
    content_type: str = opt("text/plain; charset=utf-8", "Content-Type of the answer.", field_value)


@dataclass(frozen=True, kw_only=True)
class Hooks(Table):
    """hooks: Python callables run in the worker for this route, each "module:name" (see "Writing a hook")."""
    request: str | None = opt(None, "Called with the request; returns None (go on) or a Response (answer).",
                              hooks_mod.check_ref)
    response: str | None = opt(None, "Called with (request, response) before the response head is sent; "
                               "may edit its fields.", hooks_mod.check_ref)
    body: str | None = opt(None, "Called with (request, response, chunk, end) for each piece of the response "
                           "body; returns the bytes to send instead.", hooks_mod.check_ref)
    tee: str | None = opt(None, "Called like body with exactly the body bytes the client gets; its return "
                          "value is ignored.", hooks_mod.check_ref)


@dataclass(frozen=True, kw_only=True)
class Route(Table):
    """[[routes]]: A request goes to the upstream of the route that matches its host most exactly (an exact
    name, then the longest *.suffix, then "*"), and among those the longest path prefix."""
    host: str = opt("*", '"*" (any), "exact.name", or "*.suffix" (suffix itself and every name under it).',
                    route_host)
    path: str = opt("/", 'Path prefix, starting with "/".', route_path)
    upstream: str | None = opt(None, "Name of an [upstreams.NAME] table (required unless respond is set).",
                               upstream_name)
    respond: Respond | None = sub(Respond, "Answer from the proxy itself { status, body, content_type } "
                                  "instead of an upstream; none by default.", present=False)
    add_headers: tuple = opt({}, 'Fields added to every response of the route, e.g. { "X-Frame-Options" = '
                             '"DENY" } (nginx\'s add_header).', header_table)
    hooks: Hooks | None = sub(Hooks, "Python hooks { request, response, body, tee }, each \"module:name\"; "
                              "none by default. Only on routes with an upstream.", present=False)
    request_buffering: bool = opt(True, "Read a request body whole before a backend is picked (nginx's "
                                  "proxy_request_buffering): a slow client never holds a backend connection; "
                                  "bodies larger than [limits] buffer_size go to a file in [limits] spool_dir. "
                                  "false: bodies are streamed to the backend as they come.", boolean)


@dataclass(frozen=True, kw_only=True)
class Config:
    path: str
    server: ServerTable
    limits: Limits
    timeouts: Timeouts
    listens: tuple
    upstreams: dict
    routes: tuple
    log: LogTable = field(default_factory=LogTable)


# TOML layout: table name -> (class, kind). kind: "table" = [name], "array" = [[name]], "map" = [name.KEY]
SECTIONS = {
    "server": (ServerTable, "table"),
    "limits": (Limits, "table"),
    "timeouts": (Timeouts, "table"),
    "listen": (Listen, "array"),
    "upstreams": (Upstream, "map"),
    "routes": (Route, "array"),
    "log": (LogTable, "table"),
}


# --- finding lines: tomllib gives none for keys, so scan the text for headers and `key =` ---------------

_KEY_PART = r'\s*(?:"(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_\-]+)\s*'
_HEADER = re.compile(rf"^\s*(\[\[?)({_KEY_PART}(?:\.{_KEY_PART})*)\]\]?\s*(?:#.*)?$")
_KEYLINE = re.compile(rf"^\s*({_KEY_PART}(?:\.{_KEY_PART})*)=")


def _split_key(text):
    return tuple(p.strip().strip("\"'") for p in re.findall(rf"{_KEY_PART}", text))


def _code(line):
    """The line with strings and comment removed, and the quote of a multi-line string it leaves open."""
    out, i = [], 0
    while i < len(line):
        c = line[i]
        if c == "#":
            break
        if line.startswith(('"""', "'''"), i):
            end = line.find(line[i:i + 3], i + 3)
            if end < 0:
                return "".join(out), line[i:i + 3]
            i = end + 3
        elif c in "\"'":
            i += 1
            while i < len(line) and line[i] != c:
                i += 2 if c == '"' and line[i] == "\\" else 1
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out), None


def find_lines(text):
    """Map paths like ("upstreams", "app", "servers") or ("routes", 1, "upstream") to 1-based lines.

    Tracks the current [table] / [[array]] header (counting array entries) and finds `key =` at depth 0;
    values spanning lines (arrays, inline tables, multi-line strings) are skipped by bracket counting.
    """
    lines, counts = {}, {}
    table = ()
    depth = 0            # open brackets/braces of a value spanning several lines
    in_string = None     # the quote of a multi-line string we are inside
    for n, line in enumerate(text.splitlines(), 1):
        if in_string:
            end = line.find(in_string)
            if end < 0:
                continue
            line, in_string = line[end + 3:], None
        elif depth == 0:
            if m := _HEADER.match(line):
                table = _split_key(m.group(2))
                if m.group(1) == "[[":
                    lines.setdefault(table, n)
                    counts[table] = counts.get(table, -1) + 1
                    table = table + (counts[table],)
                lines.setdefault(table, n)
                continue
            if m := _KEYLINE.match(line):
                key = _split_key(m.group(1))
                for i in range(1, len(key) + 1):
                    lines.setdefault(table + key[:i], n)
                line = line[m.end():]
        code, in_string = _code(line)
        depth = max(0, depth + code.count("[") + code.count("{") - code.count("]") - code.count("}"))
    return lines


def _label(parts):
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + p
    return out


class _Loader:
    def __init__(self, text, path):
        self.path = path
        self.lines = find_lines(text)
        self.errors = []

    def line_of(self, parts):
        for i in range(len(parts), 0, -1):
            if parts[:i] in self.lines:
                return self.lines[parts[:i]]
        return None

    def fail(self, table, key, message):
        self.errors.append(ConfigError(self.path, self.line_of(table + key), _label(table) or None,
                                       _label(key) or None, message))

    def table(self, cls, raw, where, key=(), **extra):
        """Check one table's keys and values; None (after recording errors) if any is wrong."""
        if not isinstance(raw, dict):
            self.fail(where, key, "must be a table")
            return None
        fields = {f.name: f for f in toml_fields(cls)}
        ok = True
        for name in raw:
            if name not in fields:
                self.fail(where, key + (name,), "unknown key (expected one of: " + ", ".join(fields) + ")")
                ok = False
        values = {}
        for name, f in fields.items():
            if name not in raw:
                if f.metadata.get("required"):
                    self.fail(where, key + (name,), "is required")
                    ok = False
                continue
            if f.metadata.get("items"):
                values[name] = self.items(f.metadata["items"], raw[name], where, key + (name,))
                ok = ok and values[name] is not None
                continue
            if f.metadata.get("table"):
                values[name] = self.table(f.metadata["table"], raw[name], where, key + (name,))
                ok = ok and values[name] is not None
                continue
            try:
                values[name] = f.metadata["check"](raw[name])
            except ValueError as e:
                self.fail(where, key + (name,), str(e))
                ok = False
        return cls.from_values(values, **extra) if ok else None

    def items(self, cls, raw, where, key):
        if not isinstance(raw, list) or not raw:
            self.fail(where, key, "must be a non-empty array of tables")
            return None
        out = [self.table(cls, item, where, key + (i,)) for i, item in enumerate(raw)]
        return None if None in out else tuple(out)

    def section(self, name, raw):
        cls, kind = SECTIONS[name]
        if kind == "table":
            return self.table(cls, raw, (name,))
        if kind == "array":
            if not isinstance(raw, list):
                self.fail((name,), (), f"must be an array of tables: [[{name}]]")
                return ()
            # keep None for entries with errors, so cross checks still name the right index
            return tuple(self.table(cls, item, (name, i)) for i, item in enumerate(raw))
        if not isinstance(raw, dict):
            self.fail((name,), (), f"must be tables: [{name}.NAME]")
            return {}
        out = {}
        for uname, item in raw.items():
            try:
                upstream_name(uname)
            except ValueError as e:
                self.fail((name, uname), (), "invalid name: " + str(e))
                continue
            if (t := self.table(cls, item, (name, uname), name=uname)) is not None:
                out[uname] = t
        return out

    def load(self, data):
        for name in data:
            if name not in SECTIONS:
                what = "table" if isinstance(data[name], dict | list) else "key"
                self.fail((name,), (), f"unknown {what} (expected one of the tables: " + ", ".join(SECTIONS) + ")")
        sections = {name: self.section(name, data.get(name, {} if SECTIONS[name][1] != "array" else []))
                    for name in SECTIONS}
        self.cross_check(data, sections)
        if sections["server"] is not None:
            sections["server"] = self.resolve_python_path(sections["server"])
            self.check_hooks(sections["server"], sections["routes"])
        if self.errors:
            raise ConfigErrors(self.errors)
        return Config(path=self.path, server=sections["server"], limits=sections["limits"],
                      timeouts=sections["timeouts"], listens=sections["listen"], upstreams=sections["upstreams"],
                      routes=sections["routes"], log=sections["log"])

    def resolve_python_path(self, server):
        """python_path entries relative to the config file's directory; each must be a directory."""
        base = os.path.dirname(os.path.abspath(self.path))
        resolved = tuple(os.path.normpath(os.path.join(base, p)) for p in server.python_path)
        for p in resolved:
            if not os.path.isdir(p):
                self.fail(("server",), ("python_path",), f"no directory {p}")
        return dataclasses.replace(server, python_path=resolved)

    def check_hooks(self, server, routes):
        """Import every hook now, so that `fastproxy check` and a reload name the one that does not load."""
        refs = [r.hooks if r is not None else None for r in routes]
        if not any(refs) or any(e.key == "python_path" for e in self.errors):
            return
        _, problems = hooks_mod.load_routes(server.python_path, refs)
        for i, kind, message in problems:
            self.fail(("routes", i), ("hooks", kind), message)

    def cross_check(self, data, s):
        """Checks across tables. Only run on what loaded cleanly, so one mistake is not reported twice."""
        for name, what in (("listen", "[[listen]] table"), ("upstreams", "[upstreams.NAME] table"),
                           ("routes", "[[routes]] table")):
            if not data.get(name):
                self.fail((name,), (), f"at least one {what} is required")
        seen = {}
        for i, listen in enumerate(s["listen"]):
            if listen is None:
                continue
            where = (listen.host, listen.port)
            if where in seen:
                self.fail(("listen", i), ("address",), f"duplicate of listen[{seen[where]}] ({listen.address})")
            seen.setdefault(where, i)
        seen = {}
        for i, route in enumerate(s["routes"]):
            if route is None:
                continue
            if (route.upstream is None) == (route.respond is None):
                self.fail(("routes", i), ("upstream",), "set exactly one of upstream and respond")
            elif route.hooks is not None and route.respond is not None:
                # hooks see a backend's response; a respond route has none (a request hook can answer)
                self.fail(("routes", i), ("hooks",), "hooks run on routes with an upstream, not with respond")
            # an upstream that is in the file but has errors of its own is not reported again here
            elif route.upstream is not None and (not isinstance(data.get("upstreams"), dict)
                                                 or route.upstream not in data["upstreams"]):
                self.fail(("routes", i), ("upstream",), f"no upstream named {route.upstream!r}")
            if (route.host, route.path) in seen:
                self.fail(("routes", i), ("path",),
                          f"same host and path as routes[{seen[route.host, route.path]}]")
            seen.setdefault((route.host, route.path), i)
        for uname, up in s["upstreams"].items():
            raw = data["upstreams"][uname]
            if "tries" in raw and "retries" in raw and "tries" in raw["retries"]:
                self.fail(("upstreams", uname), ("tries",), "set either tries or retries.tries, not both")
            if all(server.backup for server in up.servers):
                self.fail(("upstreams", uname), ("servers",), "needs at least one server that is not a backup")
            if up.sticky is not None and (up.sticky.cookie is None) == (up.sticky.hash is None):
                self.fail(("upstreams", uname), ("sticky",), "set exactly one of cookie and hash")
            seen = set()
            for i, server in enumerate(up.servers):
                if server.address in seen:
                    self.fail(("upstreams", uname), ("servers", i), f"duplicate server {server.address}")
                seen.add(server.address)
        if s["limits"] and s["limits"].max_head_size > s["limits"].buffer_size:
            self.fail(("limits",), ("max_head_size",), "must not exceed buffer_size (a head must fit in a buffer)")


def loads(text, path="<string>"):
    """Parse and validate config text; raise ConfigErrors listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        # tomllib says "... (at line 3, column 7)"; keep the line in our own format.
        m = re.search(r"\(at line (\d+), column \d+\)", str(e))
        line = int(m.group(1)) if m else max(1, len(text.splitlines()))     # else "at end of document"
        msg = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(e)) or "invalid TOML"
        raise ConfigErrors([ConfigError(path, line, None, None, "TOML syntax error: " + msg)]) from None
    return _Loader(text, path).load(data)


def load(path):
    """Read, parse and validate a config file; raise ConfigErrors listing every problem."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigErrors([ConfigError(path, None, None, None, f"cannot read: {e}")]) from None
    return loads(text, path)


DEMO_TEMPLATE = """\
# The built-in demo: three backends behind one proxy, round robin.
[server]
workers = {workers}

[[listen]]
address = "127.0.0.1:{port}"

[upstreams.demo]
balance = "round_robin"
servers = [
{servers}
]

[[routes]]
host = "*"
path = "/"
upstream = "demo"
"""


def demo_toml(port, backend_ports, workers=1):
    """The TOML text of the demo config (printed by `fastproxy demo` so it can be copied and edited)."""
    servers = "\n".join(f'  {{ address = "127.0.0.1:{p}" }},' for p in backend_ports)
    return DEMO_TEMPLATE.format(port=port, servers=servers, workers=workers)


def builtin_demo(port, backend_ports, workers=1):
    return loads(demo_toml(port, backend_ports, workers), "<demo>")
