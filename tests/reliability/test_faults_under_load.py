"""Faults under bounded load: every request is counted, and the numbers are printed.

Each case runs four client threads with kept-alive sessions (as `requests` does by default,
without retries) against the real server while a fault happens: a reload, a stop, a change
of the worker count, recycling, a killed or hung worker, a re-exec. Unless a case says
otherwise, no request may fail. `pytest -s` shows the figures; RELIABILITY_REPORT collects
them (see harness.py).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest
import requests

from clients import poll
from rawhttp import read_response
from reliability.harness import Load, connection_refused, report
from server import REPO, Server, running
from worker_classes import WITH_ASGI, app_for

THREADS = 4


@contextmanager
def pool_watch(server: Server) -> Iterator[dict[str, int]]:
    """Sample the live worker count every 10 ms; yields {'max': ..., 'min': ...}."""
    seen = {"max": 0, "min": 1 << 30}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            count = len(server.worker_pids())
            seen["max"] = max(seen["max"], count)
            seen["min"] = min(seen["min"], count)
            stop.wait(0.01)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join(5)


def case_id(name: str, worker_args: list[str]) -> str:
    kind = worker_args[1] if worker_args else "sync"
    return f"{name} [{kind}]"


@pytest.mark.parametrize("worker_args", WITH_ASGI)
def test_hup_reload_under_load(worker_args: list[str]) -> None:
    args = [*worker_args, "-w", "2", app_for(worker_args, "testapps:sleepy")]
    with running(args, workers=2) as srv, pool_watch(srv) as pool:
        old = set(srv.worker_pids())
        with Load(srv.port, "/?seconds=0.005", threads=THREADS) as load:
            load.wait_ok(20)
            srv.signal(signal.SIGHUP)
            poll(lambda: not (set(srv.worker_pids()) & old), 30, "the old workers to go")
            poll(lambda: len(srv.worker_pids()) == 2, 30, "two new workers")
            load.wait_ok(40)  # and the new workers serve
        new = set(srv.worker_pids())
    served_by_new = sum(n for pid, n in load.outcomes.bodies.items() if int(pid) in new)
    report(
        case_id("SIGHUP reload", worker_args),
        load.sent,
        load.failed,
        "0",
        f"{load.summary()}; workers alive max {pool['max']} min {pool['min']} "
        f"(never below 2); {served_by_new} answered by new workers",
    )
    assert load.failed == 0, load.outcomes.failures[:5]
    assert pool["min"] >= 2, "capacity dropped during the reload"
    assert not (new & old) and served_by_new > 0


def test_hup_replaces_one_at_a_time_while_old_workers_finish_long_requests() -> None:
    """COMPAT: HUP replaces workers one at a time, 'so memory never doubles'.

    Both old workers are busy with a 3 s request when HUP comes, so each stopped old worker
    lives on until its request is done. One at a time means: at most one process more than
    `workers` at any moment (the old one finishing, or the new one booting).
    """
    with running(["-w", "2", "testapps:sleepy"], workers=2) as srv:
        old = set(srv.worker_pids())
        url = f"http://127.0.0.1:{srv.port}/?seconds=3"
        with ThreadPoolExecutor(2) as clients, pool_watch(srv) as pool:
            # A sync worker running a request does not accept: once the first is running,
            # the second lands on the other worker.
            long = [clients.submit(requests.get, url, timeout=20)]
            poll(lambda: _busy(old, srv.port) == 1, 5, "one old worker busy")
            long.append(clients.submit(requests.get, url, timeout=20))
            poll(lambda: _busy(old, srv.port) == 2, 5, "both old workers busy")
            srv.signal(signal.SIGHUP)
            answers = [future.result(20) for future in long]
            poll(lambda: not (set(srv.worker_pids()) & old), 20, "the old workers to go")
            poll(lambda: len(srv.worker_pids()) == 2, 20, "two new workers")
    report(
        "SIGHUP while old workers run 3 s requests [sync]",
        2,
        sum(a.status_code != 200 for a in answers),
        "0; at most 3 processes",
        f"workers alive max {pool['max']} min {pool['min']}",
    )
    assert [a.status_code for a in answers] == [200, 200]
    assert pool["max"] <= 3, f"{pool['max']} workers alive at once for workers=2"


@pytest.mark.parametrize("worker_args", WITH_ASGI)
def test_a_kept_alive_client_is_answered_while_its_worker_is_replaced(
    worker_args: list[str],
) -> None:
    """What the reload above depends on, without the luck of timing.

    On HUP the master stops each old worker with TERM while clients keep using their
    kept-alive connections to it. A client that sends its next request a moment after its
    last answer must get an answer (with `Connection: close`), not a closed connection:
    the sync worker keeps such a connection for TERM_LINGER (0.2 s) of quiet.
    """
    with running([*worker_args, "-w", "1", app_for(worker_args, "testapps:sleepy")]) as srv:
        request = b"GET /?seconds=0 HTTP/1.1\r\nHost: h\r\n\r\n"
        with (
            socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock,
            sock.makefile("rb") as stream,  # closed here, not by a later garbage collection
        ):
            sock.sendall(request)
            first = read_response(stream)
            os.kill(srv.worker_pids()[0], signal.SIGTERM)  # as the master does on HUP
            time.sleep(0.05)  # the client's think time before its next request
            try:
                sock.sendall(request)
                second = read_response(stream)
            except (ConnectionResetError, BrokenPipeError):
                second = None
    got = second.status if second else "closed without an answer"
    report(
        case_id("kept-alive request 50 ms after the worker's TERM", worker_args),
        2,
        int(second is None or second.status != 200),
        "0: answered with Connection: close",
        f"first {first.status if first else None}, second {got}",
    )
    assert first is not None and first.status == 200
    assert second is not None and second.status == 200, "the request was dropped"
    assert second.header("Connection") == "close"


def _busy(pids: set[int], port: int) -> int:
    """How many of these workers hold an established client connection."""
    return sum(1 for pid in pids if _connections_of(pid, port) > 0)


@pytest.mark.parametrize("worker_args", WITH_ASGI)
def test_term_to_every_process_at_once_with_requests_in_flight(worker_args: list[str]) -> None:
    """Heroku's stop: TERM to the master and to every worker at the same moment.

    Clients keep sending throughout. Every request the server accepted must be answered;
    after the stop, connections are refused (ECONNREFUSED) rather than reset.
    """
    graceful = 5
    app = app_for(worker_args, "testapps:sleepy")
    args = [*worker_args, "-w", "2", "--graceful-timeout", str(graceful), app]
    with running(args, workers=2) as srv:
        # 0.3 s requests: at the moment of the signal every worker holds one running request
        # and (sync) more received and waiting behind it.
        with Load(srv.port, "/?seconds=0.3", threads=THREADS, timeout=15) as load:
            load.wait_ok(8)
            pids = [srv.pid, *srv.worker_pids()]
            sent_at = time.monotonic()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    # A worker holding no connection exits at once on the master's TERM,
                    # sent a moment earlier, and the master reaps it: already stopped.
                    assert pid != srv.pid
            code = srv.wait_exit(graceful + 10)
            gone_after = time.monotonic() - sent_at
            # The clients go on for a moment against the stopped server.
            refused_before = load.outcomes.kinds()["refused"]
            poll(
                lambda: load.outcomes.kinds()["refused"] >= refused_before + THREADS,
                10,
                "refused connections after the stop",
            )
        refused_now = connection_refused(srv.port)
    kinds = load.outcomes.kinds()
    bad = [f for f in load.outcomes.failures if f.kind != "refused"]
    in_flight, answered = load.outcomes.in_flight_at(sent_at)
    report(
        case_id("SIGTERM master+workers at once", worker_args),
        load.ok + len(bad),  # connections refused after the stop never carried a request
        len(bad),
        "0 (refused after the stop is fine)",
        f"{load.summary()}; in flight at the signal {in_flight}, answered {answered}; "
        f"exit {code} after {gone_after:.2f}s "
        f"(graceful_timeout {graceful}s); then {kinds['refused']} connections refused; "
        f"a new connection refused: {refused_now}",
    )
    assert code == 0
    assert gone_after < graceful + 1
    assert refused_now
    assert bad == [], bad[:5]
    assert in_flight >= THREADS and answered == in_flight


def test_ttin_then_ttou_under_load() -> None:
    with (
        running(["-w", "2", "testapps:sleepy"], workers=2) as srv,
        pool_watch(srv) as pool,
        Load(srv.port, "/?seconds=0.005", threads=THREADS) as load,
    ):
        load.wait_ok(20)
        srv.signal(signal.SIGTTIN)
        poll(lambda: len(srv.worker_pids()) == 3, what="3 workers")
        load.wait_ok(20)
        srv.signal(signal.SIGTTOU)
        poll(lambda: len(srv.worker_pids()) == 2, what="2 workers again")
        # One at a time: a signal sent while the same one is pending is merged.
        srv.signal(signal.SIGTTOU)
        poll(lambda: len(srv.worker_pids()) == 1, what="1 worker")
        load.wait_ok(20)
    report(
        "TTIN then TTOU x2 [sync]",
        load.sent,
        load.failed,
        "0",
        f"{load.summary()}; workers 2 -> 3 -> 2 -> 1 (seen max {pool['max']})",
    )
    assert load.failed == 0, load.outcomes.failures[:5]


@pytest.mark.parametrize("worker_args", WITH_ASGI)
def test_max_requests_recycling_every_50(worker_args: list[str]) -> None:
    app = app_for(worker_args, "testapps:sleepy")
    args = [*worker_args, "-w", "2", "--max-requests", "50", app]
    with running(args, workers=2) as srv:
        first = set(srv.worker_pids())
        with Load(srv.port, "/?seconds=0", threads=THREADS) as load:
            load.wait_ok(400, 40)
        recycled = srv.log.count("Autorestarting worker after current request")
    pids = {int(pid) for pid in load.outcomes.bodies}
    report(
        case_id("max-requests 50", worker_args),
        load.sent,
        load.failed,
        "0",
        f"{load.summary()}; {recycled} recycles, {len(pids)} workers answered",
    )
    assert load.failed == 0, load.outcomes.failures[:5]
    assert recycled >= 4 and len(pids - first) >= 4


def test_lifetime_recycling_every_2_seconds() -> None:
    args = ["-w", "2", "--max-worker-lifetime", "2", "testapps:sleepy"]
    with running(args, workers=2) as srv:
        with Load(srv.port, "/?seconds=0.002", threads=THREADS) as load:
            poll(
                lambda: srv.log.count("max worker lifetime") >= 4,
                20,
                "four lifetime recycles",
            )
            load.wait_ok(20)
        recycled = srv.log.count("max worker lifetime")
    pids = {int(pid) for pid in load.outcomes.bodies}
    report(
        "max-worker-lifetime 2s [sync]",
        load.sent,
        load.failed,
        "0",
        f"{load.summary()}; {recycled} recycles, {len(pids)} workers answered",
    )
    assert load.failed == 0, load.outcomes.failures[:5]


def test_memory_recycling_of_a_leaking_app() -> None:
    args = ["-w", "2", "--max-worker-memory", "64MB", "leaky:app"]
    with running(args, workers=2, cwd=REPO / "examples") as srv:
        first = set(srv.worker_pids())
        with Load(srv.port, "/", threads=THREADS) as load:
            poll(
                lambda: (
                    len(set(srv.worker_pids()) - first) >= 2
                    and srv.log.count("over max_worker_memory") >= 3
                ),
                40,
                "three memory recycles",
            )
            load.wait_ok(20)
        recycled = srv.log.count("over max_worker_memory")
    report(
        "max-worker-memory 64MB, leaky app [sync]",
        load.sent,
        load.failed,
        "0",
        f"{load.summary()}; {recycled} memory recycles",
    )
    assert load.failed == 0, load.outcomes.failures[:5]


def test_kill_9_of_one_worker_under_load() -> None:
    """Only what the killed worker held may fail: its running request, and (sync) the
    requests it had already received on its other kept-alive connections."""
    with (
        running(["-w", "2", "testapps:sleepy"], workers=2) as srv,
        Load(srv.port, "/?seconds=0.05", threads=THREADS) as load,
    ):
        load.wait_ok(20)
        before = set(srv.worker_pids())
        victim = min(before)
        held = _connections_of(victim, srv.port)
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        replaced_in = poll(
            lambda: victim not in srv.worker_pids() and len(srv.worker_pids()) == 2,
            5,
            "the replacement worker",
        )
        successor = set(srv.worker_pids()) - before
        load.wait_ok(40)
        serving = _answers_from(load, successor)
    after = [f for f in load.outcomes.failures if f.at > killed_at + 1.0]
    report(
        "kill -9 one worker [sync]",
        load.sent,
        load.failed,
        f"<= {held} (connections the victim held)",
        f"{load.summary()}; replaced in {replaced_in * 1000:.0f} ms; "
        f"{serving} answers from the successor; "
        f"failures later than 1 s after the kill: {len(after)}",
    )
    assert load.failed <= held, load.outcomes.failures
    assert all(f.kind == "reset" for f in load.outcomes.failures)
    assert after == []
    assert replaced_in < 1.0


def _connections_of(pid: int, port: int) -> int:
    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return 0
    return sum(1 for c in connections if c.laddr and c.laddr.port == port and c.raddr)


def _answers_from(load: Load, pids: set[int]) -> int:
    return sum(n for body, n in load.outcomes.bodies.items() if int(body) in pids)


def test_a_hung_request_is_timed_out_and_the_others_keep_serving() -> None:
    with (
        running(["-w", "2", "-t", "2", "testapps:routes"], workers=2) as srv,
        Load(srv.port, "/sleep?seconds=0.005", threads=3) as load,
        ThreadPoolExecutor(1) as pool,
    ):
        load.wait_ok(20)
        before = load.ok
        started = time.monotonic()
        hang_url = f"http://127.0.0.1:{srv.port}/hang"
        hung = pool.submit(requests.get, hang_url, timeout=20).result(25)
        hang_took = time.monotonic() - started
        during = load.ok - before
        srv.wait_for(r"WORKER TIMEOUT \(pid:\d+\)")
        poll(lambda: len(srv.worker_pids()) == 2, 10, "the hung worker's replacement")
        load.wait_ok(20)
    report(
        "app hangs (/hang), -t 2 [sync]",
        load.sent + 1,
        load.failed,
        "0 (+ the hung request answered 500)",
        f"{load.summary()}; /hang -> {hung.status_code} after {hang_took:.1f}s; "
        f"{during} requests answered by the other worker meanwhile",
    )
    assert hung.status_code == 500
    assert load.failed == 0, load.outcomes.failures[:5]
    assert during > 0


def test_usr2_reexec_then_term_of_the_old_master() -> None:
    with running(["-w", "2", "testapps:sleepy"], workers=2) as srv:
        new_master = 0
        try:
            with Load(srv.port, "/?seconds=0.005", threads=THREADS) as load:
                load.wait_ok(20)
                old_workers = set(srv.worker_pids())
                srv.signal(signal.SIGUSR2)
                poll(lambda: len(srv.worker_pids()) == 3, 30, "the new master")
                new_master = (set(srv.worker_pids()) - old_workers).pop()
                poll(lambda: len(_children(new_master)) == 2, 30, "the new master's workers")
                srv.signal(signal.SIGTERM)
                assert srv.wait_exit(30) == 0
                load.wait_ok(40)  # served by the new master alone
        finally:
            if new_master:
                os.kill(new_master, signal.SIGTERM)
                poll(lambda: not Path(f"/proc/{new_master}").exists(), 30, "new master to stop")
    report(
        "USR2 re-exec, then TERM old master [sync]",
        load.sent,
        load.failed,
        "0",
        load.summary(),
    )
    assert load.failed == 0, load.outcomes.failures[:5]


def _children(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.Error:
        return []


@pytest.mark.parametrize(
    "worker_args",
    [pytest.param([], id="sync"), pytest.param(["-k", "gthread", "--threads", "1"], id="gthread")],
)
def test_connections_passed_between_workers_under_load_through_hup_and_recycling(
    worker_args: list[str],
) -> None:
    """Slow requests make their workers pass waiting kept-alive connections on (handoff.py)
    all the time, while workers are replaced (HUP) and recycled (max-requests): nothing may
    be lost or reset, the slow requests included."""
    args = [*worker_args, "-w", "3", "--max-requests", "60", "testapps:sleepy"]
    with running(args, workers=3) as srv:
        old = set(srv.worker_pids())
        with (
            Load(srv.port, "/?seconds=0.002", threads=THREADS) as fast,
            Load(srv.port, "/?seconds=0.2", threads=2) as slow,
        ):
            fast.wait_ok(100, 40)
            srv.signal(signal.SIGHUP)
            poll(lambda: not (set(srv.worker_pids()) & old), 30, "the old workers to go")
            fast.wait_ok(150, 40)
            slow.wait_ok(4, 20)
        recycled = srv.log.count("Autorestarting worker after current request")
    report(
        case_id("hand-offs under HUP and max-requests", worker_args),
        fast.sent + slow.sent,
        fast.failed + slow.failed,
        "0",
        f"fast: {fast.summary()}; slow: {slow.summary()}; {recycled} recycles",
    )
    assert fast.failed == 0, fast.outcomes.failures[:5]
    assert slow.failed == 0, slow.outcomes.failures[:5]
    assert recycled >= 2
