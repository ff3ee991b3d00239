"""Small request-answer servers that live in the master's loop: the control socket and the
metrics endpoint.

No thread: the master forks its workers, and a thread holding a lock (logging's, the import
lock) at a fork leaves that lock held forever in the child. So each server's listening
socket, and each of its clients, is one more source in the loop's selector; a client is
read when it is readable, answered once its request is whole, and closed. Requests are
small and answers are a few kilobytes, which a socket's buffer takes in one send; a client
that sends too much, or too slowly, is dropped, so no client can hold the master up.
"""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Callable

CLIENT_DEADLINE = 5.0  # seconds a client has to send its whole request
MAX_REQUEST = 65536
MAX_CLIENTS = 32

# What a server makes of a client's bytes so far: None while the request is not whole,
# else the whole answer (b"" to close without one).
Answer = Callable[[bytes], bytes | None]


class LoopServer:
    """A listening socket in the master's selector; `answer` is called on the request
    bytes each time more arrive."""

    def __init__(self, sock: socket.socket, answer: Answer, name: str) -> None:
        self.sock = sock
        self.answer = answer
        self.name = name
        sock.setblocking(False)
        self.clients: dict[socket.socket, tuple[bytearray, float]] = {}
        self.selector: selectors.BaseSelector | None = None
        self.admit: Callable[[socket.socket], bool] = lambda client: True

    def register(self, selector: selectors.BaseSelector) -> None:
        self.selector = selector
        selector.register(self.sock, selectors.EVENT_READ, self.on_listener)

    def on_listener(self) -> None:
        while len(self.clients) < MAX_CLIENTS:
            try:
                client, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # out of descriptors, say: the next wake-up tries again
            if not self.admit(client):
                client.close()
                continue
            client.setblocking(False)
            self.clients[client] = (bytearray(), time.monotonic() + CLIENT_DEADLINE)
            assert self.selector is not None
            self.selector.register(client, selectors.EVENT_READ, lambda c=client: self.on_client(c))

    def on_client(self, client: socket.socket) -> None:
        buffer, _ = self.clients[client]
        try:
            data = client.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.drop(client)
            return
        buffer += data
        if len(buffer) > MAX_REQUEST:
            self.drop(client)
            return
        reply = self.answer(bytes(buffer))
        if reply is None:
            return
        try:
            client.setblocking(True)
            client.settimeout(1.0)  # a client that does not read its answer is dropped
            client.sendall(reply)
        except OSError:
            pass
        self.drop(client)

    def expire(self, now: float) -> None:
        """Drop the clients past their deadline (called on each pass of the loop)."""
        for client, (_, deadline) in list(self.clients.items()):
            if now > deadline:
                self.drop(client)

    def drop(self, client: socket.socket) -> None:
        self.clients.pop(client, None)
        if self.selector is not None:
            try:
                self.selector.unregister(client)
            except (KeyError, ValueError):
                pass
        client.close()

    def close(self) -> None:
        for client in list(self.clients):
            self.drop(client)
        if self.selector is not None:
            try:
                self.selector.unregister(self.sock)
            except (KeyError, ValueError):
                pass
        self.sock.close()

    def close_in_worker(self) -> None:
        """In a forked worker: only the descriptors go (the selector is the master's)."""
        for client in self.clients:
            client.close()
        self.sock.close()
