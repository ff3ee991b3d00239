"""The connection policy every worker class follows: how long a connection may stay idle,
take to send a head or a body, and linger while the worker stops; and whether it may move
to another worker. Connection state in, a deadline and what to do then out.

The classes differ only in how they wait: the sync and threaded loops look at every
connection at each heartbeat (`tick()`, once a second), a gevent greenlet waits on its own
connection with the deadline as its timeout. Both ask this one object, so the numbers and
the rules cannot drift apart.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

from dynocorn.http import HTTPError, RequestParser, RequestTimeout
from dynocorn.workers.connection import Connection


class Watched(Protocol):
    """What the policy reads of a connection: a Connection, or the ASGI worker's."""

    parser: RequestParser
    started: float  # the unfinished request's first byte; -1.0 before any, 0.0 idle
    last_active: float


NEW_CONNECTION_GRACE = 5.0  # seconds a new connection may take to send its first byte
HEAD_TIMEOUT = 30.0  # seconds from a request's first byte to its complete head
# When a worker stops, an idle connection is closed only after a moment of quiet: a client
# in the middle of a burst sends its next request within milliseconds of an answer, and
# closing under it would lose that request (what arrives meanwhile is answered with
# `Connection: close`). On TERM the moment is short, so stopping stays quick; a retiring
# worker (max-requests, lifetime, memory) waits up to the keep-alive timeout, at most
# RETIRE_LINGER (its successor already runs, and two processes cost memory).
RETIRE_LINGER = 5.0
TERM_LINGER = 0.2


class Phase(enum.Enum):
    """Where the worker is in its life."""

    SERVING = "serving"
    RETIRING = "retiring"  # max-requests, lifetime, memory, a changed parent: its successor runs
    TERMINATING = "terminating"  # TERM: every worker is stopping


class Action(enum.Enum):
    """What to do with a connection whose deadline has passed."""

    CLOSE = "close"  # idle between requests: close it quietly
    HEAD_TIMEOUT = "head timeout"  # a request head still incomplete: 408, then close
    BODY_STALLED = "body stalled"  # a body that stopped arriving: 408, then close


@dataclass(frozen=True)
class Deadline:
    at: float  # monotonic seconds
    action: Action


@dataclass(frozen=True)
class ConnectionPolicy:
    keepalive: float  # the keepalive setting: idle seconds between requests
    io_timeout: float  # seconds a body may pause

    def idle_limit(self, phase: Phase, fresh: bool) -> float:
        """Seconds a connection may stay idle between requests. `fresh`: no request yet
        (clients connect ahead of need, so a little longer while serving)."""
        if phase is Phase.TERMINATING:
            return min(self.keepalive, TERM_LINGER)
        if phase is Phase.RETIRING:
            return min(self.keepalive, RETIRE_LINGER)
        return max(self.keepalive, NEW_CONNECTION_GRACE) if fresh else self.keepalive

    def deadline(self, connection: Watched, phase: Phase) -> Deadline:
        """When the connection's current wait ends, and what to do then."""
        if connection.parser.idle and not connection.parser.requests:
            limit = self.idle_limit(phase, fresh=connection.started < 0.0)
            return Deadline(connection.last_active + limit, Action.CLOSE)
        stalled = connection.last_active + self.io_timeout
        if connection.parser.requests:  # a body is still arriving
            return Deadline(stalled, Action.BODY_STALLED)
        # A head is arriving: whole within HEAD_TIMEOUT, and never pausing for io_timeout.
        return Deadline(min(connection.started + HEAD_TIMEOUT, stalled), Action.HEAD_TIMEOUT)


def refusal(action: Action) -> HTTPError:
    """The answer a timed-out request gets (never for CLOSE, which answers nothing)."""
    if action is Action.HEAD_TIMEOUT:
        return RequestTimeout("request not received in time")
    return RequestTimeout("request body stalled")


def passable(connection: Connection) -> bool:
    """Whether a connection may move to another worker (handoff.py): nothing of its next
    request has been read, so the socket alone carries everything."""
    return not connection.queued and connection.parser.idle and not connection.parser.requests
