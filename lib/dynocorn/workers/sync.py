"""The sync worker: one request at a time, but no client can pin it.

How this works: one poller (epoll) watches the listening sockets and every open connection.
Readable connections are read without blocking and their bytes fed to a sans-IO parser; a
request is served once its head and its body (up to BODY_BUFFER bytes) are in, so a slow or
idle client costs a file descriptor, not the worker. `dispatch()` runs the app inline. After
a response the connection goes back to the selector (kept alive); if it already holds
another pipelined request it joins a round-robin queue, so one busy connection cannot starve
the others. Sockets block (with a timeout) only while a request is being served.

Graceful stop (TERM, max-requests, lifetime): stop accepting, answer every request already
received with `Connection: close`, close idle connections, exit. On TERM the accept backlog
is drained first, so connections the kernel already accepted are answered, not reset.

The threaded worker (gthread.py) is this loop with `dispatch()` handing requests to threads.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading
import time
from collections import deque
from typing import Any

from dynocorn.handoff import HandoffQueue
from dynocorn.http import HTTPError, Request
from dynocorn.process import drain_pipe
from dynocorn.slow_watch import (
    MARK_MASK,
    OFFLOAD_AFTER,
    unwatched,
)
from dynocorn.sockets import Listener
from dynocorn.workers.connection import Connection
from dynocorn.workers.durations import SAMPLE_EVERY_MASK, RequestDurations
from dynocorn.workers.http_worker import LOOP_TICK, RECV_SIZE, ready
from dynocorn.workers.passing import PassingWorker
from dynocorn.workers.policy import (
    Action,
    Phase,
    passable,
    refusal,
)
from dynocorn.workers.poller import Poller

ACCEPT_BATCH = 32  # connections accepted per wake-up at most
# Passed-on connections served in a row, before this worker's own ready ones, per wake-up.
HANDOFF_BATCH = 16


class SyncWorker(PassingWorker):
    name = "sync"

    def run(self) -> None:
        self.setup()
        try:
            self.serve_until_stopped()
        finally:
            # A quick stop (INT/QUIT) leaves at once: the master SIGKILLs it a moment later,
            # and that moment is for the worker_int and worker_exit hooks.
            if not self.quitting:
                self.finish_and_close()

    # -- set-up

    def setup(self) -> None:
        self.setup_http()
        self.selector = Poller()
        self.connections: dict[int, Connection] = {}
        self.queue: deque[Connection] = deque()
        self.max_connections = self.cfg.worker_connections
        self.accepting = False
        self.watching_handoff = False
        for listener in self.listeners:
            listener.sock.setblocking(False)
            if listener.sock.family != socket.AF_UNIX:
                # Linux copies it to every accepted socket: one setsockopt, not one each.
                listener.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.start_accepting()
        self.serving: Connection | None = None  # the connection whose request runs now
        # The balance of connections across workers (handoff.py), set by the offload thread.
        self.board = self.balance.board if self.balance and self.board_slot is not None else None
        self.spare = self.balance.spare if self.balance is not None else None
        self.over_share = False
        self.under_share = True  # until it weighs: an empty worker takes spare connections
        self.watching_spare = False
        self.spare_seen = False
        self.count_connections(0)  # serving from now: siblings count this worker in
        self.offload_lock = threading.Lock()
        self.durations = RequestDurations()
        # Where this worker shows the master which request it runs and how long one runs
        # before it is slow (slow_watch.py); a worker without a scoreboard slot writes to
        # memory no one reads.
        if self.board is not None and self.board_slot is not None:
            self.marks, self.slow_limits = self.board.marks, self.board.slow_after_us
            self.mark_at = self.board_slot
        else:
            self.marks, self.slow_limits, self.mark_at = unwatched(), unwatched(), 0
        self.slow_limits[self.mark_at] = int(OFFLOAD_AFTER * 1_000_000)
        self.long_requests = False  # durations.long, read on every turn of the loop
        self.turns: dict[int, float] = {}  # when each listener and queue was last taken from
        self.next_tick = 0.0
        self.next_beat = 0.0  # a heartbeat between requests served back to back: dispatch()
        # A signal (TERM) must wake the loop at once: a handler alone does not interrupt
        # select(), which Python retries, so the stop would wait for the next tick.
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        self.selector.register(self.wake_read, None)
        signal.set_wakeup_fd(self.wake_write, warn_on_full_buffer=False)
        self.start_offloading()  # last: its thread uses all of the above

    def handle_exit(self, signum: int, frame: Any) -> None:
        self.terminating = True
        super().handle_exit(signum, frame)

    def start_accepting(self) -> None:
        if not self.accepting:
            for listener in self.listeners:
                self.selector.register(listener.sock, listener, shared=True)
            self.accepting = True
            self.watch_handoff(True)

    def stop_accepting(self) -> None:
        if self.accepting:
            for listener in self.listeners:
                self.selector.unregister(listener.sock)
            self.accepting = False
            self.watch_handoff(False)
            self.watch_spare(False)

    def watch_handoff(self, watch: bool) -> None:
        """Take connections that busy siblings pass on: only while this worker could serve
        one at once (the threaded worker stops while every thread is busy)."""
        if self.handoff is None or watch == self.watching_handoff:
            return
        if watch:
            self.selector.register(self.handoff, self.handoff, shared=True)
        else:
            self.selector.unregister(self.handoff)
        self.watching_handoff = watch

    # -- the loop

    def serve_until_stopped(self) -> None:
        poll = self.selector.poll
        queue = self.queue
        queues = [q for q in (self.handoff, self.spare) if q is not None]
        now = time.monotonic()
        while self.alive:
            targets = poll(0.0 if queue else max(self.next_tick - now, 0.0))
            if self.long_requests and len(targets) > 1:
                self.serve_oldest(targets)
            else:
                for handoff in queues:
                    if handoff in targets:
                        # Connections passed on by siblings have waited longest: first.
                        self.take_handed_off_batch(handoff, HANDOFF_BATCH)
                for target in targets:
                    if type(target) is Connection:  # most of them: no call to take_turn()
                        if not target.queued:
                            self.on_readable(target)
                    elif type(target) is not HandoffQueue:  # those were taken above
                        self.take_turn(target, one_request=False)
            if queue and self.alive:
                connection = queue.popleft()
                connection.queued = False
                self.serve_next(connection)
            now = time.monotonic()
            if now >= self.next_tick:
                self.tick(now)
            if self.under_share is not self.watching_spare:
                self.watch_spare(self.under_share)

    def serve_oldest(self, targets: list[Any]) -> None:
        """Long requests: serve one, then look again, oldest first (see waiting_since()).
        A poll's whole list served in a row would keep its last connections waiting behind
        requests that arrived after theirs, here or passed on by a sibling. The listeners
        and hand-off queues take their turn among the connections: one just taken from
        goes behind the connections answered before, or a steady stream of new (or passed
        on) connections would starve this worker's own until their idle timeout."""
        turns = self.turns
        targets.sort(key=lambda target: waiting_since(target, turns))
        served = self.nr
        for target in targets:
            self.take_turn(target, one_request=True)
            if type(target) is not Connection and target is not None:
                turns[id(target)] = time.monotonic()
            if self.nr != served:
                return  # the rest are still readable at the next poll

    def take_turn(self, target: Any, one_request: bool) -> None:
        """Serve what the poller found readable: a connection, the wake-up pipe, a listener
        or a hand-off queue. `one_request`: from a listener or a queue, stop once one
        request is served (long requests, serve_oldest())."""
        if type(target) is Connection:
            if not target.queued:
                self.on_readable(target)
        elif target is None:
            self.on_wakeup()
        elif type(target) is HandoffQueue:
            self.take_handed_off_batch(target, 1 if one_request else HANDOFF_BATCH)
        else:
            self.accept(target, one_request=one_request)

    def watch_spare(self, watch: bool) -> None:
        if self.spare is None:
            return
        if watch and self.accepting:
            self.selector.register(self.spare, self.spare, shared=True)
        elif not watch and self.watching_spare:
            self.selector.unregister(self.spare)
        else:
            return
        self.watching_spare = watch

    def on_wakeup(self) -> None:
        """The wake-up pipe is readable: a signal came (or, threaded, a request is done)."""
        drain_pipe(self.wake_read)

    def tick(self, now: float) -> None:
        """Once a second: heartbeat, parent and lifetime checks, idle connections."""
        self.next_tick = now + LOOP_TICK
        self.notify()
        if self.parent_changed():
            self.log.info(f"Parent changed, shutting down: {self}")
            self.alive = False
            return
        self.check_lifetime(now)
        for connection in list(self.connections.values()):
            if self.in_use(connection):
                continue
            deadline = self.policy.deadline(connection, Phase.SERVING)
            if now <= deadline.at:
                continue
            if deadline.action is Action.CLOSE:
                if not connection.bytes_waiting():
                    self.close(connection)
            else:
                self.refuse(connection, refusal(deadline.action))

    def in_use(self, connection: Connection) -> bool:
        """Waiting in the queue (or, in the threaded worker, being served)."""
        return connection.queued

    def blocks_exit(self, connection: Connection) -> bool:
        """Whether a graceful stop must wait for this connection's request."""
        return self.in_use(connection)

    def accept(self, listener: Listener, one_request: bool = False) -> None:
        """The connections waiting in the backlog, up to ACCEPT_BATCH. With EPOLLEXCLUSIVE
        a worker that waits for work is woken for each new connection, so a busy worker
        only finds those that no idle worker was there to take; taking one per wake-up
        instead would leave them a whole round of its other requests each. But a burst of
        kept-alive connections (a router or a load test opening its pool) must not all land
        on the first worker woken: once it holds more than a sibling, it stops, and the
        rest go to the workers woken after it (or to its next look, if none was).
        `one_request`: stop once one request is served (long requests, serve_oldest())."""
        served = self.nr
        for _ in range(ACCEPT_BATCH):
            try:
                sock, peer = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.error(f"Cannot accept connections: {error.strerror}")
                    self.stop_accepting()
                return
            kept = self.adopt(sock, peer, listener.fileno())
            if not self.accepting or (kept and self.holds_more_than_a_sibling()):
                return
            if one_request and self.nr != served:
                return

    def holds_more_than_a_sibling(self) -> bool:
        board = self.board
        return board is not None and len(self.connections) > board.fewest()

    def take_handed_off(self, queue: HandoffQueue) -> bool:
        """A connection a sibling passed on, its next request unread: serve it here.
        False when the queue was empty (another worker was quicker)."""
        received = queue.receive()
        if received is None:
            return False
        self.adopt(*received)
        return True

    def take_handed_off_batch(self, queue: HandoffQueue, most: int) -> None:
        """Up to `most` of them, each served as it comes (short requests: one at a time,
        they would each wait a whole round of this worker's own connections)."""
        for _ in range(most):
            if not self.accepting or not self.take_handed_off(queue):
                return

    def adopt(self, sock: socket.socket, peer: Any, listener_fd: int) -> bool:
        """Whether the connection stays open (kept alive) after its first request."""
        connection = self.add_connection(sock, peer, listener_fd)
        # Clients send the request right after connecting: read and serve it now. A
        # `Connection: close` request is then answered and closed without the socket
        # ever entering epoll (two epoll_ctl calls saved per connection).
        self.on_readable(connection)
        kept = connection.fd in self.connections
        if kept and self.needs_watch(connection):
            self.selector.register(sock, connection)
        if len(self.connections) >= self.max_connections:
            self.stop_accepting()  # the rest wait in the listen backlog, not in memory
        return kept

    def needs_watch(self, connection: Connection) -> bool:
        """Whether a fresh connection goes into epoll now (not while a thread has it)."""
        return True

    def add_connection(self, sock: socket.socket, peer: Any, listener_fd: int) -> Connection:
        """Take on an accepted socket; the caller decides when it enters epoll."""
        sock.setblocking(False)
        connection = self.new_connection(sock, peer, listener_fd)
        self.connections[connection.fd] = connection
        self.count_connections(len(self.connections))
        return connection

    def on_readable(self, connection: Connection) -> None:
        try:
            data = connection.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(connection)
            return
        if not data:
            self.close(connection)
            return
        connection.last_active = time.monotonic()
        if connection.started <= 0.0:
            connection.started = connection.last_active
        try:
            connection.parser.feed(data)
        except HTTPError as error:
            self.refuse(connection, error)
            return
        requests = connection.parser.requests  # serve_next(), inlined: once per request
        if requests and (requests[0].complete or ready(requests[0])):
            self.dispatch(connection, requests.popleft())

    # -- serving

    def serve_next(self, connection: Connection) -> None:
        requests = connection.parser.requests
        if requests and ready(requests[0]):
            self.dispatch(connection, requests.popleft())

    def dispatch(self, connection: Connection, request: Request) -> None:
        """Run the request now, in this loop."""
        # Read just now (or answered just now, for a pipelined request): no clock read of
        # its own, on the path of every request.
        started = connection.last_active
        marks, at = self.marks, self.mark_at
        marks[at] = (int(started * 1000) & MARK_MASK) + 1  # slow_watch.mark(), inlined
        self.serving = connection
        try:
            keep = self.handle(connection, request)
        finally:
            marks[at] = 0
            with self.offload_lock:  # the offloader may be passing a connection on
                self.serving = None
        if connection.last_active >= self.next_beat:
            # The master's timeout is for one request: requests served in a row (a poll's
            # batch, a queue) would otherwise add up to it, with no tick between them.
            self.next_beat = connection.last_active + LOOP_TICK
            self.notify()
        if not self.nr & SAMPLE_EVERY_MASK:  # how long requests take, now and then
            self.durations.add(connection.last_active - started)  # handle() set it at the end
            self.long_requests = self.durations.long
            self.slow_limits[at] = self.durations.slow_after_us()
        self.after_request(connection, keep)

    def after_request(self, connection: Connection, keep: bool) -> None:
        if not keep:
            self.close(connection)
            return
        requests = connection.parser.requests  # (last_active: handle() set it as it ended)
        if requests and ready(requests[0]):
            connection.queued = True
            self.queue.append(connection)
        elif connection.parser.idle:
            connection.started = 0.0
            if self.over_share and self.alive and passable(connection):
                # More connections than a fair share: this one, just answered, moves to a
                # worker with fewer (the client sees nothing).
                self.over_share = False
                self.pass_on(connection, self.spare)

    def refuse(self, connection: Connection, error: HTTPError) -> None:
        """A bad request: answer its status and close; the worker goes on."""
        self.log.debug(f"Invalid request from {connection.peer}: {error.status} {error}")
        connection.refuse(error)
        self.close(connection)

    def close(self, connection: Connection) -> None:
        # By identity: a connection passed on may still be in the loop's list of ready
        # files, and its descriptor's number may belong to a new connection by then.
        if self.connections.get(connection.fd) is not connection:
            return
        del self.connections[connection.fd]
        self.count_connections(len(self.connections))
        self.selector.discard(connection.fd)
        connection.sock.close()
        if connection.queued:
            connection.queued = False
            try:
                self.queue.remove(connection)
            except ValueError:
                pass
        if not self.accepting and self.alive and len(self.connections) < self.max_connections:
            self.start_accepting()

    # -- graceful stop

    def finish_and_close(self) -> None:
        """Answer what was already received, close the rest."""
        self.stop_accepting()
        if self.terminating:
            self.take_backlog()  # closes the listeners, each right after its last accept
        for listener in self.listeners:
            listener.sock.close()
        if self.terminating:
            self.take_handed_off_on_stop()
        deadline = time.monotonic() + self.cfg.graceful_timeout
        while self.connections and time.monotonic() < deadline:
            if not self.finish_pass():
                break
            for target in self.selector.poll(0.1):
                if target is None:
                    self.on_wakeup()
                elif (
                    type(target) is Connection
                    and target.fd in self.connections
                    and not self.in_use(target)
                ):
                    self.on_readable(target)
            self.notify()
        for connection in list(self.connections.values()):
            self.close(connection)

    def finish_pass(self) -> bool:
        """Serve what is ready, close what is idle; True while something is still pending.

        An idle connection is closed once it has been quiet for the policy's linger
        (policy.py: TERM_LINGER on TERM, up to RETIRE_LINGER when retiring)."""
        pending = False
        now = time.monotonic()
        linger = self.policy.idle_limit(self.phase(), fresh=False)
        for connection in list(self.connections.values()):
            if connection.fd not in self.connections:
                continue
            if self.in_use(connection) and not connection.queued:
                pending = pending or self.blocks_exit(connection)
                continue
            if connection.queued:
                connection.queued = False
                self.queue.remove(connection)
            if not connection.parser.requests and connection.parser.idle:
                self.on_readable(connection)  # bytes may have arrived already
            if connection.fd in self.connections:
                self.serve_next(connection)
            if connection.fd not in self.connections:
                continue
            if self.in_use(connection):
                pending = True
            elif connection.parser.idle and not connection.parser.requests:
                if now - connection.last_active >= linger:
                    self.close(connection)
                else:
                    pending = True
            else:
                pending = True  # a request is half received: give it until the deadline
        return pending

    def take_backlog(self) -> None:
        """On TERM: the connections the kernel accepted are answered, not reset.

        Each listener is closed at once after the accept that found its backlog empty: a
        connection whose handshake the kernel completes between that accept and the last
        close of the listening socket (in whichever process closes it last) is reset, and
        nothing in user space closes that window; anything done in it (another system
        call, a preemption on a busy machine) only makes it longer."""
        for listener in self.listeners:
            listener_fd = listener.fileno()
            while True:
                try:
                    sock, peer = listener.sock.accept()
                except OSError:
                    break
                self.selector.register(sock, self.add_connection(sock, peer, listener_fd))
            listener.sock.close()

    def take_handed_off_on_stop(self) -> None:
        """When the whole server stops, the connections in the hand-off queues are
        answered too (whichever worker comes first takes them)."""
        if self.balance is None or not self.balance.board.stopping:
            return  # only this worker stops (HUP, TTOU): the others take the queues
        for queue in (self.handoff, self.spare):
            while queue is not None and (received := queue.receive()) is not None:
                sock, peer, listener_fd = received
                self.selector.register(sock, self.add_connection(sock, peer, listener_fd))


def waiting_since(target: Any, turns: dict[int, float]) -> float:
    """When a readable connection's client last heard from us: the one answered longest ago
    has most likely waited longest for its next request. epoll's own order is no guide:
    a connection reported once goes back to the end of its ready list at once (level
    triggered), before its client has even read the response, so it overtakes
    connections whose requests came in since. A listener or hand-off queue counts from
    its last turn (`turns`, by id), the wake-up pipe goes first."""
    return target.last_active if type(target) is Connection else turns.get(id(target), 0.0)
