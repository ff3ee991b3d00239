"""Oversized and unfinished requests: each gets its status, or a close, in bounded time.

One sync worker with `-t 4` (so a stalled read gives up after io_timeout = 2 s) serves
`testapps:routes`; the echo route records every request it runs in ECHO_LOG. After each
case the worker must be the same process: nothing crashed.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from clients import poll
from rawhttp import RawResponse, read_response
from reliability.harness import report
from server import Server, running

BOUND = 8.0  # seconds any of these may take to be answered or closed
MB = 2**20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("oversized") / "seen.jsonl"
    log.touch()
    with running(["-w", "1", "-t", "4", "testapps:routes"], env={"ECHO_LOG": str(log)}) as srv:
        srv.echo_log = log  # type: ignore[attr-defined]
        yield srv


@pytest.fixture
def worker(server: Server) -> int:
    """The server's one worker (a case before may have had it replaced: wait for it)."""
    poll(lambda: len(server.worker_pids()) == 1, 15, "one worker")
    return server.worker_pids()[0]


@pytest.fixture
def same_worker(server: Server, worker: int) -> Iterator[int]:
    yield worker
    assert server.worker_pids() == [worker], "the worker crashed or was replaced"


def timeouts(server: Server) -> int:
    return server.log.count("WORKER TIMEOUT")


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=BOUND + 2)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def outcome(sock: socket.socket) -> tuple[RawResponse | None, bool, float]:
    """(the response, if any; whether the server then closed; seconds it took)."""
    started = time.monotonic()
    with sock.makefile("rb") as stream:  # closed here, not by a later garbage collection
        try:
            response = read_response(stream)
        except (ConnectionResetError, TimeoutError):
            response = None
        try:
            closed = stream.read(1) == b""
        except (ConnectionResetError, TimeoutError):
            closed = True
    return response, closed, time.monotonic() - started


def send_ignoring_close(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused and closed while we were still sending


def seen_paths(server: Server) -> list[dict[str, object]]:
    log: Path = server.echo_log  # type: ignore[attr-defined]
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.mark.parametrize(
    ("name", "raw", "status"),
    [
        (
            "request line over the limit (5000 > 4094)",
            b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
            414,
        ),
        (
            "endless request line (1 MB, no line end)",
            b"GET /" + b"a" * MB,
            414,
        ),
        (
            "101 header fields (limit 100)",
            b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n",
            431,
        ),
        (
            "one 9000-byte header (limit 8190)",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
            431,
        ),
        (
            "endless header line (1 MB, no line end)",
            b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"b" * MB,
            431,
        ),
        (
            "10000 header fields, endless",
            b"GET / HTTP/1.1\r\n" + b"X: v\r\n" * 10000,
            431,
        ),
    ],
)
def test_limits(server: Server, same_worker: int, name: str, raw: bytes, status: int) -> None:
    with connect(server) as sock:
        send_ignoring_close(sock, raw)
        response, closed, took = outcome(sock)
    got = response.status if response else None
    report(
        f"oversized: {name}", 1, int(got != status), f"{status} + close", f"{got} in {took:.2f}s"
    )
    assert got == status and closed and took < BOUND


@pytest.mark.parametrize(
    ("name", "sent", "length", "half_close"),
    [
        ("short body, buffered (10 of 100 bytes), client stalls", 10, 100, False),
        ("short body, streamed (200 KB of 1 MB), client stalls", 200_000, MB, False),
        ("short body, streamed (200 KB of 1 MB), client half-closes", 200_000, MB, True),
    ],
)
def test_body_shorter_than_its_content_length(
    server: Server, worker: int, name: str, sent: int, length: int, half_close: bool
) -> None:
    """The client stops sending (or shuts its side): 408, 400 or a close, and the app never
    takes the truncated body for a whole one."""
    marker = f"/echo/short-{length}-{half_close}"
    head = f"POST {marker} HTTP/1.1\r\nHost: h\r\nContent-Length: {length}\r\n\r\n".encode()
    timeouts_before = timeouts(server)
    with connect(server) as sock:
        sock.sendall(head + b"x" * sent)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        response, closed, took = outcome(sock)
    got = response.status if response else None
    completed = [len(str(s["body"])) for s in seen_paths(server) if s["path"] == marker]
    killed = timeouts(server) - timeouts_before
    notes = f"{got or 'closed'} in {took:.2f}s"
    if completed:
        notes += f"; the app ran it with a {completed[0]}-byte body"
    if killed:
        notes += "; WORKER TIMEOUT: the worker was killed and replaced"
    ok = got in (400, 408, None) and closed and not completed and not killed
    expected = "408/400 or close; app never completes it; worker kept"
    report(f"oversized: {name}", 1, int(not ok), expected, notes)
    assert completed == [], "the app answered a truncated body as if it were whole"
    assert killed == 0, "a client that stops sending got the worker killed"
    assert got in (400, 408, None) and closed and took < BOUND


def _chunks(total: int, size: int = 65536) -> Iterator[bytes]:
    frame = b"%x\r\n" % size + b"c" * size + b"\r\n"
    for _ in range(total // size):
        yield frame


class RssWatch:
    """Samples one process's RSS every 20 ms; `growth` is the peak over the start."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(0.02)

    @property
    def growth(self) -> int:
        return self.peak - self.start

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


CHUNKED_TOTAL = 50 * MB
RSS_GROWTH_LIMIT = 8 * MB


def test_endless_chunked_body_to_an_app_that_does_not_read_it(
    server: Server, same_worker: int
) -> None:
    """The app answers without reading; the server drains at most 64 KiB then closes. The
    client's sending then fails: memory stays flat."""
    head = b"POST /lazy HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    sent = 0
    with RssWatch(same_worker) as rss, connect(server) as sock:
        sock.sendall(head)
        started = time.monotonic()
        try:
            for frame in _chunks(CHUNKED_TOTAL):
                sock.sendall(frame)
                sent += len(frame)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server closed: it will not read an unbounded body nobody wants
        response, closed, _ = outcome(sock)
        took = time.monotonic() - started
    report(
        "oversized: endless chunked body, app does not read",
        1,
        int(not (response and response.status == 200 and closed)),
        f"answer + close; RSS growth < {RSS_GROWTH_LIMIT // MB} MB",
        f"{response.status if response else 'no answer'}, closed {closed} after "
        f"{sent / MB:.1f} MB sent in {took:.1f}s; worker RSS +{rss.growth / MB:.1f} MB",
    )
    assert response is not None and response.status == 200 and closed
    assert rss.growth < RSS_GROWTH_LIMIT


def test_endless_chunked_body_to_an_app_that_reads_it(server: Server, worker: int) -> None:
    """The app streams the body (reads and discards it): 50 MB flow through with flat
    memory. The last chunk never comes and the client goes quiet: 408 or a close, and
    never an answer that takes the 50 MB for the whole body."""
    head = b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    timeouts_before = timeouts(server)
    with RssWatch(worker) as rss, connect(server) as sock:
        sock.sendall(head)
        started = time.monotonic()
        for frame in _chunks(CHUNKED_TOTAL):
            sock.sendall(frame)
        streamed_in = time.monotonic() - started
        response, closed, took = outcome(sock)
    got = response.status if response else None
    killed = timeouts(server) - timeouts_before
    report(
        "oversized: endless chunked body (50 MB, then silence), app reads",
        1,
        int(not (got in (408, None) and closed and not killed)),
        f"408 or close; RSS growth < {RSS_GROWTH_LIMIT // MB} MB; worker kept",
        f"50 MB streamed in {streamed_in:.1f}s, worker RSS +{rss.growth / MB:.1f} MB; "
        f"then {got or 'closed'} after {took:.1f}s"
        + (f" with body {response.body[:60]!r}" if response else "")
        + ("; WORKER TIMEOUT: the worker was killed" if killed else ""),
    )
    assert rss.growth < RSS_GROWTH_LIMIT
    assert got in (408, None) and closed and took < BOUND, "a truncated body was taken as whole"
    assert killed == 0, "a client that stops sending got the worker killed"
