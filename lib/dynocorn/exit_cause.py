"""Why a worker ended, as a value the metrics count by (recycles by cause).

A module of its own, at the bottom of the layers: a worker names the cause when it retires
(workers/base.py), the master records it on the worker's handle (worker_handle.py) and
judges every exit with it (worker_exits.py, which re-exports it).
"""

from __future__ import annotations

import enum


class ExitCause(enum.Enum):
    MAX_REQUESTS = "max_requests"  # the worker retired after max_requests
    LIFETIME = "lifetime"  # the worker retired after max_worker_lifetime
    MEMORY = "memory"  # max_worker_memory (the worker), or the memory budget (the master)
    TIMEOUT = "timeout"  # a request ran past `timeout` (SIGABRT, then SIGKILL)
    CRASH = "crash"  # an exit code other than 0, or a fault signal, unasked for
    OOM = "oom"  # SIGKILL by the kernel's OOM killer
    KILLED = "killed"  # SIGKILL or another signal from another process
    STOPPED = "stopped"  # asked to stop by the master: shutdown, HUP, TTOU, scale down

    @classmethod
    def of_retirement(cls, reason: str | None) -> ExitCause:
        """The cause a retiring worker gave over its channel. A bare `x`, or a reason this
        master does not know, is counted as a stop: the worker left, for no reason given."""
        try:
            return cls(reason)
        except ValueError:
            return cls.STOPPED
