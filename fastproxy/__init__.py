"""fastproxy: a reverse proxy and load balancer for HTTP/1.1 with a Cython hot path."""

__version__ = "0.1.0"
