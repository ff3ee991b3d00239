"""Balance across workers: a kept-alive connection may move to another worker.

Every worker accepts from the shared listening socket, but a kept-alive connection stays
with the worker that accepted it: a request arriving on it while that worker is busy with a
slow request would wait, while other workers idle. gunicorn's sync worker avoids this by
closing every connection (each request then goes through the one shared accept queue); a
router that keeps connections open (Heroku's does) cannot be served that way.

So a busy worker passes such a connection, whose next request has arrived but is not read
yet, to this queue: a unix SOCK_SEQPACKET socket pair that the master makes before the
first fork, so that every worker holds both ends. The socket itself travels as SCM_RIGHTS
ancillary data; the kernel keeps it open while it is in flight. Any worker that could serve
at once watches the receiving end (with EPOLLEXCLUSIVE, so one idle worker wakes per connection)
and takes it, as it would take a new connection from the listening socket: the queue is a
second accept queue, shared by all, in arrival order. Nothing of the request has been read
from the socket when it is passed, so nothing but the listener it came through travels
with it.
"""

from __future__ import annotations

import array
import fcntl
import mmap
import os
import socket
import struct
import termios
from dataclasses import dataclass, field
from typing import Any

from dynocorn.slow_watch import SlowWatch

# The listener's file descriptor: the same number in every worker, forked from the master.
_HEADER = struct.Struct("!i")
_FDS_SIZE = socket.CMSG_SPACE(array.array("i", [0]).itemsize)


class HandoffQueue:
    """Both ends of the queue; workers send on one and receive on the other."""

    def __init__(self) -> None:
        self._send_end, self._receive_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for end in (self._send_end, self._receive_end):
            end.setblocking(False)

    def fileno(self) -> int:
        """The receiving end, to watch for readability."""
        return self._receive_end.fileno()

    def send(self, sock: socket.socket, listener_fd: int) -> bool:
        """Pass `sock` (the caller then closes its own copy); False if the queue is full."""
        return self.send_fd(sock.fileno(), listener_fd)

    def send_fd(self, fd: int, listener_fd: int) -> bool:
        try:
            self._send_end.sendmsg(
                [_HEADER.pack(listener_fd)],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))],
            )
        except (BlockingIOError, InterruptedError):
            return False
        return True

    def receive(self) -> tuple[socket.socket, Any, int] | None:
        """The next passed connection, its peer's address and its listener's descriptor;
        None when the queue is empty (another worker was quicker). A connection whose client
        went away while it was queued is closed and skipped."""
        while True:
            try:
                data, ancillary, _flags, _address = self._receive_end.recvmsg(
                    _HEADER.size, _FDS_SIZE, socket.MSG_CMSG_CLOEXEC
                )
            except (BlockingIOError, InterruptedError):
                return None
            fds = array.array("i")
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
            if len(fds) != 1 or len(data) != _HEADER.size:
                for fd in fds:  # never leak a descriptor from a malformed message
                    os.close(fd)
                continue
            sock = socket.socket(fileno=fds[0])
            try:
                peer = sock.getpeername()
            except OSError:  # the client is gone already
                sock.close()
                continue
            return sock, peer, _HEADER.unpack(data)[0]

    def pending(self) -> bool:
        """Whether a connection waits in the queue (FIONREAD: the bytes queued)."""
        size = array.array("i", [0])
        try:
            fcntl.ioctl(self._receive_end.fileno(), termios.FIONREAD, size)
        except OSError:
            return False
        return size[0] > 0

    def close(self) -> None:
        self._send_end.close()
        self._receive_end.close()


FREE = 2**31 - 1  # a scoreboard slot no worker holds
BOOTING = FREE - 1  # a slot whose worker is not serving yet: it counts as no worker


class Scoreboard:
    """How many connections each worker holds, in memory the master shares before forking.

    One int32 per worker slot: FREE (the largest int32, so that the emptiest worker is a plain
    minimum) when no worker holds the slot. The master claims a slot
    for each worker it forks and releases it when the worker is reaped; each worker writes
    only its own slot, and reads the others to know its fair share."""

    def __init__(self, slots: int) -> None:
        # Per slot: its connections, then the request it runs (`marks`) and how long one
        # runs before it is slow (`slow_after_us`, see SlowWatch). Then two ints: whether
        # the whole server is stopping (TERM to all), and one past the highest slot ever
        # claimed, so that readers scan only those.
        self._memory = mmap.mmap(-1, 4 * (3 * slots + 2))
        self._all = memoryview(self._memory).cast("i")
        self._counts = self._all[:slots]
        self.marks = self._all[slots : 2 * slots]
        self.slow_after_us = self._all[2 * slots : 3 * slots]
        self._stopping_at = 3 * slots
        self._used_at = 3 * slots + 1
        for slot in range(slots):
            self._counts[slot] = FREE

    @property
    def stopping(self) -> bool:
        """The master is stopping every worker: the hand-off queues are drained, not left."""
        return bool(self._all[self._stopping_at])

    def stop(self) -> None:
        """In the master, before it tells the workers to stop."""
        self._all[self._stopping_at] = 1

    def claim(self) -> int | None:
        """In the master: a free slot for a new worker, or None when all are taken."""
        for slot, count in enumerate(self._counts):
            if count == FREE:
                self._counts[slot] = BOOTING
                self.marks[slot] = 0
                self._all[self._used_at] = max(self._all[self._used_at], slot + 1)
                return slot
        return None

    def release(self, slot: int) -> None:
        self._counts[slot] = FREE

    def set(self, slot: int, connections: int) -> None:
        self._counts[slot] = connections

    def held(self, slot: int) -> int:
        """The connections the worker in `slot` holds (BOOTING or FREE: no serving worker)."""
        return self._counts[slot]

    def fewest_between_requests(self) -> int:
        """The fewest connections held by a serving worker that runs no request now (a
        sync worker between requests: it could serve a waiting one at once); BOOTING when
        every worker runs one."""
        used = self._all[self._used_at]
        counts, marks = self._counts[:used], self.marks[:used]
        free = (c for c, m in zip(counts, marks, strict=True) if m == 0 and c < BOOTING)
        return min(free, default=BOOTING)

    def fewest(self) -> int:
        """The fewest connections a worker holds (a read of a few ints: the accept path asks
        it for each kept-alive connection it takes)."""
        fewest = min(self._counts[: self._all[self._used_at]], default=FREE)
        return 0 if fewest >= BOOTING else fewest

    def live_counts(self) -> list[int]:
        """The connections each serving worker holds."""
        return [count for count in self._counts[: self._all[self._used_at]] if count < BOOTING]

    def has_company(self) -> bool:
        """Whether two workers or more serve: someone to pass a connection to."""
        return len(self.live_counts()) > 1

    def fair_share(self) -> int:
        """The most connections a worker should hold: all of them spread evenly."""
        live = self.live_counts()
        return -(-sum(live) // len(live)) if live else 0


@dataclass
class Balance:
    """What the master makes before the first fork so that workers can share the load.

    `waiting`: connections whose request arrived while their worker was busy; any worker
    that can serve one now takes it. `spare`: idle connections of a worker that holds more
    than its fair share; only workers under their share take them. `watch`: the master's
    look at which worker runs a slow request (slow_watch.py)."""

    slots: int
    waiting: HandoffQueue = field(default_factory=HandoffQueue)
    spare: HandoffQueue = field(default_factory=HandoffQueue)
    board: Scoreboard = field(init=False)
    watch: SlowWatch = field(init=False)

    def __post_init__(self) -> None:
        self.board = Scoreboard(self.slots)
        self.watch = SlowWatch(self.board)

    def close(self) -> None:
        self.waiting.close()
        self.spare.close()
        self.watch.close_all()
