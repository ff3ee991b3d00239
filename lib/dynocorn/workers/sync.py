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
import time
from collections import deque
from typing import Any

from dynocorn.http import HTTPError, Request, RequestTimeout
from dynocorn.sockets import Listener
from dynocorn.workers.connection import Connection
from dynocorn.workers.http_worker import HttpWorker
from dynocorn.workers.poller import Poller

RECV_SIZE = 65536
BODY_BUFFER = 65536  # bodies up to this are read before the app is called
ACCEPT_BATCH = 32  # connections accepted per wake-up, so siblings get their share
NEW_CONNECTION_GRACE = 5.0  # seconds a new connection may take to send its first byte
HEAD_TIMEOUT = 30.0  # seconds from a request's first byte to its complete head
LOOP_TICK = 1.0
RETIRE_LINGER = 5.0  # seconds a retiring worker keeps idle kept-alive connections
TERM_LINGER = 0.2  # seconds of quiet before a stopping worker closes an idle connection


class SyncWorker(HttpWorker):
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
        self.terminating = False
        self.max_connections = self.cfg.worker_connections
        self.accepting = False
        for listener in self.listeners:
            listener.sock.setblocking(False)
            if listener.sock.family != socket.AF_UNIX:
                # Linux copies it to every accepted socket: one setsockopt, not one each.
                listener.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.start_accepting()
        self.next_tick = 0.0
        # A signal (TERM) must wake the loop at once: a handler alone does not interrupt
        # select(), which Python retries, so the stop would wait for the next tick.
        self.wake_read, self.wake_write = os.pipe()
        os.set_blocking(self.wake_read, False)
        os.set_blocking(self.wake_write, False)
        self.selector.register(self.wake_read, None)
        signal.set_wakeup_fd(self.wake_write, warn_on_full_buffer=False)

    def handle_exit(self, signum: int, frame: Any) -> None:
        self.terminating = True
        super().handle_exit(signum, frame)

    def start_accepting(self) -> None:
        if not self.accepting:
            for listener in self.listeners:
                self.selector.register(listener.sock, listener)
            self.accepting = True

    def stop_accepting(self) -> None:
        if self.accepting:
            for listener in self.listeners:
                self.selector.unregister(listener.sock)
            self.accepting = False

    # -- the loop

    def serve_until_stopped(self) -> None:
        poll = self.selector.poll
        queue = self.queue
        while self.alive:
            for target in poll(0 if queue else LOOP_TICK):
                if type(target) is Connection:
                    if not target.queued:
                        self.on_readable(target)
                elif target is None:
                    self.on_wakeup()
                else:
                    self.accept(target)
            if queue and self.alive:
                connection = queue.popleft()
                connection.queued = False
                self.serve_next(connection)
            now = time.monotonic()
            if now >= self.next_tick:
                self.tick(now)

    def on_wakeup(self) -> None:
        """The wake-up pipe is readable: a signal came (or, threaded, a request is done)."""
        try:
            while os.read(self.wake_read, 4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

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
            if connection.parser.idle:
                # Between requests: the keep-alive timeout. Before the first request: a
                # little longer, for clients that connect ahead of need.
                limit = self.keepalive
                if connection.started < 0.0:
                    limit = max(limit, NEW_CONNECTION_GRACE)
                if now - connection.last_active > limit:
                    self.close(connection)
            elif connection.started > 0.0 and now - connection.started > HEAD_TIMEOUT:
                self.refuse(connection, RequestTimeout("request not received in time"))
            elif now - connection.last_active > self.io_timeout:
                self.refuse(connection, RequestTimeout("request body stalled"))

    def in_use(self, connection: Connection) -> bool:
        """Waiting in the queue (or, in the threaded worker, being served)."""
        return connection.queued

    def blocks_exit(self, connection: Connection) -> bool:
        """Whether a graceful stop must wait for this connection's request."""
        return self.in_use(connection)

    def accept(self, listener: Listener) -> None:
        listener_fd = listener.fileno()
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
            connection = self.add_connection(sock, peer, listener_fd)
            # Clients send the request right after connecting: read and serve it now. A
            # `Connection: close` request is then answered and closed without the socket
            # ever entering epoll (two epoll_ctl calls saved per connection).
            self.on_readable(connection)
            if connection.fd in self.connections and self.needs_watch(connection):
                self.selector.register(sock, connection)
            if len(self.connections) >= self.max_connections:
                self.stop_accepting()  # the rest wait in the listen backlog, not in memory
                return

    def needs_watch(self, connection: Connection) -> bool:
        """Whether a fresh connection goes into epoll now (not while a thread has it)."""
        return True

    def add_connection(self, sock: socket.socket, peer: Any, listener_fd: int) -> Connection:
        """Take on an accepted socket; the caller decides when it enters epoll."""
        sock.setblocking(False)
        connection = self.new_connection(sock, peer, listener_fd)
        self.connections[connection.fd] = connection
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
        keep = self.handle(connection, request)
        self.after_request(connection, keep)

    def after_request(self, connection: Connection, keep: bool) -> None:
        if not keep:
            self.close(connection)
            return
        connection.last_active = time.monotonic()
        requests = connection.parser.requests
        if requests and ready(requests[0]):
            connection.queued = True
            self.queue.append(connection)
        elif connection.parser.idle:
            connection.started = 0.0

    def refuse(self, connection: Connection, error: HTTPError) -> None:
        """A bad request: answer its status and close; the worker goes on."""
        self.log.debug(f"Invalid request from {connection.peer}: {error.status} {error}")
        connection.refuse(error)
        self.close(connection)

    def close(self, connection: Connection) -> None:
        if self.connections.pop(connection.fd, None) is None:
            return
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
        if self.terminating:
            self.take_backlog()
        self.stop_accepting()
        for listener in self.listeners:
            listener.sock.close()
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

        An idle connection is closed only once it has been quiet for a moment: a client in
        the middle of a burst sends its next request within milliseconds of an answer, and
        closing under it would lose that request. Whatever arrives meanwhile is answered
        with `Connection: close`. On TERM the moment is short (TERM_LINGER), so stopping
        stays quick; retiring (max-requests, lifetime) waits up to the connection's own
        keep-alive timeout, at most RETIRE_LINGER (its successor already runs, and two
        processes cost memory).
        """
        pending = False
        now = time.monotonic()
        linger = TERM_LINGER if self.terminating else RETIRE_LINGER
        linger = min(self.keepalive, linger)
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
        for listener in self.listeners:
            listener_fd = listener.fileno()
            while True:
                try:
                    sock, peer = listener.sock.accept()
                except OSError:
                    break
                self.selector.register(sock, self.add_connection(sock, peer, listener_fd))


def ready(request: Request) -> bool:
    """Serve once the body is in, or once enough is buffered that the app should stream it."""
    return request.complete or request.expect_continue or len(request.body) >= BODY_BUFFER
