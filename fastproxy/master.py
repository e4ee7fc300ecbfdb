"""The master (arbiter): binds the listening sockets, forks one worker per slot, respawns the dead, stops all.

Rules:
- Signal handlers only queue the signal number; the self-pipe given to signal.set_wakeup_fd wakes the loop,
  which dispatches each one to a handle_<name> method (gunicorn's arbiter shape, nginx's meanings):
  TERM/INT fast shutdown, QUIT graceful shutdown, CHLD reaping. HUP, USR1, USR2, WINCH, TTIN and TTOU
  are queued too (so none can kill the master by its default action) and logged until issue 3 adds them.
- The master never touches a client connection. It owns the listening sockets for its whole life; a
  worker respawned in a slot gets that slot's sockets again, so nothing queued in them is lost.
- A worker that dies is respawned at once; one that keeps dying soon after start is backed off
  (doubling delay, capped), and every death is logged with its exit reason or signal.
- No child outlives the master: every exit path of run() stops and waits for the workers (KILL after a
  deadline), and workers also get SIGTERM from the kernel if the master dies (PR_SET_PDEATHSIG).
- Only this master's own worker pids are waited for, so a process embedding it (fastproxy demo) keeps
  its other children to itself.
"""

import os
import select
import signal
import time
from dataclasses import dataclass

from setproctitle import setproctitle

from fastproxy import errors, sockets
from fastproxy.errors import HaltServer
from fastproxy.log import log
from fastproxy.worker import Worker

QUEUED_SIGNALS = (signal.SIGHUP, signal.SIGQUIT, signal.SIGINT, signal.SIGTERM, signal.SIGUSR1,
                  signal.SIGUSR2, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD)
SIG_NAMES = {sig: sig.name[3:].lower() for sig in QUEUED_SIGNALS}

FAST_STOP_TIMEOUT = 5.0     # seconds workers get to exit after TERM before they are killed
MIN_LIFETIME = 5.0          # a worker dying sooner than this counts towards a crash loop
MAX_BACKOFF = 30.0


@dataclass
class WorkerProc:
    pid: int
    slot: int
    generation: int
    started: float


def describe_status(status):
    """A wait status as words for the log: "exit code 3 (config error)", "killed by SIGKILL"."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"killed by {name}"
    code = os.waitstatus_to_exitcode(status)
    return f"exit code {code} ({errors.exit_reason(code)})"


def backoff_delay(failures):
    """Seconds to wait before respawning a slot whose worker died `failures` times in a row, soon after start."""
    return 0.0 if failures <= 1 else min(0.25 * 2 ** (failures - 2), MAX_BACKOFF)


class Master:
    def __init__(self, config):
        self.config = config
        self.pid = os.getpid()
        self.generation = 0             # issue 3: bumped by every accepted reload
        self.slots = []                 # listening fds per worker slot
        self.workers = {}               # pid -> WorkerProc
        self.failures = {}              # slot -> deaths in a row soon after start
        self.respawn_at = {}            # slot -> monotonic time before which it is not respawned
        self.signal_queue = []
        self.pipe = None                # (read, write) self-pipe for signal.set_wakeup_fd
        self.stopping = False           # no respawning once set
        self.pidfile_written = False

    # --- main loop ---------------------------------------------------------------------------------

    def run(self):
        """Serve until told to stop; returns the exit status."""
        status = 0
        try:
            self.start()
            while True:
                for sig in self.wait_for_signals(self.loop_timeout()):
                    self.dispatch(sig)
                self.reap_workers()
                self.spawn_missing_workers()
        except HaltServer as e:
            log(e.reason)
            status = e.exit_status
        finally:
            self.stop_workers(graceful=False)
            self.cleanup()
        return status

    def start(self):
        setproctitle(f"fastproxy: master {self.config.path}")
        self.install_signals()
        try:
            self.slots = sockets.create_slots(self.config.listens, self.config.server.workers)
        except OSError as e:
            raise HaltServer(f"cannot start: {e.strerror}", 1) from None
        self.write_pidfile()
        listens = ", ".join(listen.address for listen in self.config.listens)
        log(f"fastproxy master started: {self.config.path}, listening on {listens}, "
            f"{self.config.server.workers} worker(s)")
        self.spawn_missing_workers()

    def install_signals(self):
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pipe = (r, w)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        for sig in QUEUED_SIGNALS:
            signal.signal(sig, self.queue_signal)

    def queue_signal(self, signum, frame):
        self.signal_queue.append(signum)

    def wait_for_signals(self, timeout):
        """Sleep until a signal arrives or timeout passes; return the queued signals, oldest first."""
        if self.pipe is None:
            return []
        if not self.signal_queue:
            try:
                select.select([self.pipe[0]], [], [], max(timeout, 0.0))
            except InterruptedError:
                pass
        try:
            while os.read(self.pipe[0], 4096):
                pass
        except BlockingIOError:
            pass
        queued, self.signal_queue = self.signal_queue, []
        return queued

    def loop_timeout(self):
        if not self.respawn_at:
            return 1.0
        return min(1.0, min(self.respawn_at.values()) - time.monotonic())

    def dispatch(self, sig):
        handler = getattr(self, "handle_" + SIG_NAMES[sig], None)
        if handler is None:
            log(f"ignoring SIG{SIG_NAMES[sig].upper()}: not supported yet")
        else:
            handler()

    # --- signal handlers ---------------------------------------------------------------------------

    def handle_term(self):
        """Fast shutdown: workers close everything now."""
        raise HaltServer("fast shutdown (SIGTERM)", 0)

    def handle_int(self):
        raise HaltServer("fast shutdown (SIGINT)", 0)

    def handle_quit(self):
        """Graceful shutdown: workers stop accepting and finish in-flight requests, up to drain_timeout."""
        log(f"graceful shutdown (SIGQUIT), draining for up to {self.config.server.drain_timeout:g}s")
        self.stop_workers(graceful=True)
        raise HaltServer("graceful shutdown complete", 0)

    def handle_chld(self):
        self.reap_workers()

    # --- workers -----------------------------------------------------------------------------------

    def spawn_missing_workers(self):
        busy = {w.slot for w in self.workers.values()}
        now = time.monotonic()
        for slot in range(len(self.slots)):
            if slot not in busy and self.respawn_at.get(slot, 0.0) <= now:
                self.respawn_at.pop(slot, None)
                self.spawn_worker(slot)

    def spawn_worker(self, slot):
        # Signals stay blocked across fork until the child has its own handlers: a TERM sent to a worker
        # that is still starting then waits for the worker's handler instead of hitting the master's.
        signal.pthread_sigmask(signal.SIG_BLOCK, QUEUED_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                Worker(self.config, self.slots, slot, self.pid, self.generation, close_fds=self.pipe,
                       unblock=QUEUED_SIGNALS).run()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, QUEUED_SIGNALS)
        self.workers[pid] = WorkerProc(pid, slot, self.generation, time.monotonic())
        log(f"worker {slot} started (pid {pid})")

    def reap_workers(self):
        """Collect dead workers (only ours), log why each died, and schedule the respawn of its slot."""
        for pid in list(self.workers):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done == 0:
                continue
            w = self.workers.pop(pid)
            self.worker_died(w, status)

    def worker_died(self, w, status):
        lived = time.monotonic() - w.started
        if self.stopping:
            log(f"worker {w.slot} (pid {w.pid}) exited: {describe_status(status)}")
            return
        self.failures[w.slot] = self.failures.get(w.slot, 0) + 1 if lived < MIN_LIFETIME else 1
        delay = backoff_delay(self.failures[w.slot])
        self.respawn_at[w.slot] = time.monotonic() + delay
        msg = f"worker {w.slot} (pid {w.pid}) died: {describe_status(status)} after {lived:.1f}s; "
        if delay:
            msg += f"dying repeatedly ({self.failures[w.slot]} times), respawning in {delay:g}s"
        else:
            msg += "respawning"
        log(msg)

    def stop_workers(self, graceful):
        """Signal every worker and wait for all of them; KILL those still there at the deadline.

        A TERM or INT arriving during a graceful stop turns it into a fast one.
        """
        self.stopping = True
        if not self.workers:
            return
        timeout = self.config.server.drain_timeout if graceful else FAST_STOP_TIMEOUT
        self.signal_workers(signal.SIGQUIT if graceful else signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.workers and (left := deadline - time.monotonic()) > 0:
            sigs = self.wait_for_signals(min(0.1, left))     # SIGCHLD wakes us as workers exit
            self.reap_workers()
            if graceful and {signal.SIGTERM, signal.SIGINT} & set(sigs):
                log("fast shutdown requested during graceful shutdown")
                graceful = False
                self.signal_workers(signal.SIGTERM)
                deadline = min(deadline, time.monotonic() + FAST_STOP_TIMEOUT)
        if self.workers:
            log(f"killing {len(self.workers)} worker(s) still running after {timeout:g}s")
            self.signal_workers(signal.SIGKILL)
            for pid in list(self.workers):
                _, status = os.waitpid(pid, 0)
                self.worker_died(self.workers.pop(pid), status)

    def signal_workers(self, sig):
        for pid in self.workers:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    # --- pidfile and cleanup -----------------------------------------------------------------------

    def write_pidfile(self):
        """Write our pid atomically (issue 3 moves this to pidfile.py with stale detection and .oldbin)."""
        path = self.config.server.pidfile
        if not path:
            return
        tmp = f"{path}.{self.pid}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(f"{self.pid}\n")
            os.rename(tmp, path)
        except OSError as e:
            raise HaltServer(f"cannot write pidfile {path}: {e.strerror}", 1) from None
        self.pidfile_written = True

    def remove_pidfile(self):
        path = self.config.server.pidfile
        if not self.pidfile_written:
            return
        try:
            with open(path) as f:
                mine = f.read().strip() == str(self.pid)
            if mine:
                os.unlink(path)
        except OSError:
            pass

    def cleanup(self):
        self.remove_pidfile()
        sockets.close_slots(self.slots)
        self.slots = []
        signal.set_wakeup_fd(-1)
        for sig in QUEUED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        if self.pipe:
            for fd in self.pipe:
                os.close(fd)
            self.pipe = None
        log("fastproxy master exiting")
