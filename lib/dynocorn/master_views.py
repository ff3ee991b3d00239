"""The master's windows on itself: the control socket (`dynocorn ctl`, `dynocorn top`) and
the opt-in /metrics endpoint, both answered from the loop (loop_servers.py), the opt-in OTLP
push (otlp_push.py), and the commands the control socket runs.

The commands act through the paths signals take: `reload` queues a HUP, `add N` and
`remove N` queue N TTINs or TTOUs (the queue keeps each one, where the kernel would merge
signals sent together), so they log and behave exactly as `kill -HUP` would. `kill SLOT`
stops that slot's worker gracefully, as a TERM to it would, and the master starts its
successor.
"""

from __future__ import annotations

import os
import selectors
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dynocorn import status
from dynocorn.control import ControlError, ControlServer, default_socket_path, private_directory
from dynocorn.metrics_endpoint import MetricsServer
from dynocorn.otlp_push import OtlpPush, resource_attributes
from dynocorn.sd_notify import Notifier, ServiceState
from dynocorn.worker_exits import HaltServer

if TYPE_CHECKING:
    from collections import deque

    from dynocorn.logs import ErrorLog
    from dynocorn.master_signals import SignalQueue
    from dynocorn.worker_handle import WorkerHandle


class Master(status.Master, Protocol):
    """What the views need of the arbiter, beyond what a snapshot reads."""

    signal_queue: SignalQueue
    log: ErrorLog
    cfg: Any
    replacing: deque[int]  # old workers a HUP still has to replace
    replacement: int | None
    stopping: bool

    def stop_worker(self, handle: WorkerHandle) -> None: ...

    def become_worker(self) -> None: ...


class MasterViews:
    def __init__(self, master: Master) -> None:
        self.master = master
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None
        self.otlp: OtlpPush | None = None
        # systemd's Type=notify (sd_notify.py); NOTIFY_SOCKET leaves the environment now,
        # before any worker is forked.
        self.service = ServiceState(Notifier.from_environ(os.environ), master.pid)

    def start(self, selector: selectors.BaseSelector) -> None:
        cfg, log = self.master.cfg, self.master.log
        if not cfg.control_socket_disable:
            path = Path(cfg.control_socket or default_socket_path(self.master.pid))
            try:
                if not cfg.control_socket:
                    private_directory(path.parent)
                self.control = ControlServer(path, cfg.control_socket_mode, self)
            except OSError as error:
                log.warning(f"No control socket at {path}: {error} (control_socket)")
            else:
                self.control.loop_server.register(selector)
                log.info(f"Control socket: {path} (dynocorn ctl, dynocorn top)")
        if cfg.metrics_bind:
            try:
                self.metrics = MetricsServer(cfg.metrics_bind, self.stats)
            except OSError as error:
                # Asked for and impossible: the server stops, as for its own bind.
                log.error(f"metrics_bind {cfg.metrics_bind!r}: cannot listen: {error}")
                raise HaltServer("Could not bind the metrics endpoint.", 1) from None
            self.metrics.loop_server.register(selector)
            log.info(f"Metrics at: {self.metrics.url}")
        if cfg.otlp_endpoint:
            master = self.master
            resource = resource_attributes(cfg, master.pid, os.environ)
            interval = cfg.otlp_interval
            self.otlp = OtlpPush(master, cfg.otlp_endpoint, interval, resource, master.started_at)
            log.info(f"OTLP metrics to: {cfg.otlp_endpoint} every {interval:g} s")

    def servers(self) -> list[Any]:
        return [view.loop_server for view in (self.control, self.metrics) if view is not None]

    def tick(self, now: float) -> None:
        """On each pass of the master's loop (at least once a second)."""
        for server in self.servers():
            server.expire(now)
        if self.otlp is not None:
            self.otlp.tick(now, self.stats)
        master = self.master
        ready = sum(1 for h in master.workers.values() if h.ready and not h.stopping)
        self.service.look(
            serving=ready >= master.num_workers,
            replacing=bool(master.replacing) or master.replacement is not None,
            stopping=master.stopping,
            workers=ready,
        )

    def close(self) -> None:
        if self.otlp is not None:
            self.otlp.close(self.stats)
            self.otlp = None
        if self.control is not None:
            self.control.close()
        if self.metrics is not None:
            self.metrics.loop_server.close()
        self.control = self.metrics = None

    def close_in_worker(self) -> None:
        for server in self.servers():
            server.close_in_worker()
        if self.otlp is not None:
            self.otlp.close_in_worker()

    # -- the commands (control.Controls)

    def serving(self, handle: WorkerHandle) -> str:
        """What the worker runs, from its scoreboard record, for a line about it (" request
        GET /path running 2.0s"), or "": a worker stuck in C code logs no stack of its own."""
        balance = self.master.balance
        if balance is None or handle.board_slot is None:
            return ""
        record = balance.board.records.read(handle.board_slot)
        if not record.running:
            return ""
        return f" request {record.method} {record.target} running {record.age:.1f}s"

    def status(self) -> dict[str, Any]:
        return status.status(self.master)

    def stats(self) -> dict[str, Any]:
        return status.stats(self.master)

    def reload(self) -> dict[str, Any]:
        self.master.signal_queue.queue(signal.SIGHUP, None)
        return {"reloading": True}

    def scale(self, change: int) -> dict[str, Any]:
        before = self.master.num_workers
        if change < 0 and before + change < 1:
            raise ControlError(f"remove {-change}: {before} workers, and at least 1 must stay")
        sig = signal.SIGTTIN if change > 0 else signal.SIGTTOU
        for _ in range(abs(change)):
            self.master.signal_queue.queue(sig, None)
        return {"previous": before, "target": before + change}

    def stop_slot(self, slot: int) -> dict[str, Any]:
        slots = self.master.monitor.slots
        slots.assign(list(self.master.workers.values()))
        for held, handle in slots.holders(list(self.master.workers.values())):
            if held == slot and not handle.stopping:
                self.master.log.info(f"Stopping worker (pid:{handle.pid}) in slot {slot}: ctl kill")
                self.master.stop_worker(handle)
                return {"slot": slot, "pid": handle.pid, "stopped_at": time.time()}
        raise ControlError(f"kill: no serving worker in slot {slot}")
