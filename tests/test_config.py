"""The config loader: defaults, validators, and errors that name file, line, table and key."""

import dataclasses
import os
import socket

import pytest

from fastproxy import config
from fastproxy.errors import ConfigError, ConfigErrors

MINIMAL = """\
[[listen]]
address = "127.0.0.1:8080"

[upstreams.app]
servers = [{ address = "127.0.0.1:9001" }]

[[routes]]
upstream = "app"
"""


def errors_of(text, path="proxy.toml"):
    with pytest.raises(ConfigErrors) as info:
        config.loads(text, path)
    return info.value.errors


def one_error(text):
    errs = errors_of(text)
    assert len(errs) == 1, [str(e) for e in errs]
    return errs[0]


def with_table(table, body):
    return f"{MINIMAL}\n[{table}]\n{body}\n"


# --- defaults --------------------------------------------------------------------------------------

def test_minimal_config_has_every_default():
    c = config.loads(MINIMAL, "proxy.toml")
    assert c.path == "proxy.toml"
    assert c.server.workers == (os.cpu_count() or 1)
    assert c.server.pidfile is None
    assert c.server.server_header == ""
    assert c.server.forwarded is False
    assert c.server.drain_timeout == 30.0
    assert c.server.max_connections == 10000
    assert dataclasses.asdict(c.limits) == {
        "max_head_size": 16384, "max_headers": 100, "max_uri_size": 8192, "max_body_size": 0,
        "buffer_size": 65536, "min_rate": 500, "spool_dir": None, "spool_max_size": 1 << 30,
    }
    assert dataclasses.asdict(c.timeouts) == {
        "client_header": 10.0, "client_body": 60.0, "rate_grace": 5.0, "keepalive": 75.0, "upstream_connect": 5.0,
        "upstream_read": 60.0, "upstream_send": 60.0,
    }
    (listen,) = c.listens
    assert (listen.address, listen.host, listen.port, listen.backlog, listen.family) == (
        "127.0.0.1:8080", "127.0.0.1", 8080, 511, socket.AF_INET)
    up = c.upstreams["app"]
    assert (up.name, up.balance, up.keepalive, up.keepalive_timeout, up.tries) == ("app", "round_robin", 64, 60.0, 3)
    (server,) = up.servers
    assert (server.address, server.host, server.port, server.weight) == ("127.0.0.1:9001", "127.0.0.1", 9001, 1)
    assert c.routes == (config.Route(host="*", path="/", upstream="app"),)


def test_dataclass_defaults_match_loaded_defaults():
    c = config.loads(MINIMAL)
    assert c.server == config.ServerTable()
    assert c.limits == config.Limits()
    assert c.timeouts == config.Timeouts()


def test_config_is_frozen():
    c = config.loads(MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.server.workers = 3


def test_every_toml_field_has_doc_and_default_or_is_required():
    for cls, _ in config.SECTIONS.values():
        for f in config.toml_fields(cls):
            assert f.metadata["doc"].strip()
            assert f.metadata.get("required") or "toml_default" in f.metadata, (cls, f.name)


# --- values accepted ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ('"10s"', 10.0), ('"500ms"', 0.5), ('"2m"', 120.0), ('"1h"', 3600.0), ('"1.5s"', 1.5), ("7", 7.0),
    ("2.5", 2.5),
])
def test_durations(text, seconds):
    c = config.loads(with_table("timeouts", f"client_header = {text}"))
    assert c.timeouts.client_header == seconds


@pytest.mark.parametrize("text, size", [("4096", 4096), ('"16k"', 16384), ('"1m"', 1 << 20), ('"1g"', 1 << 30),
                                        ('"32K"', 32768)])
def test_sizes(text, size):
    c = config.loads(with_table("limits", f"max_body_size = {text}"))
    assert c.limits.max_body_size == size


def test_server_table_values():
    c = config.loads(with_table("server", 'workers = 3\npidfile = "/tmp/fp.pid"\nserver_header = "fastproxy"\n'
                                          'forwarded = true\ndrain_timeout = 0\nmax_connections = 500'))
    assert (c.server.workers, c.server.pidfile, c.server.server_header, c.server.forwarded,
            c.server.drain_timeout, c.server.max_connections) == (3, "/tmp/fp.pid", "fastproxy", True, 0.0, 500)


def test_keepalive_zero_disables():
    assert config.loads(with_table("timeouts", "keepalive = 0")).timeouts.keepalive == 0.0


def test_ipv6_and_names_are_resolved():
    text = MINIMAL.replace('"127.0.0.1:8080"', '"[::1]:8080"').replace('"127.0.0.1:9001"', '"localhost:9001"')
    c = config.loads(text)
    assert (c.listens[0].host, c.listens[0].family) == ("::1", socket.AF_INET6)
    assert c.upstreams["app"].servers[0].host in ("127.0.0.1", "::1")
    assert c.upstreams["app"].servers[0].address == "localhost:9001"


def test_listen_star_means_all_ipv4():
    c = config.loads(MINIMAL.replace('"127.0.0.1:8080"', '"*:8080"'))
    assert c.listens[0].host == "0.0.0.0"


def test_route_hosts_are_lowercased():
    c = config.loads(MINIMAL.replace('upstream = "app"', 'host = "*.Example.COM"\npath = "/api"\nupstream = "app"'))
    assert c.routes[0] == config.Route(host="*.example.com", path="/api", upstream="app")


def test_servers_as_array_of_tables_with_weights():
    text = MINIMAL.replace('servers = [{ address = "127.0.0.1:9001" }]',
                           'balance = "round_robin"\nkeepalive = 0\nkeepalive_timeout = "5s"\ntries = 1\n'
                           '[[upstreams.app.servers]]\naddress = "127.0.0.1:9001"\nweight = 3\n'
                           '[[upstreams.app.servers]]\naddress = "127.0.0.1:9002"\n')
    up = config.loads(text).upstreams["app"]
    assert [(s.port, s.weight) for s in up.servers] == [(9001, 3), (9002, 1)]
    assert (up.keepalive, up.keepalive_timeout, up.tries) == (0, 5.0, 1)


def test_several_listens_upstreams_routes_keep_order():
    text = MINIMAL + ('[[listen]]\naddress = "127.0.0.1:8081"\n[upstreams.b]\nservers = [{ address = "127.0.0.1:1" }]\n'
                      '[[routes]]\nhost = "b.example"\nupstream = "b"\n')
    c = config.loads(text)
    assert [lst.port for lst in c.listens] == [8080, 8081]
    assert list(c.upstreams) == ["app", "b"]
    assert [r.upstream for r in c.routes] == ["app", "b"]


# --- bad values: one error each, naming file, line, table and key ------------------------------------

BAD_VALUES = [
    # (table, body, key, message fragment)
    ("server", "workers = 0", "workers", '"auto" or an integer >= 1'),
    ("server", 'workers = "many"', "workers", '"auto" or an integer'),
    ("server", "workers = true", "workers", '"auto" or an integer'),
    ("server", 'pidfile = ""', "pidfile", "non-empty path"),
    ("server", "server_header = 1", "server_header", "must be a string"),
    ("server", 'server_header = "a\\r\\nX: y"', "server_header", "CR, LF or NUL"),
    ("server", 'forwarded = "yes"', "forwarded", "true or false"),
    ("server", "drain_timeout = -1", "drain_timeout", "zero or more"),
    ("server", "max_connections = 0", "max_connections", ">= 1"),
    ("server", 'max_connections = "many"', "max_connections", "integer"),
    ("limits", "max_head_size = 100", "max_head_size", "integer >= 256"),
    ("limits", 'max_head_size = "lots"', "max_head_size", "size in bytes"),
    ("limits", "max_headers = 0", "max_headers", ">= 1 and <= 128"),
    ("limits", "max_headers = 129", "max_headers", ">= 1 and <= 128"),
    ("limits", "max_uri_size = 0", "max_uri_size", ">= 1"),
    ("limits", "max_body_size = -1", "max_body_size", ">= 0"),
    ("limits", "max_body_size = 1.5", "max_body_size", "size in bytes"),
    ("limits", "buffer_size = 512", "buffer_size", ">= 1024"),
    ("timeouts", 'client_header = "10"', "client_header", "duration"),
    ("timeouts", 'client_body = "1 week"', "client_body", "duration"),
    ("timeouts", "keepalive = -1", "keepalive", "zero or more"),
    ("timeouts", "upstream_connect = 0", "upstream_connect", "more than zero"),
    ("timeouts", 'upstream_read = "0s"', "upstream_read", "more than zero"),
    ("timeouts", "upstream_send = false", "upstream_send", "duration"),
]


@pytest.mark.parametrize("table, body, key, fragment", BAD_VALUES)
def test_bad_values(table, body, key, fragment):
    err = one_error(with_table(table, body))
    assert (err.path, err.table, err.key) == ("proxy.toml", table, key)
    assert err.line == MINIMAL.count("\n") + 3
    assert fragment in err.message
    assert str(err).startswith(f"proxy.toml:{err.line}: [{table}] {key}: ")


BAD_SECTIONS = [
    # (replace this in MINIMAL, with this, table, key, message fragment, line)
    ('"127.0.0.1:8080"', '"127.0.0.1"', "listen[0]", "address", '"host:port"', 2),
    ('"127.0.0.1:8080"', '"127.0.0.1:0"', "listen[0]", "address", "1..65535", 2),
    ('"127.0.0.1:8080"', '"127.0.0.1:70000"', "listen[0]", "address", "1..65535", 2),
    ('"127.0.0.1:8080"', '"[::1:8080"', "listen[0]", "address", '"host:port"', 2),
    ('"127.0.0.1:8080"', '"127.0.0.1:8080"\nbacklog = 0', "listen[0]", "backlog", ">= 1", 3),
    ('{ address = "127.0.0.1:9001" }', '{ address = "127.0.0.1:9001", weight = 0 }',
     "upstreams.app", "servers[0].weight", "integer >= 1", 5),
    ('{ address = "127.0.0.1:9001" }', '{ address = "*:9001" }', "upstreams.app", "servers[0].address",
     "only allowed for listen", 5),
    ('{ address = "127.0.0.1:9001" }', '{ weight = 2 }', "upstreams.app", "servers[0].address", "required", 5),
    ('servers = [{ address = "127.0.0.1:9001" }]', "servers = []", "upstreams.app", "servers", "non-empty", 5),
    ('servers = [{ address = "127.0.0.1:9001" }]', 'servers = ["127.0.0.1:9001"]', "upstreams.app", "servers[0]",
     "must be a table", 5),
    ('servers = [{ address = "127.0.0.1:9001" }]', 'balance = "round_robin"', "upstreams.app", "servers",
     "required", 4),
    ('servers = [', 'balance = "random"\nservers = [', "upstreams.app", "balance", '"round_robin"', 5),
    ('servers = [', 'keepalive = -1\nservers = [', "upstreams.app", "keepalive", ">= 0", 5),
    ('servers = [', 'keepalive_timeout = "soon"\nservers = [', "upstreams.app", "keepalive_timeout",
     "duration", 5),
    ('servers = [', 'tries = 0\nservers = [', "upstreams.app", "tries", ">= 1", 5),
    ('upstream = "app"', 'upstream = "app"\npath = "api"', "routes[0]", "path", 'starting with "/"', 9),
    ('upstream = "app"', 'upstream = "app"\npath = "/a b"', "routes[0]", "path", "spaces", 9),
    ('upstream = "app"', 'upstream = "app"\nhost = "example.com:80"', "routes[0]", "host", "no port", 9),
    ('upstream = "app"', 'upstream = "app"\nhost = "a.*.com"', "routes[0]", "host", '"*.suffix"', 9),
    ('upstream = "app"', 'host = "x"', "routes[0]", "upstream", "exactly one of upstream and respond", 7),
    ('upstream = "app"', 'upstream = "app"\nrespond = { body = "x" }', "routes[0]", "upstream",
     "exactly one of upstream and respond", 8),
    ('upstream = "app"', 'respond = { status = 204 }', "routes[0]", "respond.status", "no body", 8),
    ('upstream = "app"', 'upstream = "app"\nadd_headers = { "Content-Length" = "1" }', "routes[0]",
     "add_headers", "managed by the proxy", 9),
    ('upstream = "app"', 'upstream = "app"\nadd_headers = { "X A" = "1" }', "routes[0]", "add_headers",
     "not a field name", 9),
    ('upstream = "app"', 'upstream = "app"\nadd_headers = { "X-A" = " 1" }', "routes[0]", "add_headers",
     "field value", 9),
    ('upstream = "app"', 'upstream = "nope"', "routes[0]", "upstream", "no upstream named 'nope'", 8),
    ('[upstreams.app]', '[upstreams."my app"]', "upstreams.my app", "", "upstream name", 4),
]


@pytest.mark.parametrize("old, new, table, key, fragment, line", BAD_SECTIONS)
def test_bad_values_in_listen_upstreams_routes(old, new, table, key, fragment, line):
    assert old in MINIMAL
    errs = errors_of(MINIMAL.replace(old, new, 1))
    err = errs[0]
    assert (err.path, err.line, err.table, err.key) == ("proxy.toml", line, table, key or None), str(err)
    assert fragment in err.message


def test_unknown_keys_and_tables():
    text = MINIMAL + '[server]\ncolour = "red"\n[limits]\nmax_things = 3\n[tls]\ncert = "x"\n'
    text = text.replace('{ address = "127.0.0.1:9001" }', '{ address = "127.0.0.1:9001", wieght = 2 }')
    text = text.replace('upstream = "app"', 'upstream = "app"\nprefix = "/"')
    errs = errors_of(text)
    found = [(e.line, e.table, e.key) for e in errs]
    assert found == [
        (5, "upstreams.app", "servers[0].wieght"),
        (9, "routes[0]", "prefix"),
        (11, "server", "colour"),
        (13, "limits", "max_things"),
        (14, "tls", None),
    ]
    assert all("unknown" in e.message for e in errs)
    assert "expected one of: workers, pidfile" in errs[2].message


def test_unknown_top_level_key():
    err = one_error("nonsense = 1\n" + MINIMAL)
    assert (err.line, err.table, err.message.split(" (")[0]) == (1, "nonsense", "unknown key")


@pytest.mark.parametrize("text, fragment", [
    ("[server]\nworkers = = 3\n", "line 2"),
    ('[[listen]]\naddress = "127.0.0.1:1\n', "line 2"),
    ("[server]\n[server]\n", "line 2"),
    ("x = [1,\n2,\n", "line 2"),   # "at end of document": the last line
])
def test_syntax_errors_keep_their_line(text, fragment):
    err = one_error(text)
    assert err.line == int(fragment.split()[1])
    assert err.message.startswith("TOML syntax error: ")
    assert str(err).startswith(f"proxy.toml:{err.line}: TOML syntax error")


def test_all_errors_reported_at_once_in_file_order():
    text = ("[server]\nworkers = 0\n[limits]\nmax_headers = 0\n[timeouts]\nkeepalive = \"x\"\n" + MINIMAL)
    errs = errors_of(text)
    assert [(e.line, e.key) for e in errs] == [(2, "workers"), (4, "max_headers"), (6, "keepalive")]
    assert str(ConfigErrors(errs)).splitlines() == [str(e) for e in errs]


# --- cross checks ------------------------------------------------------------------------------------

def test_empty_config_needs_listen_upstream_route():
    errs = errors_of("")
    assert [(e.table, e.line) for e in errs] == [("listen", None), ("upstreams", None), ("routes", None)]
    assert all("at least one" in e.message for e in errs)
    assert str(errs[0]) == "proxy.toml: [listen] at least one [[listen]] table is required"


def test_duplicate_listen_addresses():
    text = MINIMAL + '[[listen]]\naddress = "localhost:8080"\n'
    err = one_error(text)
    assert (err.line, err.table, err.key) == (10, "listen[1]", "address")
    assert "duplicate of listen[0]" in err.message


def test_duplicate_routes():
    err = one_error(MINIMAL + '[[routes]]\nupstream = "app"\n')
    assert (err.line, err.table, err.key) == (9, "routes[1]", "path")  # path is defaulted: the header line
    assert "same host and path as routes[0]" in err.message


def test_route_to_broken_upstream_is_not_reported_twice():
    err = one_error(MINIMAL.replace("servers = [", "tries = 0\nservers = ["))
    assert err.key == "tries"


def test_route_index_counts_broken_routes():
    text = MINIMAL + '[[routes]]\npath = "x"\nupstream = "app"\n[[routes]]\npath = "/b"\nupstream = "gone"\n'
    errs = errors_of(text)
    assert [(e.table, e.key) for e in errs] == [("routes[1]", "path"), ("routes[2]", "upstream")]


def test_head_must_fit_in_buffer():
    err = one_error(with_table("limits", 'buffer_size = "8k"\nmax_head_size = "16k"'))
    assert (err.table, err.key, err.line) == ("limits", "max_head_size", 12)


@pytest.mark.parametrize("text, table", [
    ("[[server]]\nworkers = 1\n", "server"),
    ("listen = 3\n", "listen"),
    ('[listen]\naddress = "127.0.0.1:1"\n', "listen"),
    ("upstreams = 3\n", "upstreams"),
    ("[upstreams]\napp = 3\n", "upstreams.app"),
    ("routes = [1]\n", "routes[0]"),
])
def test_wrong_shapes(text, table):
    errs = errors_of(text)
    assert any(e.table == table and e.line in (1, 2) for e in errs), [str(e) for e in errs]


# --- line finding ------------------------------------------------------------------------------------

def test_find_lines_skips_multiline_values_and_strings():
    text = ('a = 1\n[t]\nx = """\n[fake]\ny = 2\n"""\nz = [\n  "[not]",\n  { k = 1 },\n]\nw = "#[" # [c\n'
            '[[arr]]\nk = 1\n[[arr]]\nk = 2\n["q.d"]\n"s p" = 1\nd.e = 2\n')
    lines = config.find_lines(text)
    assert lines[("a",)] == 1
    assert lines[("t",)] == 2
    assert lines[("t", "x")] == 3
    assert ("fake",) not in lines and ("t", "y") not in lines
    assert lines[("t", "z")] == 7
    assert ("t", "k") not in lines
    assert lines[("t", "w")] == 11
    assert lines[("arr", 0, "k")] == 13
    assert lines[("arr", 1, "k")] == 15
    assert lines[("q.d", "s p")] == 17
    assert lines[("q.d", "d", "e")] == 18


def test_load_reads_files_and_names_them(tmp_path):
    good = tmp_path / "proxy.toml"
    good.write_text(MINIMAL)
    assert config.load(str(good)).path == str(good)
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL.replace("9001", "0"))
    with pytest.raises(ConfigErrors) as info:
        config.load(str(bad))
    assert str(info.value.errors[0]).startswith(f"{bad}:5: [upstreams.app] servers[0].address:")
    with pytest.raises(ConfigErrors) as info:
        config.load(str(tmp_path / "missing.toml"))
    assert "cannot read" in str(info.value)


def test_config_error_str_forms():
    assert str(ConfigError("p.toml", 12, "upstreams.app", "servers[1].weight", "must be an integer >= 1")) == \
        "p.toml:12: [upstreams.app] servers[1].weight: must be an integer >= 1"
    assert str(ConfigError("p.toml", None, None, None, "cannot read")) == "p.toml: cannot read"


# --- the demo -----------------------------------------------------------------------------------------

def test_demo_config_loads():
    c = config.builtin_demo(8080, [9001, 9002, 9003], workers=2)
    assert c.path == "<demo>"
    assert c.server.workers == 2
    assert [(lst.host, lst.port) for lst in c.listens] == [("127.0.0.1", 8080)]
    up = c.upstreams["demo"]
    assert (up.balance, [s.port for s in up.servers]) == ("round_robin", [9001, 9002, 9003])
    assert c.routes == (config.Route(host="*", path="/", upstream="demo"),)
    assert config.loads(config.demo_toml(8080, [9001, 9002, 9003]), "x.toml").upstreams == c.upstreams
