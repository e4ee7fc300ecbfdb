"""Process resource limits the master sets before it forks: the open-files limit (RLIMIT_NOFILE).

Rules:
- RLIMIT_NOFILE is per process and inherited across fork and exec, so the master sets it once for itself,
  its workers, the health checker and a new master after USR2.
- What a worker needs: two descriptors per client connection at most (the client's and its backend's),
  times [server] max_connections, plus FD_SLACK (listening sockets, epoll, pipes, log files, the shared
  table). The master itself holds every listening socket of every slot: that is added for it.
- The soft limit is raised to what is needed, never lowered (an operator's larger soft limit stands), and
  at most to the hard limit, which only a privileged master can raise. When the hard limit is too low,
  the master says so in its log, with the number of connections a worker can then hold and the two ways
  out; it still starts (nginx warns and starts too).
"""

import resource

FD_SLACK = 64


def nofile_needed(max_connections, listeners=0):
    """Descriptors one process needs for max_connections clients (and `listeners` listening sockets)."""
    return 2 * max_connections + FD_SLACK + listeners


def raise_nofile(needed, log, why):
    """Raise the soft RLIMIT_NOFILE to needed (or as far as allowed), logging what was done or why not.
    Returns the soft limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or (soft >= needed):
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        try:                                    # root (CAP_SYS_RESOURCE) may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            log(f"raised the open-files limit (RLIMIT_NOFILE) from {soft} (hard {hard}) to {needed} for {why}")
            return needed
        except (ValueError, OSError):
            pass
        target = hard
    else:
        target = needed
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as e:
        log(f"cannot raise the open-files limit (RLIMIT_NOFILE) from {soft}: {e}; {why} needs {needed}")
        return soft
    if target < needed:
        conns = max(0, (target - FD_SLACK) // 2)
        done = f"raised the soft limit from {soft} to {hard}" if soft < hard else "the soft limit is already that"
        log(f"open-files limit (RLIMIT_NOFILE): the hard limit {hard} is below the {needed} descriptors {why} "
            f"needs; {done}: a worker runs out of descriptors at about {conns} connections. Raise the hard "
            "limit (ulimit -Hn, systemd LimitNOFILE=) or lower [server] max_connections")
    else:
        log(f"raised the open-files limit (RLIMIT_NOFILE) from {soft} to {target} for {why}")
    return target
