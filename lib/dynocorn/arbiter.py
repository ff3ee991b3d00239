"""The master process.

How this works: the master binds every listening socket, optionally imports the app
(`--preload`), then forks workers and watches them from one loop. Signal handlers only queue
the signal and wake the loop (through `signal.set_wakeup_fd`); the loop then, in order,
dispatches queued signals to `handle_<name>` methods, reads heartbeats from the workers'
pipes, reaps dead workers, kills silent ones, and brings the pool to its target size. Every
deadline uses `time.monotonic()`. The master never parses HTTP.

Stopping (TERM) is a state of the loop, not a nested loop: the master closes its listening
sockets, tells workers to finish, and SIGKILLs whatever is left after `graceful_timeout`.
HUP replaces workers one at a time: a new worker must report ready before the next old one
is told to stop, so capacity never drops and memory never doubles.
"""

from __future__ import annotations

import gc
import os
import selectors
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from dynocorn import __version__, apploader, process, sockets
from dynocorn.channel import MasterChannel, Message
from dynocorn.config import reload_lines
from dynocorn.exit_cause import ExitCause
from dynocorn.handoff import Balance
from dynocorn.logs import LogFile
from dynocorn.master_signals import SignalQueue
from dynocorn.master_views import MasterViews
from dynocorn.memory_policy import MemoryPolicy
from dynocorn.metrics.monitor import MemoryMonitor
from dynocorn.metrics.tally import ServerTally
from dynocorn.reloader import ReloadWatch, start_reloader
from dynocorn.reloading import fork_new_master, is_reexec_child, load_for_hup
from dynocorn.worker_exits import (
    ABORT_GRACE,
    DeathReporter,
    HaltServer,
    next_spawn_delay,
    run_in_child,
)
from dynocorn.worker_handle import WorkerHandle
from dynocorn.workers import worker_class_for
from dynocorn.workers.base import FORK_SIGNALS

if TYPE_CHECKING:
    from dynocorn.config import Config
    from dynocorn.logs import Logs
    from dynocorn.workers.base import Worker

LOOP_TICK = 1.0
# INT/QUIT: how long workers get to run their worker_int and worker_exit hooks before
# SIGKILL (never longer than graceful_timeout). gunicorn waits for them too.
QUICK_STOP_GRACE = 1.0
# Scoreboard slots at least (handoff.py); a worker beyond them (TTIN past 4x the start
# count) serves without taking part in the balance of connections.
BOARD_SLOTS = 64


class Arbiter:
    def __init__(self, cfg: Config, logs: Logs, reload_config: Callable[[], Config]) -> None:
        self.cfg = cfg
        self.logs = logs
        self.log = logs.error
        self.reload_config = reload_config
        self.pid = os.getpid()
        self.listeners: list[sockets.Listener] = []
        # Made before the first fork, so every worker can pass a connection to any other
        # (handoff.py).
        self.balance: Balance | None = None
        self.workers: dict[int, WorkerHandle] = {}
        self.num_workers: int = cfg.workers
        self.spawned_count = 0
        self.app: apploader.WSGIApp | None = None
        self.worker_class: type[Worker] = worker_class_for(cfg)
        self.signal_queue = SignalQueue()
        self.selector = selectors.DefaultSelector()
        self.next_housekeeping = 0.0  # reaping, timeouts, pool size: at least once a LOOP_TICK
        self.stopping = False
        self.stop_deadline = 0.0
        self.exit_status = 0
        self.replacing: deque[int] = deque()  # old workers a HUP is replacing, oldest first
        self.replacement: int | None = None  # the new worker that must be ready first
        self.old_stopping: int | None = None  # the old worker that must exit before the next
        self.spawn_delay = 0.0
        self.spawn_not_before = 0.0
        self.reexec_pid = 0
        self.pidfile: process.Pidfile | None = None
        self.master_name = cfg.proc_name or cfg.wsgi_app or "dynocorn"
        # The runtime-metrics lines go to stdout, as the platform's own do.
        self.metrics_out = LogFile("-", sys.stdout)
        self.monitor = MemoryMonitor(cfg, self.log, self.metrics_out.write, os.environ)
        self.memory_policy = MemoryPolicy(cfg)
        self.tally = ServerTally()  # requests since start, summed from every heartbeat
        self.deaths = DeathReporter(self.log, self.monitor.cgroup, self.monitor.last_seen)
        self.deaths.counts = self.tally.recycles  # exits by cause, for /metrics and stats
        self.unaffordable_logged = False
        self.reload_watch: ReloadWatch | None = None  # --reload (reloader.py)
        self.started_at = time.monotonic()
        self.views = MasterViews(self)  # the control socket and /metrics (master_views.py)

    # -- start-up

    def run(self) -> int:
        try:
            self.start()
            while True:
                self.loop_once()
                if self.stopping and not self.workers:
                    break
        except HaltServer as halt:
            self.stopping = True  # other workers failing the same way are expected now
            self.exit_status = halt.exit_status
            self.shutdown(halt.reason)
            return self.exit_status
        except KeyboardInterrupt:
            self.shutdown_now()
        self.shutdown(None)
        return self.exit_status

    def start(self) -> None:
        cfg = self.cfg
        # gunicorn's moment: the count is first set, before on_starting, with no old value.
        cfg.nworkers_changed(self, self.num_workers, None)
        self.log.info(f"Starting dynocorn {__version__}")
        cfg.on_starting(self)
        self.signal_queue.install(self.selector)
        if cfg.pidfile:
            self.pidfile = process.Pidfile(cfg.pidfile)
            self.pidfile.write(self.pid)
        try:
            self.listeners = sockets.create_listeners(
                cfg.bind, backlog=cfg.backlog, reuse_port=cfg.reuse_port, environ=os.environ
            )
        except sockets.BindError as error:
            self.log.error(str(error))
            raise HaltServer("Could not bind the listening sockets.", 1) from None
        for listener in self.listeners:
            self.log.info(f"Listening at: {listener.url} ({self.pid})")
        self.views.start(self.selector)
        self.balance = Balance(slots=max(BOARD_SLOTS, 4 * cfg.workers))
        self.log.info(f"Using worker: {self.cfg.worker_class}")
        process.set_title(f"dynocorn: master [{self.master_name}]")
        if cfg.preload_app:
            self.preload()
        self.reload_watch = start_reloader(cfg, self.log, self.signal_queue.wake)
        cfg.when_ready(self)
        self.monitor.begin(time.monotonic())
        self.manage_workers(time.monotonic())  # now, not after the loop's first wait

    def preload(self) -> None:
        self.worker_class.before_preload(self.cfg, self.log)
        try:
            self.app = apploader.load_app(self.cfg.wsgi_app)
            apploader.check_interface(self.app, self.cfg, self.worker_class.interface)
        except apploader.AppInterfaceError as error:  # the line says all; no traceback
            self.log.error(f"Failed to load the app with --preload: {error}")
            raise HaltServer("App failed to load.", 1) from None
        except (apploader.AppImportError, apploader.AppLoadError) as error:
            self.log.exception(f"Failed to load the app with --preload: {error}")
            raise HaltServer("App failed to load.", 1) from None
        # Objects that exist now are shared copy-on-write with every worker; freezing them
        # keeps the collector from touching (and so copying) their pages in each worker.
        gc.collect()
        gc.freeze()

    # -- the loop

    def loop_once(self) -> None:
        woken_by = self.wait(self.next_timeout())
        now = time.monotonic()
        if self.balance is not None and not self.stopping:
            self.balance.watch.look(now)  # which worker runs a slow request (slow_watch.py)
            if not (
                woken_by
                or self.signal_queue
                or now >= self.next_housekeeping
                or self.monitor.due(now)
            ):
                return  # woken for that look alone, every few ms: keep it cheap
        self.next_housekeeping = now + LOOP_TICK
        self.views.tick(now)
        while self.signal_queue:
            name = self.signal_queue.next_name()
            if name != "chld":
                self.log.info(f"Handling signal: {name}")
            getattr(self, f"handle_{name}")()
        if self.reload_watch is not None and self.reload_watch.code_changed():
            self.handle_hup()  # the new code, one worker at a time
        self.reap_workers()
        now = time.monotonic()
        self.murder_workers(now)
        if self.monitor.due(now):
            self.act_on_memory(now)
        if self.stopping:
            if now >= self.stop_deadline:
                self.kill_workers(signal.SIGKILL)
        else:
            self.manage_workers(now)

    def next_timeout(self) -> float:
        if self.signal_queue:
            return 0.0
        now = time.monotonic()
        timeout = min(LOOP_TICK, self.monitor.next_wakeup(now))
        if self.balance is not None and not self.stopping:
            timeout = min(timeout, self.balance.watch.next_look(now) - now)
        if self.stopping and self.workers and now < self.stop_deadline:
            # Wake for the SIGKILL on time; after it, SIGCHLD wakes the loop (no spinning).
            timeout = min(timeout, self.stop_deadline - now)
        return timeout

    def act_on_memory(self, now: float) -> None:
        workers = list(self.workers.values())
        sample = self.monitor.sample(now, workers)
        decisions = self.memory_policy.decide(now, sample.total, sample.master, workers)
        decisions.say(self.log)
        if self.stopping:
            return
        for handle, reason in decisions.stop:
            if not handle.stopping:
                self.log.warning(f"Worker (pid:{handle.pid}) {reason}: replacing it")
                self.stop_worker(handle, ExitCause.MEMORY)
        if decisions.workers is not None and decisions.workers != self.num_workers:
            self.set_num_workers(decisions.workers)

    def wait(self, timeout: float) -> int:
        """Read what woke the loop (signals, worker messages); how many sources did."""
        events = self.selector.select(timeout)
        for key, _ in events:
            if key.data is None:
                self.signal_queue.woken()
            elif isinstance(key.data, WorkerHandle):
                self.read_channel(key.data)
            else:
                key.data()  # a client or a listener of the views (loop_servers.py)
        return len(events)

    def read_channel(self, handle: WorkerHandle) -> None:
        messages = handle.channel.read()
        if messages is None:  # the worker closed its end: it is exiting
            self.selector.unregister(handle.channel.fd)
            handle.channel_open = False
            return
        now = time.monotonic()
        for kind, payload in messages:
            handle.last_seen = now
            if kind is Message.READY:
                handle.ready = True
            elif kind is Message.RETIRING and not handle.stopping:
                # It finishes its requests and exits by itself: start its successor now.
                handle.leaving(ExitCause.of_retirement(payload), now)
            elif kind is Message.STATS and isinstance(payload, dict):
                self.tally.add(payload.pop("tally", None), handle.tally_seen)
                queue = payload.pop("queue", None)
                if isinstance(queue, list):
                    self.monitor.add_queue_samples(queue)
                if self.reload_watch is not None:
                    self.reload_watch.watch(payload.pop("files", []))
                handle.stats = payload

    # -- signals

    def handle_chld(self) -> None:
        pass  # reap_workers runs on every pass of the loop

    def handle_hup(self) -> None:
        self.log.info("Hang up: Master")
        reloaded = load_for_hup(self.reload_config, self.log)
        if reloaded is None:
            return
        new_cfg, new_worker_class = reloaded
        for line in reload_lines(self.cfg, new_cfg):
            self.log.info(line)
        old_workers = self.num_workers
        self.cfg = new_cfg
        self.monitor.configure(new_cfg)
        self.memory_policy.configure(new_cfg)
        self.num_workers = new_cfg.workers
        self.worker_class = new_worker_class
        self.cfg.on_reload(self)
        if self.num_workers != old_workers:
            self.cfg.nworkers_changed(self, self.num_workers, old_workers)
        self.replacing = deque(
            pid
            for pid in sorted(self.workers, key=lambda p: self.workers[p].spawn_number)
            if not self.workers[pid].stopping
        )
        self.replacement = None
        self.old_stopping = None

    def handle_term(self) -> None:
        self.begin_stop(graceful=True)

    def handle_int(self) -> None:
        self.begin_stop(graceful=False)

    def handle_quit(self) -> None:
        self.begin_stop(graceful=False)

    def handle_ttin(self) -> None:
        self.set_num_workers(self.num_workers + 1)

    def handle_ttou(self) -> None:
        if self.num_workers > 1:
            self.set_num_workers(self.num_workers - 1)

    def handle_usr1(self) -> None:
        self.logs.reopen()
        self.kill_workers(signal.SIGUSR1)

    def handle_winch(self) -> None:
        if self.cfg.daemon:
            self.log.info("graceful stop of workers")
            self.set_num_workers(0)
        else:
            self.log.debug("SIGWINCH ignored. Not daemonized")

    def set_num_workers(self, count: int) -> None:
        old = self.num_workers
        self.num_workers = count
        self.cfg.nworkers_changed(self, count, old)

    # -- stopping

    def begin_stop(self, graceful: bool) -> None:
        if self.stopping and graceful:
            return  # Heroku may send TERM more than once; the first deadline stands
        now = time.monotonic()
        grace: float = self.cfg.graceful_timeout
        if not graceful:
            grace = min(grace, QUICK_STOP_GRACE)
        if self.stopping:
            # INT after TERM: quicker, never later than the graceful deadline.
            self.stop_deadline = min(self.stop_deadline, now + grace)
        else:
            self.stopping = True
            self.close_listeners()
            if self.balance is not None:
                self.balance.board.stop()  # workers drain the hand-off queues, not leave them
            self.stop_deadline = now + grace
        # The loop SIGKILLs whatever is left at stop_deadline; it ends as soon as none is left.
        self.kill_workers(signal.SIGTERM if graceful else signal.SIGQUIT)

    def close_listeners(self) -> None:
        # Unix socket files stay when a re-executed master is serving on them.
        unlink = self.reexec_pid == 0 and not is_reexec_child()
        for listener in self.listeners:
            listener.close(unlink=unlink)
        self.listeners = []

    def shutdown(self, reason: str | None) -> None:
        if self.workers:
            self.kill_workers(signal.SIGKILL)
            self.reap_workers(wait=True)
        self.close_listeners()
        self.views.tick(time.monotonic())  # a last look: systemd hears STOPPING=1 even so
        self.views.close()
        if self.reload_watch is not None:
            self.reload_watch.close()
        if self.balance is not None:
            self.balance.close()  # connections still queued (none, normally) close with it
        self.log.info("Shutting down: Master")
        if reason:
            self.log.info(f"Reason: {reason}")
        if self.pidfile is not None:
            self.pidfile.remove(self.pid)
        try:
            self.cfg.on_exit(self)
        except Exception:
            self.log.exception("on_exit hook failed")

    def shutdown_now(self) -> None:
        self.kill_workers(signal.SIGKILL)

    # -- workers

    def manage_workers(self, now: float) -> None:
        if self.replacing:
            self.continue_replacing()
            return
        active = sorted(
            (handle for handle in self.workers.values() if not handle.stopping),
            key=lambda handle: handle.spawn_number,
        )
        missing = self.num_workers - len(active)
        if missing > 0 and now >= self.spawn_not_before:
            # In a crash loop, one at a time with a growing delay; else all at once.
            for _ in range(1 if self.spawn_delay else missing):
                if not self.affordable():
                    break
                self.spawn_worker()
            self.spawn_not_before = now + self.spawn_delay
        for handle in active[: max(0, -missing)]:  # the oldest go first
            self.stop_worker(handle)

    def continue_replacing(self) -> None:
        if self.replacement is not None:
            handle = self.workers.get(self.replacement)
            if handle is None:
                # It died before it was ready: start another, and stop no old one for it.
                self.replacement = None
            elif not handle.ready:
                return  # still booting: the old worker keeps serving meanwhile
            else:
                self.replacement = None
                self.stop_next_old_worker()
        if self.old_stopping is not None and self.old_stopping in self.workers:
            return  # one at a time: the old worker must be gone before the next new one
        self.old_stopping = None
        if not self.replacing:
            return
        if not self.affordable():
            # No room for one more: let an old worker go first, then start its successor.
            if not any(h.stopping for h in self.workers.values()):
                self.stop_next_old_worker()
            return
        self.replacement = self.spawn_worker()

    def stop_next_old_worker(self) -> None:
        while self.replacing:
            old = self.workers.get(self.replacing.popleft())
            if old is not None and not old.stopping:
                self.stop_worker(old)
                self.old_stopping = old.pid
                return

    def affordable(self) -> bool:
        """One more worker fits in the memory budget (say so once when it does not)."""
        workers = list(self.workers.values())
        self.monitor.see(workers)
        monitor, policy = self.monitor, self.memory_policy
        if policy.can_afford(monitor.latest, monitor.counted, monitor.grown, workers):
            self.unaffordable_logged = False
            return True
        if not self.unaffordable_logged:
            self.unaffordable_logged = True
            self.log.warning(policy.no_room_line(monitor.quota_text(), workers, self.num_workers))
        return False

    def stop_worker(self, handle: WorkerHandle, cause: ExitCause = ExitCause.STOPPED) -> None:
        handle.leaving(cause, time.monotonic())
        self.signal_worker(handle.pid, signal.SIGTERM)

    def spawn_worker(self) -> int:
        self.spawned_count += 1
        read_fd, write_fd = os.pipe()
        worker = self.worker_class(
            self.spawned_count,
            self.pid,
            self.listeners,
            self.app,
            self.cfg,
            self.logs,
            write_fd,
            balance=self.balance,
        )
        self.cfg.pre_fork(self, worker)
        if self.balance is not None:  # claimed after the hook: a hook that raises leaks none
            worker.board_slot = self.balance.board.claim()
            if worker.board_slot is not None:
                worker.poke_fd = self.balance.watch.open(worker.board_slot)
        # Signals wait until the child has its own handlers: a TERM arriving between fork
        # and then would otherwise run the master's handler in the child, and be lost.
        signal.pthread_sigmask(signal.SIG_BLOCK, FORK_SIGNALS)
        pid = os.fork()
        if pid:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_SIGNALS)
            os.close(write_fd)
            handle = WorkerHandle(pid, self.spawned_count, MasterChannel(read_fd), time.monotonic())
            handle.worker = worker
            handle.board_slot = worker.board_slot
            if self.balance is not None and worker.board_slot is not None:
                self.balance.watch.forked(worker.board_slot)
            self.workers[pid] = handle
            self.selector.register(read_fd, selectors.EVENT_READ, handle)
            return pid
        os.close(read_fd)
        run_in_child(self, worker, self.cfg, self.log, self.become_worker)

    def become_worker(self) -> None:
        """Drop what only the master needs: its signal handlers and the other pipes."""
        self.signal_queue.uninstall()
        self.selector.close()
        for handle in self.workers.values():
            handle.channel.close()
        self.views.close_in_worker()
        if self.balance is not None:
            self.balance.watch.in_worker()

    def reap_workers(self, wait: bool = False) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, 0 if wait else os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            if pid == self.reexec_pid:
                self.reexec_pid = 0
                self.log.info("Re-executed master exited; keeping the old one")
                if self.pidfile is not None and self.cfg.pidfile:
                    self.pidfile.rename(self.cfg.pidfile)
                    self.pidfile.write(self.pid)
                continue
            handle = self.workers.pop(pid, None)
            if handle is None:
                continue
            self.forget_channel(handle)
            if self.balance is not None and handle.board_slot is not None:
                self.balance.board.release(handle.board_slot)
                self.balance.watch.close(handle.board_slot)
            self.monitor.forget(handle)
            self.report_exit(handle, status)
            if handle.worker is not None:
                try:
                    self.cfg.child_exit(self, handle.worker)
                except Exception:
                    self.log.exception("child_exit hook failed")
            if wait and not self.workers:
                return

    def forget_channel(self, handle: WorkerHandle) -> None:
        if handle.channel_open:
            # Its last words, before its exit is judged: a worker that says it retires
            # and exits at once may be reaped in the same pass of the loop.
            self.read_channel(handle)
        if handle.channel_open:
            try:
                self.selector.unregister(handle.channel.fd)
            except (KeyError, ValueError):
                pass
        handle.channel.close()

    def report_exit(self, handle: WorkerHandle, status: int) -> None:
        reloaded = bool(self.reload_watch and self.reload_watch.reloaded)  # mistakes allowed
        verdict = self.deaths.report(handle, status, self.stopping, reloaded)
        if verdict.halt is not None:
            raise HaltServer(*verdict.halt)
        self.spawn_delay = next_spawn_delay(verdict, self.spawn_delay)
        if verdict.crashed_early:
            self.log.warning(
                f"Worker crashed soon after start; next spawn in {self.spawn_delay:.1f}s"
            )

    def murder_workers(self, now: float) -> None:
        """Kill workers that stopped sending heartbeats (a hung request or a stuck loop)."""
        timeout = self.cfg.timeout
        for handle in list(self.workers.values()):
            if handle.aborted_at:
                if now - handle.aborted_at > ABORT_GRACE and not handle.killed:
                    self.kill_worker(handle, signal.SIGKILL)
                continue
            if timeout and now - handle.last_seen > timeout:
                self.log.critical(f"WORKER TIMEOUT (pid:{handle.pid}){self.views.serving(handle)}")
                handle.aborted_at = now
                handle.stop_cause = ExitCause.TIMEOUT
                self.signal_worker(handle.pid, signal.SIGABRT)
            elif not self.stopping and handle.overdue(self.cfg.graceful_timeout, now):
                handle.overstayed = True
                self.kill_worker(handle, signal.SIGKILL)

    def kill_worker(self, handle: WorkerHandle, sig: int) -> None:
        if sig == signal.SIGKILL:
            handle.killed = True
        self.signal_worker(handle.pid, sig)

    def kill_workers(self, sig: int) -> None:
        for handle in list(self.workers.values()):
            if sig in (signal.SIGTERM, signal.SIGQUIT):
                handle.stopping = True
            self.kill_worker(handle, sig)

    def signal_worker(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:  # ESRCH: it has exited already
            pass

    # -- USR2: a new master on the same sockets

    def handle_usr2(self) -> None:
        if self.reexec_pid:
            self.log.warning("USR2 signal ignored. Child exists.")
            return
        if is_reexec_child():
            self.log.warning("USR2 signal ignored. Parent exists.")
            return
        if self.pidfile is not None and self.cfg.pidfile:
            self.pidfile.rename(f"{self.cfg.pidfile}.oldbin")
        self.reexec_pid = fork_new_master(self, self.cfg, self.listeners, self.log)
