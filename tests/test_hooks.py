"""fastproxy/hooks.py on its own: the Request / ResponseHead / Response API a hook sees, the guarded calls the
core makes (failures, wrong return types, the rate-limited error log), and loading hook modules (python_path
relative to the config file, config errors naming file, line, table and key, fresh imports after an edit).
The same hooks through a running proxy are in test_hooks_e2e.py."""

import os
import subprocess
import sys
import textwrap

import pytest

from fastproxy import config, hooks
from fastproxy._http import error_response
from fastproxy.errors import ConfigErrors
from fastproxy.hooks import Request, Response, ResponseHead

HEAD = (b"GET /api/x?y=1 HTTP/1.1\r\nHost: app.test\r\nAccept: */*\r\nX-Tag: one\r\nx-tag: two\r\n"
        b"X-Forwarded-For: 10.0.0.1\r\n\r\n")


def request(headers=None):
    if headers is None:
        headers = [("Host", "app.test"), ("Accept", "*/*"), ("X-Tag", "one"), ("x-tag", "two")]
    return Request("GET", "/api/x?y=1", "10.0.0.1", "1.1", headers)


# --- Request -----------------------------------------------------------------------------------------------

def test_request_attributes_and_case_insensitive_fields():
    r = request()
    assert (r.method, r.target, r.path, r.client_ip, r.version) == ("GET", "/api/x?y=1", "/api/x", "10.0.0.1", "1.1")
    assert r.header("HOST") == r.header("host") == "app.test"
    assert r.header("x-TAG") == "one, two"             # RFC 9110 5.3: lines joined with a comma
    assert r.header_all("X-Tag") == ["one", "two"]
    assert r.header("missing") is None
    assert r.headers == [("Host", "app.test"), ("Accept", "*/*"), ("X-Tag", "one"), ("x-tag", "two")]
    assert not r.edited
    with pytest.raises(AttributeError):
        r.target = "/elsewhere"         # the request line is sent as received: no silent no-op
    with pytest.raises(AttributeError):
        ResponseHead(200, []).status = 404
    r.state["seen"] = 1
    assert r.state == {"seen": 1}


def test_cookie_lines_join_with_semicolons_and_set_cookie_is_never_joined():
    r = Request("GET", "/", "::1", "1.1", [("Cookie", "a=1"), ("Cookie", "b=2")])
    assert r.header("cookie") == "a=1; b=2"
    resp = ResponseHead(200, [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2")])
    assert resp.header("set-cookie") == "a=1; Path=/"
    assert resp.header_all("set-cookie") == ["a=1; Path=/", "b=2"]


def test_request_edits_show_in_headers_and_apply_to_the_backend_head():
    r = request()
    r.set_header("x-tag", "three")              # every X-Tag line replaced, whatever its case
    r.remove_header("ACCEPT")
    r.add_header("X-User", "alice")
    r.set_header("Host", "backend.internal")    # Host may be rewritten
    assert r.edited
    assert r.headers == [("x-tag", "three"), ("X-User", "alice"), ("Host", "backend.internal")]
    assert r.header("x-tag") == "three"
    assert r.apply(HEAD) == (b"GET /api/x?y=1 HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nx-tag: three\r\n"
                             b"X-User: alice\r\nHost: backend.internal\r\n\r\n")


def test_remove_after_add_and_add_after_remove():
    r = request()
    r.add_header("X-New", "1")
    r.remove_header("x-new")
    r.remove_header("X-Tag")
    r.add_header("X-Tag", "last")
    out = r.apply(HEAD)
    assert b"X-New" not in out and out.count(b"X-Tag") + out.count(b"x-tag") == 1
    assert out.endswith(b"X-Forwarded-For: 10.0.0.1\r\nX-Tag: last\r\n\r\n")


def test_apply_without_edits_and_on_odd_but_valid_lines():
    r = request()
    assert r.apply(HEAD) == HEAD
    r.remove_header("x-a")
    head = b"GET / HTTP/1.0\r\nx-a:1\r\nX-A : 2\r\nX-AB: 3\r\n\r\n"
    assert r.apply(head) == b"GET / HTTP/1.0\r\nX-AB: 3\r\n\r\n"
    with pytest.raises(ValueError):
        r.apply(b"GET / HTTP/1.1\r\nHost: x\r\n")      # not a whole head
    assert r.apply(bytearray(b"GET / HTTP/1.1\r\n\r\n")) == b"GET / HTTP/1.1\r\n\r\n"


@pytest.mark.parametrize("name", ["", "X Tag", "X:Tag", "X-Tag\r\n", "Ä", "X\x00"])
def test_refuses_field_names_that_are_not_tokens(name):
    for obj in (request(), ResponseHead(200, [])):
        with pytest.raises(ValueError, match="token"):
            obj.set_header(name, "v")
        with pytest.raises(ValueError, match="token"):
            obj.remove_header(name)
    with pytest.raises(ValueError, match="token"):
        Response(200, [(name, "v")])


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\x00b", "a\x01b", "a\x7fb", "a\x1fb"])
def test_refuses_values_with_control_bytes(value):
    for obj in (request(), ResponseHead(200, [])):
        with pytest.raises(ValueError, match="control"):
            obj.set_header("X-V", value)
        with pytest.raises(ValueError, match="control"):
            obj.add_header("X-V", value)
        assert not obj.edited
    with pytest.raises(ValueError, match="control"):
        Response(200, {"X-V": value})


def test_values_tab_latin1_bytes_and_blanks():
    r = request()
    r.set_header("X-A", "a\tb")
    r.set_header("X-B", "  caf\xe9  ")             # blanks around a value are not part of it (RFC 9110 5.5)
    r.set_header("X-C", b"raw\xff")
    assert r.headers[-3:] == [("X-A", "a\tb"), ("X-B", "caf\xe9"), ("X-C", "raw\xff")]
    assert r.apply(b"GET / HTTP/1.1\r\n\r\n") == b"GET / HTTP/1.1\r\nX-A: a\tb\r\nX-B: caf\xe9\r\nX-C: raw\xff\r\n\r\n"
    with pytest.raises(ValueError, match="Latin-1"):
        r.set_header("X-D", "\u20ac")
    with pytest.raises(TypeError):
        r.set_header("X-D", 5)
    with pytest.raises(TypeError):
        r.set_header(b"X-D", "v")


@pytest.mark.parametrize("name", ["Content-Length", "transfer-encoding", "Connection", "Keep-Alive", "TE",
                                  "Trailer", "Upgrade", "Proxy-Connection"])
def test_framing_and_hop_by_hop_fields_belong_to_the_proxy(name):
    for obj in (request(), ResponseHead(200, [(name, "x")])):
        for method, args in (("set_header", (name, "1")), ("add_header", (name, "1")), ("remove_header", (name,))):
            with pytest.raises(ValueError, match="managed by the proxy"):
                getattr(obj, method)(*args)
        assert obj.header(name) in (None, "x")         # reading them is fine
    with pytest.raises(ValueError, match="managed by the proxy"):
        Response(200, {name: "1"})


def test_host_can_be_rewritten_but_not_removed_or_doubled():
    r = request()
    with pytest.raises(ValueError, match="exactly one"):
        r.remove_header("host")
    with pytest.raises(ValueError, match="exactly one"):
        r.add_header("Host", "other")
    r.set_header("host", "other")
    assert r.header("Host") == "other"


def test_managed_fields_are_the_ones_add_headers_refuses():
    assert hooks.MANAGED_FIELDS == config._MANAGED_FIELDS


# --- ResponseHead ------------------------------------------------------------------------------------------

def test_response_head_edits_keep_the_status_line():
    resp = ResponseHead(404, [("Content-Type", "text/html"), ("Content-Length", "12"), ("X-Backend", "b0")])
    assert resp.status == 404 and resp.header("content-length") == "12"
    resp.set_header("X-Stamp", "hooked")
    resp.remove_header("x-backend")
    resp.add_header("Set-Cookie", "a=1")
    resp.add_header("Set-Cookie", "b=2")
    head = b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 12\r\nX-Backend: b0\r\n\r\n"
    assert resp.apply(head) == (b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 12\r\n"
                                b"X-Stamp: hooked\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n")


# --- Response ----------------------------------------------------------------------------------------------

def test_response_head_for_each_connection_outcome():
    r = Response(201, {"X-A": "1"}, body=b'{"id": 7}')
    assert r.body_source() == b'{"id": 7}'
    assert r.head(True, 1) == b"HTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: 9\r\n\r\n"
    assert r.head(False, 1) == b"HTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: 9\r\nConnection: close\r\n\r\n"
    assert r.head(True, 0) == (b"HTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: 9\r\n"
                               b"Connection: keep-alive\r\n\r\n")
    assert r.head(False, 0).endswith(b"Connection: close\r\n\r\n")


def test_response_body_as_text_gets_utf8_and_a_content_type():
    r = Response(200, body="h\xe9\n")
    assert r.body_source() == "h\xe9\n".encode()
    assert r.head(True, 1) == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
                               b"Content-Length: 4\r\n\r\n")
    r = Response(200, [("content-type", "text/html")], body="<p>")
    assert r.headers == (("content-type", "text/html"),)
    assert Response(200, body=b"x").headers == ()      # bytes: no Content-Type unless given


def test_response_no_body_statuses_and_unknown_reasons():
    assert Response(204).head(True, 1) == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert Response(304, {"ETag": '"x"'}).head(True, 1) == b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n'
    assert Response(599).head(True, 1) == b"HTTP/1.1 599 Status\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(ValueError, match="no body"):
        Response(204, body=b"x")


@pytest.mark.parametrize("status", [100, 101, 103, 199, 600, 0, -1])
def test_response_refuses_statuses_that_are_not_answers(status):
    with pytest.raises(ValueError, match="200..599"):
        Response(status)


@pytest.mark.parametrize("args", [dict(status="200"), dict(status=True), dict(status=200.0),
                                  dict(status=200, body=5), dict(status=200, headers=[("X",)]),
                                  dict(status=200, headers=["X: 1"])])
def test_response_refuses_wrong_types(args):
    with pytest.raises(TypeError):
        Response(**args)


def test_response_from_a_file_hands_its_fd_to_the_core_once(tmp_path):
    path = tmp_path / "page.html"
    path.write_bytes(b"<h1>hi</h1>\n")
    r = Response(200, {"Content-Type": "text/html"}, file=path)
    assert r.head(True, 1) == b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 12\r\n\r\n"
    path.write_bytes(b"replaced")        # the size was taken with the fd: both describe the same file
    fd, size = r.body_source()
    try:
        assert size == 12 and os.pread(fd, 100, 0) == b"replaced"
    finally:
        os.close(fd)
    with pytest.raises(ValueError, match="already taken"):
        r.body_source()
    r.close()                              # nothing to close any more: the fd is the core's


def test_response_file_not_taken_is_closed_with_the_response(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    r = Response(200, file=str(path))
    fd = r.file.fd
    del r
    with pytest.raises(OSError):
        os.fstat(fd)


def test_response_file_refusals(tmp_path):
    with pytest.raises(FileNotFoundError):
        Response(200, file=tmp_path / "missing")
    with pytest.raises((ValueError, IsADirectoryError)):
        Response(200, file=tmp_path)
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(ValueError, match="not both"):
        Response(200, body=b"y", file=tmp_path / "f")


def test_a_response_cannot_be_changed_after_its_checks():
    r = Response(200, {"X-A": "1"}, body=b"x")
    for attr, value in (("status", 101), ("headers", [("X-B", "1\r\nX-C: 2")]), ("body", b"longer")):
        with pytest.raises(AttributeError):
            setattr(r, attr, value)
    with pytest.raises(AttributeError):
        r.headers.append(("Content-Length", "5"))
    assert r.head(True, 1) == b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 1\r\n\r\n"


def test_internal_error_is_the_cores_own_500():
    assert hooks.INTERNAL_ERROR.head(True, 1) + hooks.INTERNAL_ERROR.body_source() == error_response(500, False)


# --- the guarded calls -------------------------------------------------------------------------------------

class Lines(list):
    """Lines written; .now is the clock, .later() moves it past the interval (lambdas defined on one line
    share a name, hence one failure budget)."""
    now = None

    def later(self):
        self.now[0] += hooks.REPORT_INTERVAL


@pytest.fixture
def logged(monkeypatch):
    """What the hooks write to the error log, with a clock the test moves."""
    lines = Lines()
    now = [1000.0]
    monkeypatch.setattr(hooks, "failures", hooks.FailureLog(clock=lambda: now[0], write=lines.append))
    lines.now = now
    return lines


def check_ok(req):
    return None


def check_deny(req):
    return Response(403, body="no\n")


def check_raise(req):
    raise KeyError("boom")


def test_call_request_outcomes(logged):
    req = request()
    assert hooks.call_request(check_ok, req) is None
    assert hooks.call_request(check_deny, req).status == 403
    assert logged == []
    assert hooks.call_request(check_raise, req) is hooks.INTERNAL_ERROR
    (line,) = logged
    assert line.startswith(f"request hook {__name__}:check_raise failed on GET /api/x?y=1 (500 sent):\n"
                           "Traceback (most recent call last):")
    assert "KeyError: 'boom'" in line
    assert "in check_raise" in line and "in call_request" not in line     # from the hook's frame down


@pytest.mark.parametrize("returned", [True, "ok", 403, {"status": 403}, ResponseHead(200, [])])
def test_call_request_wrong_return_is_a_failure(logged, returned):
    assert hooks.call_request(lambda req: returned, request()) is hooks.INTERNAL_ERROR
    assert "returns None or fastproxy.hooks.Response, not " + type(returned).__name__ in logged[0]


def test_call_request_survives_sys_exit_and_refused_edits(logged):
    def exits(req):
        sys.exit(3)

    def smuggles(req):
        req.set_header("X-A", "1\r\nContent-Length: 5")

    assert hooks.call_request(exits, request()) is hooks.INTERNAL_ERROR
    assert hooks.call_request(smuggles, request()) is hooks.INTERNAL_ERROR
    assert "SystemExit: 3" in logged[0] and "ValueError: X-A: a field value must not contain CR" in logged[1]


def test_call_response_outcomes(logged):
    def stamp(req, resp):
        resp.set_header("X-Stamp", "1")

    resp = ResponseHead(200, [])
    assert hooks.call_response(stamp, request(), resp) is True and resp.edited
    assert hooks.call_response(lambda req, resp: 1 / 0, request(), resp) is False
    assert "ZeroDivisionError" in logged[0] and "(500 sent)" in logged[0]
    logged.later()
    assert hooks.call_response(lambda req, resp: resp, request(), resp) is False
    assert "a response hook returns None (it edits the response in place), not ResponseHead" in logged[1]


def test_call_body_outcomes(logged):
    resp = ResponseHead(200, [])
    assert hooks.call_body(lambda q, r, chunk, end: chunk.upper(), request(), resp, b"ab", False) == b"AB"
    assert hooks.call_body(lambda q, r, chunk, end: b"", request(), resp, b"", True) == b""
    assert hooks.call_body(lambda q, r, chunk, end: bytearray(chunk), request(), resp, b"x", False) == b"x"
    assert type(hooks.call_body(lambda q, r, c, e: memoryview(c), request(), resp, b"x", False)) is bytes
    assert logged == []
    assert hooks.call_body(lambda q, r, chunk, end: None, request(), resp, b"x", False) is None
    logged.later()
    assert hooks.call_body(lambda q, r, chunk, end: "text", request(), resp, b"x", False) is None
    logged.later()
    assert hooks.call_body(lambda q, r, chunk, end: q.nope, request(), resp, b"x", False) is None
    assert 'returns the bytes to send (b"" for none), not NoneType' in logged[0]
    assert "not str" in logged[1]
    assert "AttributeError" in logged[2] and "(connection cut)" in logged[2]


def test_call_tee_outcomes(logged):
    seen = []
    resp = ResponseHead(200, [])
    assert hooks.call_tee(lambda q, r, chunk, end: seen.append((chunk, end)) or "ignored", request(), resp,
                          b"ab", True) is True
    assert seen == [(b"ab", True)]
    assert hooks.call_tee(lambda q, r, chunk, end: 1 / 0, request(), resp, b"ab", False) is False
    assert "(tee stopped for this response)" in logged[0]


def test_failures_are_logged_at_most_once_per_hook_per_interval(logged):
    req = request()
    for _ in range(5):
        hooks.call_request(check_raise, req)
    hooks.call_request(lambda r: 1 / 0, req)           # another hook has its own budget
    assert len(logged) == 2 and "Traceback" in logged[0] and "ZeroDivisionError" in logged[1]
    logged.now[0] += 9.9
    hooks.call_request(check_raise, req)
    assert len(logged) == 2
    logged.now[0] += 0.2
    hooks.call_request(check_raise, req)
    assert len(logged) == 3
    assert "check_raise failed on GET /api/x?y=1 (500 sent) (5 more failures of it not logged in the last 10s)" \
           ":\nTraceback" in logged[2]
    # failures that stop: their count comes out with flush() once the interval is over
    hooks.call_request(check_raise, req)
    hooks.failures.flush()
    assert len(logged) == 3
    logged.now[0] += 10
    hooks.failures.flush()
    assert logged[3] == f"hook {__name__}:check_raise: 1 more failure not logged"
    hooks.failures.flush()
    assert len(logged) == 4


def test_failures_go_to_the_error_log(tmp_path, monkeypatch):
    from fastproxy import log as logs
    path = tmp_path / "error.log"
    monkeypatch.setattr(logs, "error_log", logs.ErrorLog(str(path), role="worker 0"))
    monkeypatch.setattr(hooks, "failures", hooks.FailureLog())
    hooks.call_request(check_raise, request())
    text = path.read_text()
    assert f"[worker 0 {os.getpid()}] request hook {__name__}:check_raise failed" in text
    assert "KeyError: 'boom'" in text


# --- loading -----------------------------------------------------------------------------------------------

BASE = """\
[server]
python_path = {python_path}

[[listen]]
address = "127.0.0.1:8080"

[upstreams.app]
servers = [{{ address = "127.0.0.1:9001" }}]

[[routes]]
path = "/api/"
upstream = "app"
hooks = {hooks}

[[routes]]
upstream = "app"
"""

MYHOOKS = """\
from fastproxy.hooks import Response

def check(request):
    if request.header("x-deny"):
        return Response(403, body="denied\\n")

def stamp(request, response):
    response.set_header("X-Stamp", "v1")

def upper(request, response, chunk, end):
    return chunk.upper()

def seen(request, response, chunk, end):
    pass

NOT_CALLABLE = 42
"""


@pytest.fixture
def hookdir(tmp_path):
    """A config directory with a hooks/ directory holding myhooks.py; sys.path and sys.modules are cleaned
    of it afterwards."""
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "myhooks.py").write_text(MYHOOKS)
    saved = list(sys.path)
    yield tmp_path
    hooks.prepare(())
    sys.path[:] = saved


def write_config(directory, hooks_table, python_path='["hooks"]'):
    path = directory / "proxy.toml"
    path.write_text(BASE.format(python_path=python_path, hooks=hooks_table))
    return str(path)


ALL = '{ request = "myhooks:check", response = "myhooks:stamp", body = "myhooks:upper", tee = "myhooks:seen" }'


def test_load_finds_modules_relative_to_the_config_file(hookdir, monkeypatch):
    monkeypatch.chdir("/")
    cfg = config.load(write_config(hookdir, ALL))
    assert cfg.server.python_path == (str(hookdir / "hooks"),)
    assert cfg.routes[0].hooks == config.Hooks(request="myhooks:check", response="myhooks:stamp",
                                               body="myhooks:upper", tee="myhooks:seen")
    assert cfg.routes[1].hooks is None
    loaded = hooks.load(cfg)
    assert len(loaded) == 2 and loaded[1] is None
    h = loaded[0]
    assert h.request(Request("GET", "/", "::1", "1.1", [("X-Deny", "1")])).status == 403
    assert h.body(None, None, b"abc", False) == b"ABC"
    assert sys.path[0] == str(hookdir / "hooks")
    assert sys.modules["myhooks"].__file__ == str(hookdir / "hooks" / "myhooks.py")
    assert not (hookdir / "hooks" / "__pycache__").exists()     # no .pyc written next to the hooks


def test_hooks_keys_in_the_config_reference():
    assert [f.name for f in config.toml_fields(config.Hooks)] == list(hooks.KINDS)
    assert config.ServerTable().python_path == ()


def load_errors(path):
    with pytest.raises(ConfigErrors) as info:
        config.load(path)
    return [str(e) for e in info.value.errors]


@pytest.mark.parametrize("hooks_table, message", [
    ('{ request = "nothere:check" }', "[routes[0]] hooks.request: cannot import nothere: No module named 'nothere'"),
    ('{ response = "myhooks:nope" }', "[routes[0]] hooks.response: module myhooks has no nope"),
    ('{ body = "myhooks:NOT_CALLABLE" }',
     "[routes[0]] hooks.body: myhooks:NOT_CALLABLE is not callable (its type is int)"),
    ('{ request = "myhooks:stamp" }',
     "[routes[0]] hooks.request: myhooks:stamp cannot be called as a request hook, stamp(request)"),
    ('{ tee = "myhooks:check" }',
     "[routes[0]] hooks.tee: myhooks:check cannot be called as a tee hook, check(request, response, chunk, end)"),
    ('{ request = "myhooks.check" }', '[routes[0]] hooks.request: must be "module:name", e.g. "myhooks:check"'),
    ('{ request = "my-hooks:check" }', "[routes[0]] hooks.request: must be \"module:name\" with Python"),
    ('{ request = "myhooks:check", answer = "myhooks:check" }', "[routes[0]] hooks.answer: unknown key"),
])
def test_a_hook_that_does_not_load_is_a_config_error_naming_file_line_and_key(hookdir, hooks_table, message):
    path = write_config(hookdir, hooks_table)
    (err,) = load_errors(path)
    assert err.startswith(f"{path}:13: {message}")


def test_a_module_that_fails_to_import_is_named_with_its_error(hookdir):
    (hookdir / "hooks" / "broken.py").write_text("x = 1\ndef f(:\n")
    (hookdir / "hooks" / "raising.py").write_text("import os\nvalue = undefined_name\n")
    (hookdir / "hooks" / "importing.py").write_text("import not_installed_anywhere\n")
    path = write_config(hookdir, '{ request = "broken:f", response = "raising:f", body = "importing:f" }')
    errs = load_errors(path)
    assert errs == [
        f"{path}:13: [routes[0]] hooks.request: cannot import broken: SyntaxError: invalid syntax "
        f"({hookdir}/hooks/broken.py:2)",
        f"{path}:13: [routes[0]] hooks.response: cannot import raising: NameError: name 'undefined_name' is "
        f"not defined ({hookdir}/hooks/raising.py:2)",
        f"{path}:13: [routes[0]] hooks.body: cannot import importing: No module named 'not_installed_anywhere'",
    ]


def test_python_path_must_exist_and_hooks_need_an_upstream_route(hookdir):
    path = write_config(hookdir, '{ request = "myhooks:check" }', python_path='["hooks", "../elsewhere"]')
    assert load_errors(path) == [f"{path}:2: [server] python_path: no directory {hookdir.parent / 'elsewhere'}"]
    path = hookdir / "proxy.toml"
    path.write_text(BASE.format(python_path='["hooks"]', hooks='{ request = "myhooks:check" }').replace(
        'path = "/api/"\nupstream = "app"', 'path = "/api/"\nrespond = { status = 200 }'))
    assert load_errors(str(path)) == [
        f"{path}:13: [routes[0]] hooks: hooks run on routes with an upstream, not with respond"]


def test_fastproxy_check_names_the_hook_that_does_not_load(hookdir):
    path = write_config(hookdir, '{ request = "myhooks:chek", tee = "gone:x" }')
    r = subprocess.run([sys.executable, "-m", "fastproxy", "check", "-c", path], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1
    assert r.stderr == (f"{path}:13: [routes[0]] hooks.request: module myhooks has no chek\n"
                        f"{path}:13: [routes[0]] hooks.tee: cannot import gone: No module named 'gone'\n")
    path = write_config(hookdir, ALL)
    r = subprocess.run([sys.executable, "-m", "fastproxy", "check", "-c", path], capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"{path}: ok\n", "")


def test_load_after_an_edit_sees_the_new_code_even_within_the_same_second(hookdir):
    (hookdir / "hooks" / "helper.py").write_text("TAG = 'v1'\n")
    (hookdir / "hooks" / "myhooks.py").write_text(MYHOOKS.replace('"v1"', "helper.TAG") + "import helper\n")
    cfg = config.load(write_config(hookdir, '{ response = "myhooks:stamp" }'))
    first = hooks.load(cfg)[0].response
    resp = ResponseHead(200, [])
    first(None, resp)
    assert resp.header("x-stamp") == "v1"
    # same size, same second: a .pyc cache keyed on (mtime in seconds, size) would serve the old code
    (hookdir / "hooks" / "helper.py").write_text("TAG = 'v2'\n")
    second = hooks.load(cfg)[0].response
    assert second is not first
    resp = ResponseHead(200, [])
    second(None, resp)
    assert resp.header("x-stamp") == "v2"
    first(None, resp)                           # the old function keeps its own module
    assert resp.header("x-stamp") == "v1"


def test_a_forked_worker_imports_the_files_as_they_are_after_fork(hookdir):
    """The master validated v1; the file changes; a worker forked afterwards (a reload) runs v2."""
    cfg = config.load(write_config(hookdir, '{ response = "myhooks:stamp" }'))
    assert sys.modules["myhooks"].stamp.__code__.co_consts.count("v1") == 1     # the master's import
    (hookdir / "hooks" / "myhooks.py").write_text(MYHOOKS.replace('"v1"', '"v2"'))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            resp = ResponseHead(200, [])
            hooks.load(cfg)[0].response(None, resp)
            os.write(w, resp.header("x-stamp").encode())
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 100) == b"v2"
    finally:
        os.close(r)
        os.waitpid(pid, 0)


def test_a_worker_whose_hook_no_longer_imports_gets_a_config_error(hookdir):
    cfg = config.load(write_config(hookdir, '{ request = "myhooks:check" }'))
    (hookdir / "hooks" / "myhooks.py").write_text("def other(request): pass\n")
    with pytest.raises(ConfigErrors) as info:
        hooks.load(cfg)
    assert [str(e) for e in info.value.errors] == [
        f"{cfg.path}: [routes[0]] hooks.request: module myhooks has no check"]


def test_only_modules_under_python_path_are_imported_again(hookdir):
    import json
    (hookdir / "hooks" / "usesjson.py").write_text("import json\ndef check(request): return json\n")
    cfg = config.load(write_config(hookdir, '{ request = "usesjson:check" }'))
    assert hooks.load(cfg)[0].request(None) is json and sys.modules["json"] is json


def test_a_changed_python_path_replaces_the_previous_one(hookdir):
    cfg = config.load(write_config(hookdir, ALL))
    (hookdir / "other").mkdir()
    (hookdir / "other" / "myhooks.py").write_text(MYHOOKS.replace('"v1"', '"other"'))
    cfg2 = config.load(write_config(hookdir, '{ response = "myhooks:stamp" }', python_path='["other"]'))
    assert str(hookdir / "hooks") not in sys.path and sys.path[0] == str(hookdir / "other")
    resp = ResponseHead(200, [])
    hooks.load(cfg2)[0].response(None, resp)
    assert resp.header("x-stamp") == "other"
    assert hooks.load(cfg)[0].request is not None       # and back


def test_hooks_in_packages_are_fresh_too(hookdir):
    pkg = hookdir / "hooks" / "site_hooks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "auth.py").write_text(textwrap.dedent("""\
        def check(request):
            return None
        check.version = 1
    """))
    cfg = config.load(write_config(hookdir, '{ request = "site_hooks.auth:check" }'))
    assert hooks.load(cfg)[0].request.version == 1
    (pkg / "auth.py").write_text((pkg / "auth.py").read_text().replace("= 1", "= 2"))
    assert hooks.load(cfg)[0].request.version == 2
    assert not (pkg / "__pycache__").exists()


def test_a_python_path_holding_fastproxy_itself_keeps_one_fastproxy(hookdir):
    """python_path = the directory fastproxy is in: the hooks must get the same fastproxy.hooks as the core,
    or isinstance(answer, Response) would fail in call_request."""
    import fastproxy
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastproxy.__file__)))
    (hookdir / "hooks" / "answers.py").write_text(
        "from fastproxy.hooks import Response\nimport fastproxy.demo\ndef check(request): return Response(204)\n")
    cfg = config.load(write_config(hookdir, '{ request = "answers:check" }', python_path=f'["hooks", "{root}"]'))
    for _ in range(2):
        fn = hooks.load(cfg)[0].request
        assert sys.modules["fastproxy.hooks"] is hooks and sys.modules["fastproxy"] is fastproxy
        assert hooks.call_request(fn, request()).status == 204
