"""The master (arbiter): owns the listening sockets, forks workers, supervises them, obeys nginx's signals.

Rules:
- Signal handlers only queue the signal number; the self-pipe given to signal.set_wakeup_fd wakes the loop,
  which dispatches each one to a handle_<name> method (gunicorn's arbiter shape, nginx's meanings):
    TERM, INT   fast shutdown            QUIT   graceful shutdown (workers drain, up to drain_timeout)
    HUP         reload the config        USR2   binary upgrade (fork + exec a new master)
    WINCH       retire the workers, keep the sockets (upgrade; HUP brings them back: rollback)
    USR1        reopen the logs          TTIN, TTOU   one worker more, one fewer
- The master never touches a client connection. It owns the listening sockets for its whole life; every
  worker (re)spawned in a slot gets that slot's sockets again, so nothing queued in them is lost. Sockets a
  reload no longer wants are closed only once no worker uses them.
- Generations: every accepted reload bumps the generation; a worker's generation is in its process title.
  Old workers are sent QUIT only after every worker of the new generation has written its byte on its
  ready pipe. A config that fails to load, or new workers that die or are not ready within ready_timeout,
  leave the old generation serving, untouched (the reason is logged).
- Binary upgrade: the old master renames its pidfile to .oldbin and forks + execs the fastproxy that is
  running (see StartContext: same interpreter, same package directory, same working directory, whatever
  the working directory holds) with its own arguments; the new master inherits the listening fds (FASTPROXY_FDS) and writes the pidfile
  once its workers are ready. One upgrade at a time: a second USR2 is refused while a new master (or, in a
  new master, the old one) is alive. If the new master ends while the old one lives, the old master
  renames .oldbin back, and restarts its workers if WINCH had retired them (nginx does the same).
- Supervision: a worker that dies is respawned at once; one that keeps dying soon after start is backed off
  (doubling delay, capped), every death is logged with its exit reason or signal. Each worker's event loop
  writes its CLOCK_MONOTONIC time into its row of the shared backend table (every ~100 ms); one silent for
  worker_heartbeat_timeout (counted from its start until it has a row) is killed as hung (and respawned);
  a retiring worker still there after drain_timeout is killed too.
- Resources: before binding and forking (and again on reload), the master raises its open-files limit
  (RLIMIT_NOFILE, inherited by every child) to what [server] max_connections needs, and logs when the
  hard limit does not allow it (fastproxy/resources.py).
- No child outlives the master: every exit path of run() stops and waits for the workers (KILL after a
  deadline), and workers also get SIGTERM from the kernel if the master dies (PR_SET_PDEATHSIG). A new
  master started by USR2 is not a worker: it outlives the old one on purpose.
- Only this master's own children are waited for, so a process embedding it (fastproxy demo) keeps its
  other children to itself.
"""

import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from types import SimpleNamespace

from setproctitle import setproctitle

from fastproxy import _shm as shm
from fastproxy import config as config_mod
from fastproxy import errors, health, pidfile, resources, sockets
from fastproxy import log as logs
from fastproxy.errors import ConfigErrors, HaltServer
from fastproxy.log import log
from fastproxy.worker import Worker

QUEUED_SIGNALS = (signal.SIGHUP, signal.SIGQUIT, signal.SIGINT, signal.SIGTERM, signal.SIGUSR1,
                  signal.SIGUSR2, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD)
SIG_NAMES = {sig: sig.name[3:].lower() for sig in QUEUED_SIGNALS}

OLD_MASTER_ENV = "FASTPROXY_OLD_MASTER"  # set by the old master for the new one it execs (USR2)
FAST_STOP_TIMEOUT = 5.0     # seconds workers get to exit after TERM before they are killed
DRAIN_GRACE = 5.0           # beyond drain_timeout, before a draining worker is killed (the core stops itself first)
MIN_LIFETIME = 5.0          # a worker dying sooner than this counts towards a crash loop
MAX_BACKOFF = 30.0


@dataclass
class WorkerProc:
    pid: int
    slot: int
    generation: int
    started: float
    ready_fd: int | None        # read end of its ready pipe, until it reported ready or closed it
    ready: bool = False
    retiring: bool = False      # told to stop (QUIT or TERM): never respawned
    kill_at: float = float("inf")   # retiring: killed if still there at this time
    killed: bool = False
    config: object = None       # the config it runs: its servers keep their shared-table slots while it lives


@dataclass
class PendingReload:
    """A reload whose new workers have not all reported ready yet; what to go back to if they fail."""
    old_config: object
    old_generation: int
    old_nworkers: int
    deadline: float


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


class UnionConfig:
    """Several configs seen as one by _shm.Table.assign(keep=...): every upstream with all their servers,
    and every route (route slots are kept by host and path)."""

    def __init__(self, configs):
        self.upstreams = {}
        self.routes = [r for c in configs for r in c.routes]
        for c in configs:
            for name, up in c.upstreams.items():
                servers = self.upstreams.setdefault(name, SimpleNamespace(servers=[])).servers
                servers.extend(s for s in up.servers if s.address not in {x.address for x in servers})


class StartContext:
    """How this fastproxy was started, recorded at start, so that USR2 execs the same installed program.

    nginx re-executes its own binary path and gunicorn records its start context; the Python equivalent
    of "the binary" is the interpreter plus the directory the running `fastproxy` package was imported
    from. The command is `python -P -m fastproxy ARGS`:
    - `-P` (Python 3.11) keeps the working directory (or a script's directory) out of sys.path, so a
      `fastproxy/` folder where the master happens to run (a source checkout, without the compiled
      modules) can never shadow the installed package;
    - the package's parent directory is put first on PYTHONPATH when the new interpreter would not find
      it by itself: that is the case exactly when it was found through sys.path[0] (started with
      `python -m fastproxy` from a checkout with in-place builds), the one entry `-P` removes. Otherwise the
      environment, inherited unchanged, finds the same directory first, as it did for us;
    - the new master runs in the directory the old one started in, so relative paths in the arguments
      (`-c fastproxy.toml`) mean the same file.
    Re-running sys.argv[0] instead would depend on what that script imports from where, and
    `python path/to/fastproxy/__main__.py` would put the package directory itself on sys.path.
    Installing a new version into the same place and sending USR2 runs the new version, as with nginx.
    """

    def __init__(self, argv):
        import fastproxy
        self.argv = list(argv)
        self.cwd = os.getcwd()
        self.package_root = os.path.dirname(os.path.dirname(os.path.abspath(fastproxy.__file__)))
        self.executable = sys.executable

    def command(self):
        return [self.executable, "-P", "-m", "fastproxy", *self.argv]

    def environ(self, env):
        """env for the new master: PYTHONPATH leads to our package unless the environment already does."""
        env = dict(env)
        if not any(os.path.abspath(p) == self.package_root for p in sys.path[1:] if p):
            old = env.get("PYTHONPATH")
            env["PYTHONPATH"] = self.package_root + (os.pathsep + old if old else "")
        return env


class Master:
    def __init__(self, config, argv=None):
        self.config = config
        self.argv = argv                # `fastproxy` arguments to exec a new master with (USR2); None: no upgrade
        self.start_context = StartContext(argv) if argv is not None else None
        self.pid = os.getpid()
        self.generation = 1             # bumped by every accepted reload
        self.nworkers = config.server.workers   # changed by TTIN/TTOU and reloads
        self.listeners = sockets.Listeners()
        self.workers = {}               # pid -> WorkerProc
        self.failures = {}              # slot -> deaths in a row soon after start
        self.respawn_at = {}            # slot -> monotonic time before which it is not respawned
        self.pending = None             # PendingReload
        self.table_dirty = False        # the shared table still holds slots of servers only old workers used
        self.reload_again = False       # a HUP that came during a pending reload
        self.winched = False            # WINCH: no workers wanted until HUP
        self.announced_ready = False    # "all workers ready" was logged for the current set
        self.new_master = None          # pid of the master a USR2 started, while it lives
        self.old_master = None          # in a new master: the master that started it
        self.signal_queue = []
        self.pipe = None                # (read, write) self-pipe for signal.set_wakeup_fd
        self.stopping = False           # no respawning once set
        self.pidfile_path = config.server.pidfile   # becomes PATH.oldbin after USR2
        self.pidfile_written = False

    # --- main loop ---------------------------------------------------------------------------------

    def run(self):
        """Serve until told to stop; returns the exit status."""
        status = 0
        try:
            self.start()
            while True:
                for sig in self.wait_for_events(self.loop_timeout()):
                    self.dispatch(sig)
                self.reap_children()
                self.checker.poll()
                self.check_ready()
                self.spawn_missing_workers()
                self.kill_unresponsive_workers()
                self.release_unused()
        except HaltServer as e:
            log(e.reason)
            status = e.exit_status
        finally:
            self.stop_workers(graceful=False)
            self.cleanup()
        return status

    def start(self):
        setproctitle(f"fastproxy: master [{os.path.abspath(self.config.path)}]")
        try:
            logs.configure(self.config.log.error_log)
        except OSError as e:
            raise HaltServer(f"cannot open error log {self.config.log.error_log}: {e.strerror}", 1) from None
        self.install_signals()
        self.raise_nofile(self.config)
        inherited = os.environ.pop(sockets.FDS_ENV, "")
        old = os.environ.pop(OLD_MASTER_ENV, "")
        self.old_master = int(old) if old.isdigit() else None
        if self.pidfile_path and pidfile.read(self.pidfile_path) != self.old_master:
            # (the old master of an upgrade renames its pidfile to .oldbin right after starting us)
            try:
                pidfile.check_stale(self.pidfile_path, log)
            except RuntimeError as e:
                raise HaltServer(f"cannot start: {e}", 1) from None
        if inherited:
            self.listeners = sockets.Listeners.inherit(inherited)
            log(f"binary upgrade: inherited {len(self.listeners.all_fds())} listening socket(s) "
                f"from master {self.old_master}")
        try:
            self.listeners.ensure(self.config.listens, self.nworkers)
        except OSError as e:
            raise HaltServer(f"cannot start: {e.strerror}", 1) from None
        self.listeners.close_unused(self.config.listens, self.nworkers)    # inherited ones no longer listed
        self.start_balancing()
        listens = ", ".join(listen.address for listen in self.config.listens)
        log(f"fastproxy master started: {self.config.path}, listening on {listens}, "
            f"{self.nworkers} worker(s)")
        self.spawn_missing_workers()

    def raise_nofile(self, config):
        """RLIMIT_NOFILE for [server] max_connections, before any fork (children inherit it)."""
        listeners = len(config.listens) * config.server.workers
        resources.raise_nofile(resources.nofile_needed(config.server.max_connections, listeners), log,
                               f"[server] max_connections = {config.server.max_connections}")

    def install_signals(self):
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pipe = (r, w)
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        for sig in QUEUED_SIGNALS:
            signal.signal(sig, self.queue_signal)

    def queue_signal(self, signum, frame):
        self.signal_queue.append(signum)

    def wait_for_events(self, timeout, ready_pipes=True):
        """Sleep until a signal arrives, a worker reports ready, or timeout passes; return queued signals."""
        if self.pipe is None:
            return []
        if not self.signal_queue:
            fds = [self.pipe[0]]
            if ready_pipes:
                fds += [w.ready_fd for w in self.workers.values() if w.ready_fd is not None]
            poller = select.poll()      # not select(): fd numbers may pass 1024 with many listeners
            for fd in fds:
                poller.register(fd, select.POLLIN)
            try:
                readable = [fd for fd, _ in poller.poll(max(timeout, 0.0) * 1000)]
            except InterruptedError:
                readable = []
            if ready_pipes:
                self.read_ready_pipes(set(readable))
        try:
            while os.read(self.pipe[0], 4096):
                pass
        except BlockingIOError:
            pass
        queued, self.signal_queue = self.signal_queue, []
        return queued

    def read_ready_pipes(self, readable):
        for w in self.workers.values():
            if w.ready_fd is None or w.ready_fd not in readable:
                continue
            try:
                data = os.read(w.ready_fd, 16)
            except BlockingIOError:
                continue
            self.close_ready_pipe(w)
            if data:
                w.ready = True
                log(f"worker {w.slot} (pid {w.pid}, gen {w.generation}) ready")

    def close_ready_pipe(self, w):
        if w.ready_fd is not None:
            os.close(w.ready_fd)
            w.ready_fd = None

    def loop_timeout(self):
        now = time.monotonic()
        times = [now + 1.0, now + self.config.server.worker_heartbeat_timeout / 2]
        times += self.respawn_at.values()
        if self.pending:
            times.append(self.pending.deadline)
        times += [w.kill_at for w in self.workers.values()]
        return min(times) - now

    def dispatch(self, sig):
        getattr(self, "handle_" + SIG_NAMES[sig])()

    # --- signal handlers ---------------------------------------------------------------------------

    def handle_term(self):
        """Fast shutdown: workers close everything now."""
        raise HaltServer("fast shutdown (SIGTERM)", 0)

    def handle_int(self):
        raise HaltServer("fast shutdown (SIGINT)", 0)

    def handle_quit(self):
        """Graceful shutdown: workers stop accepting and finish in-flight requests, up to drain_timeout."""
        log(f"graceful shutdown (SIGQUIT), draining for up to {self.config.server.drain_timeout:g}s")
        # Our copies of the listening sockets go now: with no successor holding them, they close as soon as
        # the workers exit. (A new master from USR2 holds its own copies, which stay open.)
        self.listeners.close_all()
        self.stop_workers(graceful=True)
        raise HaltServer("graceful shutdown complete", 0)

    def handle_chld(self):
        self.reap_children()

    def handle_hup(self):
        """Reload. The file is read and validated completely first: on any error it is logged and the
        running config keeps serving. Else new workers start on the same sockets and the old ones are
        retired once every new one reported ready. After WINCH, HUP only brings the workers back."""
        if self.winched:
            self.winched = False
            log("SIGHUP after WINCH: starting workers again with the running configuration (rollback)")
            return
        if self.pending:
            self.reload_again = True
            log("SIGHUP: a reload is still waiting for its workers; reloading again once it is done")
            return
        log(f"reload (SIGHUP): reading {self.config.path}")
        new = self.load_new_config()
        if new is None:
            log("reload refused: the running configuration keeps serving, unchanged")
            return
        try:
            added = self.listeners.ensure(new.listens, new.server.workers)
        except OSError as e:
            log(f"reload refused: {e.strerror}; the running configuration keeps serving, unchanged")
            return
        if not self.assign_table(new, keep=self.configs_in_use()):
            return
        self.raise_nofile(new)
        if new.log.error_log != self.config.log.error_log:
            log(f"error log moves to {new.log.error_log or 'stderr'}")
            try:
                logs.configure(new.log.error_log)
            except OSError as e:
                log(f"cannot open error log {new.log.error_log}: {e.strerror}; keeping the old one")
        if new.server.pidfile != self.config.server.pidfile:
            log("note: a changed [server] pidfile takes effect at the next start, not on reload")
        self.checker.restart(new)
        self.warn_if_shrinking_loses(self.nworkers, new.server.workers)
        self.pending = PendingReload(self.config, self.generation, self.nworkers,
                                     time.monotonic() + new.server.ready_timeout)
        self.config = new
        self.generation += 1
        self.nworkers = new.server.workers
        self.failures.clear()
        self.respawn_at.clear()
        self.announced_ready = False
        log(f"reload accepted: starting generation {self.generation} ({self.nworkers} worker(s))"
            + (f", new listeners {', '.join(added)}" if added else ""))
        self.spawn_missing_workers()

    def load_new_config(self):
        """The config file loaded and checked, or None after logging every problem (file, line, table, key)."""
        try:
            new = config_mod.load(self.config.path)
        except ConfigErrors as e:
            for err in e.errors:
                log(f"reload refused: {err}")
            return None
        for what, path in (("error log", new.log.error_log), ("access log", new.log.access_log)):
            if path is None:
                continue
            try:    # O_NONBLOCK: a FIFO without a reader must not hang the master (it is refused: ENXIO)
                os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK,
                                 0o644))
            except OSError as e:
                log(f"reload refused: {new.path}: [log] {what.replace(' ', '_')}: cannot open {path}: {e.strerror}")
                return None
        return new

    def handle_usr1(self):
        """Reopen the logs (after rotation): the master's error log, and every worker's logs."""
        logs.reopen()
        log("SIGUSR1: reopened the error log; telling the workers to reopen theirs and the access log")
        self.signal_workers(signal.SIGUSR1)

    def handle_usr2(self):
        """Binary upgrade: fork and exec a new master with our arguments; it inherits the listening fds."""
        if self.argv is None:
            log("SIGUSR2 refused: a binary upgrade needs `fastproxy serve -c FILE`")
            return
        if self.new_master is not None:
            log(f"SIGUSR2 refused: an upgrade is in progress (new master {self.new_master}); "
                "QUIT one of the two masters first")
            return
        if self.old_master is not None and pidfile.is_master(self.old_master):
            log(f"SIGUSR2 refused: the old master {self.old_master} of the last upgrade still runs; QUIT it first")
            return
        env = self.start_context.environ(os.environ)
        env[sockets.FDS_ENV] = self.listeners.encode()
        env[OLD_MASTER_ENV] = str(self.pid)
        args = self.start_context.command()
        signal.pthread_sigmask(signal.SIG_BLOCK, QUEUED_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self.exec_new_master(args, env)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, QUEUED_SIGNALS)
        self.new_master = pid
        # Renamed only now: once .oldbin exists, the new master does too (`fastproxy upgrade` relies on it).
        path = self.config.server.pidfile
        if path and self.pidfile_written and pidfile.rename(path, path + pidfile.OLDBIN, self.pid):
            self.pidfile_path = path + pidfile.OLDBIN
        moved = f"; pidfile renamed to {self.pidfile_path}" if self.pidfile_path != path else ""
        log(f"binary upgrade (SIGUSR2): started new master {pid}: {' '.join(args)}{moved}")

    def exec_new_master(self, args, env):
        """In the forked child: default signal handling, then exec. Never returns."""
        try:
            signal.set_wakeup_fd(-1)
            for sig in QUEUED_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, [])
            os.chdir(self.start_context.cwd)
            os.execve(args[0], args, env)
        except BaseException as e:
            log(f"binary upgrade: cannot exec {args[0]}: {e}")
        os._exit(127)

    def handle_winch(self):
        """Gracefully retire every worker but keep the listening sockets (the middle step of an upgrade)."""
        if self.pending:
            self.abandon_reload("WINCH arrived")
        self.winched = True
        log("SIGWINCH: retiring all workers gracefully; listening sockets kept (HUP starts workers again)")
        self.retire([w for w in self.workers.values() if not w.retiring])

    def handle_ttin(self):
        try:
            self.listeners.ensure(self.config.listens, self.nworkers + 1)
        except OSError as e:
            log(f"SIGTTIN refused: {e.strerror}")
            return
        self.nworkers += 1
        self.announced_ready = False
        log(f"SIGTTIN: {self.nworkers} worker(s)")

    def handle_ttou(self):
        if self.nworkers <= 1:
            log("SIGTTOU ignored: already down to one worker")
            return
        self.nworkers -= 1
        log(f"SIGTTOU: {self.nworkers} worker(s)")
        self.warn_if_shrinking_loses(self.nworkers + 1)
        self.retire([w for w in self.workers.values() if w.slot >= self.nworkers and not w.retiring])

    def warn_if_shrinking_loses(self, before, after=None):
        after = self.nworkers if after is None else after
        if after < before and not sockets.queued_connections_migrate():
            log(f"note: going from {before} to {after} worker(s) closes the listening sockets of the removed "
                "slot(s); connections queued in them are reset unless net.ipv4.tcp_migrate_req = 1")

    # --- reload steps ------------------------------------------------------------------------------

    def current_workers(self):
        return [w for w in self.workers.values() if w.generation == self.generation and not w.retiring]

    def check_ready(self):
        """Finish or abandon a pending reload; write the pidfile once the first workers are ready."""
        current = self.current_workers()
        all_ready = len(current) == self.nworkers and all(w.ready for w in current)
        if self.pending:
            if all_ready:
                self.finish_reload()
            elif time.monotonic() >= self.pending.deadline:
                self.abandon_reload(f"new workers not ready within {self.config.server.ready_timeout:g}s")
            return
        if all_ready and not self.announced_ready and not self.winched:
            self.announced_ready = True
            log(f"all {len(current)} worker(s) of generation {self.generation} ready")
            if self.pidfile_path and not self.pidfile_written:
                self.write_pidfile()

    def finish_reload(self):
        old = [w for w in self.workers.values() if w.generation != self.generation and not w.retiring]
        self.pending = None
        self.announced_ready = True
        log(f"reload complete: generation {self.generation} ready ({self.nworkers} worker(s)); "
            f"retiring {len(old)} old worker(s) gracefully")
        self.retire(old)
        self.table_dirty = True             # the slots of removed servers are freed once the old workers are gone
        if self.reload_again:
            self.reload_again = False
            self.handle_hup()

    def abandon_reload(self, reason):
        p, self.pending = self.pending, None
        new = [w for w in self.workers.values() if w.generation == self.generation and not w.retiring]
        log(f"reload abandoned: {reason}; generation {p.old_generation} keeps serving")
        for w in new:
            w.retiring = True
            w.kill_at = time.monotonic() + FAST_STOP_TIMEOUT
            self.kill(w, signal.SIGTERM)
        self.config, self.generation, self.nworkers = p.old_config, p.old_generation, p.old_nworkers
        self.assign_table(self.config, keep=self.configs_in_use())
        self.table_dirty = True
        self.checker.restart(self.config)
        try:
            logs.configure(self.config.log.error_log)
        except OSError:
            pass
        self.failures.clear()
        self.respawn_at.clear()
        self.announced_ready = True
        self.reload_again = False

    def retire(self, workers):
        """QUIT these workers: they stop accepting, finish in-flight work, and exit (killed after a deadline)."""
        deadline = time.monotonic() + self.config.server.drain_timeout + DRAIN_GRACE
        for w in workers:
            w.retiring = True
            w.kill_at = deadline
            self.kill(w, signal.SIGQUIT)

    def release_unused(self):
        """Close our copies of sockets no address or slot of the running config uses, and free the
        shared-table slots of servers no live worker uses.

        Sockets: as soon as no reload is pending (one that is may still be abandoned). Workers that are
        retiring hold their own copies, so a socket stays open until the last of them exits, and closes
        then instead of lingering in the master with connections queued in it that nobody accepts.
        Table slots: only once no worker of another generation is left, because a retiring worker still
        answers the next request on each kept-alive connection (with "Connection: close"); if its servers'
        slots were freed under it, that request would get a 503.
        """
        if self.pending:
            return
        closed = self.listeners.close_unused(self.config.listens, self.nworkers)
        if closed:
            log(f"closed {len(closed)} listening socket(s) the configuration no longer uses")
        if self.table_dirty and all(w.generation == self.generation for w in self.workers.values()):
            self.table_dirty = False
            self.assign_table(self.config)

    # --- workers -----------------------------------------------------------------------------------

    def spawn_missing_workers(self):
        if self.stopping or self.winched:
            return
        busy = {w.slot for w in self.current_workers()}
        now = time.monotonic()
        for slot in range(self.nworkers):
            if slot not in busy and self.respawn_at.get(slot, 0.0) <= now:
                self.respawn_at.pop(slot, None)
                self.spawn_worker(slot)

    def spawn_worker(self, slot):
        r, w = os.pipe2(os.O_CLOEXEC)
        mine = self.listeners.slot_fds(self.config.listens, slot)
        close_fds = [*self.pipe, r] + [p.ready_fd for p in self.workers.values() if p.ready_fd is not None]
        close_fds += [fd for fd in self.listeners.all_fds() if fd not in mine]
        # Signals stay blocked across fork until the child has its own handlers: a TERM sent to a worker
        # that is still starting then waits for the worker's handler instead of hitting the master's.
        signal.pthread_sigmask(signal.SIG_BLOCK, QUEUED_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                Worker(self.config, mine, slot, self.pid, self.generation, close_fds=close_fds, ready_fd=w,
                       unblock=QUEUED_SIGNALS).run()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, QUEUED_SIGNALS)
        os.close(w)
        os.set_blocking(r, False)
        self.workers[pid] = WorkerProc(pid, slot, self.generation, time.monotonic(), r, config=self.config)
        self.announced_ready = False
        log(f"worker {slot} (pid {pid}, gen {self.generation}) started")

    def reap_children(self):
        """Collect dead workers (only ours) and a finished new master; log why each ended."""
        for pid in list(self.workers):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                self.worker_died(self.workers.pop(pid), status)
        if self.new_master is not None:
            try:
                done, status = os.waitpid(self.new_master, os.WNOHANG)
            except ChildProcessError:
                done, status = self.new_master, 0
            if done:
                self.new_master_died(status)

    def worker_died(self, w, status):
        self.table.release_row(w.pid)       # its in-flight counts leave the shared table with it
        self.close_ready_pipe(w)
        lived = time.monotonic() - w.started
        what = f"worker {w.slot} (pid {w.pid}, gen {w.generation})"
        if self.stopping or w.retiring or w.generation != self.generation:
            log(f"{what} exited: {describe_status(status)}")
            return
        if self.pending and not w.ready:
            log(f"{what} died before it was ready: {describe_status(status)}")
            self.abandon_reload(f"new worker {w.slot} died before it was ready")
            return
        self.failures[w.slot] = self.failures.get(w.slot, 0) + 1 if lived < MIN_LIFETIME else 1
        delay = backoff_delay(self.failures[w.slot])
        self.respawn_at[w.slot] = time.monotonic() + delay
        msg = f"{what} died: {describe_status(status)} after {lived:.1f}s; "
        if delay:
            msg += f"dying repeatedly ({self.failures[w.slot]} times), respawning in {delay:g}s"
        else:
            msg += "respawning"
        log(msg)

    def new_master_died(self, status):
        pid, self.new_master = self.new_master, None
        log(f"new master {pid} exited: {describe_status(status)}")
        path = self.config.server.pidfile
        if path and self.pidfile_path != path and pidfile.rename(self.pidfile_path, path, self.pid):
            self.pidfile_path = path
            log(f"pidfile {path} names this master again")
        if self.winched and not self.stopping:
            self.winched = False
            log("starting workers again: the new master is gone (rollback)")

    def kill_unresponsive_workers(self):
        """KILL workers whose event loop stopped beating, and retiring workers past their deadline."""
        now = time.monotonic()
        timeout = self.config.server.worker_heartbeat_timeout
        # the event loop's beat, from the worker's row in the shared table (none yet: it is starting)
        beats = {row["pid"]: row["heartbeat_age"] for row in self.table.rows()}
        for w in self.workers.values():
            if w.killed:
                continue
            if w.retiring and now >= w.kill_at:
                log(f"worker {w.slot} (pid {w.pid}, gen {w.generation}) still running after its drain "
                    "deadline; killing it")
                self.kill(w, signal.SIGKILL)
                w.killed = True
            elif (age := beats.get(w.pid, now - w.started)) > timeout:
                log(f"worker {w.slot} (pid {w.pid}, gen {w.generation}) hung: no heartbeat for {age:.1f}s "
                    f"(worker_heartbeat_timeout {timeout:g}s); killing it")
                self.kill(w, signal.SIGKILL)
                w.killed = True

    def stop_workers(self, graceful):
        """Signal every worker and wait for all of them; KILL those still there at the deadline.

        A TERM or INT arriving during a graceful stop turns it into a fast one.
        """
        self.stopping = True
        if not self.workers:
            return
        timeout = self.config.server.drain_timeout + DRAIN_GRACE if graceful else FAST_STOP_TIMEOUT
        self.signal_workers(signal.SIGQUIT if graceful else signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.workers and (left := deadline - time.monotonic()) > 0:
            sigs = self.wait_for_events(min(0.1, left), ready_pipes=False)  # SIGCHLD wakes us as workers exit
            self.reap_children()
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
        for w in self.workers.values():
            self.kill(w, sig)

    def kill(self, w, sig):
        try:
            os.kill(w.pid, sig)
        except ProcessLookupError:
            pass

    # --- load balancing (issue 4): the shared backend table and the health checker -----------------

    def start_balancing(self):
        """Create (or, after a binary upgrade, attach to) the named table before any fork; start the checker."""
        try:
            self.table = shm.create_for(self.config)
        except (OSError, ValueError) as e:
            raise HaltServer(f"cannot create the shared backend table: {e}", 1) from None
        self.checker = health.CheckerProcess(self.config, self.table, unblock=QUEUED_SIGNALS,
                                             close_fds=lambda: [*self.pipe, *self.listeners.all_fds()])
        self.checker.start()

    def configs_in_use(self):
        """The running config and those of every live worker, as one keep= argument for table.assign."""
        return UnionConfig([self.config] + [w.config for w in self.workers.values() if w.config is not None])

    def assign_table(self, new, keep=None):
        try:
            self.table.assign(new, keep=keep)
            return True
        except ValueError as e:
            log(f"reload refused: {e}; the running configuration keeps serving, unchanged")
            return False

    def stop_balancing(self):
        if getattr(self, "checker", None) is not None:
            self.checker.stop()
        old_master_lives = self.old_master is not None and pidfile.is_master(self.old_master)
        if getattr(self, "table", None) is not None and self.new_master is None and not old_master_lives:
            self.table.unlink()             # a new master (binary upgrade), or the old one after a rollback, keeps using it

    # --- pidfile and cleanup -----------------------------------------------------------------------

    def write_pidfile(self):
        try:
            pidfile.write(self.pidfile_path, self.pid)
        except OSError as e:
            raise HaltServer(f"cannot write pidfile {self.pidfile_path}: {e.strerror}", 1) from None
        self.pidfile_written = True

    def cleanup(self):
        self.stop_balancing()
        if self.pidfile_written:
            pidfile.remove(self.pidfile_path, self.pid)
        if self.new_master is not None:
            log(f"the new master {self.new_master} keeps running")
        self.listeners.close_all()
        for w in self.workers.values():
            self.close_ready_pipe(w)
        signal.set_wakeup_fd(-1)
        for sig in QUEUED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        if self.pipe:
            for fd in self.pipe:
                os.close(fd)
            self.pipe = None
        log("fastproxy master exiting")
