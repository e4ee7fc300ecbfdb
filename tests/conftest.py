"""Fixtures for end-to-end tests: real backend processes, a real `fastproxy serve`, raw sockets.

    backends(n)          -> [RunningBackend, ...]  n recording backends named b0, b1, ... (helpers/backend.py);
                                                   backends(1, port=P) binds P; b.stop() + b.restart() bring
                                                   one back on the same port
    proxy(config_text)   -> RunningProxy           the proxy running that config (helpers/config.py builds it)
    workers              -> 1, then 2              parametrises a test over the worker count
    demo(name)           -> DemoBackend            a `python -m fastproxy.demo` backend (fast; for load tests)
    served(text, sub)    -> Served                 `fastproxy serve` with a pidfile, following every master
                                                   a binary upgrade creates (helpers/load.py); keyword
                                                   arguments choose its command, cwd and PYTHONPATH

At teardown the proxy fixture closes every client the test opened through proxy.client(), waits until the
workers' counters in the shared table show no connection left open (a leak fails the test) and that no worker died, sends TERM to the master and
asserts its whole process group is gone, the health checker (if the config has `health`) included; then the
backends are stopped by PID.
helpers.running.free_port() gives a port nothing listens on (for listeners, and as a dead upstream).
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from helpers.load import DemoBackend, Served  # noqa: E402
from helpers.running import RunningBackend, RunningProxy  # noqa: E402


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    # keep each phase's report on the item, so fixtures can tell whether the test failed
    report = yield
    setattr(item, "report_" + report.when, report)
    return report


@pytest.fixture(params=[1, 2], ids=["1worker", "2workers"])
def workers(request):
    """Run a test once with one worker and once with two."""
    return request.param


@pytest.fixture
def backends(tmp_path):
    started = []

    def start(n, port=0):
        new = []
        for _ in range(n):
            name = f"b{len(started)}"
            b = RunningBackend(name, str(tmp_path / f"backend-{name}"), port=port)
            started.append(b)
            new.append(b)
        return new

    yield start
    for b in started:
        b.stop()


@pytest.fixture
def proxy(request, tmp_path, backends):
    # depends on backends so that proxies stop before the backends behind them
    started = []

    def start(config_text):
        p = RunningProxy(config_text, str(tmp_path / f"proxy{len(started)}"))
        started.append(p)
        return p

    yield start
    failed = getattr(request.node, "report_call", None)
    if failed is not None and failed.failed:
        for p in started:
            print(f"--- {p.log_path} (config {p.config_path})\n{p.log()[-4000:]}", file=sys.stderr)
    errors = []
    for p in started:
        if not p.running():
            continue  # the test stopped it; stop() below still checks that nothing outlived it
        try:
            p.check_workers_alive()
            p.wait_quiescent()
        except AssertionError as e:
            errors.append(str(e))
        try:
            p.stop()
        except AssertionError as e:
            errors.append(str(e))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)


@pytest.fixture
def demo():
    started = []

    def start(name):
        b = DemoBackend(name)
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


@pytest.fixture
def served(tmp_path, demo, backends):
    # depends on demo and backends so that proxies stop before the backends behind them
    started = []

    def start(text, sub="proxy", **kwargs):
        s = Served(text, str(tmp_path / sub), **kwargs)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
