"""A request body on its way from the parser to the app.

The parser queues a Request as soon as its head is complete, so that the app can start
while the body arrives (and a client waiting for 100 Continue sends it at all). From then
on the body has two users, each with its own side: the parser (and its chunked decoder)
only `append()`s the bytes it decodes; the consumer (wsgi.input) only takes them from the
front (`take`, `take_line`, `discard`). The bytes of a pipelined next request never enter
it. Whether the body is whole is the request's `complete`, which the parser sets.
"""

from __future__ import annotations


class Body:
    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data = bytearray()

    # -- the parser's side

    def append(self, data: bytes | bytearray | memoryview) -> None:
        self._data += data

    # -- the consumer's side

    def __len__(self) -> int:
        """The bytes received and not taken yet."""
        return len(self._data)

    def __bytes__(self) -> bytes:
        """A copy of what is waiting, which stays."""
        return bytes(self._data)

    def take(self, size: int = -1) -> bytes:
        """Up to `size` bytes from the front (all there is when `size` < 0)."""
        data = self._data
        if size < 0 or size >= len(data):
            taken = bytes(data)
            data.clear()
            return taken
        taken = bytes(data[:size])
        del data[:size]
        return taken

    def take_line(self, limit: int) -> tuple[bytes, bool]:
        """The bytes up to and including the first newline within `limit` bytes, and True;
        else up to `limit` of those waiting, and False (the line goes on, or is too long)."""
        data = self._data
        end = data.find(b"\n", 0, limit)
        if end >= 0:
            return self.take(end + 1), True
        return self.take(min(len(data), limit)), False

    def discard(self) -> int:
        """Drop what is waiting; how many bytes that was."""
        dropped = len(self._data)
        self._data.clear()
        return dropped
