"""Slow clients against a 2-worker server, sync and ASGI: the normal client's latency is
measured.

500 connections trickling a request head (one byte a second), and 500 clients that ask for
a large response and never read it. Neither may stop the server from answering a normal
client within a second.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
import requests

from reliability.harness import report
from server import Server, running
from worker_classes import app_for, worker_class_name

CLASSES = [pytest.param([], id="sync"), pytest.param(["-k", "asgi"], id="asgi")]

SLOW_CLIENTS = 500
WATCH_SECONDS = 8.0
LATENCY_LIMIT = 1.0


@contextmanager
def open_sockets(port: int, count: int, rcvbuf: int | None = None) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        socks = []
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            stack.enter_context(sock)
            if rcvbuf is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(10)
            sock.connect(("127.0.0.1", port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(sock)
        yield socks


def wait_answered(socks: list[socket.socket], timeout: float = 30.0) -> float:
    """Until each socket has the start of its response to read; how long that took."""
    started = time.monotonic()
    waiting = {sock.fileno() for sock in socks}
    poller = select.poll()
    for fd in waiting:
        poller.register(fd, select.POLLIN)
    while waiting:
        remaining = started + timeout - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{len(waiting)} clients got no response within {timeout}s")
        for fd, _ in poller.poll(remaining * 1000):
            poller.unregister(fd)
            waiting.discard(fd)
    return time.monotonic() - started


def normal_client_latencies(
    server: Server, seconds: float, every_second: object = None
) -> tuple[list[float], list[str]]:
    """A normal client: a new connection and one GET every 0.1 s; latency of each."""
    url = f"http://127.0.0.1:{server.port}/"
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.monotonic() + seconds
    next_second = time.monotonic()
    while time.monotonic() < deadline:
        if callable(every_second) and time.monotonic() >= next_second:
            every_second()
            next_second += 1.0
        started = time.monotonic()
        try:
            response = requests.get(url, timeout=5)
            if response.status_code != 200:
                failures.append(f"status {response.status_code}")
        except requests.RequestException as error:
            failures.append(repr(error))
        latencies.append(time.monotonic() - started)
        time.sleep(0.1)  # the normal client's pace: this sets a rate, it synchronises nothing
    return latencies, failures


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def until_serving(srv: Server, worker_args: list[str], workers: int) -> None:
    """Alive is not serving: an ASGI worker accepts once its lifespan startup has run (its
    line), on a busy machine a second or more after it was born. The normal client's wait
    is measured from then: before, its first request waited for the worker's start (0.3 s
    when idle, past the limit under a parallel test run), not for the slow clients."""
    if worker_class_name(worker_args) == "asgi":
        srv.wait_for(r"Application startup complete|ASGI lifespan unsupported", count=workers)
    assert requests.get(f"http://127.0.0.1:{srv.port}/", timeout=10).status_code == 200


@pytest.mark.parametrize("worker_args", CLASSES)
def test_500_connections_trickling_a_head_one_byte_a_second(worker_args: list[str]) -> None:
    head = b"GET / HTTP/1.1\r\nHost: example.com\r\nX-Slow: " + b"s" * 64
    args = [*worker_args, "-w", "2", app_for(worker_args, "testapps:routes")]
    with running(args, workers=2) as srv:
        until_serving(srv, worker_args, workers=2)
        pids = set(srv.worker_pids())
        with open_sockets(srv.port, SLOW_CLIENTS) as socks:
            position = {"at": 0}
            closed_by_server: list[int] = []

            def trickle() -> None:
                at = position["at"]
                for index, sock in enumerate(socks):
                    try:
                        sock.sendall(head[at : at + 1])
                    except OSError:
                        closed_by_server.append(index)
                position["at"] = at + 1

            latencies, failures = normal_client_latencies(srv, WATCH_SECONDS, trickle)
        assert set(srv.worker_pids()) == pids
    worst = max(latencies)
    report(
        f"slowloris: {SLOW_CLIENTS} heads at 1 byte/s [{worker_class_name(worker_args)} -w 2]",
        len(latencies),
        len(failures),
        f"0; normal client < {LATENCY_LIMIT}s",
        f"normal client p50 {percentile(latencies, 0.5) * 1000:.0f} ms, "
        f"max {worst * 1000:.0f} ms over {WATCH_SECONDS:.0f}s; {position['at']} bytes trickled "
        f"per connection",
    )
    assert failures == []
    assert worst < LATENCY_LIMIT


@pytest.mark.parametrize("worker_args", CLASSES)
def test_500_clients_that_never_read_a_large_response(worker_args: list[str]) -> None:
    request = b"GET /download?mb=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
    args = [*worker_args, "-w", "2", app_for(worker_args, "testapps:routes")]
    with running(args, workers=2) as srv:
        pids = set(srv.worker_pids())
        # Default socket buffers, as a real client's: the kernel does not take 1 MB for them.
        with open_sockets(srv.port, SLOW_CLIENTS) as socks:
            for sock in socks:
                sock.sendall(request)
            # Serving the burst of 500 requests is work whose length depends on the
            # machine's load (0.2 s idle here); what is measured is a normal client's wait
            # while the answers sit unread, so the watch starts once every one is answered.
            burst = wait_answered(socks)
            latencies, failures = normal_client_latencies(srv, WATCH_SECONDS)
        assert set(srv.worker_pids()) == pids
    worst = max(latencies)
    report(
        f"{SLOW_CLIENTS} clients never reading /download?mb=1 "
        f"[{worker_class_name(worker_args)} -w 2]",
        len(latencies),
        len(failures),
        f"0; normal client < {LATENCY_LIMIT}s",
        f"all answered in {burst:.2f}s, then normal client p50 "
        f"{percentile(latencies, 0.5) * 1000:.0f} ms, max {worst * 1000:.0f} ms "
        f"over {WATCH_SECONDS:.0f}s",
    )
    assert failures == []
    assert worst < LATENCY_LIMIT
