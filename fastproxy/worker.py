"""One worker's life after fork: name itself, tie its life to the master's, build the core, run, exit.

Fork hygiene lives here: the master's signal handlers and wakeup fd are replaced, every master fd that is
not this worker's (sibling slots' listeners, old listeners, the master's pipes) is closed, and the epoll fd
is created by the core only now, after fork.
Hook modules ([[routes]] hooks) are imported afresh here, before the core is built (fastproxy/hooks.py).
Once the core is built (with its access log; its event loop beats in its row of the shared table), the
worker writes one byte on its ready pipe: the master retires old workers (reload, upgrade) only after it.
Signals: TERM/INT fast stop, QUIT graceful stop (drain), USR1 reopen the logs; the master's own signals
(HUP, USR2, WINCH, TTIN, TTOU) are ignored so a stray one cannot kill a worker.
The exit code says why the worker ended (errors.EXIT_*); the master logs it and backs off crash loops.
The worker never returns into the master's code: it leaves with os._exit().
"""

import ctypes
import os
import signal
import sys
import traceback

from setproctitle import setproctitle

from fastproxy import errors, hooks
from fastproxy import log as logs
from fastproxy.log import log, set_role

PR_SET_PDEATHSIG = 1

# Signals the master uses for itself; a worker ignores them so a stray one cannot kill it.
IGNORED = (signal.SIGHUP, signal.SIGUSR2, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU)


def set_parent_death_signal(sig):
    """Ask the kernel to send sig when the master dies (Linux prctl), so no worker outlives it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def make_wakeup_pipe():
    """A non-blocking pipe whose write end Python's C signal handler writes to; the core polls the read end."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    return r


class Worker:
    def __init__(self, config, listen_fds, slot, master_pid, generation=1, close_fds=(), ready_fd=None,
                 unblock=()):
        self.config = config
        self.listen_fds = list(listen_fds)  # this slot's listening fds, one per config.listens entry
        self.slot = slot
        self.master_pid = master_pid
        self.generation = generation
        self.close_fds = close_fds      # master fds inherited through fork that are not ours
        self.ready_fd = ready_fd        # a byte is written here once the core is built
        self.unblock = unblock          # signals the master blocked across fork, unblocked once handled here
        self.core = None
        self.hooks = ()                 # per route of config.routes: hooks.RouteHooks or None
        self.stop_asked = None          # a stop that came before the core existed
        self.access_fd = -1

    def run(self):
        """Entry point in the forked child. Never returns."""
        try:
            code = self.serve()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else errors.EXIT_ERROR
        except BaseException:
            log("worker failed:\n" + traceback.format_exc().rstrip())
            code = errors.EXIT_ERROR
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def serve(self):
        signal.set_wakeup_fd(-1)        # the master's, inherited through fork
        for fd in self.close_fds:
            try:
                os.close(fd)
            except OSError:
                pass
        set_role(f"worker {self.slot}")
        setproctitle(f"fastproxy: worker {self.slot} (gen {self.generation})")
        set_parent_death_signal(signal.SIGTERM)
        if os.getppid() != self.master_pid:
            return errors.EXIT_ORPHAN   # the master died before prctl took effect
        wakeup_fd = make_wakeup_pipe()
        self.install_signals()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, self.unblock)   # a pending TERM is handled now
        try:
            # imported again here, after fork, from the files as they are now (the master imported them only
            # to validate the config): a reload's new workers run the edited modules
            self.hooks = hooks.load(self.config)
        except errors.ConfigErrors as e:
            for err in e.errors:
                log(f"cannot load a hook: {err}")
            return errors.EXIT_CONFIG
        try:
            from fastproxy._core import Core
        except ImportError:
            log("cannot load the core (fastproxy._core):\n" + traceback.format_exc().rstrip())
            return errors.EXIT_BOOT
        try:
            self.core = Core(self.config, self.listen_fds, self.slot, hooks=self.hooks)
        except Exception:
            log("the core refused the config:\n" + traceback.format_exc().rstrip())
            return errors.EXIT_CONFIG
        try:
            self.open_access_log()
        except OSError as e:
            log(f"cannot open access log {self.config.log.access_log}: {e.strerror}")
            return errors.EXIT_CONFIG
        if self.stop_asked is not None:
            return errors.EXIT_OK
        if self.ready_fd is not None:
            os.write(self.ready_fd, b"1")
            os.close(self.ready_fd)
            self.ready_fd = None
        self.core.run(wakeup_fd)
        return errors.EXIT_OK

    def open_access_log(self):
        """Open [log] access_log and hand it to the core (which flushes to the old fd before switching)."""
        path = self.config.log.access_log
        if path is None:
            return
        fd = logs.open_append(path)
        self.core.set_access_log(fd, self.config.log.access_format)
        old, self.access_fd = self.access_fd, fd
        if old >= 0:
            os.close(old)

    def install_signals(self):
        for sig in IGNORED:
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, self.handle_fast_stop)
        signal.signal(signal.SIGINT, self.handle_fast_stop)
        signal.signal(signal.SIGQUIT, self.handle_graceful_stop)
        signal.signal(signal.SIGUSR1, self.handle_reopen)

    def stop(self, graceful):
        if self.core is None:
            self.stop_asked = graceful
        else:
            self.core.stop(graceful)

    def handle_fast_stop(self, signum, frame):
        self.stop(False)

    def handle_graceful_stop(self, signum, frame):
        self.stop(True)

    def handle_reopen(self, signum, frame):
        """USR1: reopen the error log and the access log (after rotation). Runs inside core.run()."""
        logs.reopen()
        if self.core is not None:
            try:
                self.open_access_log()
            except OSError as e:
                log(f"cannot reopen access log {self.config.log.access_log}: {e.strerror}; keeping the old file")
