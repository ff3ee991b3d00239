"""The lifecycle every worker class shares; subclass Worker and implement run().

A worker class (`-k package.module.ClassName`) gets, after the fork, `init_process()` which
switches user, installs signal handlers, loads the app (unless preloaded), runs the
`post_worker_init` hook, tells the master it is ready, then calls `run()`. run() must:

- serve until `self.alive` is False, then finish in-flight requests and return;
- call `self.notify()` at least once a second (the master kills a worker silent for
  `timeout` seconds);
- call `self.request_done()` after each request (max-requests and lifetime recycling);
- return when `self.parent_changed()` (the master died).

Signals: TERM stops gracefully (Heroku sends it to every process at once, so a worker's own
TERM must be graceful); INT and QUIT stop at once; USR1 reopens log files; ABRT is the
master's timeout and aborts the running request.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from dynocorn import apploader, process
from dynocorn.channel import WorkerChannel
from dynocorn.exit_cause import ExitCause
from dynocorn.metrics.memory import RssReader, read_process_memory
from dynocorn.metrics.queue_time import Percentiles
from dynocorn.metrics.statsd import StatsD, parse_statsd_host
from dynocorn.metrics.tally import RequestTally
from dynocorn.reloader import imported_project_files
from dynocorn.units import format_mb
from dynocorn.workers.memory_guard import (
    MIN_REQUESTS_FOR_RECYCLING,
    MemoryGuard,
    old_enough_to_recycle,
)

# Blocked by the master around fork(); a worker unblocks them once its handlers are in place.
FORK_SIGNALS = {
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
    signal.SIGCHLD,
    signal.SIGABRT,
}

if TYPE_CHECKING:
    from dynocorn.config import Config
    from dynocorn.handoff import Balance
    from dynocorn.logs import ErrorLog, Logs
    from dynocorn.sockets import Listener


class WorkerAbort(BaseException):
    """Raised inside the running request when the master's timeout fires (SIGABRT).

    A BaseException so that an app's `except Exception` does not swallow it."""

    reported = False  # its stack is in the log already, with the request it stopped


class Worker:
    name = "custom"
    # The apps it serves: an app of the other kind stops the server at boot (apploader.py).
    interface: apploader.Interface = "wsgi"
    # What the WSGI environ says about concurrency; subclasses override.
    multithread = False
    # Whether run() tells the master it is ready (channel.ready()), once it can serve: a HUP
    # stops an old worker only when its successor is ready. Else init_process() does, just
    # before run() (the app is loaded by then).
    says_ready_itself = False

    def __init__(
        self,
        age: int,
        ppid: int,
        listeners: list[Listener],
        app: apploader.WSGIApp | None,
        cfg: Config,
        logs: Logs,
        channel_fd: int,
        *,
        balance: Balance | None = None,
    ) -> None:
        self.age = age
        self.modules_reported = 0  # len(sys.modules) at the last report (--reload)
        self.ppid = ppid
        self.listeners = listeners
        self.wsgi = app
        self.cfg = cfg
        self.logs = logs
        self.log = logs.error
        self.access_log = logs.access
        self.channel_fd = channel_fd
        # Where a busy worker passes waiting connections and an idle one takes them, and
        # how many connections each worker holds (handoff.py); the master sets the slot.
        self.balance = balance
        self.handoff = balance.waiting if balance is not None else None
        self.board_slot: int | None = None
        # The pipe on which the master says this worker's request runs slow (slow_watch.py).
        self.poke_fd: int | None = None
        self.pid = 0  # set in the child
        self.alive = True
        self.quitting = False  # INT/QUIT: exit now, without finishing requests
        self.booted = False
        self.nr = 0  # requests served
        jitter = random.randint(0, cfg.max_requests_jitter) if cfg.max_requests_jitter else 0
        self.max_requests = cfg.max_requests + jitter if cfg.max_requests > 0 else sys.maxsize
        self.retire_at = float("inf")
        self._retiring_logged = False
        self.memory_guard: MemoryGuard | None = None  # set at boot under max_worker_memory
        # The request count from which request_done() has a check to run.
        self.checks_due = self.max_requests
        self.spawned_at = time.monotonic()  # made in the master just before the fork
        self.boot_uss: int | None = None
        self.queue_times = Percentiles(256)  # since the last report to the master
        self.tally = RequestTally()  # requests since it started (HttpWorker counts them)
        self.statsd: StatsD | None = None

    def __repr__(self) -> str:
        return f"<Worker {self.pid}>"

    @classmethod
    def before_preload(cls, cfg: Config, log: ErrorLog) -> None:
        """Called in the master before `--preload` imports the app (gevent patches here)."""

    @classmethod
    def before_app_import(cls, cfg: Config, log: ErrorLog) -> None:
        """Called in the worker before it imports the app (when not preloaded)."""

    # -- in the child, right after fork

    def init_process(self) -> None:
        self.pid = os.getpid()
        random.seed()  # the fork copied the master's generator: workers would share a sequence
        self.channel = WorkerChannel(self.channel_fd)
        name = self.cfg.proc_name or self.cfg.wsgi_app or "dynocorn"
        process.set_title(f"dynocorn: worker [{name}]")
        uid, gid = process.resolve_ids(self.cfg.user, self.cfg.group)
        process.switch_user(uid, gid, self.cfg.initgroups)
        self.init_signals()
        if self.wsgi is None:
            self.before_app_import(self.cfg, self.log)
            self.wsgi = apploader.load_app(self.cfg.wsgi_app)
        # A preloaded app too: a HUP may have changed the worker class since.
        apploader.check_interface(self.wsgi, self.cfg, self.interface)
        if self.cfg.max_worker_lifetime > 0:
            # Up to 10% jitter so workers started together do not all restart together.
            lifetime = self.cfg.max_worker_lifetime * (1 + random.uniform(0, 0.1))
            self.retire_at = time.monotonic() + lifetime
        self.check_footprint()
        if self.cfg.statsd_host:
            host, port = parse_statsd_host(self.cfg.statsd_host)
            self.statsd = StatsD(host, port, self.cfg.statsd_prefix, self.cfg.dogstatsd_tags)
            if error := self.statsd.error_to_log():
                self.log.warning(error)
        self.cfg.post_worker_init(self)
        self.booted = True
        if not self.says_ready_itself:
            self.channel.ready()
        self.notify()
        try:
            self.run()
        except WorkerAbort as abort:
            # The master's timeout, not a crash: the stack was logged with the request it
            # stopped; one stuck outside a request (a hook, the loop) is logged here.
            if not abort.reported:
                self.log.exception(f"Worker aborted at timeout outside a request (pid:{self.pid})")
            raise SystemExit(1) from None  # gunicorn's exit code for a timed-out worker
        finally:
            self.notify()  # the last counts: a recycled worker takes none with it

    def check_footprint(self) -> None:
        """Measure the fresh worker and guard max_worker_memory from there, unless it is
        over the limit already: it would be recycled in a loop (the master warns, once for
        all workers)."""
        limit = self.cfg.max_worker_memory
        if limit is None:
            return
        memory = read_process_memory(self.pid)
        if memory is None:
            return
        self.boot_uss = memory.uss
        if memory.uss <= limit:
            self.memory_guard = MemoryGuard(limit, self.pid, memory.uss, RssReader())
            self.checks_due = min(self.max_requests, self.memory_guard.next_check)

    def init_signals(self) -> None:
        for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU, signal.SIGUSR2, signal.SIGWINCH):
            signal.signal(sig, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, self.handle_exit)
        signal.signal(signal.SIGINT, self.handle_quit)
        signal.signal(signal.SIGQUIT, self.handle_quit)
        signal.signal(signal.SIGUSR1, self.handle_usr1)
        signal.signal(signal.SIGABRT, self.handle_abort)
        # A signal must not restart a blocking accept/recv in a way that hides it.
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.siginterrupt(sig, False)
        # Now a signal sent while we were being forked is delivered, to these handlers.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_SIGNALS)

    def handle_exit(self, signum: int, frame: FrameType | None) -> None:
        self.alive = False

    def handle_quit(self, signum: int, frame: FrameType | None) -> None:
        self.alive = False
        self.quitting = True
        self.cfg.worker_int(self)
        sys.exit(0)

    def handle_usr1(self, signum: int, frame: FrameType | None) -> None:
        self.logs.reopen()

    def handle_abort(self, signum: int, frame: FrameType | None) -> None:
        self.alive = False
        self.cfg.worker_abort(self)
        raise WorkerAbort()

    # -- for run()

    def run(self) -> None:
        raise NotImplementedError

    def notify(self) -> None:
        """The heartbeat, carrying what the master's metrics need."""
        figures: dict[str, object] = {"requests": self.nr}
        if self.boot_uss is not None:
            figures["boot_uss"] = self.boot_uss
        if len(self.queue_times):
            figures["queue"] = [round(ms, 2) for ms in self.queue_times.samples()]
            self.queue_times.reset()
        figures["tally"] = self.tally.totals()
        if self.cfg.reload and len(sys.modules) != self.modules_reported:
            # --reload watches what the app imported, modules imported since too.
            self.modules_reported = len(sys.modules)
            figures["files"] = sorted(map(str, imported_project_files(Path.cwd())))
        self.channel.stats(figures)

    def count_connections(self, held: int) -> None:
        """Tell the siblings how many connections this worker holds. The first call also
        says that it serves: until then its scoreboard slot counts as no worker."""
        if self.balance is not None and self.board_slot is not None:
            self.balance.board.set(self.board_slot, held)

    def has_siblings(self) -> bool:
        """Whether another worker serves beside this one now (TTIN and TTOU change it)."""
        if self.balance is None or self.board_slot is None:
            return int(self.cfg.workers) > 1
        return self.balance.board.has_company()

    def parent_changed(self) -> bool:
        return os.getppid() != self.ppid

    def request_done(self) -> None:
        """Count a request, then run the recycling checks that are due."""
        self.nr += 1
        if self.nr < self.checks_due:
            return
        if self.nr >= self.max_requests:
            self.retire(ExitCause.MAX_REQUESTS, "max requests")
        guard = self.memory_guard
        if guard is not None and self.nr >= guard.next_check:
            self.check_memory(guard)
        guard = self.memory_guard
        self.checks_due = min(self.max_requests, guard.next_check if guard else sys.maxsize)

    def check_memory(self, guard: MemoryGuard) -> None:
        """Retire once private memory is over max_worker_memory (see memory_guard.py)."""
        if not guard.lock.acquire(blocking=False):
            return  # another thread is checking
        try:
            if self.memory_guard is not guard:
                return  # a thread before us decided already
            uss = guard.check(self.nr)
            if uss is None:
                return
            if not old_enough_to_recycle(self.nr, time.monotonic() - self.spawned_at):
                guard.next_check = max(guard.next_check, MIN_REQUESTS_FOR_RECYCLING)
                return
            self.memory_guard = None  # once is enough
        finally:
            guard.lock.release()
        self.log.info(
            f"Worker (pid:{self.pid}) uses {format_mb(uss)} of private memory, over "
            f"max_worker_memory {format_mb(guard.limit)}, after {self.nr} requests"
        )
        self.retire(ExitCause.MEMORY, "max worker memory")

    def check_lifetime(self, now: float) -> None:
        if now >= self.retire_at:
            self.retire(ExitCause.LIFETIME, "max worker lifetime")

    def retire(self, cause: ExitCause, reason: str) -> None:
        """Finish the current request, then exit; the master starts a replacement. `cause`
        tells the master why (its metrics count exits by cause); `reason` is for the log."""
        if not self._retiring_logged:
            self._retiring_logged = True
            self.log.info(f"Autorestarting worker after current request. ({reason})")
            self.channel.retiring(cause.value)
        self.alive = False
