"""Build proxy config TOML for tests, using only the documented keys (see fastproxy/config.py)."""

from helpers.running import free_port


def _value(v):
    if isinstance(v, dict):  # an inline table: health = { path = "/healthz", interval = "200ms" }
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(v)


def _table(name, values):
    if not values:
        return ""
    lines = [f"[{name}]"] + [f"{k} = {_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n\n"


def proxy_config(
    upstreams,
    routes=None,
    workers=1,
    server=None,
    limits=None,
    timeouts=None,
    port=None,
    upstream_options=None,
):
    """TOML text for one listener on a free port.

    upstreams: {name: [backend or "host:port" or (backend or address, weight), ...]}
    routes: [(host, path, upstream name), ...]; default: everything to the first upstream.
    server, limits, timeouts: extra keys for those tables; upstream_options: keys for every upstream (a
    dict value is written as an inline table, e.g. {"health": {"path": "/healthz", "interval": "200ms"}}).
    """
    port = port or free_port()
    text = _table("server", {"workers": workers, **(server or {})})
    text += _table("limits", limits or {})
    text += _table("timeouts", timeouts or {})
    text += f'[[listen]]\naddress = "127.0.0.1:{port}"\n\n'
    for name, servers in upstreams.items():
        entries = []
        for s in servers:
            target, weight = s if isinstance(s, tuple) else (s, 1)
            address = target if isinstance(target, str) else target.address
            entries.append(f'{{ address = "{address}", weight = {weight} }}')
        text += f"[upstreams.{name}]\nservers = [{', '.join(entries)}]\n"
        for k, v in (upstream_options or {}).items():
            text += f"{k} = {_value(v)}\n"
        text += "\n"
    if routes is None:
        routes = [("*", "/", next(iter(upstreams)))]
    for host, path, upstream in routes:
        text += f'[[routes]]\nhost = "{host}"\npath = "{path}"\nupstream = "{upstream}"\n\n'
    return text
