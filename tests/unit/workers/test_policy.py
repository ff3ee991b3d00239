"""The connection policy (lib/dynocorn/workers/policy.py): state in, deadline out, for every
worker class. Real connections (a socket pair) and the real parser; no clock but the
connection's own timestamps."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import pytest

from dynocorn.http import Limits, RequestParser
from dynocorn.workers.connection import Connection
from dynocorn.workers.policy import (
    HEAD_TIMEOUT,
    NEW_CONNECTION_GRACE,
    RETIRE_LINGER,
    TERM_LINGER,
    Action,
    ConnectionPolicy,
    Phase,
    passable,
    refusal,
)
from dynocorn.wsgi import EnvironBuilder, WSGISettings

POLICY = ConnectionPolicy(keepalive=2.0, io_timeout=15.0)


@pytest.fixture
def connection() -> Iterator[Connection]:
    ours, theirs = socket.socketpair()
    settings = WSGISettings(
        multithread=False,
        multiprocess=False,
        errors=sys.stderr,
        forwarded_allow_ips=[],
        secure_scheme_headers={},
    )
    builder = EnvironBuilder(settings, None)
    conn = Connection(ours, ("127.0.0.1", 1), RequestParser(Limits()), builder)
    conn.last_active = 100.0
    yield conn
    ours.close()
    theirs.close()


def test_a_fresh_connection_gets_the_grace_then_the_keep_alive(connection: Connection) -> None:
    deadline = POLICY.deadline(connection, Phase.SERVING)
    assert (deadline.at, deadline.action) == (100.0 + NEW_CONNECTION_GRACE, Action.CLOSE)
    connection.started = 0.0  # one request served: now between requests
    assert POLICY.deadline(connection, Phase.SERVING).at == 102.0


@pytest.mark.parametrize(
    ("phase", "linger"),
    [(Phase.TERMINATING, TERM_LINGER), (Phase.RETIRING, 2.0)],
)
def test_a_stopping_worker_lingers_less(
    connection: Connection, phase: Phase, linger: float
) -> None:
    connection.started = 0.0
    assert POLICY.deadline(connection, phase).at == 100.0 + linger
    long_keepalive = ConnectionPolicy(keepalive=95.0, io_timeout=15.0)  # Heroku's
    assert long_keepalive.idle_limit(Phase.RETIRING, fresh=False) == RETIRE_LINGER


def test_a_head_in_progress_has_a_whole_and_a_pause_deadline(connection: Connection) -> None:
    connection.parser.feed(b"GET / HTTP/1.1\r\nHost: x\r\n")  # no blank line yet
    connection.started = 90.0
    deadline = POLICY.deadline(connection, Phase.SERVING)
    assert (deadline.at, deadline.action) == (100.0 + 15.0, Action.HEAD_TIMEOUT)
    connection.started = 100.0 - HEAD_TIMEOUT + 1.0  # the whole-head limit comes first
    assert POLICY.deadline(connection, Phase.SERVING).at == 101.0
    assert refusal(Action.HEAD_TIMEOUT).status == 408
    assert not passable(connection)


def test_a_body_that_stops_arriving(connection: Connection) -> None:
    connection.parser.feed(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
    connection.started = 99.0
    deadline = POLICY.deadline(connection, Phase.TERMINATING)  # the phase does not shorten it
    assert (deadline.at, deadline.action) == (115.0, Action.BODY_STALLED)
    assert refusal(Action.BODY_STALLED).status == 408
    assert not passable(connection)


def test_only_a_connection_with_nothing_read_may_move(connection: Connection) -> None:
    assert passable(connection)
    connection.queued = True
    assert not passable(connection)
