"""Run wrk and parse its report (wrk 4.x text output with --latency)."""

import re
import subprocess
from dataclasses import dataclass

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass
class WrkResult:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    socket_errors: int  # connect + read + write + timeout
    non2xx: int  # wrk counts "Non-2xx or 3xx responses"; the backend only ever sends 200
    output: str

    @property
    def errors(self):
        return self.socket_errors + self.non2xx


def _ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"bad wrk duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse(output):
    m = re.search(r"^\s*(\d+) requests in", output, re.M)
    if not m:
        raise ValueError(f"no request count in wrk output:\n{output}")
    requests = int(m.group(1))
    rps = float(re.search(r"^Requests/sec:\s*([\d.]+)", output, re.M).group(1))
    pct = dict(re.findall(r"^\s*(50|99)%\s+(\S+)", output, re.M))
    socket_errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if m:
        socket_errors = sum(int(g) for g in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    non2xx = int(m.group(1)) if m else 0
    # A proxy that answered nothing leaves no latency distribution.
    p50, p99 = (_ms(pct[k]) if k in pct else float("nan") for k in ("50", "99"))
    return WrkResult(requests, rps, p50, p99, socket_errors, non2xx, output)


def command(url, threads, connections, duration, close=False, cpus=None):
    argv = ["taskset", "-c", cpus] if cpus else []
    argv += ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    return argv + [url]


def run(url, threads, connections, duration, close=False, cpus=None):
    argv = command(url, threads, connections, duration, close, cpus)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    return parse(done.stdout)
