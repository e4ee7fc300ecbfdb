"""Test support: a recording backend, a proxy runner and a raw-socket client (all real processes and sockets)."""
