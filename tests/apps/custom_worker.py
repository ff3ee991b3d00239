"""Users' worker classes, loaded with -k custom_worker.<Name>.

`Loud` extends the sync worker. `Minimal` is what the README's custom worker section
describes: a subclass of the documented base class, HttpWorker, that follows its contract
and nothing more (one connection at a time, blocking I/O).
"""

from __future__ import annotations

import selectors
import socket

from dynocorn.http import HTTPError
from dynocorn.workers.connection import Connection
from dynocorn.workers.http_worker import HttpWorker
from dynocorn.workers.sync import SyncWorker

HEARTBEAT = 1.0  # seconds; the master kills a worker silent for `timeout`


class Loud(SyncWorker):
    name = "loud"

    def setup(self) -> None:
        super().setup()
        self.log.info("custom worker class is serving")


class Minimal(HttpWorker):
    name = "minimal"

    def run(self) -> None:
        self.setup_http()
        self.log.info("minimal worker class is serving")
        with selectors.DefaultSelector() as selector:
            for listener in self.listeners:
                listener.sock.setblocking(False)
                selector.register(listener.sock, selectors.EVENT_READ, listener.fileno())
            while self.alive and not self.parent_changed():
                self.notify()
                for key, _ in selector.select(HEARTBEAT):
                    self.accept(key.fileobj, key.data)  # type: ignore[arg-type]

    def accept(self, listening: socket.socket, listener_fd: int) -> None:
        try:
            sock, peer = listening.accept()
        except (BlockingIOError, InterruptedError):
            return  # another worker took it
        with sock:
            self.converse(self.new_connection(sock, peer, listener_fd))

    def converse(self, connection: Connection) -> None:
        """Serve the connection's requests until it closes or handle() says to stop."""
        parser = connection.parser
        while self.alive:
            while parser.requests:
                if not self.handle(connection, parser.requests.popleft()):
                    return
                self.notify()
            connection.sock.settimeout(self.keepalive)  # Connection's I/O may reset it
            try:
                data = connection.sock.recv(65536)
            except OSError:  # the keep-alive timeout, or the client went away
                return
            try:
                if not data:
                    parser.feed_eof()
                    return
                parser.feed(data)
            except HTTPError as error:
                connection.refuse(error)
                return


class NotAWorker:
    pass


class ServesAsgi(SyncWorker):
    """Says it serves ASGI apps, as the asgi worker does: a WSGI app must stop it at boot."""

    name = "serves-asgi"
    interface = "asgi"
