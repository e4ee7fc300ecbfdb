"""Smoke benchmark for CI: a short wrk run through fastproxy in front of the bench's nginx backend.

    python bench/smoke.py                  # 3 s, wrk -t1 -c10, 100 B and 10 KB responses
    python bench/smoke.py --proxy nginx    # the same through nginx, to check the harness itself

Prints requests/s, latency and errors per response size. Exits 1 on any error (wrk socket errors,
non-2xx/3xx responses, a proxy that fails to start or exits during the run), never because of speed:
CI machines are too noisy for timed assertions.
"""

import argparse
import shutil
import sys
import tempfile

import servers
import wrk


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proxy", default="fastproxy", choices=servers.PROXIES)
    p.add_argument("-d", "--duration", type=int, default=3, help="seconds per wrk run (default 3)")
    p.add_argument("-c", "--connections", type=int, default=10, help="wrk connections (default 10)")
    p.add_argument("--workers", type=int, default=1, help="proxy workers (default 1)")
    args = p.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="fastproxy-smoke-")
    started = []
    failures = []
    try:
        backend = servers.start_backend(tmp, tmp)
        started.append(backend)
        try:
            proxy = servers.start_proxy(args.proxy, "smoke", tmp, tmp, backend.port, args.workers)
        except RuntimeError as e:
            print(f"smoke: {args.proxy} did not start: {e}", file=sys.stderr)
            return 1
        started.append(proxy)
        for path in ("/100", "/10k"):
            res = wrk.run(f"http://127.0.0.1:{proxy.port}{path}", 1, args.connections, args.duration)
            print(
                f"smoke {args.proxy} GET {path}: {res.rps:.0f} req/s, p50 {res.p50_ms:.2f} ms, "
                f"p99 {res.p99_ms:.2f} ms, {res.requests} requests, socket errors {res.socket_errors}, "
                f"non-2xx/3xx {res.non2xx}",
                flush=True,
            )
            if res.errors or not res.requests:
                failures.append(f"GET {path}: {res.errors} errors in {res.requests} requests\n{res.output}")
            if proxy.popen.poll() is not None:
                failures.append(f"{args.proxy} exited ({proxy.popen.returncode}):\n{servers.tail(proxy.log)}")
                break
    finally:
        for proc in reversed(started):
            survivors = servers.stop(proc)
            if survivors:
                failures.append(f"{proc.name}: PIDs {survivors} outlived TERM and were killed")
        shutil.rmtree(tmp, ignore_errors=True)
    for f in failures:
        print(f"smoke FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
