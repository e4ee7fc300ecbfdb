"""The pidfile, as nginx keeps it: "PID\\n", written atomically, removed only by the master it names.

Rules:
- A pidfile naming a live fastproxy master means "already running": a second master refuses to start.
  One naming a dead process, or a process that is not a fastproxy master (the pid was reused), is stale:
  it is reported and replaced.
- The pidfile is written once the master's first workers have reported ready, so a pidfile that names a
  new pid is how `fastproxy upgrade` knows the new master serves.
- During a binary upgrade (USR2) the old master renames its pidfile to PATH.oldbin; the new master writes
  PATH. If the new master ends while the old one still runs (rollback), the old master renames .oldbin back.
- Every master removes only a file that still names itself.
"""

import os

OLDBIN = ".oldbin"
MASTER_TITLE = "fastproxy: master"


def read(path):
    """The pid in the file, or None if there is no file or it holds no pid."""
    try:
        with open(path) as f:
            text = f.read(64)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return None


def process_title(pid):
    """The command line of a live process as ps shows it (setproctitle rewrites it); "" if it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def is_master(pid):
    """True if pid is a live fastproxy master (not a zombie, not a reused pid)."""
    if pid is None or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and process_title(pid).startswith(MASTER_TITLE)


def running_master(path):
    """The pid of the live master the file names, or None (no file, or a stale one)."""
    pid = read(path)
    return pid if is_master(pid) else None


def check_stale(path, log):
    """Before starting: raise RuntimeError if a live master holds path; remove a stale file (logged)."""
    pid = read(path)
    if pid is None:
        if os.path.exists(path):
            log(f"removing unreadable pidfile {path}")
            remove(path, None)
        return
    if is_master(pid):
        raise RuntimeError(f"already running: pidfile {path} names master {pid}")
    log(f"removing stale pidfile {path} (pid {pid} is not a running fastproxy master)")
    remove(path, pid)


def write(path, pid):
    """Write "PID\\n" atomically (a reader never sees a half-written file). Raises OSError."""
    tmp = f"{path}.{pid}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(f"{pid}\n")
        os.rename(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def remove(path, pid):
    """Remove path if it names pid (pid None: whatever it names). True if removed."""
    if pid is not None and read(path) != pid:
        return False
    try:
        os.unlink(path)
        return True
    except OSError:
        return False


def rename(src, dst, pid):
    """Move src to dst if src names pid (the .oldbin dance). True if moved."""
    if read(src) != pid:
        return False
    try:
        os.rename(src, dst)
        return True
    except OSError:
        return False
