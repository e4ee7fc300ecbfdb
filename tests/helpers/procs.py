"""Process utilities for fixtures: children of a PID, process-group liveness, RSS, waiting with a deadline.

Everything reads /proc directly: no sleeps as synchronisation, only polling until a deadline.
"""

import os
import signal
import time


def wait_for(predicate, timeout=10.0, interval=0.01, message="condition"):
    """Poll predicate() until it returns a true value (returned) or the deadline passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def _stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    # the command name is in parentheses and may contain spaces
    return data[data.rindex(")") + 2 :].split()


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def children(pid):
    """Live (non-zombie) children of pid."""
    out = []
    for p in all_pids():
        try:
            fields = _stat_fields(p)
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(p)
    return sorted(out)


def group_members(pgid):
    """PIDs (zombies included) whose process group is pgid."""
    out = []
    for p in all_pids():
        try:
            fields = _stat_fields(p)
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid:
            out.append(p)
    return sorted(out)


def rss_kib(pid):
    """Resident set size (VmRSS) of pid in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise LookupError(f"no VmRSS for {pid}")


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):    # gone meanwhile: /proc says either
        return ""


def kill_pid(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
