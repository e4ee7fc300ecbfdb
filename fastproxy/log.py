"""The error log: one line per master or worker event, "2026-11-29T00:00:00 [master 123] message".

Each line goes out in one write(2), so lines from several processes sharing stderr (or one file opened
with O_APPEND) never interleave. A worker calls set_role("worker 1") after fork.
Shaped for issue 3: a log file path and reopen() (for USR1 after rotation); the access log will sit beside.
"""

import os
import sys
import time


class ErrorLog:
    def __init__(self, path=None, role="master"):
        self.path = path        # None: stderr
        self.role = role
        self.fd = None
        self.reopen()

    def reopen(self):
        """Open the file again (after logrotate moved it); stderr needs nothing."""
        if self.path is None:
            self.fd = sys.stderr.fileno()
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        old, self.fd = self.fd, fd
        if old is not None:
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
