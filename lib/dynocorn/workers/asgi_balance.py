"""The ASGI worker's part in the balance across workers (handoff.py, docs/balance.md).

Taking: while the worker has room (`worker_connections`), its loop watches the hand-off
queues as it watches the listeners (`loop.add_reader`): `waiting` always, `spare` while it
holds fewer connections than its fair share (handoff.weigh_share(), the policy every class
follows, weighed on a timer as often as the sync worker's thread weighs it). A connection
taken from a queue becomes an AsgiConnection as an accepted one does. The worker writes the
connections it holds in the scoreboard, so its siblings' fair share counts it.

Passing: a worker over its share (and two above the emptiest) passes one connection, just
answered and idle, to `spare`: nothing of it is unread (the parser holds no bytes) or
unsent (the transport's write buffer is empty), so the socket alone carries it. The
descriptor goes into the queue as SCM_RIGHTS, which gives the queue its own reference to
the socket; the transport is then aborted, which closes only this process's descriptor:
the TCP connection lives on in the queue, and the client sees nothing.

A request behind a held loop (the app computing in an async handler): a worker whose loop
timer fires later than the slow limit has been held, and parks its idle connections for a
while (asgi_parking.py), so that a thread can pass a request arriving during the next hold.
Only there: elsewhere nothing per request changes.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any, Protocol

from dynocorn.handoff import HandoffQueue, weigh_share
from dynocorn.http import RequestParser
from dynocorn.scoreboard import Scoreboard
from dynocorn.slow_watch import OFFLOAD_IDLE_TICK
from dynocorn.workers.asgi_parking import ParkingLot
from dynocorn.workers.durations import DURATION_SAMPLES, RequestDurations
from dynocorn.workers.http_worker import HttpWorker
from dynocorn.workers.passing import WEIGH_SETTLED

# A worker parks its idle connections until its loop has not been held for this long.
PARKING_QUIET = 2.0


class AsgiConnection(Protocol):
    """What this part reads of asgi.py's AsgiConnection (which imports this module)."""

    @property
    def transport(self) -> asyncio.Transport | None: ...
    @property
    def task(self) -> asyncio.Task[None] | None: ...
    @property
    def websocket(self) -> object: ...
    @property
    def parser(self) -> RequestParser: ...
    @property
    def listener_fd(self) -> int: ...
    @property
    def eof(self) -> bool: ...
    @property
    def disconnected(self) -> bool: ...


class BalancedAsgi(HttpWorker):
    """What AsgiWorker (asgi.py) adds to take part in the balance; asgi.py calls the hooks:
    watch_queues() as it starts and stops accepting, connection_began() and
    connection_ended() as connections come and go, pass_spare() after an answer,
    start_balancing() once serving, stop_balancing() as it stops."""

    loop: asyncio.AbstractEventLoop
    connections: set[Any]  # asgi.py's AsgiConnection
    accept_paused: bool
    board: Scoreboard | None = None
    spare: HandoffQueue | None = None
    over_share = False  # pass one connection on after the next answer
    parking = False  # the loop was held lately: park idle connections after their answer
    after_answer = False  # over_share or parking: read after every answer
    under_share = True  # until it weighs: an empty worker takes spare connections
    spare_seen = False
    taking = False  # the listeners are watched: the queues may be too
    watched: frozenset[HandoffQueue] = frozenset()
    weigh_timer: asyncio.TimerHandle | None = None
    weigh_due = 0.0  # when the timer should fire: how late it fires says the loop was held
    held_at = 0.0  # when the loop was last seen held
    lot: ParkingLot | None = None  # made at the first hold seen
    hold_durations: RequestDurations  # how late the weigh timer fires: the typical turn

    async def connect(self, sock: socket.socket, listener_fd: int) -> None:
        raise NotImplementedError  # asgi.py's: an accepted socket into an AsgiConnection

    def start_accepting(self) -> None:
        raise NotImplementedError  # asgi.py's

    def stop_accepting(self) -> None:
        raise NotImplementedError  # asgi.py's

    # -- taking

    def start_balancing(self) -> None:
        """Once serving: count this worker in, and weigh its share from now on."""
        if self.balance is not None and self.board_slot is not None:
            self.board, self.spare = self.balance.board, self.balance.spare
            self.hold_durations = RequestDurations()
            self.watch_queues(self.taking)  # `spare` too, now that it has one
            self.weigh()
        self.count_connections(len(self.connections))

    def watch_queues(self, watch: bool) -> None:
        """Watch the queues (`spare` only while under the share) with the listeners, or not."""
        self.taking = watch
        wanted: set[HandoffQueue] = set()
        if watch and self.alive:
            if self.handoff is not None:
                wanted.add(self.handoff)
            if self.spare is not None and self.under_share:
                wanted.add(self.spare)
        for queue in self.watched - wanted:
            self.loop.remove_reader(queue.fileno())
        for queue in wanted - self.watched:
            self.loop.add_reader(queue.fileno(), self.take_passed, queue)
        self.watched = frozenset(wanted)

    def take_passed(self, queue: HandoffQueue) -> None:
        """A connection a sibling passed on (every watching worker wakes; one receives it)."""
        if len(self.connections) >= self.cfg.worker_connections:
            self.stop_accepting()  # the queues too: a sibling with room takes them
            self.accept_paused = True
            return
        received = queue.receive()
        if received is not None:
            self.adopt(received[0], received[2])

    def adopt(self, sock: socket.socket, listener_fd: int) -> asyncio.Task[None]:
        sock.setblocking(False)
        return self.loop.create_task(self.connect(sock, listener_fd))

    def connection_began(self, connection: AsgiConnection) -> None:
        self.connections.add(connection)
        self.count_connections(len(self.connections))

    def connection_ended(self, connection: AsgiConnection) -> None:
        self.connections.discard(connection)
        self.count_connections(len(self.connections))
        if self.accept_paused and self.alive:
            self.accept_paused = False
            self.start_accepting()

    # -- passing

    def weigh(self) -> None:
        """Over the fair share (pass one on after the next answer), or under it (watch
        `spare`): often while uneven, seldom once even, as the other classes weigh it."""
        self.weigh_timer = None
        if self.board is None or self.spare is None or not self.alive:
            return
        now = time.monotonic()
        self.watch_holds(now)
        held = len(self.connections)
        weighing = weigh_share(self.board, self.spare, held, self.spare_seen)
        self.over_share, self.spare_seen = weighing.over, weighing.spare_seen
        self.after_answer = self.over_share or self.parking
        if weighing.under != self.under_share:
            self.under_share = weighing.under
            self.watch_queues(self.taking)
        # The short tick while parking (the heartbeat the thread reads must be fresh), and
        # until the loop's typical turn is known (a hold is judged against it).
        measured = len(self.hold_durations.samples) >= DURATION_SAMPLES
        settled = weighing.settled and measured and not self.parking
        delay = WEIGH_SETTLED if settled else OFFLOAD_IDLE_TICK
        self.weigh_due = now + delay
        self.weigh_timer = self.loop.call_later(delay, self.weigh)

    def answered(self, connection: AsgiConnection) -> None:
        """Just answered and idle: over the share, it moves to a sibling with fewer;
        in a worker whose loop was held lately, it is parked."""
        if not (self.alive and passable(connection)):
            return
        if self.over_share and self.spare is not None:
            self.over_share = False  # weighed again before another goes
            self.after_answer = self.parking
            if self.pass_on(connection, self.spare):
                return
        if self.parking:
            self.park(connection)

    def pass_on(self, connection: AsgiConnection, queue: HandoffQueue) -> bool:
        """False (it stays here) when the queue is full."""
        transport = connection.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if transport is None or sock is None:
            return False
        if not queue.send_fd(sock.fileno(), connection.listener_fd):
            return False
        # The queue holds its own reference to the socket: closing ours ends nothing.
        self.drop(connection)
        return True

    def drop(self, connection: AsgiConnection) -> None:
        """Its socket is in a queue: close only this process's descriptor."""
        if connection.transport is not None:
            connection.transport.abort()
        self.connection_ended(connection)  # now, not at connection_lost(): the count is due

    # -- parking (asgi_parking.py)

    def watch_holds(self, now: float) -> None:
        """The weigh timer fired later than the slow limit: the loop was held. Park from
        then on, until it has not been held for PARKING_QUIET."""
        holds = self.hold_durations
        limit = holds.slow_after()  # before this one counts: one slow among fast ones
        late = now - self.weigh_due if self.weigh_due else 0.0
        if self.weigh_due:
            holds.add(late)
        if late > limit and self.has_siblings():
            self.held_at = now
            if not self.parking:
                self.start_parking(now, late)
        elif self.parking and now - self.held_at > PARKING_QUIET:
            self.stop_parking()
            quiet = f"{PARKING_QUIET:g}s"
            self.log.debug(f"Loop not held for {quiet}: connections not parked (pid:{self.pid})")
        if self.lot is not None:
            self.lot.limit, self.lot.heartbeat = limit, now

    def start_parking(self, now: float, late: float) -> None:
        if self.handoff is None:
            return
        if self.lot is None:
            self.lot = ParkingLot(self.loop, self.handoff, self.back, self.drop)
        self.parking = self.after_answer = True
        self.log.debug(f"Loop held {late * 1000:.0f} ms: idle connections parked (pid:{self.pid})")
        for connection in list(self.connections):
            if passable(connection):
                self.park(connection)

    def park(self, connection: AsgiConnection) -> None:
        transport = connection.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if self.lot is None or transport is None or sock is None:
            return
        transport.pause_reading()
        if not self.lot.park(connection, sock.fileno(), connection.listener_fd):
            transport.resume_reading()

    def back(self, connection: AsgiConnection) -> None:
        """Taken back from the lot: its transport reads again (its request, if it came)."""
        if connection.transport is not None and not connection.transport.is_closing():
            connection.transport.resume_reading()

    def unparked(self, connection: AsgiConnection) -> bool:
        """Whether it was parked (now taken back, or passed and about to be dropped)."""
        taken = self.lot.take_back(connection) if self.lot is not None else None
        if taken:
            self.back(connection)
        return taken is not None

    def stop_parking(self) -> None:
        self.parking = False
        self.after_answer = self.over_share
        if self.lot is not None:
            for connection in list(self.lot.spots):
                self.unparked(connection)

    # -- stopping

    async def stop_balancing(self) -> None:
        """As the worker stops (listeners no longer watched): on TERM the backlog is answered,
        not reset, and when the whole server stops, the connections in the queues too."""
        if self.weigh_timer is not None:
            self.weigh_timer.cancel()
        if self.lot is not None:
            self.lot.stop()  # first: nothing is passed from now on
            self.stop_parking()  # the spots left are served, or closed after the linger
            self.lot.close()
        taken: list[asyncio.Task[None]] = []
        if self.terminating:
            for listener in self.listeners:
                while True:
                    try:
                        sock, _ = listener.sock.accept()
                    except OSError:
                        break
                    taken.append(self.adopt(sock, listener.fileno()))
                # At once after the accept that found it empty: see SyncWorker.take_backlog.
                listener.sock.close()
        if self.terminating and self.balance is not None and self.balance.board.stopping:
            for queue in (self.balance.waiting, self.balance.spare):
                while (received := queue.receive()) is not None:
                    taken.append(self.adopt(received[0], received[2]))
        if taken:
            await asyncio.gather(*taken, return_exceptions=True)


def passable(connection: AsgiConnection) -> bool:
    """Between requests with nothing unread or unsent: the socket alone carries it."""
    transport = connection.transport
    return (
        transport is not None
        and connection.task is None
        and connection.websocket is None
        and not (connection.eof or connection.disconnected or transport.is_closing())
        and connection.parser.idle
        and not connection.parser.requests
        and transport.get_write_buffer_size() == 0
    )
