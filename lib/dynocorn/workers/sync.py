"""The sync worker: one request at a time, but no client can pin it.

How this works: one selector watches the listening sockets and every open connection.
Readable connections are read without blocking and their bytes fed to a sans-IO parser; a
request is served once its head and its body (up to BODY_BUFFER bytes) are in, so a slow or
idle client costs a file descriptor, not the worker. The app runs inline. After a response,
the connection goes back to the selector (kept alive); if it already holds another pipelined
request it joins a round-robin queue, so one busy connection cannot starve the others.
Sockets block (with a timeout) only while a request is being served: for a large body the app
reads and for a response the client is slow to take.

Graceful stop (TERM, max-requests, lifetime): stop accepting, answer every request already
received with `Connection: close`, close idle connections, exit. On TERM the accept backlog
is drained first, so connections the kernel already accepted are answered, not reset.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import sys
import time
from collections import deque
from typing import Any

from dynocorn.http import CONTINUE, HTTPError, Limits, Request, RequestParser, RequestTimeout
from dynocorn.sockets import Listener
from dynocorn.workers.base import Worker, WorkerAbort
from dynocorn.wsgi import EnvironBuilder, Input, Response, WSGISettings

RECV_SIZE = 65536
BODY_BUFFER = 65536  # bodies up to this are read before the app is called
DRAIN_LIMIT = 65536  # unread body we discard to keep a connection; beyond, we close it
ACCEPT_BATCH = 32  # connections accepted per wake-up, so siblings get their share
NEW_CONNECTION_GRACE = 5.0  # seconds a new connection may take to send its first byte
HEAD_TIMEOUT = 30.0  # seconds from a request's first byte to its complete head


class Connection:
    __slots__ = ("builder", "fd", "last_active", "parser", "peer", "queued", "sock", "started")

    def __init__(
        self, sock: socket.socket, peer: Any, parser: RequestParser, builder: EnvironBuilder
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.parser = parser
        self.builder = builder
        self.last_active = time.monotonic()
        self.started = 0.0  # when the current unfinished request's first bytes came
        self.queued = False


class SyncWorker(Worker):
    name = "sync"

    def run(self) -> None:
        self.setup()
        try:
            self.serve_until_stopped()
        finally:
            self.finish_and_close()

    # -- set-up

    def setup(self) -> None:
        cfg = self.cfg
        self.selector = selectors.DefaultSelector()
        self.connections: dict[int, Connection] = {}
        self.queue: deque[Connection] = deque()
        self.terminating = False
        self.limits = Limits(
            request_line=cfg.limit_request_line,
            fields=cfg.limit_request_fields,
            field_size=cfg.limit_request_field_size,
        )
        self.keepalive = float(cfg.keepalive)
        # A blocked send or recv gives up before the master's timeout would kill us.
        self.io_timeout = min(cfg.timeout / 2, 30.0) if cfg.timeout else 30.0
        self.max_connections = cfg.worker_connections
        self.accepting = False
        settings = WSGISettings(
            multithread=self.multithread,
            multiprocess=cfg.workers > 1,
            errors=sys.stderr,
            forwarded_allow_ips=cfg.forwarded_allow_ips,
            secure_scheme_headers=cfg.secure_scheme_headers,
            script_name=os.environ.get("SCRIPT_NAME", ""),
            sendfile=cfg.sendfile,
        )
        self.builders: dict[int, EnvironBuilder] = {}
        for listener in self.listeners:
            listener.sock.setblocking(False)
            self.builders[listener.fileno()] = EnvironBuilder(settings, _sockname(listener))
        self.start_accepting()
        self.has_pre_request = not _is_default_hook(cfg.pre_request)
        self.has_post_request = not _is_default_hook(cfg.post_request)
        self.next_tick = 0.0

    def handle_exit(self, signum: int, frame: Any) -> None:
        self.terminating = True
        super().handle_exit(signum, frame)

    def start_accepting(self) -> None:
        if not self.accepting:
            for listener in self.listeners:
                self.selector.register(listener.sock, selectors.EVENT_READ, listener)
            self.accepting = True

    def stop_accepting(self) -> None:
        if self.accepting:
            for listener in self.listeners:
                self.selector.unregister(listener.sock)
            self.accepting = False

    # -- the loop

    def serve_until_stopped(self) -> None:
        select = self.selector.select
        queue = self.queue
        while self.alive:
            for key, _ in select(0 if queue else 1.0):
                target = key.data
                if type(target) is Connection:
                    if not target.queued:
                        self.on_readable(target)
                else:
                    self.accept(target)
            if queue and self.alive:
                connection = queue.popleft()
                connection.queued = False
                self.serve_next(connection)
            now = time.monotonic()
            if now >= self.next_tick:
                self.tick(now)

    def tick(self, now: float) -> None:
        """Once a second: heartbeat, parent and lifetime checks, idle connections."""
        self.next_tick = now + 1.0
        self.notify()
        if self.parent_changed():
            self.log.info(f"Parent changed, shutting down: {self}")
            self.alive = False
            return
        self.check_lifetime(now)
        for connection in list(self.connections.values()):
            if connection.queued:
                continue
            if connection.parser.idle:
                # Between requests: the keep-alive timeout. Before the first request: a
                # little longer, for clients that connect ahead of need.
                limit = self.keepalive
                if connection.started < 0.0:
                    limit = max(limit, NEW_CONNECTION_GRACE)
                if now - connection.last_active > limit:
                    self.close(connection)
            elif connection.started and now - connection.started > HEAD_TIMEOUT:
                self.refuse(connection, RequestTimeout("request not received in time"))
            elif now - connection.last_active > self.io_timeout:
                self.refuse(connection, RequestTimeout("request body stalled"))

    def accept(self, listener: Listener) -> None:
        builder = self.builders[listener.fileno()]
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
            self.add_connection(sock, peer, builder)
            if len(self.connections) >= self.max_connections:
                self.stop_accepting()  # the rest wait in the listen backlog, not in memory
                return

    def add_connection(self, sock: socket.socket, peer: Any, builder: EnvironBuilder) -> None:
        sock.setblocking(False)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = Connection(sock, peer, RequestParser(self.limits), builder)
        # "new connection" until it sends something: marks it for the shorter grace period.
        connection.started = -1.0
        self.connections[connection.fd] = connection
        self.selector.register(sock, selectors.EVENT_READ, connection)
        # Clients send the request right after connecting; read it now, saving a wake-up.
        self.on_readable(connection)

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
        self.serve_next(connection)

    # -- serving

    def serve_next(self, connection: Connection) -> None:
        requests = connection.parser.requests
        if not requests or not _ready(requests[0]):
            return
        self.handle(connection, requests.popleft())
        if connection.fd in self.connections:
            if requests and _ready(requests[0]):
                connection.queued = True
                self.queue.append(connection)
            elif connection.parser.idle:
                connection.started = 0.0

    def handle(self, connection: Connection, request: Request) -> None:
        keep_alive = request.keep_alive and self.alive and self.keepalive > 0
        body = Input(request, lambda: self.fill(connection))
        if request.expect_continue:
            body.on_first_read = lambda: self.send_all(connection, CONTINUE)
        environ = connection.builder.build(request, body, connection.peer)
        response = Response(
            request,
            lambda data: self.send_all(connection, data),
            keep_alive=keep_alive,
            sendfile=(lambda f, o, c: self.sendfile(connection, f, o, c))
            if self.cfg.sendfile
            else None,
        )
        started = time.perf_counter()
        try:
            if self.has_pre_request:
                self.cfg.pre_request(self, request)
            assert self.wsgi is not None
            result = self.wsgi(environ, response.start_response)
            response.send_result(result)
            response.finish()
        except WorkerAbort:
            self.log.error(f"Request aborted at timeout: {request.method} {request.raw_target}")
            self.abort_response(connection, response)
            raise
        except OSError as error:
            self.log.debug(f"Client went away: {error}")
            self.close(connection)
        except Exception:
            self.log.exception(f"Error handling request {request.raw_target}")
            self.abort_response(connection, response)
        finally:
            self.request_done()
            if self.access_log is not None:
                self.access_log.log(environ, request, response, time.perf_counter() - started)
            if self.has_post_request:
                try:
                    self.cfg.post_request(self, request, environ, response)
                except Exception:
                    self.log.exception("post_request hook failed")
        if connection.fd not in self.connections:
            return
        if not response.keep_alive or not body.drain(DRAIN_LIMIT):
            self.close(connection)

    def abort_response(self, connection: Connection, response: Response) -> None:
        try:
            response.send_error(500)
        except OSError:
            pass
        self.close(connection)

    def fill(self, connection: Connection) -> bool:
        """More body for wsgi.input: block (with a timeout) until the client sends it."""
        sock = connection.sock
        sock.settimeout(self.io_timeout)
        try:
            data = sock.recv(RECV_SIZE)
        except OSError:
            return False
        finally:
            sock.setblocking(False)
        if not data:
            try:
                connection.parser.feed_eof()
            except HTTPError:
                pass
            return False
        try:
            connection.parser.feed(data)
        except HTTPError:
            return False
        return True

    def send_all(self, connection: Connection, data: bytes) -> None:
        sock = connection.sock
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(data):
            # The client is slower than us: wait for it, up to io_timeout per send.
            sock.settimeout(self.io_timeout)
            try:
                sock.sendall(memoryview(data)[sent:])
            finally:
                sock.setblocking(False)

    def sendfile(self, connection: Connection, file: Any, offset: int, count: int) -> int:
        sock = connection.sock
        sock.settimeout(self.io_timeout)
        try:
            return sock.sendfile(file, offset, count)
        finally:
            sock.setblocking(False)

    def refuse(self, connection: Connection, error: HTTPError) -> None:
        """A bad request: answer its status and close; the worker goes on."""
        self.log.debug(f"Invalid request from {connection.peer}: {error.status} {error}")
        try:
            connection.sock.send(error.render())
        except OSError:
            pass
        self.close(connection)

    def close(self, connection: Connection) -> None:
        if self.connections.pop(connection.fd, None) is None:
            return
        try:
            self.selector.unregister(connection.sock)
        except (KeyError, ValueError):
            pass
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
            waiting = False
            for connection in list(self.connections.values()):
                if connection.fd not in self.connections:
                    continue
                if not connection.parser.requests and connection.parser.idle:
                    self.on_readable(connection)  # bytes may have arrived already
                while connection.fd in self.connections and connection.parser.requests:
                    if not _ready(connection.parser.requests[0]):
                        break
                    self.serve_next(connection)
                if connection.fd not in self.connections:
                    continue
                if connection.parser.idle and not connection.parser.requests:
                    self.close(connection)
                else:
                    waiting = True  # a request is half received: give it until the deadline
            if waiting:
                for key, _ in self.selector.select(0.1):
                    if type(key.data) is Connection and key.data.fd in self.connections:
                        self.on_readable(key.data)
                self.notify()
        for connection in list(self.connections.values()):
            self.close(connection)

    def take_backlog(self) -> None:
        for listener in self.listeners:
            builder = self.builders[listener.fileno()]
            while True:
                try:
                    sock, peer = listener.sock.accept()
                except OSError:
                    break
                sock.setblocking(False)
                connection = Connection(sock, peer, RequestParser(self.limits), builder)
                self.connections[connection.fd] = connection
                self.selector.register(sock, selectors.EVENT_READ, connection)


def _ready(request: Request) -> bool:
    """Serve once the body is in, or once enough is buffered that the app should stream it."""
    return request.complete or request.expect_continue or len(request.body) >= BODY_BUFFER


def _sockname(listener: Listener) -> Any:
    try:
        return listener.sock.getsockname()
    except OSError:
        return None


def _is_default_hook(hook: Any) -> bool:
    return getattr(hook, "__name__", "") == "_no_hook"
