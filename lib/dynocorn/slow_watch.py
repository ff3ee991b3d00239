"""Which sync worker is stuck in a slow request: the master looks, the worker acts.

A sync worker runs the app in its loop, so while a request runs, nothing in the loop can
notice the requests arriving on its other connections; a thread of the worker passes them
to the hand-off queue (handoff.py). That thread must not wake on its own every few
milliseconds to ask: each wake-up takes the GIL from the loop, and on a busy machine the
loop then waits for the scheduler to run the thread (hello-world lost a tenth of its
throughput to 200 wake-ups a second). So the master looks instead, in its own process:
each sync worker writes, in the scoreboard, when the request it runs started (0 between
requests) and how long a request runs before it counts as slow; the master, every
LOOK_EVERY while two workers or more serve, finds the workers whose request has run that
long and writes a byte to the worker's pipe. The worker's thread sleeps on that pipe and
wakes only then. The master's look is a few reads of shared memory, in a loop that wakes
for it alone (arbiter.py).

The pipe is made for each worker before its fork: the master keeps the writing end, the
worker the reading end, and each closes the other's (a worker also closes the writing ends
of its siblings, which it inherits).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # handoff.py makes a SlowWatch beside its Scoreboard
    from dynocorn.scoreboard import Scoreboard

# Moving a connection to another worker (handoff.py). A request running this long (sync), or
# a hub held this long (gevent), makes its worker pass on the connections whose next request
# has arrived meanwhile; shorter ones do not: a worker making progress serves its own (the
# fair share of connections keeps that even), and passing costs system calls and GIL
# hand-overs. A gthread request that waited this long for a thread is passed on.
OFFLOAD_AFTER = 0.010
OFFLOAD_TICK = 0.001
# How often a worker looks after the balance by itself: the sync worker's thread weighing
# an uneven share, gthread's loop, gevent's thread watching its hub. Each look of a thread
# takes the GIL from the loop, so no more often than this.
OFFLOAD_IDLE_TICK = 0.005

# A request's mark: the millisecond it started (CLOCK_MONOTONIC, the same clock in every
# process), wrapped to fit an int32, plus 1; 0 between requests.
MARK_MASK = 0x3FFFFFFF


def mark(started: float) -> int:
    """The mark of a request started at `started` (time.monotonic())."""
    return (int(started * 1000) & MARK_MASK) + 1


def unwatched() -> memoryview:
    """Where a worker without a scoreboard slot writes its marks: memory no one reads."""
    return memoryview(bytearray(4)).cast("i")


def running_for(mark: int, now: float) -> float:
    """How long (seconds) the request with this mark has run at `now`."""
    return ((int(now * 1000) - (mark - 1)) & MARK_MASK) / 1000


LOOK_EVERY = 0.005  # seconds between the master's looks while a worker runs a request
LOOK_IDLE = 0.010  # and while none does: a request seen late is still timed from its start
FREE_SIBLING_LIMIT_US = int(OFFLOAD_AFTER * 1_000_000)


@dataclass
class SlowWatch:
    board: Scoreboard
    # slot -> (reading end, writing end); -1 for an end this process has closed.
    pipes: dict[int, tuple[int, int]] = field(default_factory=dict)
    # slot -> (the mark of the request last poked about, when), in the master.
    poked: dict[int, tuple[int, float]] = field(default_factory=dict)
    next_look_at: float = 0.0

    # -- in the master, around a worker's fork

    def open(self, slot: int) -> int:
        """A fresh pipe for the worker about to be forked into `slot`: its reading end."""
        self.close(slot)
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)  # the worker empties it after each wake-up
        os.set_blocking(write_end, False)  # a worker that does not read loses pokes only
        self.pipes[slot] = (read_end, write_end)
        return read_end

    def forked(self, slot: int) -> None:
        """In the master, after the fork: the reading end is the worker's."""
        read_end, write_end = self.pipes[slot]
        os.close(read_end)
        self.pipes[slot] = (-1, write_end)

    def in_worker(self) -> None:
        """In a worker, after the fork: drop every writing end (its own and its siblings')."""
        for slot, (read_end, write_end) in list(self.pipes.items()):
            if write_end >= 0:
                os.close(write_end)
            self.pipes[slot] = (read_end, -1)

    def close(self, slot: int) -> None:
        """The worker in `slot` is gone (or the server stops)."""
        for end in self.pipes.pop(slot, (-1, -1)):
            if end >= 0:
                os.close(end)
        self.poked.pop(slot, None)

    def close_all(self) -> None:
        for slot in list(self.pipes):
            self.close(slot)

    # -- in the master, in its loop

    def next_look(self, now: float) -> float:
        """When to look next: never while fewer than two workers serve (no one to pass a
        connection to)."""
        if not self.board.has_company():
            return float("inf")
        return max(self.next_look_at, now)

    def look(self, now: float) -> None:
        """Poke each worker whose request has run its slow_after (and again after as long
        again, while it runs on), or OFFLOAD_AFTER when a free sibling holds two fewer."""
        if now < self.next_look(now):
            return
        board = self.board
        marks, limits = board.marks, board.slow_after_us
        free_holds: int | None = None  # read once, and only when some request runs
        running = False
        for slot, (_, write_end) in self.pipes.items():
            mark = marks[slot]
            if mark == 0 or write_end < 0:
                continue
            running = True
            if free_holds is None:
                free_holds = board.fewest_between_requests()
            poked_mark, poked_at = self.poked.get(slot, (0, 0.0))
            waited = now - poked_at if poked_mark == mark else running_for(mark, now)
            limit = limits[slot]
            if board.held(slot) - free_holds >= 2:
                # A free sibling holds fewer: a request that has run OFFLOAD_AFTER is slow
                # enough, whatever this worker's own limit (its typical request may be
                # longer), when moving its waiting connections there evens out the split
                # (a burst of new connections all taken by one worker, typically). Not
                # between even workers: moving one would only unbalance them.
                limit = min(limit, FREE_SIBLING_LIMIT_US)
            if 0 < limit <= waited * 1e6:
                self.poked[slot] = (mark, now)
                try:
                    os.write(write_end, b"!")
                except OSError:
                    pass  # full (the worker has not read the last ones) or gone
        self.next_look_at = now + (LOOK_EVERY if running else LOOK_IDLE)
