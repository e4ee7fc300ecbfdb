"""The configuration: TOML in, frozen dataclasses out.

CONTRACT (shapes other modules rely on; the core reads these attribute names):

    Config.path                      str, the file it came from ("<demo>" for the built-in one)
    Config.server.workers            int >= 1 ("auto" resolved to os.cpu_count())
    Config.server.pidfile            str | None
    Config.server.server_header      str: "" drops the backend's Server field, else replaces its value
    Config.server.forwarded          bool: also add an RFC 7239 Forwarded field
    Config.limits.max_head_size      int bytes (431)
    Config.limits.max_headers        int (431)
    Config.limits.max_uri_size       int bytes (414)
    Config.limits.max_body_size      int bytes, 0 = unlimited (413)
    Config.limits.buffer_size        int bytes per connection side
    Config.timeouts.client_header    float seconds (408)
    Config.timeouts.client_body      float seconds between body reads (408)
    Config.timeouts.keepalive        float seconds a client connection may sit idle
    Config.timeouts.upstream_connect float seconds
    Config.timeouts.upstream_read    float seconds between reads from the backend (504)
    Config.timeouts.upstream_send    float seconds between writes to the backend
    Config.listens                   tuple[Listen, ...]; Listen(address, host, port, backlog)
    Config.upstreams                 dict[str, Upstream]
        Upstream(name, balance, servers: tuple[Server, ...], keepalive, keepalive_timeout, tries)
        Server(address, host, port, weight)   host is a numeric IP after loading
    Config.routes                    tuple[Route, ...]; Route(host, path, upstream)

The loader (below this contract) fills these in; each field carries its doc and validator.
"""
