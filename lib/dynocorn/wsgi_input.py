"""wsgi.input: the request body as the app reads it.

The parser appends a body's bytes to its request as they arrive; Input takes them from the
front, asking the connection for more (`read_more`) while the body is incomplete, and never
reads past its end, so the bytes of a pipelined next request stay with the parser.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator

from dynocorn.http import Request


class IncompleteBody(OSError):
    """The client stopped sending (or stalled) before the body it announced was complete.

    An OSError, so frameworks treat it as the client's I/O failure (werkzeug: 400); the
    worker answers 408 or 400 itself if the app lets it through.
    """


class Input:
    """wsgi.input: streams the request body and never reads past its end.

    The parser appends body bytes to `request.body` (http/body.py); this takes them from
    the front, so bytes of a pipelined next request stay in the parser, out of reach.
    """

    __slots__ = ("_broken", "_read_more", "_request", "on_first_read")

    def __init__(self, request: Request, read_more: Callable[[], bool]) -> None:
        self._request = request
        self._read_more = read_more
        self._broken = False
        self.on_first_read: Callable[[], None] | None = None

    def _more(self) -> bool:
        """Wait for more body bytes; only called with an empty buffer. A body that ends
        short of what was announced raises IncompleteBody: it must not pass for complete."""
        if self._request.complete:
            return False
        if self._broken:
            raise IncompleteBody("the request body was already found incomplete")
        callback = self.on_first_read
        if callback is not None:
            # The client of an "Expect: 100-continue" request sends the body only when told.
            self.on_first_read = None
            callback()
        if self._read_more() or self._request.complete:
            return True
        self._broken = True  # a second read must not wait for the client all over again
        raise IncompleteBody("the client stopped sending before the end of the body")

    def read(self, size: int | None = -1) -> bytes:
        body = self._request.body
        if size is None or size < 0:
            chunks = []
            while True:
                if body:
                    chunks.append(body.take())
                if not self._more():
                    return b"".join(chunks)
        if len(body) >= size:
            return body.take(size)
        # Apps (multipart parsers especially) expect read(n) to return n bytes unless the
        # body ends, so wait for them rather than returning a short read.
        out = bytearray()
        while len(out) < size:
            if body:
                out += body.take(size - len(out))
            elif not self._more():
                break
        return bytes(out)

    def readline(self, size: int | None = -1) -> bytes:
        body = self._request.body
        limit = size if size is not None and size >= 0 else sys.maxsize
        line, ended = body.take_line(limit)
        if ended:
            return line
        out = bytearray(line)
        while len(out) < limit:
            if body:
                line, ended = body.take_line(limit - len(out))
                out += line
                if ended:
                    break
            elif not self._more():
                break
        return bytes(out)

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def drain(self, limit: int) -> bool:
        """Discard the unread body, up to `limit` bytes; True if the connection is reusable."""
        request = self._request
        body = request.body
        if self.on_first_read is not None and not request.complete:
            # The client still waits for 100 Continue: whether it sends the body anyway is
            # unknowable, so the connection cannot carry another request.
            return False
        left = limit
        while True:
            left -= body.discard()
            if left < 0:
                return False
            if request.complete:
                return True
            if not self._read_more():
                return False


class EmptyInput:
    """wsgi.input for a request without a body: one shared, stateless instance.

    Most requests (GET, HEAD) have no body; sharing this spares an object per request.
    """

    __slots__ = ()

    def read(self, size: int | None = -1) -> bytes:
        return b""

    def readline(self, size: int | None = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list[bytes]:
        return []

    def __iter__(self) -> Iterator[bytes]:
        return iter(())

    def drain(self, limit: int) -> bool:
        return True


EMPTY_INPUT = EmptyInput()
