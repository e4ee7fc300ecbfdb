"""Profile mode (`python bench/run.py --profile`): system calls and CPU per proxied request.

Scenario a (100 B over keep-alive, 1 worker) for each selected proxy, in two passes:
1. `perf stat -p PIDS -- wrk ...` (if perf is installed): task-clock and context switches of the proxy's
   processes while wrk runs, per request. Hardware counters are printed when the machine has them
   (virtual machines often do not).
2. `strace -c -f -p PID ...` attached to the proxy's master and workers while wrk runs: the count of each
   system call per request. strace stops the traced process on every call, so throughput under strace
   is a fraction of the normal one and epoll_wait batches fewer events: read the per-request counts of
   recv/send/writev/accept/connect as exact, and epoll_wait's as an upper bound.
"""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import servers
import wrk


def _wait_attached(log, count, popen, timeout=10.0):
    """strace prints "Process N attached" once per traced thread on stderr; wait for all of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"strace exited: {servers.tail(log)}")
        if servers.tail(log, 1000).count("attached") >= count:
            return
        time.sleep(0.02)
    raise RuntimeError(f"strace did not attach within {timeout}s: {servers.tail(log)}")


def parse_strace(text):
    """strace -c summary -> {syscall: calls}."""
    calls = {}
    for line in text.splitlines():
        cols = line.split()
        if len(cols) in (5, 6) and re.fullmatch(r"[\d.]+", cols[0]) and cols[-1] != "total":
            calls[cols[-1]] = int(cols[3])
    return calls


def trace(proc, url, seconds, outdir, wrk_cpus):
    pids = proc.tree()
    threads = sum(len(list(Path(f"/proc/{p}/task").iterdir())) for p in pids)
    summary = outdir / f"strace-{proc.name}.txt"
    log = outdir / f"strace-{proc.name}.log"
    argv = ["strace", "-c", "-f", "-o", str(summary)]
    for pid in pids:
        argv += ["-p", str(pid)]
    with open(log, "wb") as err:
        st = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL)
    try:
        _wait_attached(log, threads, st)
        res = wrk.run(url, 1, 50, seconds, cpus=wrk_cpus)
    finally:
        st.send_signal(signal.SIGINT)  # strace detaches and writes the summary
        st.wait(30)
    return res, parse_strace(summary.read_text())


def perf_stat(proc, url, seconds, outdir, wrk_cpus):
    out = outdir / f"perf-{proc.name}.csv"
    argv = ["perf", "stat", "-x,", "-o", str(out), "-e",
            "task-clock,context-switches,cpu-migrations,page-faults,cycles,instructions",
            "-p", ",".join(map(str, proc.tree())), "--"]
    argv += wrk.command(url, 1, 50, seconds, cpus=wrk_cpus)
    before = proc.cpu_ticks()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    after = proc.cpu_ticks()
    if done.returncode != 0:
        raise RuntimeError(f"perf stat failed: {done.stderr}")
    res = wrk.parse(done.stdout)
    # The user/system split, which perf's task-clock does not give.
    counters = {"usr_ticks": after[0] - before[0], "sys_ticks": after[1] - before[1]}
    for line in out.read_text().splitlines():
        cols = line.split(",")
        if len(cols) > 2 and not line.startswith("#"):
            counters[cols[2]] = cols[0]
    return res, counters


def main(args):
    seconds = args.profile_seconds
    outdir = args.out / "raw" / ("profile-" + time.strftime("%Y%m%d-%H%M%S"))
    outdir.mkdir(parents=True)
    if not shutil.which("strace"):
        raise SystemExit("strace is not installed: apt-get install -y strace")
    tmp = tempfile.mkdtemp(prefix="fastproxy-profile-")
    started = []
    results = {}
    try:
        backend = servers.start_backend(tmp, outdir, args.pin.get("backend"))
        started.append(backend)
        for name in args.proxies:
            proc = servers.start_proxy(name, "profile", tmp, outdir, backend.port, 1, args.pin.get("proxy"),
                                       args.baseline)
            started.append(proc)
            url = f"http://127.0.0.1:{proc.port}/100"
            wrk.run(url, 1, 50, max(args.warmup, 1), cpus=args.pin.get("wrk"))
            perf = None
            if shutil.which("perf"):
                perf = perf_stat(proc, url, seconds, outdir, args.pin.get("wrk"))
            results[name] = (perf, trace(proc, url, seconds, outdir, args.pin.get("wrk")))
            started.remove(proc)
            servers.stop(proc)
    finally:
        for proc in reversed(started):
            servers.stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    text = render(results, seconds)
    (outdir / "profile.txt").write_text(text)
    print(text)
    print(f"raw strace/perf outputs in {outdir}")
    return 0


def render(results, seconds):
    lines = [f"scenario a (100 B, keep-alive, 1 worker), wrk -t1 -c50 -d{seconds}s per pass\n"]
    names = list(results)
    lines.append("perf stat (no tracing):")
    for name, (perf, _) in results.items():
        if perf is None:
            lines.append(f"  {name}: perf not installed")
            continue
        res, c = perf
        n = max(res.requests, 1)
        parts = [f"{res.rps:.0f} req/s"]
        tick_us = 1e6 / os.sysconf("SC_CLK_TCK") / n
        parts.append(f"usr {c['usr_ticks'] * tick_us:.1f} + sys {c['sys_ticks'] * tick_us:.1f} us/req")
        try:
            parts.append(f"task-clock {float(c['task-clock']) * 1000 / n:.1f} us/req")
            parts.append(f"{float(c['context-switches']) / n:.3f} ctx switches/req")
        except (KeyError, ValueError):
            pass
        for hw in ("cycles", "instructions"):
            v = c.get(hw, "")
            parts.append(f"{hw}/req {float(v) / n:.0f}" if v.replace(".", "").isdigit() else f"{hw} n/a")
        lines.append(f"  {name:20s} " + ", ".join(parts))
    lines.append("\nstrace -c -f (system calls per request; throughput under strace is much lower):")
    all_calls = sorted(
        {s for _, (_, calls) in results.values() for s in calls},
        key=lambda s: -max(results[n][1][1].get(s, 0) / max(results[n][1][0].requests, 1) for n in names),
    )
    w = max(12, *(len(n) + 2 for n in names))     # column width: the longest proxy name fits
    lines.append(f"  {'syscall':20s}" + "".join(f"{n:>{w}s}" for n in names))
    for s in all_calls:
        lines.append(
            f"  {s:20s}"
            + "".join(f"{results[n][1][1].get(s, 0) / max(results[n][1][0].requests, 1):{w}.3f}" for n in names)
        )
    lines.append(
        f"  {'TOTAL per request':20s}"
        + "".join(f"{sum(results[n][1][1].values()) / max(results[n][1][0].requests, 1):{w}.3f}" for n in names)
    )
    lines.append(f"  {'requests traced':20s}" + "".join(f"{results[n][1][0].requests:{w}d}" for n in names))
    return "\n".join(lines) + "\n"
