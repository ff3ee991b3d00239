"""Balance across workers: a kept-alive connection is not stuck behind its worker's slow
request while a sibling is idle (lib/dynocorn/handoff.py).

Proved by who answers, not by timing: each response carries the answering worker's pid.
Two kept-alive connections of one worker; the first starts a request that holds that worker
far longer than the test waits; the second's request must come back from the other worker.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import pytest

from clients import poll
from dynocorn.ctl import ask
from rawhttp import connect, read_response
from server import Server, running
from worker_classes import HAVE_GEVENT

# The slow request holds its worker this long; the test is done well before (it closes
# the connection, and the worker's stop is bounded by --graceful-timeout).
HOLD_SECONDS = 60
# The classes that serve one request at a time per worker: the request holds the worker.
# gevent's worker is held only by work that does not yield (CPU), hence the spinning route.
BUSY_WORKERS = [
    pytest.param([], "/announced-sleep", id="sync"),
    pytest.param(["-k", "gthread", "--threads", "1"], "/announced-sleep", id="gthread"),
    pytest.param(
        ["-k", "gevent"],
        "/announced-spin",
        id="gevent",
        marks=pytest.mark.skipif(not HAVE_GEVENT, reason="gevent is not installed"),
    ),
]


class KeptAlive:
    """One kept-alive connection: send a request, read its response."""

    def __init__(self, port: int) -> None:
        self.sock = connect(port, timeout=30)
        self.stream: BinaryIO = self.sock.makefile("rb")

    def send(self, path: str) -> None:
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())

    def answer(self) -> tuple[int, int]:
        """(status, pid of the answering worker)."""
        response = read_response(self.stream)
        assert response is not None, "the server closed the connection"
        return response.status, int(response.body)

    def ask_pid(self) -> int:
        self.send("/pid")
        status, pid = self.answer()
        assert status == 200
        return pid

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


@contextmanager
def kept_alive(port: int, count: int) -> Iterator[list[KeptAlive]]:
    connections = [KeptAlive(port) for _ in range(count)]
    try:
        yield connections
    finally:
        for connection in connections:
            connection.close()


def on_one_worker(connections: list[KeptAlive], count: int) -> tuple[list[KeptAlive], int]:
    """`count` connections that the same worker serves, and that worker's pid. With two
    workers and 2 * count - 1 connections, one worker holds at least `count` of them.

    Connections move while the split is uneven (the fair share: a worker with two more
    than the other passes an idle one on after a request), so ask until two rounds agree."""
    previous: dict[KeptAlive, int] = {}
    for _ in range(20):
        where = {connection: connection.ask_pid() for connection in connections}
        if where == previous:
            break
        previous = where
    else:
        raise AssertionError("the connections kept moving between workers")
    by_worker: dict[int, list[KeptAlive]] = {}
    for connection, pid in where.items():
        by_worker.setdefault(pid, []).append(connection)
    pid, held = max(by_worker.items(), key=lambda item: len(item[1]))
    assert len(held) >= count, f"connections per worker: {[len(c) for c in by_worker.values()]}"
    return held[:count], pid


@pytest.mark.parametrize(("worker_args", "route"), BUSY_WORKERS)
def test_a_request_behind_a_slow_one_is_answered_by_the_idle_sibling(
    worker_args: list[str], route: str
) -> None:
    threads = int(worker_args[-1]) if "--threads" in worker_args else 1
    args = [*worker_args, "-w", "2", "--graceful-timeout", "1", "testapps:routes"]
    with running(args, workers=2) as srv, kept_alive(srv.port, 2 * threads + 1) as connections:
        # Every thread of one worker will run a slow request, one per connection it holds.
        held, busy_pid = on_one_worker(connections, threads + 1)
        assert_the_idle_sibling_answers(srv, route, held, busy_pid)


@pytest.mark.parametrize(("worker_args", "route"), [BUSY_WORKERS[0], BUSY_WORKERS[1]])
def test_a_worker_added_with_ttin_takes_part(worker_args: list[str], route: str) -> None:
    """Started with one worker, nothing is passed on (no one would take it). A second one
    added with TTIN must count, for the first worker too: its connections, all opened
    before, are then served by the newcomer while the first is busy."""
    args = [*worker_args, "-w", "1", "--graceful-timeout", "1", "testapps:routes"]
    with running(args, workers=1) as srv, kept_alive(srv.port, 2) as connections:
        first_pid = connections[0].ask_pid()
        assert connections[1].ask_pid() == first_pid
        os.kill(srv.pid, signal.SIGTTIN)
        srv.wait_for(r"Booting worker with pid", count=2)
        srv.wait_for_workers(2)
        assert_the_idle_sibling_answers(srv, route, connections, first_pid)


def until_between_requests(srv: Server, pid: int) -> None:
    path = Path(srv.wait_for(r"Control socket: (\S+) ")[0].group(1))

    def idle() -> bool:
        rows = ask(path, "status", [])["workers"]
        return any(row["pid"] == pid and row["running"] == 0 for row in rows)

    poll(idle, 10, f"worker {pid} between requests")


def until_all_serve(srv: Server, workers: int) -> None:
    """Every worker booted and serving: none will take part in the balance later (an ASGI
    worker counts in the fair share once its lifespan startup is over)."""
    path = Path(srv.wait_for(r"Control socket: (\S+) ")[0].group(1))

    def serving() -> bool:
        rows = ask(path, "status", [])["workers"]
        return len(rows) == workers and all(row["state"] != "booting" for row in rows)

    poll(serving, 20, f"{workers} workers serving")


def assert_the_idle_sibling_answers(
    srv: Server, route: str, connections: list[KeptAlive], busy_pid: int
) -> None:
    """All but the last of `connections` (all served by `busy_pid`) start a slow request;
    the last one's request must be answered by another worker."""
    *held, waiting = connections
    # The busy worker must be between requests first: the client reads the last answer
    # before the worker has finished its bookkeeping after it, and on a loaded machine a
    # worker seen in a request for 10 ms passes its waiting connections on (as it should),
    # which would move the slow request this test needs on it. Its control socket says.
    until_between_requests(srv, busy_pid)
    # One at a time, each started before the next is sent: sent together, one could
    # find every thread still busy with the last pid question and move to the other.
    for number, connection in enumerate(held, start=1):
        connection.send(f"{route}?seconds={HOLD_SECONDS}")
        started = srv.wait_for(
            rf"testapps: {route}\?seconds={HOLD_SECONDS} started in (\d+)", count=number
        )
    assert {int(m.group(1)) for m in started} == {busy_pid}, "a slow request moved"
    # gthread parks a request only behind one that has run LONG_REQUEST (1 ms) already.
    held_since = time.monotonic()
    poll(lambda: time.monotonic() - held_since > 0.005, what="the slow requests to run")
    waiting.send("/pid")
    status, pid = waiting.answer()
    assert status == 200
    assert pid != busy_pid, "the request waited for its own busy worker"
    # The connection stays with the worker that answered: the next request too.
    assert waiting.ask_pid() == pid


ASGI_LOOPS = [
    pytest.param(["-k", "asgi", "--asgi-loop", loop], id=f"asgi-{loop}")
    for loop in ("asyncio", "uvloop")
]


def echo_over(connection: KeptAlive, body: bytes) -> tuple[int, bytes]:
    """(status, body) of a POST /echo of `body` on a kept-alive connection."""
    head = f"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n\r\n"
    connection.sock.sendall(head.encode() + body)
    response = read_response(connection.stream)
    assert response is not None, "the server closed the connection"
    return response.status, response.body


@pytest.mark.parametrize("worker_args", ASGI_LOOPS)
def test_asgi_connections_even_out_between_workers(worker_args: list[str]) -> None:
    """-k asgi: four kept-alive connections on one worker, then TTIN adds a second one. The
    first, over its fair share, passes idle connections (just answered) to the spare queue,
    the newcomer takes them, until each holds two. Meanwhile every client sends request
    after request, each the moment the last answer is read: every one is answered whole,
    on the connection it opened (no reset, no byte lost or doubled)."""
    args = [*worker_args, "-w", "1", "--graceful-timeout", "1", "asgi_apps:balance"]
    with running(args, workers=1) as srv, kept_alive(srv.port, 4) as connections:
        first_pid = connections[0].ask_pid()
        assert {connection.ask_pid() for connection in connections} == {first_pid}
        os.kill(srv.pid, signal.SIGTTIN)
        srv.wait_for(r"Booting worker with pid", count=2)
        answered_by: dict[KeptAlive, list[int]] = {c: [] for c in connections}
        failures: list[str] = []

        def converse(connection: KeptAlive, rounds: int) -> None:
            for number in range(rounds):
                body = f"{id(connection)}:{number}:".encode() * 200
                try:
                    assert echo_over(connection, body) == (200, body)
                    answered_by[connection].append(connection.ask_pid())
                except (AssertionError, OSError) as error:
                    failures.append(f"round {number}: {error!r}")
                    return

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            threads = [threading.Thread(target=converse, args=(c, 50)) for c in connections]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert not failures, failures
            latest = Counter(pids[-1] for pids in answered_by.values())
            if sorted(latest.values()) == [2, 2]:
                break
        else:
            raise AssertionError(f"connections per worker: {dict(latest)}")
        assert first_pid in latest
        moved = [c for c, pids in answered_by.items() if pids[-1] != first_pid]
        assert all(c.ask_pid() == answered_by[c][-1] for c in moved), "moved, then moved on"


@pytest.mark.parametrize(("worker_args", "route"), [BUSY_WORKERS[0], BUSY_WORKERS[1]])
def test_a_new_connection_goes_to_the_idle_worker(worker_args: list[str], route: str) -> None:
    args = [*worker_args, "-w", "2", "--graceful-timeout", "1", "testapps:routes"]
    with running(args, workers=2) as srv, kept_alive(srv.port, 1) as (slow,):
        busy_pid = slow.ask_pid()
        slow.send(f"{route}?seconds={HOLD_SECONDS}")
        srv.wait_for(rf"testapps: {route}\?seconds={HOLD_SECONDS} started")
        held_since = time.monotonic()  # as above: gthread parks behind a request of 1 ms
        poll(lambda: time.monotonic() - held_since > 0.005, what="the slow request to run")
        for _ in range(5):  # each new connection, not only the first
            with kept_alive(srv.port, 1) as (fresh,):
                assert fresh.ask_pid() != busy_pid


def test_the_hand_off_queue_carries_a_connection_with_its_unread_request() -> None:
    """The queue itself, on real sockets: the request bytes stay in the passed socket."""
    from dynocorn.handoff import HandoffQueue

    queue = HandoffQueue()
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert queue.send(accepted, listener.fileno())
    accepted.close()  # the sender's copy; the queue keeps the connection open
    received = queue.receive()
    assert received is not None
    passed, peer, listener_fd = received
    assert listener_fd == listener.fileno()
    assert peer == client.getsockname()
    passed.settimeout(5)
    assert passed.recv(100) == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    passed.sendall(b"answered")
    client.settimeout(5)
    assert client.recv(100) == b"answered"
    assert queue.receive() is None  # empty: None, not an error
    for sock in (passed, client, listener):
        sock.close()
    queue.close()


def test_a_free_sibling_with_fewer_connections_takes_a_request_before_it_counts_as_slow(
    tmp_path: Path,
) -> None:
    """A sync worker whose requests typically take 250 ms counts one as slow only after a
    second (4 times its median): moving its connections sooner would only churn them while
    the split is even. But when a free sibling holds two connections fewer (a worker just
    added, or a burst of new connections all taken by one worker), a request waiting behind
    one of 10 ms or more moves there at once: here one of 0.8 s, which never counts as slow,
    and the request behind it is answered by the newcomer, not after it by its own worker."""
    # The newcomer must be serving before the 0.8 s request starts, not merely forked: a
    # worker still loading the app is no free sibling (on a busy machine that takes long).
    config = tmp_path / "conf.py"
    config.write_text(
        "import os\n"
        "def post_worker_init(worker):\n"
        "    os.write(2, f'app loaded in {os.getpid()}\\n'.encode())\n"
    )
    # Keep-alive 60 s: the waiting connection stays idle through the warm-up.
    args = ["-c", str(config), "-w", "1", "--graceful-timeout", "1", "--keep-alive", "60"]
    with (
        running([*args, "testapps:routes"], workers=1) as srv,
        kept_alive(srv.port, 2) as (holder, waiting),
    ):
        first_pid = waiting.ask_pid()
        for _ in range(8):  # one request in 8 is timed: a median of 250 ms
            holder.send("/announced-sleep?seconds=0.25")
            assert holder.answer() == (200, first_pid)
        os.kill(srv.pid, signal.SIGTTIN)
        srv.wait_for(r"app loaded in \d+", count=2)
        holder.send("/announced-sleep?seconds=0.8")
        srv.wait_for(r"testapps: /announced-sleep\?seconds=0.8 started")
        waiting.send("/pid")
        status, pid = waiting.answer()
        assert status == 200
        assert pid != first_pid, "the request waited for its own busy worker"
        assert holder.answer() == (200, first_pid)


def two_and_one(connections: list[KeptAlive]) -> tuple[list[KeptAlive], int]:
    """Of three connections, the two one worker holds while the other holds the third: an
    even split, which the fair share leaves alone (three on one worker would move)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        held, pid = on_one_worker(connections, 2)
        (third,) = [connection for connection in connections if connection not in held]
        if third.ask_pid() != pid:
            return held, pid
    raise AssertionError("the three connections stayed on one worker")


def hold_the_loop_once(srv: Server, holder: KeptAlive, pid: int) -> None:
    """A spin on `holder` (served by `pid`): the loop is seen held, and from then on the
    worker parks its idle connections (the first hold itself is not helped)."""
    holder.send("/announced-spin?seconds=0.1")
    assert holder.answer() == (200, pid)
    srv.wait_for(rf"Loop held \d+ ms: idle connections parked \(pid:{pid}\)")


@pytest.mark.parametrize("worker_args", ASGI_LOOPS)
def test_asgi_a_request_behind_a_held_loop(worker_args: list[str]) -> None:
    """-k asgi, two workers: an app computing in an async handler holds its worker's whole
    loop. A request arriving meanwhile on another kept-alive connection of that worker is
    answered by the idle sibling, once the worker has seen its loop held (before, it waited
    for the spin: 300 ms)."""
    args = [
        *worker_args,
        *("-w", "2", "--graceful-timeout", "1", "--log-level", "debug", "asgi_apps:balance"),
    ]
    with running(args, workers=2) as srv, kept_alive(srv.port, 3) as connections:
        until_all_serve(srv, 2)
        (holder, waiting), busy_pid = two_and_one(connections)
        hold_the_loop_once(srv, holder, busy_pid)
        until_between_requests(srv, busy_pid)
        holder.send("/announced-spin?seconds=0.3")
        srv.wait_for(rf"testapps: /announced-spin\?seconds=0.3 started in {busy_pid}")
        sent = time.monotonic()
        waiting.send("/pid")
        status, pid = waiting.answer()
        waited = time.monotonic() - sent
        assert holder.answer() == (200, busy_pid)
        print(
            f"behind a held loop: answered by {'the sibling' if pid != busy_pid else 'it'}"
            f" after {waited * 1000:.0f} ms"
        )
        assert status == 200
        assert pid != busy_pid, f"the request waited {waited * 1000:.0f} ms for its busy worker"
        # The connection stays with the worker that answered: the next request too.
        assert waiting.ask_pid() == pid
        # TERM with connections parked (the holder's, answered): a clean stop.
        srv.signal(signal.SIGTERM)
        assert srv.wait_exit(20) == 0


@pytest.mark.parametrize("worker_args", ASGI_LOOPS)
def test_asgi_a_worker_parks_its_connections_only_while_its_loop_gets_held(
    worker_args: list[str],
) -> None:
    """-k asgi: while its loop is free, a worker that parks its idle connections (its loop
    was held) serves their requests itself; and after a quiet while it stops parking, its
    connections still served by it."""
    args = [*worker_args, "-w", "2", "--log-level", "debug", "asgi_apps:balance"]
    with running(args, workers=2) as srv, kept_alive(srv.port, 3) as connections:
        until_all_serve(srv, 2)
        (holder, parked), busy_pid = two_and_one(connections)
        hold_the_loop_once(srv, holder, busy_pid)
        for _ in range(5):
            assert parked.ask_pid() == busy_pid
            assert holder.ask_pid() == busy_pid
        srv.wait_for(rf"Loop not held for \d+s: connections not parked \(pid:{busy_pid}\)")
        for _ in range(3):
            assert parked.ask_pid() == busy_pid
            assert holder.ask_pid() == busy_pid


@pytest.mark.parametrize("worker_args", ASGI_LOOPS)
def test_asgi_on_term_the_backlog_is_answered_not_reset(worker_args: list[str]) -> None:
    """-k asgi: connections the kernel accepted while the loop was held (in the backlog)
    when TERM comes are answered, with `Connection: close`, as the other classes answer
    them, not reset by the listener's close."""
    args = [*worker_args, "-w", "1", "--graceful-timeout", "5", "asgi_apps:balance"]
    with running(args, workers=1) as srv, kept_alive(srv.port, 1) as (holder,):
        worker_pid = holder.ask_pid()
        holder.send("/announced-spin?seconds=1")
        srv.wait_for(r"testapps: /announced-spin\?seconds=1 started")
        with kept_alive(srv.port, 3) as waiting:
            for connection in waiting:
                connection.send("/pid")  # in the socket, the socket in the backlog
            srv.signal(signal.SIGTERM)
            assert holder.answer() == (200, worker_pid)
            for connection in waiting:
                assert connection.answer() == (200, worker_pid)
        assert srv.wait_exit(20) == 0
