"""Read the workers' counters from the shared table, in any process, without asking the workers.

    read(source)        -> dict            every live row summed, plus the retired totals of released rows
    per_worker(source)  -> {pid: dict}     one dict per live row (a worker), same shape, no retired totals

source: a Config (its table is the one `fastproxy serve -c` made for its file), a config file path, or an
open ShmTable. The result:

    {"workers": 2,                                          # live rows summed (read() only)
     "client_open": 0, "client_total": 7, "backend_open": 1, "backend_idle": 1, "backend_total": 3,
     "requests": 7, "responses": {"1xx": 0, "2xx": 5, "3xx": 0, "4xx": 1, "5xx": 1},
     "bytes_in": 812, "bytes_out": 1630,
     "errors": {"client_abort": 0, ..., "server_connect": 1, ...},   # _counters.ERROR_KINDS: name -> side
     "latency": {"buckets": [(0.001, 3), (0.002, 5), ..., (inf, 7)],  # cumulative, Prometheus `le`
                 "sum": 0.0123, "count": 7},
     "routes": {"*/": {"requests", "responses", "bytes_out"}, ...},   # key: host + path as configured
     "servers": {("app", "127.0.0.1:9001"): {"requests", "errors", "active", "responses", "bytes_out"}}}

Dead workers: when the master releases a dead (or retired) worker's row, its monotonic counters are folded
into the table's retired totals, so read()'s counters never go backwards (Prometheus counters stay
counters); its gauges (open connections, active) leave with it. per_worker() shows live workers only.
Routes and servers are those of the table's current assignment (the running config and, during a reload,
the one the old workers still run); a removed route's or server's counts go with its slot. With a Config,
routes come in config.routes order first.
"""

from fastproxy._counters import CLASS_NAMES, ERROR_NAMES, GAUGES, LATENCY_BOUNDS
from fastproxy._shm import ShmTable, path_for, path_for_file, route_key

__all__ = ["read", "per_worker"]


def read(source):
    """The sum over every worker, dead ones' monotonic counts included."""
    raw, order = _raw(source)
    parts = [*raw["rows"], raw["retired"]]
    out = _shape(parts, raw, order)
    out["workers"] = len(raw["rows"])
    return out


def per_worker(source):
    """{pid: counters} of each live worker."""
    raw, order = _raw(source)
    return {row["pid"]: _shape([row], raw, order) for row in raw["rows"]}


def _raw(source):
    order = []
    if isinstance(source, ShmTable):
        return source.counters(), order
    if isinstance(source, str):
        path = path_for_file(source)
    else:
        path = path_for(source)
        order = [route_key(r) for r in source.routes]
        if path is None:
            raise ValueError(f"{source.path}: a config read from no file has no named table; pass the table")
    table = ShmTable(path)
    try:
        return table.counters(), order
    finally:
        table.close()


def _add_into(total, part):
    for key, value in part.items():
        if isinstance(value, list):
            acc = total.setdefault(key, [0] * len(value))
            for i, v in enumerate(value):
                acc[i] += v
        else:
            total[key] = total.get(key, 0) + value


def _classes(values):
    return dict(zip(CLASS_NAMES, values, strict=True))


def _shape(parts, raw, order):
    w = {}
    routes = {i: {} for i in raw["routes"]}
    servers = {i: {} for i in raw["servers"]}
    for part in parts:
        _add_into(w, part["worker"])
        for i, c in part["routes"].items():
            _add_into(routes[i], c)
        for i, c in part["servers"].items():
            _add_into(servers[i], c)
    out = {name: w[name] for name in GAUGES}
    out.update(client_total=w["client_total"], backend_total=w["backend_total"], requests=w["requests"],
               responses=_classes(w["responses"]), bytes_in=w["bytes_in"], bytes_out=w["bytes_out"],
               errors=dict(zip(ERROR_NAMES, w["errors"], strict=True)))
    cumulative, buckets = 0, []
    for bound, n in zip(LATENCY_BOUNDS, w["latency"], strict=True):
        cumulative += n
        buckets.append((bound, cumulative))
    out["latency"] = {"buckets": buckets, "sum": w["latency_sum_us"] / 1e6, "count": w["latency_count"]}
    rank = {key: i for i, key in enumerate(order)}
    out["routes"] = {
        raw["routes"][i]: {"requests": c["requests"], "responses": _classes(c["responses"]),
                           "bytes_out": c["bytes_out"]}
        for i, c in sorted(routes.items(), key=lambda ic: (rank.get(raw["routes"][ic[0]], len(rank)), ic[0]))
    }
    out["servers"] = {
        raw["servers"][i]: {"requests": c["requests"], "errors": c["errors"], "active": c["active"],
                            "responses": _classes(c["responses"]), "bytes_out": c["bytes_out"]}
        for i, c in sorted(servers.items())
    }
    return out


def as_json(counters):
    """The counters as JSON-ready data: server keys become "upstream address", +Inf becomes "+Inf"."""
    out = dict(counters)
    out["servers"] = {f"{up} {addr}": v for (up, addr), v in counters["servers"].items()}
    out["latency"] = dict(counters["latency"],
                          buckets=[["+Inf" if le == float("inf") else le, n]
                                   for le, n in counters["latency"]["buckets"]])
    return out


def summary(counters):
    """A few lines for a person: totals, responses, errors by side, latency quantiles (bucket bounds)."""
    c = counters
    lines = [
        f"workers {c.get('workers', 1)}: clients open {c['client_open']} (total {c['client_total']}), "
        f"backend connections open {c['backend_open']} ({c['backend_idle']} idle, total {c['backend_total']})",
        f"requests {c['requests']}: " + ", ".join(f"{k} {v}" for k, v in c["responses"].items()),
        f"bytes in {c['bytes_in']}, out {c['bytes_out']}",
        "errors: " + (", ".join(f"{k} {v}" for k, v in c["errors"].items() if v) or "none"),
    ]
    n = c["latency"]["count"]
    if n:
        def quantile(q):
            for le, k in c["latency"]["buckets"]:
                if k >= q * n:
                    return "<= %g ms" % (le * 1000) if le != float("inf") else "> 10 s"
        lines.append(f"latency: mean {c['latency']['sum'] / n * 1000:.2f} ms, p50 {quantile(0.5)}, "
                     f"p99 {quantile(0.99)}")
    for name, r in c["routes"].items():
        lines.append(f"route {name}: requests {r['requests']}, bytes out {r['bytes_out']}, "
                     + ", ".join(f"{k} {v}" for k, v in r["responses"].items() if v))
    for (up, addr), s in c["servers"].items():
        lines.append(f"server {up} {addr}: requests {s['requests']}, errors {s['errors']}, active {s['active']}")
    return "\n".join(lines)
