"""The pipe from a worker up to its master: readiness, retirement, and stats.

One message per line: `r` (app loaded, serving), `x` (retiring after its current requests:
max-requests or lifetime), `s <json>` (stats, sent at least once a second: the heartbeat). A
pipe, not a file's mtime, so a slow disk cannot make a healthy worker look dead. The worker
never blocks on it: if the master is not reading, a message is dropped, and the next stats
will do.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Iterator
from typing import Any

READY = b"r\n"
RETIRING = b"x\n"
STATS = b"s "


class Message(enum.Enum):
    READY = "ready"
    RETIRING = "retiring"
    STATS = "stats"


class WorkerChannel:
    """The worker's end."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)

    def _send(self, message: bytes) -> None:
        try:
            os.write(self.fd, message)
        except (BlockingIOError, BrokenPipeError, InterruptedError):
            pass

    def ready(self) -> None:
        self._send(READY)

    def retiring(self) -> None:
        self._send(RETIRING)

    def stats(self, figures: dict[str, Any]) -> None:
        self._send(STATS + json.dumps(figures, separators=(",", ":")).encode() + b"\n")

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


class MasterChannel:
    """The master's end: read whatever is there and split it into messages."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._partial = b""

    def read(self) -> Iterator[tuple[Message, Any]] | None:
        """Messages with their payload (the stats, else None); None once the worker closed
        its end."""
        try:
            data = os.read(self.fd, 65536)
        except (BlockingIOError, InterruptedError):
            return iter(())
        if not data:
            return None
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        return self._decode(lines)

    @staticmethod
    def _decode(lines: list[bytes]) -> Iterator[tuple[Message, Any]]:
        for line in lines:
            if line == b"r":
                yield Message.READY, None
            elif line == b"x":
                yield Message.RETIRING, None
            elif line.startswith(STATS):
                try:
                    yield Message.STATS, json.loads(line[len(STATS) :])
                except ValueError:
                    continue

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
