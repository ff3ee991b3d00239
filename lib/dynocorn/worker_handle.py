"""The master's record of a worker: not the worker itself (that lives in another process)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dynocorn.channel import MasterChannel
from dynocorn.metrics.memory import ProcessMemory

if TYPE_CHECKING:
    from dynocorn.workers.base import Worker


@dataclass(eq=False)
class WorkerHandle:
    pid: int
    age: int  # spawn order: the oldest are stopped first
    channel: MasterChannel
    spawned_at: float
    last_seen: float = 0.0  # last message over the channel (monotonic)
    ready: bool = False  # the app is loaded and the worker accepts connections
    stopping: bool = False  # told to stop, or retiring by itself: not counted as capacity
    stop_requested_at: float | None = None
    aborted_at: float | None = None  # SIGABRT sent on timeout
    killed: bool = False  # SIGKILL sent by us (not the kernel's OOM killer)
    channel_open: bool = True
    stats: dict[str, Any] = field(default_factory=dict)  # the worker's last report
    memory: ProcessMemory | None = None  # the master's last sample of it
    worker: Worker | None = None  # the object the hooks were given before the fork
    board_slot: int | None = None  # its slot in the scoreboard (handoff.py)

    def __post_init__(self) -> None:
        self.last_seen = self.spawned_at

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
