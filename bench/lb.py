"""Load-balancing algorithms through fastproxy: wrk against `fastproxy serve` with 2 workers in front of
several backend servers, one proxy per algorithm, measured interleaved.

    python bench/lb.py                              # round_robin, least_conn, p2c; 3 reps x 5 s (~1 min)
    python bench/lb.py --algorithms round_robin,least_conn,least_time --reps 5 -d 10

The backends are the data-path benchmark's backend (bench/servers.py: nginx, 1 worker, static `/100`)
with one server block per backend port, so every server is equally fast and each algorithm's figures
differ only by what it costs the proxy. Per algorithm: req/s, p50/p99, errors, CPU per request (as
bench/run.py measures them), the ratio to round_robin, and each server's share of the requests (from
the proxy's shared backend table). Writes bench/results/lb.md; raw wrk outputs and configs go to
bench/results/raw/lb-<timestamp>/ (not committed).
"""

import argparse
import dataclasses
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import report
import run
import servers
import wrk

HERE = Path(__file__).resolve().parent
ALGORITHMS = ("round_robin", "least_conn", "p2c", "hash", "least_time")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithms", default="round_robin,least_conn,p2c", help="comma list, interleaving order")
    p.add_argument("--backends", type=int, default=3, help="backend servers (default 3)")
    p.add_argument("--workers", type=int, default=2, help="fastproxy workers (default 2)")
    p.add_argument("--reps", type=int, default=3, help="repetitions per algorithm (default 3)")
    p.add_argument("-t", "--threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument("-c", "--connections", type=int, default=50, help="wrk connections (default 50)")
    p.add_argument("-d", "--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of discarded wrk per algorithm")
    p.add_argument("--out", type=Path, default=HERE / "results", help="results directory")
    args = p.parse_args(argv)
    args.algorithms = args.algorithms.split(",")
    for a in args.algorithms:
        if a not in ALGORITHMS:
            p.error(f"unknown algorithm {a!r}; choose from {', '.join(ALGORITHMS)}")
    if "round_robin" not in args.algorithms:
        p.error("round_robin is the reference: keep it in --algorithms")
    args.pin = {}            # run.measure() reads it; lb.py does no pinning
    return args


def start_backends(tmp, logdir, n):
    """servers.start_backend's nginx (1 worker, same files) with one server block per port."""
    prefix = Path(tmp) / "backends"
    docroot = prefix / "www"
    docroot.mkdir(parents=True)
    for path, body in servers.BODIES.items():
        (docroot / path.lstrip("/")).write_bytes(body)
    ports = [servers.free_port() for _ in range(n)]
    blocks = "".join(f"    server {{\n        listen 127.0.0.1:{port} backlog=4096;\n        root {docroot};\n    }}\n"
                     for port in ports)
    conf = servers._nginx_main(prefix, 1) + f"""http {{
{servers._nginx_http_common(prefix)}    default_type application/octet-stream;
    sendfile on;
    open_file_cache max=16 inactive=1h;
    open_file_cache_valid 1h;
{blocks}}}
"""
    (prefix / "nginx.conf").write_text(conf)
    proc = servers.start("backends", ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")], ports[0],
                         logdir)
    try:
        for port in ports:
            servers.wait_ready(dataclasses.replace(proc, port=port))
    except BaseException:
        servers.stop(proc)
        raise
    return proc, ports


def fastproxy_config(port, backend_ports, workers, balance):
    entries = ", ".join(f'{{ address = "127.0.0.1:{p}" }}' for p in backend_ports)
    return f"""[server]
workers = {workers}

[[listen]]
address = "127.0.0.1:{port}"

[upstreams.b]
balance = "{balance}"
servers = [{entries}]
keepalive = 64

[[routes]]
host = "*"
path = "/"
upstream = "b"
"""


def start_proxy(balance, tmp, logdir, backend_ports, workers):
    d = Path(tmp) / f"fastproxy-{balance}"
    d.mkdir()
    port = servers.free_port()
    conf = d / "proxy.toml"
    conf.write_text(fastproxy_config(port, backend_ports, workers, balance))
    argv = [sys.executable, "-m", "fastproxy", "serve", "-c", str(conf)]
    env = dict(os.environ, PYTHONPATH=str(servers.REPO))
    proc = servers.start(f"fastproxy-{balance}", argv, port, logdir, cwd=servers.REPO, env=env)
    try:
        servers.wait_ready(proc)
    except BaseException:
        servers.stop(proc)
        raise
    proc.config = conf
    return proc


def served(proc):
    """{backend address: requests served so far} from the proxy's shared backend table (None if unreadable)."""
    if str(servers.REPO) not in sys.path:
        sys.path.insert(0, str(servers.REPO))
    from fastproxy import _shm

    try:
        table = _shm.ShmTable(_shm.path_for_file(proc.config))
    except (OSError, ValueError):
        return None
    try:
        return {b["address"]: b["requests"] for b in table.snapshot()}
    finally:
        table.close()


def shares(before, after):
    if not before or not after:
        return None
    got = [after[a] - before.get(a, 0) for a in sorted(after)]
    total = sum(got) or 1
    return [100.0 * g / total for g in got]


def summarize(runs):
    rows = []
    for balance, reps in runs.items():
        if not reps:
            rows.append({"balance": balance, "reps": 0})
            continue
        rps = [r.rps for r, *_ in reps]
        share_lists = [s for *_, s in reps if s]
        rows.append({
            "balance": balance,
            "reps": len(reps),
            "rps": statistics.median(rps),
            "rps_min": min(rps),
            "rps_max": max(rps),
            "p50": statistics.median(r.p50_ms for r, *_ in reps),
            "p99": statistics.median(r.p99_ms for r, *_ in reps),
            "errors": sum(r.errors for r, *_ in reps),
            "cpu": statistics.median(x[1] + x[2] for x in reps),
            "other": statistics.median(x[3] for x in reps),
            "share": [statistics.mean(col) for col in zip(*share_lists, strict=True)] if share_lists else None,
        })
    ref = next((r for r in rows if r["balance"] == "round_robin" and r["reps"]), None)
    for r in rows:
        if ref and r["reps"]:
            r["x_rps"] = r["rps"] / ref["rps"]
            r["x_p99"] = r["p99"] / ref["p99"] if ref["p99"] else float("nan")
    return rows


def table(rows):
    lines = ["| balance | req/s | min-max req/s | x round_robin | p50 ms | p99 ms | p99 x round_robin | errors "
             "| CPU us/req | other load | requests per server % |\n",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"]
    for r in rows:
        if not r["reps"]:
            lines.append(f"| {r['balance']} | failed | | | | | | | | | |\n")
            continue
        share = " / ".join(f"{s:.0f}" for s in r["share"]) if r["share"] else "n/a"
        lines.append(
            f"| {r['balance']} | {r['rps']:.0f} | {r['rps_min']:.0f}-{r['rps_max']:.0f} | "
            f"{report._f(r.get('x_rps'), '.3f')} | {r['p50']:.2f} | {r['p99']:.2f} | "
            f"{report._f(r.get('x_p99'), '.2f')} | {r['errors']} | {r['cpu']:.1f} | {r['other']:.0f}% | {share} |\n")
    return "".join(lines)


def markdown(rows, args, machine, command, notes, rawdir):
    out = [
        "# fastproxy load-balancing algorithms: latest results\n\n",
        f"Command: `{command}` (from the repository root)\n\n",
        table(rows),
        "\n",
        f"- `python -m fastproxy serve` with {args.workers} workers, one upstream of {args.backends} servers "
        "(`keepalive = 64`), one proxy per algorithm, all started before measuring.\n",
        f"- Backends: one nginx (1 worker) with {args.backends} server blocks on {args.backends} ports, each "
        "serving the data-path benchmark's 100 B static file (`/100`), access_log off: equal servers, so the "
        "algorithms differ only by their cost in the proxy (and how evenly they spread).\n",
        f"- wrk `-t{args.threads} -c{args.connections} -d{args.duration}s --latency /100`, {args.reps} "
        f"repetitions per algorithm interleaved ({', '.join(args.algorithms)}, then again), after a "
        f"{args.warmup} s discarded warm-up each. req/s, p50, p99, CPU: medians over the repetitions; "
        "errors: summed (wrk socket errors plus non-2xx/3xx responses).\n",
        "- x round_robin: the algorithm's figure over round_robin's in the same run. CPU us/req and other "
        "load as in bench/results/latest.md (utime+stime of the proxy per completed request; CPU used by "
        "unrelated programs in % of one core). Requests per server: each server's share of the requests "
        "of the measured runs, from the proxy's shared backend table, in address order.\n",
        "- The machine's 2 cores are shared by wrk, the backend and the proxy: figures are relative, and "
        "repetitions differ by several percent (see min-max).\n",
        f"- Raw wrk outputs, configs and logs: `bench/{rawdir}` (not committed).\n",
    ]
    busy = [r for r in rows if r["reps"] and r["other"] > 25]
    if busy:
        notes = [f"other programs used {min(r['other'] for r in busy):.0f}-{max(r['other'] for r in busy):.0f}% "
                 "of a core during the runs: the machine was shared, so differences between algorithms "
                 "within the min-max ranges are noise, not the algorithms.", *notes]
    if notes:
        out.append("\n## Observations during the run\n\n")
        out += [f"- {n}\n" for n in notes]
    out.append("\n## Machine\n\n| | |\n|---|---|\n")
    out += [f"| {k} | {v} |\n" for k, v in machine.items()]
    return "".join(out)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    rawdir = args.out / "raw" / f"lb-{stamp}"
    rawdir.mkdir(parents=True)
    command = shlex.join(["python", "bench/lb.py", *(sys.argv[1:] if argv is None else argv)])
    tmp = tempfile.mkdtemp(prefix="fastproxy-lb-")
    started, notes = [], []
    runs = {a: [] for a in args.algorithms}
    try:
        backend, ports = start_backends(tmp, rawdir, args.backends)
        started.append(backend)
        procs = {}
        for balance in args.algorithms:
            try:
                procs[balance] = start_proxy(balance, tmp, rawdir, ports, args.workers)
                started.append(procs[balance])
            except RuntimeError as e:
                notes.append(f"{balance}: failed to start: {e}")
        url = "http://127.0.0.1:{port}/100"
        for proc in procs.values():
            wrk.run(url.format(port=proc.port), args.threads, args.connections, args.warmup)
        for rep in range(args.reps):
            for balance, proc in procs.items():
                if proc.popen.poll() is not None:
                    continue
                before = served(proc)
                try:
                    res, usr, sys_, other = run.measure(proc, backend, url.format(port=proc.port), args, False)
                except (RuntimeError, ValueError) as e:
                    notes.append(f"{balance}: wrk failed in rep {rep + 1}: {e}")
                    continue
                share = shares(before, served(proc))
                runs[balance].append((res, usr, sys_, other, share))
                (rawdir / f"{balance}-rep{rep + 1}.txt").write_text(res.output)
                print(f"  rep {rep + 1}/{args.reps} {balance:11s} {res.rps:9.0f} req/s  p50 {res.p50_ms:5.2f} ms  "
                      f"p99 {res.p99_ms:6.2f} ms  errors {res.errors:4d}  cpu {usr + sys_:5.1f} us/req  "
                      f"other load {other:3.0f}%  per server {' / '.join(f'{s:.0f}' for s in share or [])}",
                      flush=True)
                if proc.popen.poll() is not None:
                    notes.append(f"{balance}: the proxy exited ({proc.popen.returncode}) during rep {rep + 1}")
    finally:
        for proc in reversed(started):
            survivors = servers.stop(proc)
            if survivors:
                notes.append(f"{proc.name}: PIDs {survivors} outlived TERM and were killed")
        shutil.copytree(tmp, rawdir / "configs", ignore=shutil.ignore_patterns("temp"), dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    rows = summarize(runs)
    machine = report.machine_info()
    (args.out / "lb.md").write_text(markdown(rows, args, machine, command, notes,
                                             rawdir.relative_to(args.out.parent)))
    print()
    print(table(rows))
    for n in notes:
        print("note:", n)
    print(f"wrote {args.out / 'lb.md'}, raw outputs in {rawdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
