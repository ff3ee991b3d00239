"""The soft memory limit (`max_worker_memory`), checked by the worker itself after requests.

The limit is on the worker's private memory (USS). Only ``smaps_rollup`` gives USS, at the
cost of the kernel walking the worker's pages (0.3-0.5 ms for 50 MB): far too dear for every
request. RSS, from ``/proc/self/statm`` held open, costs about 0.8 µs, and bounds USS:

- USS <= RSS, so while RSS is under the limit, so is USS;
- above that, USS read once (at boot, then each time the estimate passes the limit) is
  carried forward by RSS's change since: what a leak keeps grows both alike;
- the estimate only decides when to read USS: recycling is decided on USS itself.

Pages shared with the master that the worker copies on write grow its USS and not its RSS,
so above the limit the estimate can lag behind; the master's samples (USS, every 5 s at
most) catch that slow drift, and an idle worker.

Reading statm after every request would still cost 0.8 µs a request. Far from the limit the
guard reads it every MAX_STRIDE-th request; the stride shrinks as the limit nears, by the
fastest growth per request seen lately, down to every request: a leak of 1 MB a request is
caught within a request of the limit, and a worker that does not grow pays about 50 ns a
request.
"""

from __future__ import annotations

import threading

from dynocorn.metrics.memory import RssReader, read_process_memory

MAX_STRIDE = 16  # requests between two reads of statm, far from the limit
# A worker is recycled for memory only once it has served this many requests or lived this
# long: fewer would restart workers in a storm, and an idle worker that grew past the limit
# in a few requests must still be recycled. The master's samples (memory_policy.py) follow
# the same rule.
MIN_REQUESTS_FOR_RECYCLING = 10
MIN_SECONDS_FOR_RECYCLING = 30.0


def old_enough_to_recycle(requests: int, lived: float) -> bool:
    """The minimum lifetime before memory recycling: N requests or T seconds."""
    return requests >= MIN_REQUESTS_FOR_RECYCLING or lived >= MIN_SECONDS_FOR_RECYCLING


class MemoryGuard:
    def __init__(self, limit: int, pid: int, uss: int, reader: RssReader) -> None:
        """``uss``: the worker's USS, just read (at boot)."""
        self.limit = limit
        self.pid = pid
        self.reader = reader
        # gthread calls it from several threads: one check at a time, the others skip it.
        self.lock = threading.Lock()
        self.growth = 0  # bytes per request: the fastest seen lately, halved at each check
        self.base_uss, self.base_rss = uss, reader.read()
        self.checked_rss, self.checked_at = self.base_rss, 0
        self.next_check = self.stride(limit - uss)  # the request count of the next check

    def check(self, served: int) -> int | None:
        """After ``served`` requests: the worker's USS if it is over the limit, else None.

        Sets ``next_check``: the next request when over the limit, so that the caller may
        wait for the worker to be old enough to recycle.
        """
        rss = self.reader.read()
        since = served - self.checked_at
        grew = (rss - self.checked_rss) // since if since > 0 else 0
        self.growth = max(grew, self.growth // 2)
        self.checked_rss, self.checked_at = rss, served
        estimate = min(rss, self.base_uss + rss - self.base_rss)
        if estimate > self.limit:
            memory = read_process_memory(self.pid)
            if memory is None:  # unreadable: the master's samples still see the worker
                self.next_check = served + MAX_STRIDE
                return None
            self.base_uss, self.base_rss = memory.uss, self.reader.read()
            if memory.uss > self.limit:
                self.next_check = served + 1
                return memory.uss
            estimate = memory.uss
        self.next_check = served + self.stride(self.limit - estimate)
        return None

    def stride(self, headroom: int) -> int:
        """Requests until the next check: half the headroom at the fastest growth lately."""
        if self.growth <= 0:
            return MAX_STRIDE
        return max(1, min(MAX_STRIDE, headroom // (2 * self.growth)))
