"""Python hooks: the API a hook module imports, the guarded calls the core makes, and the loader.

A route names plain Python callables ("module:name", the module found through [server] python_path):

    request(request)                        -> None to go on to the backend, or a Response to answer
    response(request, response)             -> None; may edit the response head (set/add/remove fields)
    body(request, response, chunk, end)     -> the bytes to send in place of chunk (b"" for none)
    tee(request, response, chunk, end)      -> ignored; sees exactly the body bytes the client gets

RULES (the core relies on them):
- One Request per exchange: the core builds it once and passes the same object to every hook of that
  exchange (request, response, body, tee), so `request.state` carries per-request data between them.
- Every field a hook sets is checked here, when it is set: names are RFC 9110 tokens; values are Latin-1
  text without CR, LF, NUL or any other control byte but HTAB (RFC 9110 5.5), leading and trailing blanks
  stripped. Framing and hop-by-hop fields (MANAGED_FIELDS) belong to the proxy and cannot be set or
  removed. Host may be set on a request (a backend that routes by name wants it) but not removed or
  added twice (RFC 9112 3.2: exactly one). A refusal raises ValueError or TypeError inside the hook,
  which is then a failed hook.
- The core never calls a hook directly: call_request / call_response / call_body / call_tee catch every
  exception (a hook can never take a worker down), check what the hook returned, and report a failure
  to the error log, at most one traceback per hook per REPORT_INTERVAL seconds (then a count).
  A failed request or response hook means a 500; a failed body hook means the connection is cut (the
  head is already sent); a failed tee is only logged, and that response is not teed any further.
- Loading imports fresh: modules whose file lies under a python_path directory are dropped from
  sys.modules and compiled from source again (no .pyc is read or written there), so a reload runs the
  files as they are on disk now, even after an edit within the same second. The master imports them to
  validate the config (as `fastproxy check` does); each worker imports them again after fork.
"""

import importlib
import importlib.machinery
import inspect
import os
import re
import stat
import sys
import time
import traceback
from dataclasses import dataclass
from http import HTTPStatus

from fastproxy.errors import ConfigError, ConfigErrors
from fastproxy.log import log

__all__ = ["Request", "Response", "ResponseHead"]

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Fields the proxy manages itself: framing (RFC 9112 6) and hop-by-hop (RFC 9110 7.6.1). The same set as
# config.py's _MANAGED_FIELDS (add_headers refuses the same names; a test keeps the two equal).
MANAGED_FIELDS = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer",
                            "transfer-encoding", "upgrade", "content-length"})
# any control byte but HTAB, and DEL (RFC 9110 5.5: field-vchar, SP, HTAB)
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _name(name):
    if not isinstance(name, str):
        raise TypeError(f"a field name must be a str, not {type(name).__name__}")
    if not _TOKEN.match(name):
        raise ValueError(f"{name!r} is not a field name (an RFC 9110 token)")
    return name


def _value(name, value):
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("latin-1")
    elif not isinstance(value, str):
        raise TypeError(f"{name}: a field value must be a str, not {type(value).__name__}")
    if _BAD_VALUE.search(value):
        raise ValueError(f"{name}: a field value must not contain CR, LF, NUL or other control bytes")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{name}: a field value must be Latin-1 text (percent-encode anything else)") from None
    return value.strip(" \t")


def _managed(name, what):
    if name.lower() in MANAGED_FIELDS:
        raise ValueError(f"{name} is managed by the proxy (framing or hop-by-hop) and cannot be {what}")


class _Fields:
    """Fields as received plus the edits made to them; apply() replays the edits on a serialized head.

    _dropped: lowercase names whose received lines are gone (removed, or replaced by set_header);
    _added: (name, value) appended after the received lines, in the order they were added.
    """

    __slots__ = ("_received", "_dropped", "_added", "_state")

    def _init_fields(self, headers):
        self._received = headers if isinstance(headers, list) else list(headers or ())
        self._dropped = None
        self._added = None
        self._state = None

    @property
    def headers(self):
        """Every field as (name, value), received ones first (minus removed), then those the hooks added."""
        if self._dropped is None and self._added is None:
            return list(self._received)
        dropped = self._dropped or ()
        return [f for f in self._received if f[0].lower() not in dropped] + list(self._added or ())

    def header_all(self, name):
        """Every value of a field (case-insensitive), in order."""
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def header(self, name):
        """The field's value or None; several lines of it are joined with ", " (RFC 9110 5.3), Cookie
        lines with "; " (RFC 6265 5.4), and Set-Cookie, which cannot be joined, gives its first line."""
        values = self.header_all(name)
        if not values:
            return None
        if len(values) == 1:
            return values[0]
        lower = name.lower()
        if lower == "set-cookie":
            return values[0]
        return ("; " if lower == "cookie" else ", ").join(values)

    @property
    def edited(self):
        """True once a field was set, added or removed: the core then calls apply() on the head it wrote."""
        return self._dropped is not None or self._added is not None

    @property
    def state(self):
        """A dict for the hooks' own data about this exchange (e.g. a compressor kept between body calls)."""
        if self._state is None:
            self._state = {}
        return self._state

    def _check(self, name, what):
        _managed(name, what)

    def _drop(self, lower):
        if self._dropped is None:
            self._dropped = set()
        self._dropped.add(lower)
        if self._added:
            self._added = [f for f in self._added if f[0].lower() != lower]

    def set_header(self, name, value):
        """Replace every line of the field with one line name: value."""
        name = _name(name)
        self._check(name, "set")
        value = _value(name, value)
        self._drop(name.lower())
        self._added = (self._added or []) + [(name, value)]

    def add_header(self, name, value):
        """Add one more line of the field (e.g. a second Set-Cookie), keeping those already there."""
        name = _name(name)
        self._check(name, "added")
        value = _value(name, value)
        self._added = (self._added or []) + [(name, value)]

    def remove_header(self, name):
        """Remove every line of the field (nothing happens if there is none)."""
        name = _name(name)
        self._check(name, "removed")
        self._drop(name.lower())

    def apply(self, head):
        """The serialized head with this object's edits applied: the start line and every line not
        removed stay as they are, added fields go last, before the empty line that ends the head."""
        if not isinstance(head, (bytes, bytearray, memoryview)):  # noqa: UP038
            raise TypeError("apply() takes the head as bytes")
        head = bytes(head)
        if not head.endswith(b"\r\n\r\n"):
            raise ValueError("a head ends with CRLF CRLF")
        out = head[:-4]
        if self._dropped:
            drop = {n.encode("latin-1") for n in self._dropped}
            lower = out.lower()
        # the core writes "Name: value" lines (no space before the colon, RFC 9112 5.1): a field that is not
        # in the head costs one search, and the common case, a new field set, splits nothing
        if self._dropped and any(b"\n" + n + b":" in lower for n in drop):
            lines = out.split(b"\r\n")
            out = b"\r\n".join([lines[0]] + [line for line in lines[1:]
                                              if line.split(b":", 1)[0].rstrip(b" \t").lower() not in drop])
        if self._added:
            out += b"".join(f"\r\n{name}: {value}".encode("latin-1") for name, value in self._added)
        return out + b"\r\n\r\n"


class Request(_Fields):
    """The request, as a hook sees it. Built by the core as Request(method, target, client_ip, version,
    headers): str values (Latin-1 decoded), headers a list of (name, value) as the client sent them
    (the X-Forwarded-* fields the proxy adds for the backend are not among them, but setting or removing
    one of those replaces or removes the proxy's line too: apply() works on the head the proxy wrote)."""

    __slots__ = ("_method", "_target", "_client_ip", "_version")

    def __init__(self, method, target, client_ip, version, headers):
        self._method = method
        self._target = target
        self._client_ip = client_ip
        self._version = version
        self._init_fields(headers)

    # read-only: the request line goes to the backend as received (only fields can be edited), so an
    # assignment that would silently change nothing raises instead
    method = property(lambda self: self._method, doc='"GET", "POST", ...')
    target = property(lambda self: self._target, doc='"/api/items?page=2" as received (or absolute-form)')
    client_ip = property(lambda self: self._client_ip, doc='"203.0.113.7" or "2001:db8::7"')
    version = property(lambda self: self._version, doc='"1.1" or "1.0"')

    @property
    def path(self):
        """The target without its query string."""
        return self.target.split("?", 1)[0]

    def _check(self, name, what):
        _managed(name, what)
        # RFC 9112 3.2: a request carries exactly one Host; it may be rewritten, never dropped or doubled.
        if name.lower() == "host" and what != "set":
            raise ValueError(f"Host cannot be {what} (an HTTP/1.1 request has exactly one); set it instead")

    def __repr__(self):
        return f"<Request {self.method} {self.target} from {self.client_ip}>"


class ResponseHead(_Fields):
    """The backend's response head, as a response hook sees it (after the proxy's own rewriting). Built by
    the core as ResponseHead(status, headers). The status line is kept as it is."""

    __slots__ = ("_status",)

    def __init__(self, status, headers):
        self._status = status
        self._init_fields(headers)

    status = property(lambda self: self._status, doc="The backend's status code (read-only: the status line is "
                      "sent as received).")

    def __repr__(self):
        return f"<ResponseHead {self.status}>"


class FileBody:
    """The body of a Response(file=...): an open fd and the size it had when opened. Whoever holds it
    closes it (close() is idempotent); the core takes it from Response.body_source()."""

    __slots__ = ("fd", "size", "path")

    def __init__(self, path):
        self.fd = -1
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ValueError(f"{path}: not a regular file")
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.size = st.st_size
        self.path = path

    def close(self):
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def __del__(self):
        self.close()


class Response:
    """An answer a request hook returns instead of going to a backend.

        Response(200, {"Content-Type": "application/json"}, body=b'{"ok": true}')
        Response(404, body="no such item\\n")          # str: UTF-8, Content-Type text/plain if not given
        Response(200, [("Cache-Control", "max-age=60")], file="/srv/static/logo.png")

    headers: a dict or a list of (name, value); Content-Length, Transfer-Encoding, Connection and the
    other fields the proxy manages are refused. The file is opened (and its size taken) here, in the
    hook: a missing file raises, which is a failed hook (500).
    """

    __slots__ = ("_status", "_headers", "_body", "file")

    def __init__(self, status, headers=None, body=b"", file=None):
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(f"status must be an int, not {type(status).__name__}")
        # 1xx are interim responses (RFC 9110 15.2), not an answer; 101 would switch protocols
        if not 200 <= status <= 599:
            raise ValueError(f"status {status}: an answer's status is 200..599")
        if isinstance(headers, dict):
            headers = list(headers.items())
        fields = []
        for item in headers or ():
            if not isinstance(item, tuple | list) or len(item) != 2:
                raise TypeError("headers must be a dict or a list of (name, value) pairs")
            name = _name(item[0])
            _managed(name, "set")
            fields.append((name, _value(name, item[1])))
        if isinstance(body, str):
            body = body.encode("utf-8")
            if not any(n.lower() == "content-type" for n, _ in fields):
                fields.append(("Content-Type", "text/plain; charset=utf-8"))
        elif isinstance(body, bytearray | memoryview):
            body = bytes(body)
        elif not isinstance(body, bytes):
            raise TypeError(f"body must be bytes or str, not {type(body).__name__}")
        if file is not None and body:
            raise ValueError("give body or file, not both")
        if status in (204, 304) and (body or file is not None):
            raise ValueError(f"a {status} response has no body (RFC 9110 15.3.5, 15.4.5)")
        # checked once, here: read-only afterwards, so nothing unchecked can reach head()
        self._status = status
        self._headers = tuple(fields)
        self._body = body
        self.file = FileBody(os.fspath(file)) if file is not None else None

    status = property(lambda self: self._status, doc="The status code (read-only).")
    headers = property(lambda self: self._headers, doc="The fields as a tuple of (name, value) (read-only).")
    body = property(lambda self: self._body, doc="The body as bytes; b\"\" for a file (read-only).")

    def body_length(self):
        return self.file.size if self.file is not None else len(self.body)

    def head(self, keep_alive, version_minor):
        """The whole HTTP/1.1 head: status line, the hook's fields, Content-Length (none for 204 and 304),
        Connection: close when not keep_alive, Connection: keep-alive to a kept-alive HTTP/1.0 client."""
        try:
            reason = HTTPStatus(self.status).phrase
        except ValueError:
            reason = "Status"
        lines = [f"HTTP/1.1 {self.status} {reason}"]
        lines += [f"{n}: {v}" for n, v in self.headers]
        if self.status not in (204, 304):
            lines.append(f"Content-Length: {self.body_length()}")
        if not keep_alive:
            lines.append("Connection: close")
        elif version_minor == 0:
            lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def body_source(self):
        """bytes, or (fd, size) for a file: the fd then belongs to the caller, who sends size bytes from
        offset 0 (pread/sendfile; a file that shrank meanwhile means the connection is cut) and closes it.
        A file Response hands its fd out once; if nobody takes it, it is closed with the Response."""
        if self.file is None:
            return self.body
        if self.file.fd < 0:
            raise ValueError("the file body was already taken")
        fd, self.file.fd = self.file.fd, -1
        return fd, self.file.size

    def close(self):
        """Close the file if the core did not take it (it answered 500 instead, for instance)."""
        if self.file is not None:
            self.file.close()

    def __repr__(self):
        return f"<Response {self.status} {self.body_length()} bytes>"


# --- failures: the error log, rate limited per hook ------------------------------------------------------

REPORT_INTERVAL = 10.0      # seconds: at most one traceback per hook in this time


def hook_name(fn):
    """ "module:qualname" of a hook, as it is written in the config."""
    module = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", None)
    return f"{module}:{qual}" if module and qual else repr(fn)


class FailureLog:
    """Writes a hook's failure to the error log: the first one with its traceback, then at most one per
    `interval` seconds; the ones in between are counted and the count goes with the next line written
    (or with flush(), which the worker may call from a timer)."""

    def __init__(self, interval=REPORT_INTERVAL, clock=time.monotonic, write=None):
        self.interval = interval
        self.clock = clock
        self.write = write
        self.last = {}          # hook name -> time of the last line written
        self.suppressed = {}    # hook name -> failures not written since

    def report(self, fn, what, detail):
        """One failure of fn. what: "request hook ... failed on GET /x (500 sent)"; detail: the traceback
        or the reason. Returns True when it was written."""
        name = hook_name(fn)
        now = self.clock()
        last = self.last.get(name)
        if last is not None and now - last < self.interval:
            self.suppressed[name] = self.suppressed.get(name, 0) + 1
            return False
        self.last[name] = now
        more = self.suppressed.pop(name, 0)
        note = f" ({more} more failure{'s' if more != 1 else ''} of it not logged in the last " \
               f"{now - last:.0f}s)" if more else ""
        (self.write or log)(f"{what}{note}:\n{detail.rstrip()}")
        return True

    def flush(self):
        """Write the counts of failures not logged, for hooks whose interval has passed."""
        now = self.clock()
        for name, more in list(self.suppressed.items()):
            if now - self.last[name] >= self.interval:
                del self.suppressed[name]
                self.last[name] = now
                (self.write or log)(f"hook {name}: {more} more failure{'s' if more != 1 else ''} not logged")


failures = FailureLog()


# What a failed request or response hook answers: the same bytes as the core's own 500 (_http.pyx
# write_error_response). The core may tell it apart by identity (`resp is INTERNAL_ERROR`).
INTERNAL_ERROR = Response(500, [("Content-Type", "text/plain")], b"500 Internal Server Error\n")


def _where(req):
    return f"{req.method} {req.target}" if isinstance(req, Request) else "a request"


def _failed(fn, kind, req, outcome, detail=None):
    if detail is None:      # the traceback from the hook's own frame down (call_*'s frame is noise)
        etype, e, tb = sys.exc_info()
        detail = "".join(traceback.format_exception(etype, e, tb.tb_next if tb is not None else None))
    failures.report(fn, f"{kind} hook {hook_name(fn)} failed on {_where(req)} ({outcome})", detail)


# --- the calls the core makes ------------------------------------------------------------------------------

def call_request(fn, req):
    """Run a request hook. Returns None (go on to the backend) or a Response to send: the hook's, or
    INTERNAL_ERROR when the hook raised or returned anything else (logged)."""
    try:
        out = fn(req)
    except BaseException:
        _failed(fn, "request", req, "500 sent")
        return INTERNAL_ERROR
    if out is None or isinstance(out, Response):
        return out
    _failed(fn, "request", req, "500 sent",
            f"a request hook returns None or fastproxy.hooks.Response, not {type(out).__name__}: {out!r:.200}")
    return INTERNAL_ERROR


def call_response(fn, req, resp):
    """Run a response hook. True: go on (apply resp's edits if resp.edited); False: it failed, answer 500."""
    try:
        out = fn(req, resp)
    except BaseException:
        _failed(fn, "response", req, "500 sent")
        return False
    if out is None:
        return True
    _failed(fn, "response", req, "500 sent",
            f"a response hook returns None (it edits the response in place), not {type(out).__name__}")
    return False


def call_body(fn, req, resp, chunk, end):
    """Run a body hook on one piece of the body (end=True once, last, chunk possibly b""). Returns the
    bytes to send in its place (possibly b""), or None when it failed: the connection is then cut."""
    try:
        out = fn(req, resp, chunk, end)
    except BaseException:
        _failed(fn, "body", req, "connection cut")
        return None
    if type(out) is bytes:
        return out
    if isinstance(out, bytearray | memoryview):
        return bytes(out)
    _failed(fn, "body", req, "connection cut",
            f'a body hook returns the bytes to send (b"" for none), not {type(out).__name__}')
    return None


def call_tee(fn, req, resp, chunk, end):
    """Run a tee hook on bytes the client gets. True: fine; False: it raised (logged); the core then stops
    teeing this response, and the client's response goes on untouched."""
    try:
        fn(req, resp, chunk, end)
    except BaseException:
        _failed(fn, "tee", req, "tee stopped for this response")
        return False
    return True


# --- loading ---------------------------------------------------------------------------------------------

KINDS = ("request", "response", "body", "tee")
ARGS = {"request": ("request",), "response": ("request", "response"),
        "body": ("request", "response", "chunk", "end"), "tee": ("request", "response", "chunk", "end")}


@dataclass(frozen=True)
class RouteHooks:
    """The callables of one route (None where the route has no hook of that kind)."""
    request: object = None
    response: object = None
    body: object = None
    tee: object = None


def check_ref(v):
    """Config validator: "module:name" (dotted names allowed on both sides)."""
    if not isinstance(v, str) or v.count(":") != 1:
        raise ValueError('must be "module:name", e.g. "myhooks:check"')
    module, name = v.split(":")
    if not all(p.isidentifier() for p in module.split(".")) or not all(p.isidentifier() for p in name.split(".")):
        raise ValueError('must be "module:name" with Python identifiers, e.g. "myhooks:check"')
    return v


class _FreshSourceLoader(importlib.machinery.SourceFileLoader):
    """Compiles the source every time: no .pyc is read (its mtime is only checked to the second, so an
    edit made within the second it was cached in would go unseen) and none is written next to the hooks."""

    def path_stats(self, path):
        raise OSError("fastproxy hooks are compiled from source")


_roots = ()         # the python_path directories of the last load, absolute
_added_paths = []   # what the last load put on sys.path
_imported = set()   # names of the modules that loading hooks brought into sys.modules (inherited by fork)


def _under(path, roots):
    path = os.path.abspath(path)
    return any(path == r or path.startswith(r + os.sep) for r in roots)


def _path_hook(path):
    if not _under(path, _roots):
        raise ImportError("not a hooks directory")     # the next path hook handles it
    return importlib.machinery.FileFinder(
        path, (_FreshSourceLoader, importlib.machinery.SOURCE_SUFFIXES),
        (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES))


def prepare(python_path):
    """Put the directories first on sys.path (replacing the previous load's) and forget the modules that
    loading hooks imported from under them, so the next import reads the files as they are now.

    Only those: fastproxy's own modules, and anything the process imported by itself, stay (a python_path
    that happens to contain fastproxy must not give the hooks a second fastproxy.hooks whose Response the
    core would not recognise); modules installed elsewhere stay too (C extensions cannot be imported twice).
    """
    global _roots
    roots = tuple(os.path.abspath(p) for p in python_path)
    for p in _added_paths:
        while p in sys.path:
            sys.path.remove(p)
    _added_paths[:] = roots
    sys.path[0:0] = roots
    if _path_hook not in sys.path_hooks:
        sys.path_hooks.insert(0, _path_hook)
    stale = roots + _roots
    _roots = roots
    for key in [k for k in sys.path_importer_cache if _under(k, stale)]:
        del sys.path_importer_cache[key]
    for name in list(_imported):
        module = sys.modules.get(name)
        if module is None:
            _imported.discard(name)
            continue
        file = getattr(module, "__file__", None)
        paths = list(getattr(module, "__path__", None) or ())
        if (file and _under(file, stale)) or any(_under(p, stale) for p in paths):
            del sys.modules[name]
            _imported.discard(name)
    importlib.invalidate_caches()


def resolve(ref, kind="request"):
    """The callable named by "module:name", imported. Raises ValueError with a message for the config
    error: the module does not import (its error), the name does not exist, is not callable, or cannot
    take the arguments a hook of that kind is given."""
    module_name, attr = ref.split(":")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import {module_name}: {e}") from None
    except BaseException as e:      # SyntaxError, or anything the module's own code raised
        raise ValueError(f"cannot import {module_name}: {_one_line(e)}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name} has no {attr}") from None
    if not callable(obj):
        raise ValueError(f"{ref} is not callable (its type is {type(obj).__name__})")
    args = ARGS[kind]
    try:
        inspect.signature(obj).bind(*args)
    except TypeError:
        raise ValueError(f"{ref} cannot be called as a {kind} hook, {attr}({', '.join(args)})") from None
    except ValueError:
        pass    # no signature to check (some builtins)
    return obj


def _one_line(e):
    """ "NameError: name 'x' is not defined (myhooks.py:3)" for an exception raised while importing."""
    where = ""
    if isinstance(e, SyntaxError) and e.filename:
        return f"SyntaxError: {e.msg} ({e.filename}:{e.lineno})"
    tb = traceback.extract_tb(e.__traceback__)
    if tb:
        where = f" ({tb[-1].filename}:{tb[-1].lineno})"
    return f"{type(e).__name__}: {e}{where}"


def load_routes(python_path, routes):
    """Import the hooks of each route. routes: per route, an object with request/response/body/tee refs
    (config.Hooks) or None. Returns (per-route RouteHooks or None, [(route index, kind, message), ...])."""
    if not any(routes):
        return tuple(None for _ in routes), []
    prepare(python_path)
    before = set(sys.modules)
    out, problems = [], []
    for i, hooks in enumerate(routes):
        if hooks is None:
            out.append(None)
            continue
        found = {}
        for kind in KINDS:
            ref = getattr(hooks, kind)
            if ref is None:
                continue
            try:
                found[kind] = resolve(ref, kind)
            except ValueError as e:
                problems.append((i, kind, str(e)))
        out.append(RouteHooks(**found))
    _imported.update(n for n in set(sys.modules) - before if n != "fastproxy" and not n.startswith("fastproxy."))
    return tuple(out), problems


def load(config):
    """Per route of config.routes, its RouteHooks (None for a route without hooks), imported fresh from
    config.server.python_path. Raises ConfigErrors (without line numbers) if one does not load: a worker
    calls this after fork, and exits with a config error then."""
    loaded, problems = load_routes(config.server.python_path, [r.hooks for r in config.routes])
    if problems:
        raise ConfigErrors([ConfigError(config.path, None, f"routes[{i}]", f"hooks.{kind}", message)
                            for i, kind, message in problems])
    return loaded
