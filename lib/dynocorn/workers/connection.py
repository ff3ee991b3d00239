"""One client connection: its socket, its parser, and blocking-with-a-timeout I/O.

The socket is non-blocking between requests (the worker's loop watches it); while a request
is served it may block, but never longer than `io_timeout` per operation, so a client that
stops reading or sending cannot hold a worker, or a thread, past that.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from dynocorn.http import HTTPError, RequestParser
from dynocorn.wsgi import EnvironBuilder


class ConnectionAborted(OSError):
    """The worker gave up on this connection (a request timeout) while a thread used it."""


class Connection:
    __slots__ = (
        "aborted",
        "builder",
        "fd",
        "io_timeout",
        "last_active",
        "listener_fd",
        "lock",
        "parked_at",
        "parser",
        "peer",
        "queued",
        "read_timed_out",
        "sent",
        "sock",
        "started",
    )

    def __init__(
        self, sock: socket.socket, peer: Any, parser: RequestParser, builder: EnvironBuilder
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.parser = parser
        self.builder = builder
        self.listener_fd = -1  # the listener it came through, so that it can be handed off
        self.last_active = time.monotonic()
        # When the unfinished request's first byte came; -1.0 before any byte, 0.0 idle.
        self.started = -1.0
        self.queued = False
        self.parked_at = 0.0  # the threaded worker's: when it began to wait for a thread
        # Only the threaded worker sets these: another thread may answer for a stuck one.
        self.lock: threading.Lock | None = None
        self.aborted = False
        self.sent = 0  # bytes sent for the current request, counted only when locked
        self.io_timeout = 30.0  # the worker sets its own
        self.read_timed_out = False  # why the last read_more() failed: a stall (408), else 400

    # Bound methods handed to the WSGI layer: no closure to build per request.

    def send(self, data: bytes) -> None:
        """Send all of ``data``, waiting up to io_timeout per send for a slow client."""
        if self.lock is not None:
            with self.lock:
                if self.aborted:
                    raise ConnectionAborted("the request timed out")
                self.sent += len(data)
                self._send(data)
        else:
            self._send(data)

    def _send(self, data: bytes) -> None:
        # Non-blocking first: the whole response usually fits in the socket buffer, and
        # switching the socket to a timeout costs system calls.
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent < len(data):
            self._send_rest(data, sent)

    def _send_rest(self, data: bytes, sent: int) -> None:
        """The client is slower than us: block for it, up to io_timeout per send."""
        sock = self.sock
        sock.settimeout(self.io_timeout)
        try:
            sock.sendall(memoryview(data)[sent:])
        finally:
            sock.setblocking(False)

    def send_file(self, file: Any, offset: int, count: int) -> int:
        """sendfile(): up to `count` bytes of `file` from `offset`, waiting up to io_timeout
        for a slow client; the bytes sent."""
        if self.lock is not None:
            with self.lock:
                if self.aborted:
                    raise ConnectionAborted("the request timed out")
                self.sent += count
                return self._sendfile(file, offset, count)
        return self._sendfile(file, offset, count)

    def _sendfile(self, file: Any, offset: int, count: int) -> int:
        sock = self.sock
        sock.settimeout(self.io_timeout)
        try:
            return sock.sendfile(file, offset, count)
        finally:
            sock.setblocking(False)

    def read_more(self) -> bool:
        """More body for wsgi.input: wait (up to io_timeout) for the client to send it;
        False when none will come (read_timed_out says whether it stalled)."""
        sock = self.sock
        sock.settimeout(self.io_timeout)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            self.read_timed_out = True
            return False
        except OSError:
            return False
        finally:
            sock.setblocking(False)
        try:
            if not data:
                self.parser.feed_eof()
                return False
            self.parser.feed(data)
        except HTTPError:
            return False
        return True

    def bytes_waiting(self) -> bool:
        """Whether bytes wait unread: closing the connection now would reset it and lose
        them. False when the client has closed its side (nothing is lost then) or on error."""
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:
            return False

    def refuse(self, error: HTTPError) -> None:
        """Best effort: the status of a bad request, before the caller closes."""
        try:
            self.sock.send(error.render())
        except OSError:
            pass
