"""The sync loop's part in the balance across workers (handoff.py): while the loop runs the
app, a thread of the worker passes on the connections whose next request has arrived, when
the master says the request has run slow (slow_watch.py), and weighs this worker's share of
the connections against its siblings'. The loop itself (sync.py) takes what siblings pass on.
"""

from __future__ import annotations

import os
import select
import threading
import time
from typing import TYPE_CHECKING, Any

from dynocorn.handoff import HandoffQueue, weigh_share
from dynocorn.process import drain_pipe
from dynocorn.slow_watch import OFFLOAD_IDLE_TICK, running_for
from dynocorn.workers.connection import Connection
from dynocorn.workers.http_worker import HttpWorker
from dynocorn.workers.policy import passable

if TYPE_CHECKING:
    from dynocorn.scoreboard import Scoreboard
    from dynocorn.workers.durations import RequestDurations
    from dynocorn.workers.poller import Poller

# How often the offload thread weighs this worker's share once the split is even.
WEIGH_SETTLED = 0.050


class PassingWorker(HttpWorker):
    """What the sync loop (SyncWorker) sets up and this part reads."""

    selector: Poller
    connections: dict[int, Connection]
    serving: Connection | None  # the connection whose request runs now
    offload_lock: threading.Lock
    board: Scoreboard | None
    spare: HandoffQueue | None
    marks: Any  # the scoreboard's marks (memoryview), or memory no one reads
    mark_at: int
    durations: RequestDurations
    over_share: bool
    under_share: bool
    spare_seen: bool
    wake_write: int

    def close(self, connection: Connection) -> None:
        raise NotImplementedError  # the loop's

    def start_offloading(self) -> None:
        """A thread that, while this loop runs a slow request, passes the connections whose
        next request has arrived to the hand-off queue, where an idle sibling takes them.
        The loop itself cannot: it is inside the app."""
        if self.handoff is None:
            return
        threading.Thread(target=self.offload_loop, name="dynocorn-offload", daemon=True).start()

    def offload_loop(self) -> None:
        """Sleeps on the master's pipe (slow_watch.py), which wakes it when this loop's
        request has run slow: the connections waiting behind it are passed on. In between,
        it weighs this worker's share of the connections: often while the split is uneven,
        seldom once it is even (every wake-up takes the GIL from the loop)."""
        watched = [self.poke_fd] if self.poke_fd is not None else []
        settled = False
        while self.alive:
            woken, _, _ = select.select(
                watched, [], [], WEIGH_SETTLED if settled else OFFLOAD_IDLE_TICK
            )
            if woken:
                drain_pipe(woken[0])
                # A slow request: its neighbours go to a free worker, if there is one (TTIN
                # may add one; TTOU may have left this worker alone).
                if self.has_siblings():
                    self.offload_waiting()
            if self.board is not None:
                # Also when alone: a connection a sibling passed to the spare queue just
                # before TTOU stopped it is this worker's to take (stranded, see below).
                settled = self.weigh_share()

    def offload_waiting(self) -> None:
        """In the offload thread, while the loop is inside the app: pass on each connection
        whose next request has arrived."""
        with self.offload_lock:
            serving = self.serving
            if serving is None or not self.alive:
                return  # the loop is between requests: it serves them itself
            most = self.passes_due()
            for target in self.selector.poll(0):
                if most <= 0:
                    return
                if type(target) is Connection and target is not serving and passable(target):
                    most -= self.pass_on(target)

    def passes_due(self) -> int:
        """How many waiting connections to pass on: all of them behind a slow request; when
        the master woke this thread earlier (a free sibling holds fewer, slow_watch.py),
        only enough to even out the split."""
        running = running_for(self.marks[self.mark_at], time.monotonic())
        if self.board is None or running >= self.durations.slow_after():
            return len(self.connections)
        return (len(self.connections) - self.board.fewest()) // 2

    def pass_on(self, connection: Connection, queue: HandoffQueue | None = None) -> bool:
        """To the `waiting` queue (by default) or the `spare` one; False (and it stays
        here) when the queue is full."""
        queue = queue or self.handoff
        assert queue is not None
        if not queue.send(connection.sock, connection.listener_fd):
            return False
        self.close(connection)  # our copy: the connection lives on in the queue
        return True

    def weigh_share(self) -> bool:
        """In the offload thread: whether this worker holds more connections than its fair
        share (the loop passes one on) or fewer (it takes spare ones). True when neither."""
        assert self.board is not None and self.spare is not None
        weighing = weigh_share(self.board, self.spare, len(self.connections), self.spare_seen)
        self.over_share, self.spare_seen = weighing.over, weighing.spare_seen
        if weighing.under != self.under_share:
            self.under_share = weighing.under
            try:
                os.write(self.wake_write, b"x")  # the loop (un)watches the spare queue
            except OSError:
                pass
        return weighing.settled
