"""The ASGI worker (`-k asgi`, gunicorn's name): ASGI 3 apps on one asyncio loop per process.

How this works: the loop (uvloop when installed and `asgi_loop` allows, else asyncio's)
watches the listening sockets and accepts a connection when the worker has room
(`worker_connections`), each into an `AsgiConnection` protocol with dynocorn's own sans-IO
parser. Each request, in order, runs as a task: `http.HttpCycle` gives the app its body and
frames its response with the WSGI layer's Response, so limits, framing, keep-alive and
refusals are the WSGI classes'. A tick once a second tells the master the loop turns, closes
connections idle past the policy's deadline (policy.py, as every class), and cancels a
request that has run longer than `timeout` (a 500 if nothing was sent, and its stack in the
log): an awaiting request never stops the heartbeat, so the worker times it out itself.
Code that holds the loop does stop it: the master's SIGABRT then raises WorkerAbort in
that code, the request gets a 500, and the worker exits, to be replaced.

Stopping (TERM, max-requests, lifetime, memory, a changed parent): stop accepting, answer
the requests already received with `Connection: close`, let those in flight finish within
`graceful_timeout`, close idle connections after the policy's linger. INT and QUIT exit at
once. Signal handlers run between two steps of the loop: they set flags and wake it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
import traceback
from types import FrameType
from typing import Any, cast

from dynocorn.apploader import AppLoadError
from dynocorn.asgi import ASGIApp, Message
from dynocorn.asgi.http import HttpCycle
from dynocorn.asgi.lifespan import Lifespan
from dynocorn.asgi.scope import ScopeBuilder
from dynocorn.asgi.websocket import WebSocketSession, is_websocket_upgrade
from dynocorn.http import HTTPError, Request, RequestParser
from dynocorn.scoreboard import BEGIN
from dynocorn.workers.asgi_balance import BalancedAsgi
from dynocorn.workers.base import WorkerAbort
from dynocorn.workers.http_worker import LOOP_TICK, send_error, sockname_of
from dynocorn.workers.policy import Action, refusal
from dynocorn.wsgi import EnvironBuilder, Peer, Response
from dynocorn.wsgi_input import EMPTY_INPUT

BODY_HIGH_WATER = 65536  # unread body bytes at which the connection stops reading
ACCEPT_RETRY = 1.0  # seconds between accept attempts while out of file descriptors
WEBSOCKET_PING = 20.0  # seconds between pings to an idle WebSocket, and to wait for its pong
STOP_TICK = 0.05  # seconds between looks at the connections while the worker stops


class AsgiConnection(asyncio.Protocol):
    """One client connection: parses what arrives, runs its requests one at a time."""

    def __init__(self, worker: AsgiWorker, listener_fd: int) -> None:
        self.worker = worker
        self.listener_fd = listener_fd
        self.transport: asyncio.Transport | None = None
        self.parser = RequestParser(worker.limits, is_websocket_upgrade)
        self.environ_builder: EnvironBuilder = worker.builders[listener_fd]
        self.scopes: ScopeBuilder = worker.scope_builders[listener_fd]
        self.peer: Peer = ""
        self.last_active = time.monotonic()
        self.started = -1.0  # policy.py: the unfinished request's first byte
        self.task: asyncio.Task[None] | None = None  # the request running now
        self.request: Request | None = None  # and its request, whose body may still come
        self.disconnected = False
        self.reading_paused = False
        self.arrived: asyncio.Event | None = None  # set when bytes come (a body awaited)
        self.writable = asyncio.Event()
        self.writable.set()
        self.write_paused = False  # the transport's buffer is past its high-water mark
        self.ended = asyncio.Event()
        self.timed_out = False
        self.running_since = 0.0  # when the request running now came
        self.method = self.target = ""  # of the request running now, for the log
        self.response: Response | None = None  # of the request running now
        self.websocket: WebSocketSession | None = None  # once upgraded
        self.eof = False  # the client has sent all it will

    # -- asyncio's calls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else str(peer or "")
        self.worker.connection_began(self)

    def data_received(self, data: bytes) -> None:
        if self.websocket is not None:
            self.websocket.feed(data)
            return
        now = self.last_active = time.monotonic()
        if self.started <= 0.0:
            self.started = now
        try:
            self.parser.feed(data)
        except HTTPError as error:
            self.refuse(error)
            return
        if self.task is None:
            self.next_request()
        elif self.arrived is not None:
            self.arrived.set()
        if self.task is not None and not self.reading_paused:
            self.apply_back_pressure()

    def eof_received(self) -> bool | None:
        self.eof = True
        try:
            self.parser.feed_eof()
        except HTTPError as error:
            self.refuse(error)
            return None
        if self.arrived is not None:
            self.arrived.set()
        if self.task is None and not self.parser.requests:
            return None  # nothing to answer: asyncio closes it
        return True  # half open: the requests received are answered first

    def connection_lost(self, exc: Exception | None) -> None:
        if self.websocket is not None:
            self.websocket.connection_lost(exc)
        if self.task is not None and self.request is not None:
            self.abandon(self.task, self.request)
        self.disconnected = True
        self.worker.connection_ended(self)
        self.writable.set()
        self.ended.set()
        if self.arrived is not None:
            self.arrived.set()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.writable.clear()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.writable.set()

    # -- what a cycle asks (asgi/http.py's Channel)

    def write(self, data: bytes) -> None:
        if not self.disconnected and self.transport is not None:
            self.transport.write(data)

    async def more_body(self) -> None:
        if self.reading_paused:
            self.resume_reading()
        if self.arrived is None:
            self.arrived = asyncio.Event()
        self.arrived.clear()
        await self.arrived.wait()

    async def drain(self) -> None:
        if not self.writable.is_set():
            await self.writable.wait()

    async def gone(self) -> None:
        await self.ended.wait()

    # -- requests, one at a time, in order

    def next_request(self) -> None:
        requests = self.parser.requests
        if not requests:
            if self.eof:
                self.close()
            elif self.parser.idle:
                self.started = 0.0
            return
        request = self.request = requests.popleft()
        worker = self.worker
        # Set before the task runs: the tick that times requests out may come first, and a
        # time of 0 (or the last request's) made it cancel the task before it began, which
        # left the client without an answer (a max-requests test under load, 1 run in 10).
        self.running_since = self.last_active
        if requests or not self.parser.upgraded:  # only the last head can be an upgrade
            self.task = worker.loop.create_task(worker.serve(self, request))
        else:
            self.task = worker.loop.create_task(worker.serve_websocket(self, request))

    def request_finished(self, keep: bool) -> None:
        """The request ended (after_app() set last_active: the idle time counts from it)."""
        self.task = None
        self.timed_out = False
        if not keep or self.disconnected:
            self.close()
            return
        if self.reading_paused:
            self.resume_reading()
        self.next_request()
        if self.worker.after_answer and self.task is None:
            self.worker.answered(self)  # asgi_balance.py: passed on, or parked

    def apply_back_pressure(self) -> None:
        """Stop reading while the app has not taken what came: the running request's body
        past BODY_HIGH_WATER, or a request pipelined behind it (more_body() and the end of
        the request resume)."""
        if self.task is None or self.reading_paused or self.transport is None:
            return
        running = self.request
        # A complete request's body grows no more: what comes now is the next request's.
        unread = (
            running is not None and not running.complete and len(running.body) >= BODY_HIGH_WATER
        )
        if unread or self.parser.requests:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.reading_paused = False
        if self.transport is not None and not self.disconnected:
            self.transport.resume_reading()

    def refuse(self, error: HTTPError) -> None:
        """A bad request, or a bad body or trailer under the request running now: its
        status (unless the running request's answer has begun), then close."""
        self.worker.log.debug(f"Invalid request from {self.peer}: {error.status} {error}")
        response = self.response if self.task is not None else None
        if response is None:
            self.write(error.render())
        elif not response.headers_sent:
            send_error(response, error.status)
        self.disconnected = True  # for the app, from now on: receive() says so, send() is void
        if self.arrived is not None:
            self.arrived.set()
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abandon(self, task: asyncio.Task[None], request: Request) -> None:
        """The client left while its request runs: the app hears it from receive(), and a
        task still running `asgi_disconnect_grace_period` seconds later is cancelled (at
        once for 0), as gunicorn does. Only on this path: a normal request pays nothing."""
        grace = self.worker.cfg.asgi_disconnect_grace_period
        if grace:
            self.worker.loop.call_later(grace, self.cancel_abandoned, task, request, grace)
        else:
            self.cancel_abandoned(task, request, grace)

    def cancel_abandoned(self, task: asyncio.Task[None], request: Request, grace: int) -> None:
        if task.done():
            return
        # Debug, as the WSGI classes log a client gone: nothing failed on our side. No 500
        # either: serve()'s accounting (after_app) logs it as any request left unanswered.
        self.worker.log.debug(
            f"Request cancelled {grace}s after its client went away: "
            f"{request.method} {request.raw_target}"
        )
        task.cancel()


class AsgiWorker(BalancedAsgi):
    name = "asgi"
    interface = "asgi"
    multithread = False
    accept_paused = False  # at worker_connections: the listeners are not watched
    says_ready_itself = True  # after the lifespan startup: until then the app cannot serve

    # -- signals: flags and a wake-up of the loop

    def wake(self) -> None:
        loop = getattr(self, "loop", None)
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.stop_requested.set)

    def handle_exit(self, signum: int, frame: FrameType | None) -> None:
        self.terminating = True
        super().handle_exit(signum, frame)
        self.wake()

    def retire(self, cause: Any, reason: str) -> None:
        super().retire(cause, reason)
        self.wake()

    # -- the loop

    def run(self) -> None:
        self.setup_http()
        self.loop = new_event_loop(self.cfg.asgi_loop)
        asyncio.set_event_loop(self.loop)
        self.abort_error: WorkerAbort | None = None
        try:
            self.loop.run_until_complete(self.main())
        finally:
            self.loop.close()
        if self.abort_error is not None:
            raise self.abort_error

    async def main(self) -> None:
        assert self.wsgi is not None
        self.app = cast(ASGIApp, self.wsgi)  # what was loaded is an ASGI callable
        self.stop_requested = asyncio.Event()
        self.connections: set[AsgiConnection] = set()
        self.state: dict[str, Any] = {}
        root_path = self.cfg.root_path or os.environ.get("SCRIPT_NAME", "")
        self.scope_builders = {
            listener.fileno(): ScopeBuilder(
                self.builders[listener.fileno()], sockname_of(listener), root_path
            )
            for listener in self.listeners
        }
        self.needs_environ = self.access_log is not None or self.has_post_request
        ticker = self.loop.create_task(self.ticks())  # the heartbeat goes on during startup
        self.lifespan = Lifespan(self.app, self.cfg.asgi_lifespan, self.log)
        self.state = self.lifespan.state
        if not await self.lifespan.startup():
            ticker.cancel()
            # The app cannot serve: the server stops as for an app that cannot load (exit 4),
            # rather than start worker after worker that fail the same way.
            raise AppLoadError(f"app {self.cfg.wsgi_app!r}: its lifespan startup failed")
        self.start_accepting()
        self.start_balancing()
        self.channel.ready()
        if not self.alive:  # stopped while starting
            self.stop_requested.set()
        await self.stop_requested.wait()
        stop_by = time.monotonic() + self.cfg.graceful_timeout
        await self.finish(stop_by)
        await self.lifespan.shutdown(max(0.0, stop_by - time.monotonic()))
        ticker.cancel()

    async def ticks(self) -> None:
        while True:
            self.notify()
            now = time.monotonic()
            if self.alive and self.parent_changed():
                self.log.info(f"Parent changed, shutting down: {self}")
                self.alive = False
                self.stop_requested.set()
            elif self.alive:
                self.check_lifetime(now)
            self.look_at_connections(now)
            await asyncio.sleep(LOOP_TICK)

    def look_at_connections(self, now: float) -> None:
        """Time requests out; close connections idle (or slow to send a head) too long."""
        timeout = self.cfg.timeout
        phase = self.phase()
        for connection in list(self.connections):
            task = connection.task
            if task is not None:
                if connection.websocket is not None:
                    continue  # a WebSocket lives as long as both ends want: pings watch it
                if timeout and now - connection.running_since > timeout and not task.done():
                    self.time_out(connection, task)
                continue
            deadline = self.policy.deadline(connection, phase)
            if now < deadline.at or self.unparked(connection):
                continue  # a parked one is looked at again, unparked, at the next tick
            if deadline.action is Action.CLOSE:
                connection.close()
            else:
                connection.refuse(refusal(deadline.action))

    def time_out(self, connection: AsgiConnection, task: asyncio.Task[None]) -> None:
        if connection.timed_out:
            return
        connection.timed_out = True
        request = f"{connection.method} {connection.target}"
        self.log.error(
            f"Request timed out after {self.cfg.timeout}s: {request} (pid:{self.pid}); "
            f"where it waits:\n{awaited_stack(task)}"
        )
        task.cancel()

    # -- accepting

    def start_accepting(self) -> None:
        for listener in self.listeners:
            sock = listener.sock
            sock.setblocking(False)
            self.loop.add_reader(sock.fileno(), self.accept, sock, listener.fileno())
        self.watch_queues(True)

    def stop_accepting(self) -> None:
        for listener in self.listeners:
            self.loop.remove_reader(listener.sock.fileno())
        self.watch_queues(False)

    def accept(self, listening: socket.socket, listener_fd: int) -> None:
        """A connection per readiness, while there is room: the rest stay in the backlog."""
        if len(self.connections) >= self.cfg.worker_connections:
            # Full: stop watching (the socket stays readable, and would be looked at in a
            # spin) until a connection ends; the rest wait in the backlog for a sibling.
            self.stop_accepting()
            self.accept_paused = True
            return
        try:
            sock, _ = listening.accept()
        except (BlockingIOError, InterruptedError):
            return  # a sibling took it
        except OSError as error:
            if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self.log.error(f"Cannot accept connections: {error.strerror}")
                self.stop_accepting()
                self.loop.call_later(ACCEPT_RETRY, self.start_accepting)
            return
        self.loop.create_task(self.connect(sock, listener_fd))

    async def connect(self, sock: socket.socket, listener_fd: int) -> None:
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await self.loop.connect_accepted_socket(lambda: AsgiConnection(self, listener_fd), sock)

    # -- one request

    async def serve_websocket(self, connection: AsgiConnection, request: Request) -> None:
        """An upgrade request: the WebSocket session runs the app until both ends close."""
        started = connection.running_since = connection.last_active
        assert connection.transport is not None
        session = connection.websocket = WebSocketSession(
            connection.transport,
            request,
            connection.scopes.build(request, connection.peer, self.state),
            max_message_size=self.cfg.websocket_max_message_size,
            ping_interval=WEBSOCKET_PING,
            ping_timeout=WEBSOCKET_PING,
            log=self.log,
            drain=connection.drain,
        )
        # Frames the client sent with the head or since, before the session was there.
        if early := connection.parser.take_upgraded_rest():
            session.feed(early)
        response = Response(request, connection.write, keep_alive=False)
        try:
            await session.run(self.app)
        finally:
            response.status_code = session.status_code or 0
            response.status = str(response.status_code)
            response.body_bytes = session.bytes_sent
            self.after_app(
                connection,
                request,
                self.environ_of(connection, request, session.scope, response),
                response,
                started,
            )
            connection.request_finished(keep=False)

    async def serve(self, connection: AsgiConnection, request: Request) -> None:
        """One request, as a task: the app, its answer, its accounting; then the
        connection's next request (one coroutine a request: each costs on every request)."""
        last = self.nr + 1 >= self.max_requests
        keep_alive = request.keep_alive and self.alive and self.keepalive > 0 and not last
        started = connection.running_since = connection.last_active
        connection.method, connection.target = request.method, request.raw_target
        BEGIN.pack_into(
            self.record_memory, self.record_at, started, next(self.begun_count), request.head
        )
        response = connection.response = Response(request, connection.write, keep_alive=keep_alive)
        cycle = HttpCycle(connection, request, response)
        scope = connection.scopes.build(request, connection.peer, self.state)
        keep = False  # until the app has answered in full
        try:
            await self.app(scope, cycle.receive, cycle.send)
            if response.status is None:
                self.log.error(f"The app returned without a response to {request.raw_target}")
                send_error(response)
            else:
                keep = cycle.complete  # else the client has an unfinished body: close
        except asyncio.CancelledError:
            if not connection.timed_out:
                raise
            send_error(response)
        except WorkerAbort as abort:
            self.report_abort(abort, request)
            send_error(response)
            self.abort_error = abort
            self.alive = False
            self.stop_requested.set()
        except Exception:
            self.log.exception(f"Error handling request {request.raw_target}")
            send_error(response)
        finally:
            environ = self.environ_of(connection, request, scope, response)
            self.after_app(connection, request, environ, response, started)
            whole = request.complete and not request.body  # else the body is left unread
            connection.request_finished(keep and response.keep_alive and whole)

    def environ_of(
        self, connection: AsgiConnection, request: Request, scope: Message, response: Response
    ) -> dict[str, Any]:
        """The WSGI-style environ the access log and post_request read, when they run."""
        if request_start := _header(scope, b"x-request-start"):
            self.note_queue_time(request_start)
        if not self.needs_environ:
            return {}
        if self.has_post_request:  # hooks written for gunicorn read text headers
            response.headers = response.text_headers()
        return connection.environ_builder.build(request, EMPTY_INPUT, connection.peer)

    # -- stopping

    async def finish(self, deadline: float) -> None:
        """Stop accepting; answer what was received (with `Connection: close`: the worker
        is no longer alive); wait for requests in flight; close idle connections after the
        policy's linger, as every class does."""
        self.stop_accepting()
        await self.stop_balancing()  # the backlog and the hand-off queues, on TERM
        for listener in self.listeners:
            listener.sock.close()
        for connection in self.connections:
            response = connection.response
            if connection.websocket is not None:
                connection.websocket.close()  # 1012, service restart: the client reconnects
            elif connection.task is not None and response and not response.headers_sent:
                response.close_after()  # begun before the stop: it ends the connection
        while self.connections:
            now = time.monotonic()
            if now >= deadline:
                self.log.warning(f"Worker graceful timeout (pid:{self.pid})")
                break
            self.look_at_connections(now)
            await asyncio.sleep(STOP_TICK)
        for connection in list(self.connections):
            connection.close()
        await asyncio.sleep(0)  # let the transports close


def new_event_loop(choice: str) -> asyncio.AbstractEventLoop:
    """uvloop when it is installed and allowed (`asgi_loop`: auto, uvloop, asyncio)."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if choice == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _header(scope: Message, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def awaited_stack(task: asyncio.Task[None]) -> str:
    """Where a suspended task waits, down the chain of awaits to the app's own line:
    asyncio's own print_stack() shows only the outermost coroutine of a waiting task."""
    frames = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = next(
            (
                f
                for name in ("cr_frame", "gi_frame", "ag_frame")
                if (f := getattr(awaited, name, None))
            ),
            None,
        )
        if frame is not None:
            code = frame.f_code
            frames.append(traceback.FrameSummary(code.co_filename, frame.f_lineno, code.co_name))
        awaited = next(
            (
                a
                for name in ("cr_await", "gi_yieldfrom", "ag_await")
                if (a := getattr(awaited, name, None)) is not None
            ),
            None,
        )
    return "".join(traceback.format_list(frames))
