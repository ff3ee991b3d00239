"""The pipe from a worker up to its master: readiness, retirement, and stats.

One message per line: `r` (app loaded, serving), `x <cause>` (retiring after its current
requests, and why: `x max_requests`, `x lifetime`, `x memory`, `x timeout`, exit_cause.py's
values; a bare `x` is still read, as a retirement for no reason given), `s <json>` (stats,
sent at least once a second: the heartbeat). A pipe, not a file's mtime, so a slow disk
cannot make a healthy worker look dead. The worker never blocks on it: if the master is not
reading, a message is dropped, and the next stats will do. A message is dropped whole,
never cut: a write to a full pipe may take only part of a long one (stats can carry
thousands of queue samples), and its tail goes first at the next message, or the master
would read the next message glued to half of this one.
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Iterator
from typing import Any

READY = b"r\n"
RETIRING = b"x"
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
        self._unsent = b""  # the tail of a message the pipe took only part of

    def _send(self, message: bytes) -> None:
        if self._unsent:
            self._unsent = self._write(self._unsent, begun=True)
            if self._unsent:
                return  # still full: this message is dropped whole
        self._unsent = self._write(message, begun=False)

    def _write(self, data: bytes, begun: bool) -> bytes:
        """What is left to send of `data`: b"" once it is all sent, or when the pipe takes
        none of a message not `begun` (dropped whole); the rest of a message the pipe took
        only part of."""
        try:
            written = os.write(self.fd, data)
        except (BlockingIOError, InterruptedError):
            return data if begun else b""
        except BrokenPipeError:
            return b""  # the master is gone
        return data[written:]

    def ready(self) -> None:
        self._send(READY)

    def retiring(self, cause_value: str) -> None:
        """`cause_value`: an ExitCause's value (one word, no newline)."""
        self._send(RETIRING + b" " + cause_value.encode() + b"\n")

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
        """Messages with their payload (the stats, a retirement's reason, else None); None
        once the worker closed its end."""
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
            elif line == RETIRING:
                yield Message.RETIRING, None
            elif line.startswith(RETIRING + b" "):
                yield Message.RETIRING, line[len(RETIRING) + 1 :].decode(errors="replace")
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
