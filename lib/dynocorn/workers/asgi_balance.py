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

Not done: a request behind a held loop (the app computing in an async handler) is not
moved while the loop is held; see docs/balance.md for why no safe design was found yet.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Protocol

from dynocorn.handoff import HandoffQueue, weigh_share
from dynocorn.http import RequestParser
from dynocorn.scoreboard import Scoreboard
from dynocorn.slow_watch import OFFLOAD_IDLE_TICK
from dynocorn.workers.http_worker import HttpWorker
from dynocorn.workers.passing import WEIGH_SETTLED


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
    over_share = False  # read after every answer: pass_spare() is called only when True
    under_share = True  # until it weighs: an empty worker takes spare connections
    spare_seen = False
    taking = False  # the listeners are watched: the queues may be too
    watched: frozenset[HandoffQueue] = frozenset()
    weigh_timer: asyncio.TimerHandle | None = None

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
        held = len(self.connections)
        weighing = weigh_share(self.board, self.spare, held, self.spare_seen)
        self.over_share, self.spare_seen = weighing.over, weighing.spare_seen
        if weighing.under != self.under_share:
            self.under_share = weighing.under
            self.watch_queues(self.taking)
        delay = WEIGH_SETTLED if weighing.settled else OFFLOAD_IDLE_TICK
        self.weigh_timer = self.loop.call_later(delay, self.weigh)

    def pass_spare(self, connection: AsgiConnection) -> None:
        """Just answered, over the share: this idle connection moves to a sibling with fewer."""
        if self.alive and self.spare is not None and passable(connection):
            self.over_share = False  # weighed again before another goes
            self.pass_on(connection, self.spare)

    def pass_on(self, connection: AsgiConnection, queue: HandoffQueue) -> bool:
        """False (it stays here) when the queue is full."""
        transport = connection.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if transport is None or sock is None:
            return False
        if not queue.send_fd(sock.fileno(), connection.listener_fd):
            return False
        # The queue holds its own reference to the socket: closing ours ends nothing.
        transport.abort()
        self.connection_ended(connection)  # now, not at connection_lost(): the count is due
        return True

    # -- stopping

    async def stop_balancing(self) -> None:
        """As the worker stops (listeners no longer watched): on TERM the backlog is answered,
        not reset, and when the whole server stops, the connections in the queues too."""
        if self.weigh_timer is not None:
            self.weigh_timer.cancel()
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
