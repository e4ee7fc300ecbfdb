"""Benchmark fastproxy against nginx and HAProxy, all in front of the same backend, in one run.

    python bench/run.py                    # full run: 4 scenarios x 3 proxies x 5 reps x 10 s
    python bench/run.py --quick            # 1 rep x 3 s, to check that everything works
    python bench/run.py --proxies nginx,haproxy --scenarios a,c
    python bench/run.py --profile          # syscalls per request under strace -c (see syscalls.py)
    python bench/run.py --proxies fastproxy,fastproxy-addheaders,fastproxy-hook,nginx,haproxy --scenarios a,b
    python bench/run.py --proxies fastproxy,fastproxy-baseline,nginx --baseline /tmp/fastproxy-before

Per scenario the proxies are started with the scenario's worker count, warmed up, then measured
interleaved (fastproxy, nginx, haproxy, fastproxy, nginx, ...) so that slow drifts of the machine hit
all of them alike; each figure is the median over the repetitions. Proxy CPU per request is the change
in utime+stime of the proxy's master and workers (/proc/PID/stat) around each wrk run divided by the
requests wrk completed. Results: bench/results/latest.md and latest.png; raw wrk outputs, the
generated configs and the processes' logs under bench/results/raw/<timestamp>/.

fastproxy-addheaders and fastproxy-hook (bench/servers.py) are plain fastproxy with one filter on the
route; fastproxy-baseline is plain fastproxy run from another checkout (--baseline). Each is also
compared with plain fastproxy of the same run: its req/s and CPU ratio, and the CPU µs per request it
adds (its median minus plain fastproxy's).
"""

import argparse
import os
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import report
import servers
import syscalls
import wrk

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
DEFAULT_PROXIES = ("fastproxy", "nginx", "haproxy")


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    path: str
    workers: int
    close: bool  # wrk sends "Connection: close": one TCP connection per request


SCENARIOS = {
    s.key: s
    for s in (
        Scenario("a", "100 B, keep-alive, 1 worker", "/100", 1, False),
        Scenario("b", "10 KB, keep-alive, 1 worker", "/10k", 1, False),
        Scenario("c", "100 B, keep-alive, 2 workers", "/100", 2, False),
        Scenario("d", "100 B, connection per request, 1 worker", "/100", 1, True),
    )
}


def parse_pin(text):
    """"proxy=0,wrk=1,backend=1" -> {"proxy": "0", "wrk": "1", "backend": "1"} (taskset -c lists)."""
    pins = {}
    for part in filter(None, (text or "").split(",")):
        role, _, cpus = part.partition("=")
        if role not in ("proxy", "wrk", "backend") or not cpus:
            raise SystemExit(f"--pin: bad entry {part!r}; expected proxy=CPUS, wrk=CPUS or backend=CPUS")
        pins[role] = cpus.replace("+", ",")
    return pins


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proxies", default=",".join(DEFAULT_PROXIES),
                   help="comma list, in interleaving order, of " + ", ".join(servers.PROXIES)
                   + " (default %(default)s)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list of a,b,c,d")
    p.add_argument("--reps", type=int, default=5, help="repetitions per scenario and proxy (default 5)")
    p.add_argument("-t", "--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("-c", "--connections", type=int, default=50, help="wrk connections (default 50)")
    p.add_argument("-d", "--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="seconds of discarded wrk per proxy and scenario")
    p.add_argument("--quick", action="store_true", help="1 rep x 3 s, 1 s warm-up")
    p.add_argument("--pin", default="", help='taskset CPU lists, e.g. "proxy=0,wrk=1,backend=1" (+ for lists: 0+1)')
    p.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    p.add_argument("--baseline", type=Path, default=None,
                   help="checkout (built in place) that fastproxy-baseline runs from, e.g. the commit before a change")
    p.add_argument("--profile", action="store_true", help="run the strace/perf profile instead (syscalls.py)")
    p.add_argument("--profile-seconds", type=int, default=5, help="seconds traced per proxy in --profile")
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.duration, args.warmup = 1, 3, 1
    args.proxies = [x for x in args.proxies.split(",") if x]
    args.scenarios = [SCENARIOS[k] for k in args.scenarios.split(",") if k]
    bad = [x for x in args.proxies if x not in servers.PROXIES]
    if bad:
        raise SystemExit(f"unknown proxies {bad}; choose from {servers.PROXIES}")
    if len(set(args.proxies)) != len(args.proxies):
        raise SystemExit("--proxies: each proxy once")
    if "fastproxy" not in args.proxies and any(x.startswith("fastproxy-") for x in args.proxies):
        print("note: without fastproxy in --proxies the variants are not compared with it", file=sys.stderr)
    args.pin = parse_pin(args.pin)
    return args


def busy_ticks():
    """user + nice + system + irq + softirq ticks of the whole machine (/proc/stat). A tick spent in
    softirq is also charged to the stime of the task it interrupted, so both sides count it."""
    with open("/proc/stat") as f:
        cols = f.readline().split()
    return sum(int(cols[i]) for i in (1, 2, 3, 6, 7))


def children_ticks():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (usage.ru_utime + usage.ru_stime) * CLK_TCK


def measure(proc, backend, url, args, close):
    """One wrk run against proc.

    Returns (WrkResult, user µs/req, system µs/req, other %): other is the CPU that neither the proxy,
    the backend nor wrk used during the run, in % of one core: the load other programs put on the
    machine, which makes a repetition slower."""
    def snapshot():
        return proc.cpu_ticks(), sum(backend.cpu_ticks()), busy_ticks(), children_ticks(), time.monotonic()

    (usr0, sys0), backend0, machine0, wrk0, t0 = snapshot()
    res = wrk.run(url, args.threads, args.connections, args.duration, close, args.pin.get("wrk"))
    (usr1, sys1), backend1, machine1, wrk1, t1 = snapshot()
    per_req = 1e6 / CLK_TCK / max(res.requests, 1)
    ours = (usr1 + sys1 - usr0 - sys0) + (backend1 - backend0) + (wrk1 - wrk0)
    other = max(0.0, (machine1 - machine0 - ours) / CLK_TCK / (t1 - t0) * 100)
    return res, (usr1 - usr0) * per_req, (sys1 - sys0) * per_req, other


def run_scenario(sc, args, tmp, rawdir, backend, started, notes):
    """Start the proxies for one scenario, warm them up, measure interleaved; returns {proxy: [runs]}."""
    url = f"http://127.0.0.1:{{port}}{sc.path}"
    procs = {}
    runs = {name: [] for name in args.proxies}
    for name in args.proxies:
        try:
            procs[name] = servers.start_proxy(name, sc.key, tmp, rawdir, backend.port, sc.workers, args.pin.get("proxy"),
                                              args.baseline)
            started.append(procs[name])
        except RuntimeError as e:
            notes.append(f"{sc.key}/{name}: failed to start: {e}")
            print(f"  {name}: FAILED TO START\n{e}", file=sys.stderr)
    for name, proc in list(procs.items()):
        try:
            wrk.run(url.format(port=proc.port), args.threads, args.connections, args.warmup, sc.close,
                    args.pin.get("wrk"))
        except (RuntimeError, ValueError) as e:
            notes.append(f"{sc.key}/{name}: warm-up failed, proxy skipped: {e}")
            del procs[name]
            started.remove(proc)
            servers.stop(proc)
    pids = {name: sorted(proc.tree()) for name, proc in procs.items()}
    for rep in range(args.reps):
        for name, proc in procs.items():
            if proc.popen.poll() is not None:
                continue
            try:
                res, usr, sys_, other = measure(proc, backend, url.format(port=proc.port), args, sc.close)
            except (RuntimeError, ValueError) as e:
                notes.append(f"{sc.key}/{name}: wrk failed in rep {rep + 1}: {e}")
                continue
            runs[name].append((res, usr, sys_, other, rep))
            (rawdir / f"{sc.key}-{name}-rep{rep + 1}.txt").write_text(res.output)
            print(
                f"  {sc.key} rep {rep + 1}/{args.reps} {name:20s} {res.rps:10.0f} req/s  p50 {res.p50_ms:6.2f} ms"
                f"  p99 {res.p99_ms:6.2f} ms  errors {res.errors:5d}  cpu {usr + sys_:5.1f} us/req  other load {other:3.0f}%",
                flush=True,
            )
            if proc.popen.poll() is not None:
                notes.append(f"{sc.key}/{name}: the proxy exited ({proc.popen.returncode}) during rep {rep + 1}")
            elif sorted(proc.tree()) != pids[name]:
                notes.append(f"{sc.key}/{name}: process set changed during rep {rep + 1} (a worker died?)")
                pids[name] = sorted(proc.tree())
    for name, proc in procs.items():
        survivors = servers.stop(proc)
        started.remove(proc)
        if survivors:
            notes.append(f"{sc.key}/{name}: PIDs {survivors} outlived the master's TERM and were killed")
    return runs


def summarize(sc, runs):
    rows = []
    for name, reps in runs.items():
        if not reps:
            rows.append({"scenario": sc, "proxy": name, "reps": 0})
            continue
        rps = [r.rps for r, *_ in reps]
        rows.append(
            {
                "scenario": sc,
                "proxy": name,
                "reps": len(reps),
                "rps": statistics.median(rps),
                "rps_min": min(rps),
                "rps_max": max(rps),
                "p50": statistics.median(r.p50_ms for r, *_ in reps),
                "p99": statistics.median(r.p99_ms for r, *_ in reps),
                "errors": sum(r.errors for r, *_ in reps),
                "usr": statistics.median(x[1] for x in reps),
                "sys": statistics.median(x[2] for x in reps),
                "other": statistics.median(x[3] for x in reps),
            }
        )
    nginx = next((r for r in rows if r["proxy"] == "nginx" and r["reps"]), None)
    for r in rows:
        if nginx and r["reps"]:
            r["x_rps"] = r["rps"] / nginx["rps"]
            r["x_p99"] = r["p99"] / nginx["p99"] if nginx["p99"] else float("nan")
            r["x_cpu"] = (r["usr"] + r["sys"]) / (nginx["usr"] + nginx["sys"] or float("nan"))
    compare_variants(rows, runs)
    return rows


def compare_variants(rows, runs):
    """Each fastproxy-* row against plain fastproxy's of the same scenario: req/s, p99 and CPU ratios, and
    the CPU µs per request the filter adds (difference of the medians). The spread of that difference is
    taken over pairs of repetitions with the same number, which ran next to each other (interleaved)."""
    plain = next((r for r in rows if r["proxy"] == "fastproxy" and r["reps"]), None)
    if plain is None:
        return
    plain_cpu = {x[4]: x[1] + x[2] for x in runs["fastproxy"]}
    for r in rows:
        if not r["proxy"].startswith("fastproxy-") or not r["reps"]:
            continue
        cpu, plain_median = r["usr"] + r["sys"], plain["usr"] + plain["sys"]
        r["vs_plain"] = {
            "x_rps": r["rps"] / plain["rps"],
            "x_p99": r["p99"] / plain["p99"] if plain["p99"] else float("nan"),
            "x_cpu": cpu / plain_median if plain_median else float("nan"),
            "added_us": cpu - plain_median,
            "added_pairs": [x[1] + x[2] - plain_cpu[x[4]] for x in runs[r["proxy"]] if x[4] in plain_cpu],
        }


def check_variants(names, baseline):
    """A fastproxy variant this fastproxy cannot run (it refuses the config, or fastproxy-baseline has no
    built checkout) stops the run before anything is started, with fastproxy's own error message."""
    tmp = tempfile.mkdtemp(prefix="fastproxy-bench-check-")
    try:
        for name in names:
            if name in servers.FASTPROXY_VARIANTS:
                try:
                    servers.check_fastproxy_config(name, tmp, baseline)
                except RuntimeError as e:
                    raise SystemExit(str(e)) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    check_variants(args.proxies, args.baseline)
    if args.profile:
        return syscalls.main(args)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rawdir = args.out / "raw" / stamp
    rawdir.mkdir(parents=True)
    command = shlex.join(["python", "bench/run.py", *(sys.argv[1:] if argv is None else argv)])
    tmp = tempfile.mkdtemp(prefix="fastproxy-bench-")
    started = []
    notes = []
    rows = []
    try:
        backend = servers.start_backend(tmp, rawdir, args.pin.get("backend"))
        started.append(backend)
        for sc in args.scenarios:
            print(f"scenario {sc.key}: {sc.title}", flush=True)
            rows += summarize(sc, run_scenario(sc, args, tmp, rawdir, backend, started, notes))
    finally:
        for proc in reversed(started):
            servers.stop(proc)
        shutil.copytree(tmp, rawdir / "configs", ignore=shutil.ignore_patterns("temp"), dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    machine = report.machine_info()
    if "fastproxy-baseline" in args.proxies:
        machine["fastproxy-baseline"] = report.baseline_info(args.baseline)
    md = report.markdown(rows, args, machine, command, notes, rawdir.relative_to(args.out.parent))
    (args.out / "latest.md").write_text(md)
    try:
        report.chart(rows, args, machine, args.out / "latest.png")
        wrote = f"{args.out / 'latest.md'}, {args.out / 'latest.png'}"
    except ImportError as e:     # matplotlib is optional: the table matters more than the chart
        notes.append(f"no chart: {e} (pip install matplotlib)")
        wrote = f"{args.out / 'latest.md'} (no chart)"
    print()
    print(report.table(rows))
    if any("vs_plain" in r for r in rows):
        print(report.variants_table(rows))
    for n in notes:
        print("note:", n)
    print(f"\nwrote {wrote}, raw outputs in {rawdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
