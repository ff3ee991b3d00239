"""The gevent worker (`-k gevent`): many connections per process, one greenlet each.

How this works: after the fork, gevent patches the standard library (socket, time,
threading, ...) so that the app's blocking calls yield to gevent's hub instead of blocking
the process. An accept greenlet per listening socket takes connections while fewer than
`worker_connections` are open (beyond that they wait in the kernel's listen backlog) and
gives each its own greenlet. That greenlet runs the sync worker's steps as a plain loop over
the same layers: recv with a timeout, feed the sans-IO parser, serve each ready request in
order with `handle()`, keep the connection while `handle()` says so. The main greenlet only
waits for a reason to stop; a heartbeat greenlet tells the master once a second that the
hub is running.

Timeouts: the master's `timeout` watches the hub, not a request. A request that waits
cooperatively (a patched socket, `time.sleep`) never trips it; code that holds the hub (a
busy loop, an unpatched C driver) stops the heartbeat, the master sends SIGABRT, and the
handler, which Python runs in whichever greenlet holds the hub, raises WorkerAbort right in
the stuck request: it gets a 500, the other requests get a moment to finish, then the worker
exits and the master starts another.

Stopping: TERM, max-requests, lifetime and a changed parent stop the accept greenlets (TERM
first takes the connections already in the backlog), answer requests already received with
`Connection: close`, let in-flight requests finish within `graceful_timeout`, and close idle
connections after the policy's linger (policy.py), as sync does. INT and QUIT exit at once.

Signals: Python runs a handler in whichever greenlet holds the hub, or in the hub itself
when it is idle, where nothing may block. So handlers only set flags and schedule a wake-up
of the main greenlet, except ABRT, which must interrupt the code that holds the hub.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import sys
import time
import warnings
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

try:
    import gevent
    from gevent import monkey
    from gevent import socket as gsocket
    from gevent.event import Event
    from gevent.lock import BoundedSemaphore
except ImportError as error:
    raise ImportError("the gevent worker needs gevent: pip install 'dynocorn[gevent]'") from error

from dynocorn.exit_cause import ExitCause
from dynocorn.http import HTTPError
from dynocorn.slow_watch import OFFLOAD_AFTER, OFFLOAD_IDLE_TICK
from dynocorn.workers.base import WorkerAbort
from dynocorn.workers.connection import Connection
from dynocorn.workers.http_worker import LOOP_TICK, RECV_SIZE, HttpWorker, ready
from dynocorn.workers.policy import refusal

if TYPE_CHECKING:
    from dynocorn.config import Config
    from dynocorn.handoff import HandoffQueue
    from dynocorn.logs import ErrorLog

ABORT_FINISH = 1.0  # after a timeout, seconds the other requests get before they are cut off
ACCEPT_RETRY = 1.0  # seconds between accept attempts while out of file descriptors

# The master never runs gevent's hub: gevent's fork starts a child watcher that only the hub
# services (and takes over SIGCHLD), and its waitpid may wait in the hub. So with --preload
# the master keeps these originals, and each worker puts gevent's versions back.
_MASTER_KEEPS = ("fork", "forkpty", "waitpid")
_held_back: dict[str, Any] = {}


def patch(log: ErrorLog) -> None:
    """Patch the standard library for gevent, once (a second patch_all() does nothing)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        monkey.patch_all()
    for warning in caught:  # e.g. ssl imported too early: the log says so, not a bare stderr
        log.warning(f"gevent: {warning.message}")
    if not monkey.is_module_patched("socket"):
        log.warning(
            "gevent did not patch the socket module: "
            "network I/O in the app will block every request of the worker"
        )


def warn_if_imported_early(wsgi_app: str | None, log: ErrorLog) -> None:
    """An app imported before the patch (by a config file) holds unpatched objects."""
    module = (wsgi_app or "").partition(":")[0].strip()
    parts = module.split(".")
    early = [p for i in range(len(parts)) if (p := ".".join(parts[: i + 1])) in sys.modules]
    if module and early:
        log.warning(
            f"{early[-1]!r} was imported before gevent patched the standard library "
            "(by the config file?): what it created at import (sockets, locks, "
            "threads) may block the whole worker"
        )


# The offload thread is a real thread: it must not use gevent's patched versions.
_original_lock = monkey.get_original("threading", "Lock")
_original_start_thread = monkey.get_original("_thread", "start_new_thread")
_original_sleep = monkey.get_original("time", "sleep")
_original_poll = monkey.get_original("select", "poll")


def handed_off(connection: GeventConnection) -> bool:
    """Read afresh each time: the offload thread sets it while the greenlet waits."""
    return connection.handed_off


class _Wake(BaseException):
    """Thrown into a greenlet waiting between requests: the worker is stopping, look again."""


class GeventConnection(Connection):
    __slots__ = ("handed_off",)

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.handed_off = False  # passed to another worker while it waited (offload thread)

    def _sendfile(self, file: Any, offset: int, count: int) -> int:
        """The kernel's sendfile(), waiting cooperatively while the client's buffer is full.

        gevent's socket.sendfile() copies the file through user space in 8 KiB blocks; this
        is what the other worker classes get from the standard library.
        """
        in_fd = file.fileno()
        total = 0
        while total < count:
            try:
                sent = os.sendfile(self.fd, in_fd, offset + total, count - total)
            except (BlockingIOError, InterruptedError):
                gsocket.wait_write(self.fd, timeout=self.io_timeout, timeout_exc=_SEND_TIMED_OUT)
                continue
            if sent == 0:  # the file is shorter than promised
                break
            total += sent
        return total


# Raised when a client has not read for io_timeout during a sendfile(); an OSError, as the
# standard library's timeout is, so the worker treats it like any dead client.
_SEND_TIMED_OUT = TimeoutError("client did not read for io_timeout")

# A greenlet serving a connection that always has its next request buffered (pipelining)
# never blocks, so it never yields: other connections, the acceptors and the heartbeat would
# starve. It yields after this many requests served without waiting.
YIELD_EVERY = 16


class GeventWorker(HttpWorker):
    connection_class = GeventConnection
    name = "gevent"
    running = False  # serving: signal handlers defer to the main greenlet from now on
    # As gunicorn's async workers say: the app may be running several requests at once in
    # this process, which is what frameworks check this flag for.
    multithread = True

    # -- patching

    @classmethod
    def before_preload(cls, cfg: Config, log: ErrorLog) -> None:
        warn_if_imported_early(cfg.wsgi_app, log)
        patch(log)
        for name in _MASTER_KEEPS:
            if monkey.is_object_patched("os", name):
                _held_back[name] = getattr(os, name)
                setattr(os, name, monkey.get_original("os", name))

    @classmethod
    def before_app_import(cls, cfg: Config, log: ErrorLog) -> None:
        warn_if_imported_early(cfg.wsgi_app, log)
        patch(log)

    def init_process(self) -> None:
        # A hub the master created (an app that used gevent at import) is not ours to reuse.
        gevent.reinit()
        self.terminating = False
        self.quitting = False
        self.aborting = False
        self.abort_hook_pending = False
        self.abort_error: WorkerAbort | None = None
        self.wakeup = Event()
        if self.wsgi is not None:  # preloaded; otherwise before_app_import() patches
            self.take_preloaded_app()
        super().init_process()

    def take_preloaded_app(self) -> None:
        """The master patched before it imported the app: put back what it held back."""
        if monkey.is_module_patched("socket"):
            for name, patched in _held_back.items():
                setattr(os, name, patched)
            return
        self.log.warning(
            "the app was preloaded before gevent patched the standard library (the "
            "worker class changed on reload?): restart to use gevent fully"
        )
        patch(self.log)

    # -- signals: flags and a wake-up; see the module doc

    def soon(self, function: Any, *args: Any) -> None:
        """Run `function` in the hub's next pass; safe from a signal handler."""
        gevent.get_hub().loop.run_callback_threadsafe(function, *args)

    def handle_exit(self, signum: int, frame: FrameType | None) -> None:
        self.terminating = True
        super().handle_exit(signum, frame)
        self.soon(self.wakeup.set)

    def handle_quit(self, signum: int, frame: FrameType | None) -> None:
        if not self.running:  # still loading the app: exit from right here
            super().handle_quit(signum, frame)
        self.alive = False
        self.quitting = True
        self.soon(self.wakeup.set)

    def handle_usr1(self, signum: int, frame: FrameType | None) -> None:
        if not self.running:
            super().handle_usr1(signum, frame)
            return
        self.soon(gevent.spawn, self.logs.reopen)  # file I/O: not in the hub

    def handle_abort(self, signum: int, frame: FrameType | None) -> None:
        if self.running:
            self.alive = False
            self.aborting = True
            self.soon(self.wakeup.set)
            if gevent.getcurrent() not in self.serving:
                # The hub or our own loop is running: whatever held the hub has let go
                # since. Nothing to interrupt; the main greenlet runs the hook and exits.
                self.abort_hook_pending = True
                return
        super().handle_abort(signum, frame)  # raises WorkerAbort in the stuck request

    def retire(self, cause: ExitCause, reason: str) -> None:
        super().retire(cause, reason)
        self.wakeup.set()

    # -- the main greenlet

    def run(self) -> None:
        self.setup_http()
        self.serving: set[Any] = set()  # connection greenlets
        # Those waiting between requests, and their connections: the offload thread reads it.
        self.idle: dict[Any, GeventConnection] = {}
        self.offload_lock = _original_lock()
        self.requests_running = 0
        self.slots = BoundedSemaphore(self.cfg.worker_connections)
        # Each listener as a gevent socket, on a duplicate descriptor: closing one socket
        # object then leaves the other's descriptor alone.
        self.listening = [
            (gsocket.socket(sock.family, sock.type, sock.proto, os.dup(sock.fileno())), fd)
            for sock, fd in ((listener.sock, listener.fileno()) for listener in self.listeners)
        ]
        self.acceptors = [gevent.spawn(self.accept, gsock, fd) for gsock, fd in self.listening]
        if self.handoff is not None:
            self.acceptors.append(gevent.spawn(self.take_handed_off, self.handoff))
            self.hub_loop = gevent.get_hub().loop  # this thread's: the offload thread has none
            # libuv's loop counts no iterations (-1): nothing to watch the hub by.
            if self.hub_loop.iteration >= 0:
                _original_start_thread(self.offload_loop, (self.hub_loop,))
        gevent.spawn(self.heartbeat)
        self.count_connections(0)  # serving: siblings may pass connections here
        self.running = True
        while self.alive:
            self.wakeup.wait()
            self.wakeup.clear()
            self.check_quit_or_abort()
        self.finish()

    def check_quit_or_abort(self) -> None:
        if self.quitting:
            self.cfg.worker_int(self)
            sys.exit(0)
        if self.aborting:
            self.abort()

    def heartbeat(self) -> None:
        while True:
            self.notify()
            if self.alive and self.parent_changed():
                self.log.info(f"Parent changed, shutting down: {self}")
                self.alive = False
                self.wakeup.set()
            elif self.alive:
                self.check_lifetime(time.monotonic())
            gevent.sleep(LOOP_TICK)

    def finish(self) -> None:
        """Stop accepting, then wait (up to graceful_timeout) for open connections to end."""
        self.check_quit_or_abort()
        self.stop_accepting(take_backlog=self.terminating)
        deadline = time.monotonic() + self.cfg.graceful_timeout
        nudged_when_terminating: bool | None = None
        while self.serving:
            self.check_quit_or_abort()
            if nudged_when_terminating != self.terminating:  # a TERM may follow retiring
                nudged_when_terminating = self.terminating
                gevent.get_hub().loop.run_callback(self.wake_idle)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.log.warning(f"Worker graceful timeout (pid:{self.pid})")
                gevent.killall(list(self.serving), block=True, timeout=1)
                return
            self.wakeup.clear()
            self.wakeup.wait(remaining)

    def abort(self) -> NoReturn:
        """After a timeout: a moment for the other requests, then a 500 for the rest, exit."""
        if self.abort_hook_pending:
            self.abort_hook_pending = False
            self.cfg.worker_abort(self)
        self.stop_accepting(take_backlog=False)
        deadline = time.monotonic() + ABORT_FINISH
        while self.serving and (remaining := deadline - time.monotonic()) > 0:
            self.wakeup.clear()
            self.wakeup.wait(remaining)
        gevent.killall(list(self.serving), WorkerAbort, block=True, timeout=1)
        raise self.abort_error or WorkerAbort()

    def wake_idle(self) -> None:
        """In the hub: make each connection waiting between requests look at its wait again.

        Run as a hub callback, where every such greenlet is parked in its recv, so the
        exception cannot land anywhere else (say, in the app)."""
        for glet in list(self.idle):
            if glet in self.idle:
                glet.throw(_Wake)

    # -- accepting

    def accept(self, gsock: Any, listener_fd: int) -> None:
        while True:
            self.slots.acquire()  # at worker_connections, the rest wait in the backlog
            try:
                sock, peer = gsock.accept()
            except OSError as error:
                self.slots.release()
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.error(f"Cannot accept connections: {error.strerror}")
                    gevent.sleep(ACCEPT_RETRY)
                continue
            except BaseException:  # killed: stopping
                self.slots.release()
                raise
            self.spawn_connection(sock, peer, listener_fd, slot=True)

    def take_handed_off(self, handoff: HandoffQueue) -> None:
        """An acceptor for the hand-off queue: connections a busy sibling passed on."""
        while True:
            # A slot only once there is something to take: held while waiting, it would
            # leave the connections on the listeners one slot fewer.
            gsocket.wait_read(handoff.fileno())
            self.slots.acquire()
            try:
                received = handoff.receive()
            except BaseException:  # killed: stopping
                self.slots.release()
                raise
            if received is None:  # another worker was quicker
                self.slots.release()
                continue
            sock, peer, listener_fd = received
            self.spawn_connection(gsocket.socket(fileno=sock.detach()), peer, listener_fd, True)

    # -- passing waiting connections on while the hub is held (handoff.py)

    def offload_loop(self, hub_loop: Any) -> None:
        """In a thread of its own: when the hub has not turned for OFFLOAD_AFTER (a request
        computes without yielding), pass the idle connections whose next request has
        arrived to the hand-off queue. A hub that is only waiting would have served them."""
        last, since = hub_loop.iteration, time.monotonic()
        while self.alive:
            # Not OFFLOAD_TICK: each wake-up takes the GIL from a hub that computes, and a
            # stuck hub is found at 10-15 ms all the same.
            _original_sleep(OFFLOAD_IDLE_TICK)
            turned, now = hub_loop.iteration, time.monotonic()
            if turned != last or not self.requests_running:
                last, since = turned, now  # turning, or idle: nothing holds it
            elif now - since >= OFFLOAD_AFTER and self.alive and self.has_siblings():
                since = now  # look again after as long, not at every tick
                self.offload_waiting()

    def offload_waiting(self) -> None:
        assert self.handoff is not None
        waiting = list(self.idle.items())
        readable = _original_poll()
        for _, connection in waiting:
            readable.register(connection.fd, select.POLLIN)
        ready = {fd for fd, _ in readable.poll(0)}
        for glet, connection in waiting:
            if connection.fd not in ready:
                continue
            with self.offload_lock:  # its greenlet checks the flag under it before reading
                if self.idle.get(glet) is not connection or connection.handed_off:
                    continue
                if not self.handoff.send_fd(connection.fd, connection.listener_fd):
                    return  # the queue is full: they stay here
                connection.handed_off = True
            # Its greenlet must close its copy now: the worker that took the connection may
            # read the request before this one wakes, and its close alone sends no FIN.
            self.hub_loop.run_callback_threadsafe(self.wake_handed_off, glet, connection)

    def wake_handed_off(self, glet: Any, connection: GeventConnection) -> None:
        """In the hub, where the greenlet is parked in its wait (if it still is)."""
        if self.idle.get(glet) is connection:
            glet.throw(_Wake)

    def spawn_connection(self, sock: Any, peer: Any, listener_fd: int, slot: bool) -> None:
        self.serving.add(gevent.spawn(self.serve, sock, peer, listener_fd, slot))

    def stop_accepting(self, take_backlog: bool) -> None:
        if not self.listening:
            return
        gevent.killall(self.acceptors, block=True)
        for gsock, listener_fd in self.listening:
            if take_backlog:  # connections the kernel already accepted: answer, not reset
                gsock.setblocking(False)
                while True:
                    try:
                        sock, peer = gsock.accept()
                    except OSError:
                        break
                    self.spawn_connection(sock, peer, listener_fd, slot=False)
            gsock.close()
        for listener in self.listeners:
            listener.sock.close()
        self.listening = []
        if take_backlog and self.balance is not None and self.balance.board.stopping:
            # The whole server stops: connections still in the hand-off queue are answered.
            while (received := self.balance.waiting.receive()) is not None:
                sock, peer, listener_fd = received
                gsock = gsocket.socket(fileno=sock.detach())
                self.spawn_connection(gsock, peer, listener_fd, slot=False)

    # -- one connection, in its own greenlet

    def serve(self, sock: Any, peer: Any, listener_fd: int, slot: bool) -> None:
        try:
            # Non-blocking between requests, as Connection expects; every wait has a timeout.
            sock.setblocking(False)
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.converse(self.new_connection(sock, peer, listener_fd))
        except WorkerAbort as abort:
            if self.abort_error is None:
                self.abort_error = abort  # its traceback shows where the hub was held
            self.aborting = True
            self.wakeup.set()
        except OSError as error:
            self.log.debug(f"Client went away: {error}")
        except Exception:
            self.log.exception(f"Error on the connection from {peer}")
        finally:
            sock.close()
            self.serving.discard(gevent.getcurrent())
            if slot:
                self.slots.release()
            if not self.serving and not self.alive:
                self.wakeup.set()

    def converse(self, connection: Connection) -> None:
        """Serve requests on this connection until one end is done with it."""
        parser = connection.parser
        requests = parser.requests
        served_without_yielding = 0
        while True:
            if requests and ready(requests[0]):
                self.requests_running += 1
                try:
                    keep = self.handle(connection, requests.popleft())
                finally:
                    self.requests_running -= 1
                if not keep:
                    return
                # Idle from the answer on, not from the request's arrival (as sync's
                # after_request): a request longer than the keep-alive (or, once TERM came,
                # the linger) would otherwise be followed by an immediate close, under the
                # next request the client sends on the connection it was told to keep.
                connection.last_active = time.monotonic()
                if parser.idle:
                    connection.started = 0.0
                served_without_yielding += 1
                if served_without_yielding >= YIELD_EVERY:
                    served_without_yielding = 0
                    gevent.sleep(0)
                continue
            if requests or not parser.idle:  # a body, or a head, is still arriving
                deadline = self.policy.deadline(connection, self.phase())
                data = self.receive(connection, deadline.at - time.monotonic())
                if data is None:
                    self.refuse(connection, refusal(deadline.action))
                    return
            else:
                data = self.next_request(connection)
                if data is None:
                    return
            try:
                if not data:
                    parser.feed_eof()
                    return
                connection.last_active = time.monotonic()
                if connection.started <= 0.0:
                    connection.started = connection.last_active
                parser.feed(data)
            except HTTPError as error:
                self.refuse(connection, error)
                return

    def next_request(self, connection: Connection) -> bytes | None:
        """Bytes of the next request, or None once the connection has been idle too long
        (or was passed to another worker meanwhile)."""
        assert isinstance(connection, GeventConnection)
        me = gevent.getcurrent()
        while True:
            if handed_off(connection):  # passed on while it waited: close this copy
                return None
            # The phase changes while it waits (a stop wakes it): look again each time.
            deadline = self.policy.deadline(connection, self.phase())
            remaining = deadline.at - time.monotonic()
            if remaining <= 0:
                return None
            self.idle[me] = connection
            try:
                gsocket.wait_read(connection.fd, remaining, timeout_exc=TimeoutError)
            except _Wake:
                continue
            except TimeoutError:
                pass
            finally:
                with self.offload_lock:  # the offload thread may be passing it on
                    self.idle.pop(me, None)
            if handed_off(connection):
                continue
            try:
                return connection.sock.recv(RECV_SIZE)
            except BlockingIOError:
                if time.monotonic() >= deadline.at:
                    return None

    def receive(self, connection: Connection, timeout: float) -> bytes | None:
        """Up to RECV_SIZE bytes (b"" at EOF), or None if none came within `timeout`."""
        if timeout <= 0:
            return None
        sock = connection.sock
        sock.settimeout(timeout)
        try:
            return sock.recv(RECV_SIZE)
        except TimeoutError:
            return None
        finally:
            sock.setblocking(False)

    def refuse(self, connection: Connection, error: HTTPError) -> None:
        self.log.debug(f"Invalid request from {connection.peer}: {error.status} {error}")
        connection.refuse(error)
