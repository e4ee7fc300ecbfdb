"""Listening sockets: created by the master, owned by it for its whole life, handed to workers as fd numbers.

Rules:
- One SO_REUSEPORT socket per worker slot per [[listen]]: the kernel spreads connections over the slots'
  sockets, so workers never contend on one accept queue (nginx's `reuseport`). A slot's sockets are reused
  by every worker (re)spawned in that slot, and are never closed while connections may be queued in them.
- Sockets are non-blocking (the core's epoll loop accepts until EAGAIN) and IPv6 ones are IPV6_V6ONLY, so
  "[::]:80" and "0.0.0.0:80" can be listed side by side.
- Only fd numbers leave this module: the socket objects are detached, so garbage collection never closes
  them. Fds are inheritable so that a new master exec'ed for a binary upgrade finds them; their numbers
  travel in the FASTPROXY_FDS environment variable (encode_fds / decode_fds), and the new master learns each
  one's address from the socket itself (getsockname), so its config may list them in any order.
- A reload may add or remove addresses and slots (Listeners.ensure / close_unused): sockets that remain are
  never closed, new ones are bound before anything else changes, and ones no longer wanted are closed only
  when no worker that used them is left.
"""

import os
import socket

FDS_ENV = "FASTPROXY_FDS"


def create_listener(listen):
    """One non-blocking SO_REUSEPORT listening socket for a config Listen; returns its fd."""
    sock = socket.socket(listen.family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if listen.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((listen.host, listen.port))
        sock.listen(listen.backlog)
        sock.setblocking(False)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock.detach()


def ensure_unused(listen):
    """Raise OSError(EADDRINUSE) if another process already listens on this address.

    Why: SO_REUSEPORT lets a second `fastproxy serve` bind the same port silently and steal half the
    connections; a probe bind without SO_REUSEPORT fails if anyone listens there.
    """
    with socket.socket(listen.family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # TIME_WAIT leftovers are fine
        if listen.family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind((listen.host, listen.port))


def create_slots(listens, nslots):
    """Listening fds per worker slot: slots[i] is a list with one fd per listen, in config order.

    On failure (address in use, permission) closes what it opened and raises OSError naming the address.
    """
    for listen in listens:
        try:
            ensure_unused(listen)
        except OSError as e:
            raise OSError(e.errno, f"cannot listen on {listen.address}: {e.strerror}") from None
    slots = []
    try:
        for _ in range(nslots):
            fds = []
            slots.append(fds)
            for listen in listens:
                try:
                    fds.append(create_listener(listen))
                except OSError as e:
                    raise OSError(e.errno, f"cannot listen on {listen.address}: {e.strerror}") from None
    except OSError:
        close_slots(slots)
        raise
    return slots


def close_slots(slots):
    for fds in slots:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


def close_other_slots(slots, keep):
    """In a worker after fork: close the listening fds of every slot but its own.

    Why: a sibling's socket left open here would keep that socket's queue alive after the sibling dies.
    """
    close_slots([fds for i, fds in enumerate(slots) if i != keep])


def encode_fds(slots):
    """For the environment of an exec'ed new master: "3,4;5,6" (slots separated by ;, listens by ,)."""
    return ";".join(",".join(str(fd) for fd in fds) for fds in slots)


def decode_fds(text):
    """Inverse of encode_fds; [] for an empty or missing value."""
    if not text:
        return []
    return [[int(fd) for fd in part.split(",") if fd] for part in text.split(";")]


def fd_address(fd):
    """The (host, port) a listening fd is bound to, without taking ownership of the fd."""
    sock = socket.socket(fileno=fd)
    try:
        return sock.getsockname()[:2]
    finally:
        sock.detach()


def listen_key(listen):
    """What identifies a listening socket across reloads and upgrades: its bound (host, port)."""
    return (listen.host, listen.port)


class Listeners:
    """The master's listening sockets: {(host, port): [fd of slot 0, fd of slot 1, ...]}."""

    def __init__(self):
        self.fds = {}

    def ensure(self, listens, nslots):
        """Create the sockets these listens need for nslots slots that do not exist yet.

        All or nothing: on failure the sockets created by this call are closed and OSError names the address.
        Returns the addresses newly bound (for the log).
        """
        created = []        # (key, fd)
        added = []
        try:
            for listen in listens:
                key = listen_key(listen)
                if not self.fds.get(key):
                    try:
                        ensure_unused(listen)
                    except OSError as e:
                        raise OSError(e.errno, f"cannot listen on {listen.address}: {e.strerror}") from None
                    added.append(listen.address)
                fds = self.fds.setdefault(key, [])
                while len(fds) < nslots:
                    try:
                        fd = create_listener(listen)
                    except OSError as e:
                        raise OSError(e.errno, f"cannot listen on {listen.address}: {e.strerror}") from None
                    fds.append(fd)
                    created.append((key, fd))
        except OSError:
            for key, fd in created:
                self.fds[key].remove(fd)
                os.close(fd)
            self.fds = {key: fds for key, fds in self.fds.items() if fds}
            raise
        return added

    def slot_fds(self, listens, slot):
        """The fds a worker of this slot gets, one per listen, in config order (the core's contract)."""
        return [self.fds[listen_key(listen)][slot] for listen in listens]

    def all_fds(self):
        return [fd for fds in self.fds.values() for fd in fds]

    def close_unused(self, listens, nslots):
        """Close sockets of addresses or slots these listens and nslots no longer use; returns the closed fds.

        Only call this when no worker that used them is left: a socket closed while connections are
        queued in it resets them.
        """
        keep = {listen_key(listen) for listen in listens}
        closed = []
        for key in list(self.fds):
            fds = self.fds[key]
            drop = fds if key not in keep else fds[nslots:]
            for fd in drop:
                os.close(fd)
            closed += drop
            if key not in keep:
                del self.fds[key]
            else:
                self.fds[key] = fds[:nslots]
        return closed

    def close_all(self):
        for fd in self.all_fds():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = {}

    def encode(self):
        """For a new master's environment: one group of fds per address, slots in order."""
        return encode_fds(list(self.fds.values()))

    @classmethod
    def inherit(cls, text):
        """The sockets an old master passed in FASTPROXY_FDS, keyed by the address each is bound to.

        An fd that is not a listening socket any more is ignored (and left alone).
        """
        self = cls()
        for group in decode_fds(text):
            fds = []
            for fd in group:
                try:
                    fds.append((fd_address(fd), fd))
                except OSError:
                    continue
            for key, fd in fds:
                self.fds.setdefault(key, []).append(fd)
        return self


def queued_connections_migrate():
    """True if closing one SO_REUSEPORT socket moves its queued connections to another of its group.

    Linux (>= 5.14) does so only with the sysctl net.ipv4.tcp_migrate_req = 1; without it, connections
    queued in the socket of a slot that is removed (fewer workers) are reset when it closes.
    """
    try:
        with open("/proc/sys/net/ipv4/tcp_migrate_req") as f:
            return f.read().strip() == "1"
    except OSError:
        return False
