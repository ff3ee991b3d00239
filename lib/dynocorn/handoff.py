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
import os
import socket
import struct
import termios
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from dynocorn.scoreboard import Scoreboard
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


class Weighing(NamedTuple):
    """A worker's share of the connections against its siblings' (weigh_share())."""

    over: bool  # it holds more than its fair share: it passes an idle one to `spare`
    under: bool  # it holds fewer (or a spare one is stranded): it watches `spare`
    spare_seen: bool  # a spare connection was queued at this look (the next one's input)
    settled: bool  # neither, and nothing queued: the next look may wait longer


def weigh_share(board: Scoreboard, spare: HandoffQueue, held: int, spare_seen: bool) -> Weighing:
    """The fair share policy of every worker class: whether a worker holding `held`
    connections is over its fair share (it passes one on), or under it (it takes spare
    ones). `spare_seen`: what the previous look returned."""
    share = board.fair_share()
    # Over only by two or more against the emptiest worker: with connections always in
    # flight between workers, a difference of one is the noise of the count.
    over = held > share and held - board.fewest() >= 2
    # A spare connection still queued since the last look: the worker it was meant for
    # filled up meanwhile. Take it anyway, rather than leave a client waiting.
    pending = spare.pending()
    under = held < share or (pending and spare_seen)
    return Weighing(over, under, pending, not (over or under or pending))
