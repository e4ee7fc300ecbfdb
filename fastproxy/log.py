"""The logs: the error log (master and worker events) and the access log's file (written by the core).

Error log: one line per event, "2026-11-29T00:00:00 [master 123] message", to stderr or to [log] error_log.
Each line goes out in one write(2) on a file opened with O_APPEND, so lines from several processes sharing
it never interleave. A worker calls set_role("worker 1") after fork.

Access log: the worker opens [log] access_log here (open_append) and hands the fd to the core
(Core.set_access_log), which formats lines in C and writes them in batches, so the event loop never waits
on the log per request.

USR1 reopens both (log rotation: logrotate moves the file, USR1 makes every process open a fresh one at
the configured path). A log file that cannot be opened keeps the old one and says so on the old one.
"""

import os
import sys
import time


def open_append(path):
    """An fd for appending to path, created 0644 if missing. Raises OSError."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)


class ErrorLog:
    def __init__(self, path=None, role="master"):
        self.path = path        # None: stderr
        self.role = role
        self.fd = None
        self.reopen()

    def configure(self, path):
        """Switch to path (None: stderr). Raises OSError if the file cannot be opened; the old one stays."""
        if path == self.path and self.fd is not None:
            return
        old_path, self.path = self.path, path
        try:
            self.reopen()
        except OSError:
            self.path = old_path
            raise

    def reopen(self):
        """Open the file again (after logrotate moved it); stderr needs nothing. Raises OSError."""
        fd = sys.stderr.fileno() if self.path is None else open_append(self.path)
        old, self.fd = self.fd, fd
        if old is not None and old != fd and old != sys.stderr.fileno():
            os.close(old)

    def write(self, message):
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        line = f"{stamp} [{self.role} {os.getpid()}] {message}\n"
        try:
            os.write(self.fd, line.encode("utf-8", "replace"))
        except OSError:
            pass    # a closed stderr must not take the proxy down


error_log = ErrorLog()


def log(message):
    error_log.write(message)


def set_role(role):
    error_log.role = role


def configure(path):
    error_log.configure(path)


def reopen():
    """USR1: reopen the error log; a failure is logged on the old file, which stays in use."""
    try:
        error_log.reopen()
    except OSError as e:
        log(f"cannot reopen error log {error_log.path}: {e.strerror}; still writing to the old file")
