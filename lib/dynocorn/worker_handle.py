"""The master's record of a worker: not the worker itself (that lives in another process)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dynocorn.channel import MasterChannel
from dynocorn.exit_cause import ExitCause
from dynocorn.metrics.memory import ProcessMemory

if TYPE_CHECKING:
    from dynocorn.workers.base import Worker


@dataclass(eq=False)
class WorkerHandle:
    pid: int
    # Spawn order, counting up (bigger is younger): the oldest are stopped first. The worker
    # object has it as `age`, gunicorn's name, which hooks and custom workers read.
    spawn_number: int
    channel: MasterChannel
    spawned_at: float
    last_seen: float = 0.0  # last message over the channel (monotonic)
    ready: bool = False  # the app is loaded and the worker accepts connections
    stopping: bool = False  # told to stop, or retiring by itself: not counted as capacity
    stop_requested_at: float | None = None
    aborted_at: float | None = None  # SIGABRT sent on timeout
    killed: bool = False  # SIGKILL sent by us (not the kernel's OOM killer)
    # Our SIGKILL was for graceful_timeout, run out since it was told to stop (or retired):
    # said apart from the server's stop deadline, which may come before it is reaped.
    overstayed: bool = False
    # Why it is leaving, once the master asked it to or it said it retires (worker_exits.py
    # judges its exit with it): memory, timeout, stopped; max_requests, lifetime, memory,
    # timeout from the worker.
    stop_cause: ExitCause | None = None
    channel_open: bool = True
    stats: dict[str, Any] = field(default_factory=dict)  # the worker's last report
    # Its request totals as last reported (metrics/tally.py adds what grew since).
    tally_seen: dict[Any, list[float]] = field(default_factory=dict)
    memory: ProcessMemory | None = None  # the master's last sample of it
    worker: Worker | None = None  # the object the hooks were given before the fork
    board_slot: int | None = None  # its slot in the scoreboard (handoff.py)

    def __post_init__(self) -> None:
        self.last_seen = self.spawned_at

    def leaving(self, cause: ExitCause, now: float) -> None:
        """Told to stop, or retiring by itself, for `cause`: no longer counted as capacity."""
        self.stopping = True
        self.stop_requested_at = now
        self.stop_cause = cause

    @property
    def requests(self) -> int:
        """Requests served, as the worker last reported."""
        count = self.stats.get("requests", 0)
        return count if isinstance(count, int) else 0

    def overdue(self, graceful_timeout: float, now: float) -> bool:
        """Told to stop more than graceful_timeout ago and still alive."""
        return (
            self.stop_requested_at is not None and now - self.stop_requested_at > graceful_timeout
        )


class Slots:
    """Stable worker numbers: a worker takes the slot of the one it replaces, like puma's
    worker index, so a slot's series in a dashboard follows one place in the pool.

    A new worker takes, in order: the lowest free slot, one whose worker exited (crashed,
    recycled, stopped) or is on its way out (retiring, told to stop); else, during a HUP,
    the slot of the oldest worker of the previous generation that has no successor yet
    (HUP replaces the oldest first, and stops it once its successor is ready); else the
    lowest slot no worker holds. Slots are assigned whenever the monitor is shown the
    workers (before each spawn and at each sample), oldest first: before anything reports
    them.
    """

    def __init__(self) -> None:
        self.slot: dict[int, int] = {}  # pid -> slot
        self.generation_of: dict[int, int] = {}  # pid -> configuration generation
        self.generation = 0
        self.vacated: set[int] = set()  # slots whose worker exited, not yet taken again

    def new_generation(self) -> None:
        """A HUP: the workers there are now will each be replaced, slot by slot."""
        self.generation += 1
        self.vacated.clear()  # numbers left by a TTOU stay unused until a TTIN

    def release(self, pid: int) -> None:
        slot = self.slot.pop(pid, None)
        self.generation_of.pop(pid, None)
        if slot is not None and slot not in self.slot.values():
            self.vacated.add(slot)

    def assign(self, workers: list[WorkerHandle]) -> None:
        for handle in sorted(workers, key=lambda h: h.spawn_number):
            if handle.pid not in self.slot:
                slot = self.choose(handle, workers)
                self.slot[handle.pid] = slot
                self.generation_of[handle.pid] = self.generation
                self.vacated.discard(slot)

    def choose(self, new: WorkerHandle, workers: list[WorkerHandle]) -> int:
        slotted = [h for h in workers if h.pid in self.slot and h is not new]
        serving = {self.slot[h.pid] for h in slotted if not h.stopping}
        leaving = {self.slot[h.pid] for h in slotted if h.stopping}
        free = (self.vacated | leaving) - serving
        if free:
            return min(free)
        current = {self.slot[h.pid] for h in slotted if self.is_current(h)}
        previous = sorted(
            (h for h in slotted if not self.is_current(h) and self.slot[h.pid] not in current),
            key=lambda h: h.spawn_number,
        )
        if previous:
            return self.slot[previous[0].pid]
        held = {self.slot[h.pid] for h in slotted}
        return next(slot for slot in itertools.count(1) if slot not in held)

    def is_current(self, handle: WorkerHandle) -> bool:
        return self.generation_of.get(handle.pid) == self.generation

    def holders(self, workers: list[WorkerHandle]) -> list[tuple[int, WorkerHandle]]:
        """(slot, worker) by slot; where a worker on its way out and its successor share a
        slot, the successor (the newer) shows."""
        newest: dict[int, WorkerHandle] = {}
        for handle in workers:
            slot = self.slot.get(handle.pid)
            if slot is None:
                continue
            if slot not in newest or handle.spawn_number > newest[slot].spawn_number:
                newest[slot] = handle
        return sorted(newest.items())
