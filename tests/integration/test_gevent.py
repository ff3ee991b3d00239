"""The gevent worker (`-k gevent`) as a real process: concurrency, HTTP, signals, timeouts."""

from __future__ import annotations

import hashlib
import os
import select
import signal
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from clients import SteadyLoad, get, poll
from rawhttp import connect, exchange, got_eof, read_response
from server import REPO, Server, running
from worker_classes import HAVE_GEVENT

needs_gevent = pytest.mark.skipif(not HAVE_GEVENT, reason="gevent is not installed")
GEVENT = ["-k", "gevent"]


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    """One single-process gevent server for the tests that do not stop or signal it."""
    if not HAVE_GEVENT:
        pytest.skip("gevent is not installed")
    with running([*GEVENT, "-w", "1", "--keep-alive", "5", "testapps:routes"]) as srv:
        yield srv


# -- concurrency


@needs_gevent
def test_a_hundred_cooperative_sleeps_overlap_in_one_process() -> None:
    with running([*GEVENT, "-w", "1", "gevent_apps:app"]) as srv, ThreadPoolExecutor(100) as pool:
        get(srv)  # the worker has loaded the app: its boot is not part of the time measured
        started = time.monotonic()
        futures = [pool.submit(get, srv, "/sleep?seconds=1", 20) for _ in range(100)]
        responses = [future.result(30) for future in futures]
        elapsed = time.monotonic() - started
    assert [r.status_code for r in responses] == [200] * 100
    assert len({r.text for r in responses}) == 1  # one worker process served them all
    assert elapsed < 4, f"100 requests sleeping 1 s took {elapsed:.1f} s"


def get_and_close(server: Server, path: str) -> int:
    """The status of one request on a connection closed after it: an open keep-alive
    connection (requests keeps one while its response lives) would hold its slot."""
    response = requests.get(
        f"http://127.0.0.1:{server.port}{path}", headers={"Connection": "close"}, timeout=20
    )
    return response.status_code


@needs_gevent
def test_worker_connections_bounds_what_one_worker_takes_on() -> None:
    args = [*GEVENT, "-w", "1", "--worker-connections", "2", "gevent_apps:app"]
    with running(args) as srv, ThreadPoolExecutor(4) as pool:
        get(srv)  # the worker has loaded the app: its boot is not part of the time measured
        started = time.monotonic()
        futures = [pool.submit(get_and_close, srv, "/gsleep?seconds=1") for _ in range(4)]
        assert [future.result(30) for future in futures] == [200] * 4
        elapsed = time.monotonic() - started
    # Two at a time (the others waited in the listen backlog), not one at a time: the
    # acceptor of the hand-off queue holds no slot while nothing is handed off.
    assert 2 <= elapsed < 3


@needs_gevent
def test_patched_before_the_app_import_and_environ_flags() -> None:
    with running([*GEVENT, "-w", "1", "gevent_apps:app"]) as srv:
        state = get(srv, "/state").json()
    assert state["socket_patched_at_import"] is True
    assert state["time_patched"] is True
    # As gunicorn's gevent worker: requests may run concurrently in one process.
    assert state["multithread"] is True
    assert state["multiprocess"] is False
    assert "gevent:" not in srv.log  # no patching warnings for a well-behaved start


@needs_gevent
def test_multiprocess_with_more_than_one_worker() -> None:
    with running([*GEVENT, "-w", "2", "gevent_apps:app"], workers=2) as srv:
        state = get(srv, "/state").json()
    assert state["multiprocess"] is True
    assert state["multithread"] is True


# -- HTTP over the same layers as the sync worker (keep-alive, pipelining, the 500 of a
# crashing app, HUP, INT, graceful_timeout and max-requests run for every class in
# test_serving.py and test_master.py)


def test_chunked_upload(server: Server) -> None:
    pieces = [os.urandom(100_000) for _ in range(30)]
    response = requests.post(
        f"http://127.0.0.1:{server.port}/upload", data=iter(pieces), timeout=20
    )  # a generator body: requests sends it chunked
    whole = b"".join(pieces)
    assert response.json() == {"length": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}


def test_a_bad_request_is_refused_with_its_status_and_closed(server: Server) -> None:
    responses, closed = exchange(server.port, b"GET / HTTP/1.1\r\nHost : h\r\n\r\n")
    assert responses[0].status == 400
    assert closed
    assert get(server).status_code == 200


@needs_gevent
def test_a_request_cut_off_by_the_client_is_refused() -> None:
    with running([*GEVENT, "testapps:hello"]) as srv, connect(srv.port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHo")
        sock.shutdown(socket.SHUT_WR)
        response = read_response(sock.makefile("rb"))
        assert response is not None and response.status == 400


@needs_gevent
def test_a_stalled_body_gets_408() -> None:
    # -t 2 makes the per-read timeout 1 s (the head timeout is a fixed 30 s, too long here).
    with running([*GEVENT, "-t", "2", "testapps:routes"]) as srv, connect(srv.port) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc")
        started = time.monotonic()
        response = read_response(sock.makefile("rb"))
        assert response is not None and response.status == 408
        assert time.monotonic() - started < 5
        assert response.header("Connection") == "close"


@needs_gevent
def test_idle_connections_are_closed_after_the_keep_alive_timeout() -> None:
    with running([*GEVENT, "--keep-alive", "1", "testapps:hello"]) as srv, connect(srv.port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        stream = s.makefile("rb")
        assert read_response(stream) is not None
        started = time.monotonic()
        assert got_eof(s, stream, wait=5.0)
        assert time.monotonic() - started < 3


@needs_gevent
def test_the_keep_alive_timeout_counts_from_the_answer_not_the_request() -> None:
    # A request longer than the keep-alive: its kept-alive connection still gets the full
    # keep-alive after the answer, not an immediate close under the client's next request.
    args = [*GEVENT, "-w", "1", "--keep-alive", "1", "gevent_apps:app"]
    with running(args) as srv, connect(srv.port) as sock:
        sock.sendall(b"GET /sleep?seconds=1.5 HTTP/1.1\r\nHost: h\r\n\r\n")
        stream = sock.makefile("rb")
        first = read_response(stream)
        assert first is not None and first.status == 200
        assert first.header("Connection") != "close"
        # A client pausing within the keep-alive: the connection stays open meanwhile.
        assert select.select([sock], [], [], 0.5)[0] == []
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        second = read_response(stream)
        assert second is not None and second.status == 200


# -- signals and recycling


@needs_gevent
def test_term_lets_requests_in_flight_finish() -> None:
    with running([*GEVENT, "-w", "1", "gevent_apps:app"]) as srv, ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(get, srv, "/sleep?seconds=2", 20) for _ in range(5)]
        srv.wait_for(r"gevent_apps: /sleep started", count=5)
        with connect(srv.port) as idle:  # an idle keep-alive connection must not hold it up
            started = time.monotonic()
            srv.signal(signal.SIGTERM)
            assert [future.result(20).status_code for future in futures] == [200] * 5
            assert srv.wait_exit(20) == 0
            assert got_eof(idle, idle.makefile("rb"), wait=1.0)
        assert time.monotonic() - started < 5
    with pytest.raises(requests.ConnectionError):
        get(srv, "/", timeout=2)


@needs_gevent
def test_term_answers_requests_received_with_connection_close() -> None:
    with running([*GEVENT, "-w", "1", "gevent_apps:app"]) as srv, connect(srv.port) as sock:
        # Two pipelined requests: the first is in the app when TERM comes, the second waits.
        sock.sendall(
            b"GET /sleep?seconds=1 HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        srv.wait_for(r"gevent_apps: /sleep started")
        srv.signal(signal.SIGTERM)
        stream = sock.makefile("rb")
        first, second = read_response(stream), read_response(stream)
        assert first is not None and first.status == 200
        assert second is not None and second.status == 200
        assert second.header("Connection") == "close"
        assert srv.wait_exit(20) == 0


@needs_gevent
def test_term_answers_the_next_request_sent_right_after_a_kept_alive_answer() -> None:
    # The request began before TERM, so its answer keeps the connection alive; a client
    # sending its next request at once must get it answered, not the connection reset.
    with running([*GEVENT, "-w", "1", "gevent_apps:app"]) as srv, connect(srv.port) as sock:
        sock.sendall(b"GET /sleep?seconds=1 HTTP/1.1\r\nHost: h\r\n\r\n")
        srv.wait_for(r"gevent_apps: /sleep started")
        srv.signal(signal.SIGTERM)
        stream = sock.makefile("rb")
        first = read_response(stream)
        assert first is not None and first.status == 200
        sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        second = read_response(stream)
        assert second is not None and second.status == 200
        assert second.header("Connection") == "close"
        assert srv.wait_exit(20) == 0


@needs_gevent
def test_idle_keep_alive_connections_do_not_delay_term() -> None:
    with running([*GEVENT, "--keep-alive", "30", "testapps:hello"]) as srv, connect(srv.port) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        stream = s.makefile("rb")
        assert read_response(stream) is not None
        started = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert got_eof(s, stream, wait=5.0)
        assert srv.wait_exit(10) == 0
        assert time.monotonic() - started < 2


@needs_gevent
def test_a_retiring_worker_keeps_idle_connections_only_briefly() -> None:
    # Keep-alive 30 s, but a retiring worker keeps an idle connection at most 5 s.
    args = [*GEVENT, "--max-requests", "2", "--keep-alive", "30", "testapps:hello"]
    with running(args) as srv, connect(srv.port) as kept:
        kept.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        stream = kept.makefile("rb")
        assert read_response(stream) is not None
        started = time.monotonic()
        assert get(srv).status_code == 200  # the last request: it retires
        assert got_eof(kept, stream, wait=10.0)
        assert 4 < time.monotonic() - started < 8
        # The successor must have its own signal handlers before the master's TERM comes.
        srv.wait_for(r"Booting worker with pid", count=2)


@needs_gevent
def test_a_retiring_worker_still_answers_an_idle_connection_reused_meanwhile() -> None:
    args = [*GEVENT, "-w", "1", "--max-requests", "2", "--keep-alive", "5", "gevent_apps:app"]
    with running(args) as srv, connect(srv.port) as kept:
        kept.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        stream = kept.makefile("rb")
        first = read_response(stream)
        assert first is not None and first.status == 200
        assert get(srv).text == first.body.decode()  # the second request: it retires
        srv.wait_for(r"Autorestarting worker after current request")
        kept.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        third = read_response(stream)
        assert third is not None and third.status == 200
        assert third.body == first.body  # the retiring worker, not its successor
        assert third.header("Connection") == "close"
        # The successor is forked as the old worker retires; stopping the master before
        # the child has its own signal handlers would lose that child's TERM (an arbiter
        # race, whatever the worker class).
        srv.wait_for(r"Booting worker with pid", count=2)


@needs_gevent
def test_preload_patches_in_the_master_and_survives_term_and_hup() -> None:
    args = [*GEVENT, "--preload", "-w", "2", "gevent_apps:app"]
    with running(args, workers=2) as srv:
        state = get(srv, "/state").json()
        assert state["socket_patched_at_import"] is True  # imported by the master, patched
        assert state["socket_patched"] is True
        old = set(srv.worker_pids())
        with SteadyLoad(srv, "/gsleep?seconds=0.01") as load:
            poll(lambda: load.ok > 5, what="traffic")
            srv.signal(signal.SIGHUP)
            poll(lambda: not (set(srv.worker_pids()) & old), 30, "old workers to go")
            poll(lambda: len(srv.worker_pids()) == 2, 30, "two new workers")
            seen = load.ok
            poll(lambda: load.ok > seen + 5, what="traffic after the reload")
        assert load.failed == []
        # The master still reaps and replaces a worker that dies.
        victim = srv.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        poll(lambda: victim not in srv.worker_pids() and len(srv.worker_pids()) == 2)
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(get, srv, "/sleep?seconds=1", 20)
            srv.wait_for(r"gevent_apps: /sleep started", count=1)
            srv.signal(signal.SIGTERM)
            assert future.result(20).status_code == 200
        assert srv.wait_exit(20) == 0
    assert "gevent:" not in srv.log
    srv.wait_for(r"Shutting down: Master")


@needs_gevent
def test_an_app_imported_before_the_patch_is_warned_about(tmp_path: Path) -> None:
    config = tmp_path / "early.conf.py"
    config.write_text("import gevent_apps  # noqa: F401\n")
    with running([*GEVENT, "-c", str(config), "gevent_apps:app"]) as srv:
        srv.wait_for(r"\[WARNING\] 'gevent_apps' was imported before gevent patched")
        assert get(srv, "/state").json()["socket_patched_at_import"] is False


@needs_gevent
def test_an_app_imported_before_the_patch_is_warned_about_with_preload(tmp_path: Path) -> None:
    config = tmp_path / "early.conf.py"
    config.write_text("import gevent_apps  # noqa: F401\n")
    with running([*GEVENT, "--preload", "-c", str(config), "gevent_apps:app"]) as srv:
        warning = r"\[WARNING\] 'gevent_apps' was imported before gevent patched"
        [line] = srv.wait_for(warning)
        assert f"[{srv.pid}]" in line.string  # the master says it, before preloading
        assert get(srv, "/state").json()["socket_patched_at_import"] is False
    assert len([line for line in srv.lines if "was imported before gevent patched" in line]) == 1


# -- timeouts: code that holds the hub


@needs_gevent
def test_a_busy_loop_times_out_with_500_and_the_worker_is_replaced() -> None:
    with running([*GEVENT, "-w", "1", "-t", "2", "gevent_apps:app"]) as srv:
        victim = srv.worker_pids()[0]
        with ThreadPoolExecutor(2) as pool:
            sleeper = pool.submit(get, srv, "/gsleep?seconds=0.5", 20)
            srv.wait_for(r"gevent_apps: /gsleep started")
            started = time.monotonic()
            busy = pool.submit(get, srv, "/busy", 20)
            assert busy.result(20).status_code == 500
            # The request that was waiting behind the stuck one is answered, not reset.
            assert sleeper.result(20).status_code == 200
        assert time.monotonic() - started < 10
        srv.wait_for(rf"WORKER TIMEOUT \(pid:{victim}\)")
        srv.wait_for(r"Request aborted at timeout: GET /busy")
        poll(lambda: len(srv.worker_pids()) == 1 and victim not in srv.worker_pids())
        assert get(srv).status_code == 200
        # It exited by itself, within the master's grace, rather than being killed.
        srv.wait_for(rf"Worker \(pid:{victim}\) exited with code 1")


@needs_gevent
def test_a_cooperative_wait_does_not_trip_the_timeout() -> None:
    with running([*GEVENT, "-w", "1", "-t", "2", "gevent_apps:app"]) as srv:
        assert get(srv, "/gsleep?seconds=4").status_code == 200
    assert "WORKER TIMEOUT" not in srv.log


# -- without gevent


def test_missing_gevent_is_one_line_naming_the_extra(tmp_path: Path) -> None:
    fake = tmp_path / "gevent"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'gevent'\")\n")
    pythonpath = os.pathsep.join([str(tmp_path), str(REPO / "lib")])
    srv = Server([*GEVENT, "testapps:hello"], env={"PYTHONPATH": pythonpath})
    try:
        assert srv.wait_exit(30) == 1
    finally:
        srv.kill_group()
    assert srv.lines == [
        "Error: worker_class = 'gevent' from command line: "
        "the gevent worker needs gevent: pip install 'dynocorn[gevent]'"
    ]
