"""How busy each worker is, in memory the master shares before forking: a read of a few
ints tells a worker (or the master) which sibling holds fewest connections, which one runs
a request now, and whether the whole server is stopping. handoff.py moves connections by it;
slow_watch.py finds the slow requests in it.
"""

from __future__ import annotations

import mmap
import struct
import time
from typing import NamedTuple

FREE = 2**31 - 1  # a scoreboard slot no worker holds
BOOTING = FREE - 1  # a slot whose worker is not serving yet: it counts as no worker

# Per slot, what its worker serves now (for `dynocorn ctl status`), 128 bytes: when its
# latest request began (time.monotonic(): one clock for every process on the machine), how
# many requests it has begun, the first bytes of that request's head (its request line,
# then headers: a reader stops at the line's end), and how many it has ended. Begun minus
# ended is how many it runs now (several under gthread or gevent).
RECORD_SIZE = 128
LINE_SIZE = 112
BEGIN = struct.Struct(f"=dI{LINE_SIZE}s")  # written as a request begins: one call
ENDED_AT = BEGIN.size  # the uint32 written as a request ends
RECORD = struct.Struct(f"=dI{LINE_SIZE}sI")


class NowServing(NamedTuple):
    """A worker's record, as read by the master."""

    running: int  # requests it runs now
    ended: int  # requests it has finished since it started (its record is new at each fork)
    method: str  # of its latest request ("" before the first)
    target: str
    age: float  # seconds since its latest request began


class RequestRecords:
    """Each worker slot's record (RECORD), in memory shared before the fork.

    Under gthread, two threads may write a slot's counts in an order other than they took
    them: the record then counts one request more or fewer, until the next request writes
    it again. It is a view for people, and a lock on every request would cost more."""

    def __init__(self, slots: int) -> None:
        self.memory = mmap.mmap(-1, RECORD_SIZE * slots)
        self.ends = memoryview(self.memory).cast("I")  # index slot * 32 + 31: ended

    def clear(self, slot: int) -> None:
        start = slot * RECORD_SIZE
        self.memory[start : start + RECORD_SIZE] = bytes(RECORD_SIZE)

    def read(self, slot: int) -> NowServing:
        started, begun, head, ended = RECORD.unpack_from(self.memory, slot * RECORD_SIZE)
        line = head.partition(b"\r\n")[0].partition(b"\0")[0].decode("latin-1")
        method, _, rest = line.partition(" ")
        target = rest.rpartition(" ")[0] if " " in rest else rest
        running = max(0, begun - ended)
        age = time.monotonic() - started if started else 0.0
        return NowServing(running, ended, method, target, age)


class Scoreboard:
    """How many connections each worker holds, in memory the master shares before forking.

    One int32 per worker slot: FREE (the largest int32, so that the emptiest worker is a plain
    minimum) when no worker holds the slot. The master claims a slot
    for each worker it forks and releases it when the worker is reaped; each worker writes
    only its own slot, and reads the others to know its fair share."""

    def __init__(self, slots: int) -> None:
        # Per slot: its connections, then the request it runs (`marks`) and how long one
        # runs before it is slow (`slow_after_us`, see SlowWatch). Then two ints: whether
        # the whole server is stopping (TERM to all), and one past the highest slot ever
        # claimed, so that readers scan only those.
        self._memory = mmap.mmap(-1, 4 * (3 * slots + 2))
        self._all = memoryview(self._memory).cast("i")
        self._counts = self._all[:slots]
        self.marks = self._all[slots : 2 * slots]
        self.slow_after_us = self._all[2 * slots : 3 * slots]
        self._stopping_at = 3 * slots
        self._used_at = 3 * slots + 1
        for slot in range(slots):
            self._counts[slot] = FREE
        self.records = RequestRecords(slots)

    @property
    def stopping(self) -> bool:
        """The master is stopping every worker: the hand-off queues are drained, not left."""
        return bool(self._all[self._stopping_at])

    def stop(self) -> None:
        """In the master, before it tells the workers to stop."""
        self._all[self._stopping_at] = 1

    def claim(self) -> int | None:
        """In the master: a free slot for a new worker, or None when all are taken."""
        for slot, count in enumerate(self._counts):
            if count == FREE:
                self._counts[slot] = BOOTING
                self.marks[slot] = 0
                self.records.clear(slot)
                self._all[self._used_at] = max(self._all[self._used_at], slot + 1)
                return slot
        return None

    def release(self, slot: int) -> None:
        self._counts[slot] = FREE

    def set(self, slot: int, connections: int) -> None:
        self._counts[slot] = connections

    def held(self, slot: int) -> int:
        """The connections the worker in `slot` holds (BOOTING or FREE: no serving worker)."""
        return self._counts[slot]

    def fewest_between_requests(self) -> int:
        """The fewest connections held by a serving worker that runs no request now (a
        sync worker between requests: it could serve a waiting one at once); BOOTING when
        every worker runs one."""
        used = self._all[self._used_at]
        counts, marks = self._counts[:used], self.marks[:used]
        free = (c for c, m in zip(counts, marks, strict=True) if m == 0 and c < BOOTING)
        return min(free, default=BOOTING)

    def fewest(self) -> int:
        """The fewest connections a worker holds (a read of a few ints: the accept path asks
        it for each kept-alive connection it takes)."""
        fewest = min(self._counts[: self._all[self._used_at]], default=FREE)
        return 0 if fewest >= BOOTING else fewest

    def live_counts(self) -> list[int]:
        """The connections each serving worker holds."""
        return [count for count in self._counts[: self._all[self._used_at]] if count < BOOTING]

    def has_company(self) -> bool:
        """Whether two workers or more serve: someone to pass a connection to."""
        return len(self.live_counts()) > 1

    def fair_share(self) -> int:
        """The most connections a worker should hold: all of them spread evenly."""
        live = self.live_counts()
        return -(-sum(live) // len(live)) if live else 0
