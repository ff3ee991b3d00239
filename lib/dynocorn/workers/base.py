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
from types import FrameType
from typing import TYPE_CHECKING

from dynocorn import apploader, process
from dynocorn.channel import WorkerChannel

if TYPE_CHECKING:
    from dynocorn.config import Config
    from dynocorn.logs import ErrorLog, Logs
    from dynocorn.sockets import Listener


class WorkerAbort(BaseException):
    """Raised inside the running request when the master's timeout fires (SIGABRT).

    A BaseException so that an app's `except Exception` does not swallow it."""


class Worker:
    name = "custom"
    # What the WSGI environ says about concurrency; subclasses override.
    multithread = False

    def __init__(
        self,
        age: int,
        ppid: int,
        listeners: list[Listener],
        app: apploader.WSGIApp | None,
        cfg: Config,
        logs: Logs,
        channel_fd: int,
    ) -> None:
        self.age = age
        self.ppid = ppid
        self.listeners = listeners
        self.wsgi = app
        self.cfg = cfg
        self.logs = logs
        self.log = logs.error
        self.access_log = logs.access
        self.channel_fd = channel_fd
        self.pid = 0  # set in the child
        self.alive = True
        self.booted = False
        self.nr = 0  # requests served
        jitter = random.randint(0, cfg.max_requests_jitter) if cfg.max_requests_jitter else 0
        self.max_requests = cfg.max_requests + jitter if cfg.max_requests > 0 else sys.maxsize
        self.retire_at = float("inf")
        self._retiring_logged = False

    def __repr__(self) -> str:
        return f"<Worker {self.pid}>"

    @classmethod
    def before_preload(cls, log: ErrorLog) -> None:
        """Called in the master before `--preload` imports the app (gevent patches here)."""

    @classmethod
    def before_app_import(cls, log: ErrorLog) -> None:
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
            self.before_app_import(self.log)
            self.wsgi = apploader.load_app(self.cfg.wsgi_app)
        if self.cfg.max_worker_lifetime > 0:
            # Up to 10% jitter so workers started together do not all restart together.
            lifetime = self.cfg.max_worker_lifetime * (1 + random.uniform(0, 0.1))
            self.retire_at = time.monotonic() + lifetime
        self.cfg.post_worker_init(self)
        self.booted = True
        self.channel.ready()
        self.run()

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

    def handle_exit(self, signum: int, frame: FrameType | None) -> None:
        self.alive = False

    def handle_quit(self, signum: int, frame: FrameType | None) -> None:
        self.alive = False
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
        self.channel.beat()

    def parent_changed(self) -> bool:
        return os.getppid() != self.ppid

    def request_done(self) -> None:
        self.nr += 1
        if self.nr >= self.max_requests:
            self.retire("max requests")

    def check_lifetime(self, now: float) -> None:
        if now >= self.retire_at:
            self.retire("max worker lifetime")

    def retire(self, reason: str) -> None:
        """Finish the current request, then exit; the master starts a replacement."""
        if not self._retiring_logged:
            self._retiring_logged = True
            self.log.info(f"Autorestarting worker after current request. ({reason})")
            self.channel.retiring()
        self.alive = False
