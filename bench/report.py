"""Render benchmark rows as a Markdown report and a PNG chart, with a description of the machine."""

import os
import platform
import subprocess
import time

from servers import REPO

PROXY_COLORS = {"fastproxy": "#d62728", "fastproxy-addheaders": "#ff7f0e", "fastproxy-hook": "#e377c2",
                "fastproxy-baseline": "#8c564b",
                "nginx": "#2ca02c", "haproxy": "#1f77b4"}


def _version(argv):
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "not installed"
    return (done.stdout + done.stderr).strip().splitlines()[0]


def machine_info():
    try:
        import Cython

        cython = Cython.__version__
    except ImportError:
        cython = "not installed"
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = _version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load average at the end": " ".join(open("/proc/loadavg").read().split()[:3]),
        "cpus": f"{os.cpu_count()} ({cpu})",
        "kernel": platform.release(),
        "nginx": _version(["nginx", "-v"]),
        "haproxy": _version(["haproxy", "-v"]),
        "wrk": _version(["wrk", "-v"]),
        "python": platform.python_version(),
        "cython": cython,
        "fastproxy commit": commit + (" (work tree has uncommitted changes)" if dirty else ""),
    }


def baseline_info(root):
    """"DIR at commit abc1234" for the checkout fastproxy-baseline ran from."""
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return f"{root} at commit {done.stdout.strip()}" if done.returncode == 0 else f"{root} (not a git checkout)"


def _f(value, fmt):
    return "n/a" if value is None or value != value else format(value, fmt)


HEADER = (
    "| scenario | proxy | req/s | min-max req/s | x nginx | p50 ms | p99 ms | p99 x nginx | errors "
    "| CPU us/req usr+sys | CPU x nginx | other load |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
)


def table(rows):
    lines = [HEADER]
    for r in rows:
        sc = r["scenario"]
        if not r["reps"]:
            lines.append(f"| {sc.key}: {sc.title} | {r['proxy']} | failed | | | | | | | | | |\n")
            continue
        lines.append(
            f"| {sc.key}: {sc.title} | {r['proxy']} | {r['rps']:.0f} | {r['rps_min']:.0f}-{r['rps_max']:.0f} "
            f"| {_f(r.get('x_rps'), '.2f')} | {r['p50']:.2f} | {r['p99']:.2f} | {_f(r.get('x_p99'), '.2f')} "
            f"| {r['errors']} | {r['usr'] + r['sys']:.1f} ({r['usr']:.1f}+{r['sys']:.1f}) "
            f"| {_f(r.get('x_cpu'), '.2f')} | {r['other']:.0f}% |\n"
        )
    return "".join(lines)


VARIANTS_HEADER = (
    "| scenario | variant | req/s | x fastproxy | p99 ms | p99 x fastproxy | CPU us/req | CPU x fastproxy "
    "| added CPU us/req | per-rep pairs min..max |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
)


VARIANT_TEXT = {
    "fastproxy-addheaders": "fastproxy-addheaders: plain fastproxy's config with `add_headers = { \"X-Frame-Options\" "
                            "= \"DENY\" }` on the route.",
    "fastproxy-hook": "fastproxy-hook: plain fastproxy's config with `[server] python_path` and `hooks = { request = "
                      "\"benchhooks:noop\" }` on the route, where `noop(request)` returns None.",
    "fastproxy-baseline": "fastproxy-baseline: plain fastproxy's config run from another checkout (see Machine). For "
                          "it, req/s `x fastproxy` above 1 or added CPU below 0 means this checkout is slower than "
                          "the baseline.",
}


def variants_table(rows):
    """The fastproxy-* rows against plain fastproxy of the same scenario (run.compare_variants)."""
    lines = [VARIANTS_HEADER]
    for r in rows:
        v = r.get("vs_plain")
        if v is None:
            continue
        sc = r["scenario"]
        pairs = v["added_pairs"]
        spread = f"{min(pairs):+.1f}..{max(pairs):+.1f}" if pairs else "n/a"
        lines.append(
            f"| {sc.key}: {sc.title} | {r['proxy']} | {r['rps']:.0f} | {_f(v['x_rps'], '.3f')} | {r['p99']:.2f} "
            f"| {_f(v['x_p99'], '.2f')} | {r['usr'] + r['sys']:.1f} | {_f(v['x_cpu'], '.3f')} "
            f"| {v['added_us']:+.1f} | {spread} |\n"
        )
    return "".join(lines)


def markdown(rows, args, machine, command, notes, rawdir):
    pins = ", ".join(f"{k} on CPU {v}" for k, v in args.pin.items()) or "none (the scheduler places everything)"
    out = [
        "# fastproxy benchmark: latest results\n\n",
        f"Command: `{command}` (from the repository root)\n\n",
        table(rows),
        "\n",
        f"- req/s, p50, p99 and CPU are medians over {args.reps} repetition(s) of {args.duration} s; errors are "
        "summed over all repetitions (wrk socket errors: connect, read, write, timeout; plus non-2xx/3xx "
        "responses). `x nginx` is the proxy's figure divided by nginx's in the same run.\n",
        "- CPU us/req: utime+stime of the proxy's master and workers from /proc/PID/stat, before and after "
        "each wrk run, divided by the requests completed (user + system part in brackets). 10 ms tick "
        "resolution.\n",
        "- other load: CPU used during the wrk run by programs other than the proxy, the backend and wrk "
        "(from /proc/stat), in % of one core, median over repetitions: high values mean the figures of "
        "that row were depressed by unrelated work on the machine.\n",
        f"- wrk: `-t{args.threads} -c{args.connections} -d{args.duration}s --latency` against each proxy in "
        f"turn, interleaved, after a {args.warmup} s discarded warm-up per proxy and scenario; scenario d "
        "adds `-H 'Connection: close'` (a new TCP connection per request).\n",
        "- Backend (the same for all proxies): a separate nginx, 1 worker, serving a 100 B or a 10 KB static "
        "file (open_file_cache, sendfile), access_log off, unlimited keep-alive.\n",
        "- nginx: `worker_processes N`, `listen ... reuseport` (one socket per worker, like fastproxy), `proxy_pass` to an `upstream` with `keepalive 64`, "
        "`proxy_http_version 1.1`, `proxy_set_header Connection \"\"`, access_log off, proxy_buffering on "
        "(its default; both body sizes fit its default buffers). HAProxy: `nbthread N`, `mode http`, "
        "`option http-keep-alive`, `http-reuse always`, no logging. fastproxy: `[server] workers = N`, "
        "upstream `keepalive = 64`. The exact configs are under the raw directory.\n",
        f"- CPU pinning: {pins}. The machine has {machine['cpus'].split()[0]} cores shared by wrk, the backend "
        "and the proxy, so the proxies compete with their own load generator: figures are relative, not "
        "absolute capacity, and repeated runs differ by several percent (see min-max).\n",
        f"- Raw wrk outputs, configs and logs of this run: `bench/{rawdir}` (not committed).\n",
    ]
    if any("vs_plain" in r for r in rows):
        out += [
            "\n## fastproxy variants against plain fastproxy (same run)\n\n",
            *(f"- {VARIANT_TEXT[name]}\n" for name in dict.fromkeys(r["proxy"] for r in rows if "vs_plain" in r)),
            "\n",
            variants_table(rows),
            "\n",
            "- `x fastproxy`: the variant's median divided by plain fastproxy's in the same scenario (req/s: > 1 "
            "is faster; p99 and CPU: < 1 is better).\n",
            "- added CPU us/req: the variant's median CPU us/req minus plain fastproxy's: what the filter "
            "costs per request (for fastproxy-hook, the cost of calling a Python hook that does nothing). "
            "`per-rep pairs`: the same difference for each repetition against plain fastproxy's repetition of "
            "the same number, which ran just before or after it: the spread to expect.\n",
        ]
    if notes:
        out.append("\n## Observations during the run\n\n")
        out += [f"- {n}\n" for n in notes]
    out.append("\n## Machine\n\n| | |\n|---|---|\n")
    out += [f"| {k} | {v} |\n" for k, v in machine.items()]
    return "".join(out)


def chart(rows, args, machine, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    proxies = list(dict.fromkeys(r["proxy"] for r in rows))
    by = {(r["scenario"].key, r["proxy"]): r for r in rows}
    width = 0.8 / max(len(proxies), 1)
    fig, ax = plt.subplots(figsize=(11, 5.5))
    top = max((r["rps"] for r in rows if r["reps"]), default=1)
    for i, name in enumerate(proxies):
        xs, ys = [], []
        for j, sc in enumerate(scenarios):
            r = by.get((sc.key, name))
            xs.append(j + (i - (len(proxies) - 1) / 2) * width)
            ys.append(r["rps"] if r and r["reps"] else 0)
        bars = ax.bar(xs, ys, width, label=name, color=PROXY_COLORS.get(name))
        for bar, sc in zip(bars, scenarios, strict=True):
            r = by.get((sc.key, name))
            text = f"p99\n{r['p99']:.2f}ms" if r and r["reps"] else "failed"
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(scenarios)), [f"{sc.key}: {sc.title}" for sc in scenarios], fontsize=8)
    ax.set_ylabel("requests/s (median)")
    ax.set_ylim(0, top * 1.2)
    ax.set_title(
        f"fastproxy vs nginx vs HAProxy, same backend, {args.reps} x {args.duration} s, "
        f"wrk -t{args.threads} -c{args.connections}, {machine['cpus'].split()[0]} shared cores "
        f"({machine['date'].split()[0]})",
        fontsize=9,
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
