"""The logs: the error log at a configured path, the access log (combined, json, off) and USR1 reopening
both after a rotation -- through a real `fastproxy serve` and real signals."""

import json
import os
import re
import signal

import pytest
from helpers import procs
from helpers.client import Client
from helpers.load import DemoBackend, Served, serve_config

COMBINED = re.compile(
    r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /(?P<path>\S*) HTTP/1\.1" '
    r'(?P<status>\d{3}) (?P<bytes>\d+) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$'
)


@pytest.fixture
def demo():
    b = DemoBackend("A")
    yield b
    b.stop()


@pytest.fixture
def served(tmp_path, demo):
    started = []

    def start(log, workers=1):
        s = Served(serve_config(str(tmp_path), [demo.address], workers=workers, log=log), str(tmp_path))
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def request(port, path, agent="tester/1.0", referer=None):
    headers = [f"User-Agent: {agent}"] + ([f"Referer: {referer}"] if referer else [])
    with Client(port) as c:
        return c.get(path, headers=headers)


def lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def wait_lines(path, n):
    """The access log lines once there are n of them (the core flushes every ~100 ms)."""
    return procs.wait_for(lambda: len(lines(path)) >= n and lines(path), message=f"{n} lines in {path}")


def test_combined_access_log_and_error_log_file(tmp_path, served):
    access, errors = str(tmp_path / "access.log"), str(tmp_path / "error.log")
    p = served({"access_log": access, "error_log": errors})
    assert request(p.port, "/one", referer="http://ref.test/x").status == 200
    assert request(p.port, "/two?q=1", agent='evil"agent').status == 200
    first, second = wait_lines(access, 2)
    m = COMBINED.match(first)
    assert m, first
    assert (m["path"], m["status"], m["referer"], m["agent"]) == ("one", "200", "http://ref.test/x", "tester/1.0")
    assert int(m["bytes"]) > len("hello from A\n")
    m = COMBINED.match(second)
    assert m, second
    assert m["path"] == "two?q=1" and m["referer"] == "-"
    assert m["agent"] == "evil\\x22agent"      # a quote cannot forge a field (nginx's escaping)
    # master and worker events go to the error log file, not to stderr
    text = open(errors).read()
    assert "fastproxy master started" in text and "worker 0 (pid" in text
    assert "fastproxy master started" not in p.log()


def test_json_access_log(tmp_path, served):
    access = str(tmp_path / "access.json")
    p = served({"access_log": access, "access_format": "json"})
    assert request(p.port, "/j?x=1").status == 200
    (line,) = wait_lines(access, 1)
    entry = json.loads(line)
    expected = {"time", "remote_addr", "method", "uri", "version", "status", "bytes_sent", "referer",
                "user_agent", "host", "upstream", "duration_ms", "error"}
    assert expected <= set(entry), entry
    assert (entry["method"], entry["uri"], entry["status"], entry["host"], entry["user_agent"]) == (
        "GET", "/j?x=1", 200, "app.test", "tester/1.0")
    assert entry["remote_addr"] == "127.0.0.1" and entry["error"] == ""


def test_access_log_is_off_by_default(tmp_path, served):
    p = served({})
    assert request(p.port, "/").status == 200
    p.stop()
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".log")) == ["proxy.log"]
    assert "GET /" not in p.log()


def test_usr1_reopens_both_logs_after_rotation(tmp_path, served):
    access, errors = str(tmp_path / "access.log"), str(tmp_path / "error.log")
    p = served({"access_log": access, "error_log": errors}, workers=2)
    for i in range(4):
        assert request(p.port, f"/before-{i}").status == 200
    wait_lines(access, 4)
    os.rename(access, access + ".1")
    os.rename(errors, errors + ".1")
    os.kill(p.pid, signal.SIGUSR1)
    procs.wait_for(lambda: any("SIGUSR1: reopened the error log" in line for line in lines(errors)),
                   message="the master to reopen its error log")
    # each worker reopens on its own signal: keep asking until both wrote to the new file
    n = 0

    def both_workers_write_the_new_file():
        nonlocal n
        n += 1
        assert request(p.port, f"/after-{n}").status == 200
        return len(lines(access)) >= 2 and n >= 4

    procs.wait_for(both_workers_write_the_new_file, message="requests logged in the new access log")
    new = lines(access)
    assert all("/after-" in line for line in new), new
    old = lines(access + ".1")
    assert len(old) >= 4 and all("/before-" in line or "/after-" in line for line in old)
    assert "fastproxy master started" in open(errors + ".1").read()
