"""The threaded worker: real concurrency, a real request timeout, bounded connections."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from clients import get, poll
from rawhttp import connect
from server import APPS, REPO, running


def test_eight_threads_run_eight_requests_at_once() -> None:
    with running(["-w", "1", "--threads", "8", "testapps:routes"]) as srv:
        get(srv.port, "/")  # the worker has loaded the app: its boot is not part of the time
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: get(srv.port, "/sleep?seconds=1"), range(8)))
        elapsed = time.monotonic() - started
        assert [r.status_code for r in results] == [200] * 8
        assert elapsed < 3.0, f"8 requests of 1 s took {elapsed:.1f} s"
        print(f"8 concurrent 1 s requests with --threads 8: {elapsed:.2f} s")


def test_a_request_past_timeout_is_reported_and_the_worker_replaced() -> None:
    with running(["-w", "1", "--threads", "4", "-t", "2", "testapps:routes"]) as srv:
        victim = srv.worker_pids()[0]
        with ThreadPoolExecutor(2) as pool:
            stuck = pool.submit(get, srv.port, "/announced-sleep?seconds=6")
            # Others keep being served while one request is stuck.
            srv.wait_for(r"testapps: /announced-sleep\?seconds=6 started")
            for _ in range(5):
                assert get(srv.port, "/").status_code == 200
            response = stuck.result(20)
        assert response.status_code == 500
        line = srv.wait_for(
            rf"WORKER TIMEOUT \(pid:{victim}\) request GET /announced-sleep\?seconds=6"
        )[0]
        assert line is not None
        assert "in sleepy" in srv.log and "time.sleep" in srv.log  # the thread's stack
        poll(
            lambda: victim not in srv.worker_pids() and len(srv.worker_pids()) == 1,
            20,
            "the worker to be replaced",
        )
        assert get(srv.port, "/").status_code == 200


def test_time_waiting_for_a_free_thread_is_not_request_time() -> None:
    # Four 2 s requests on two threads: the last two wait 2 s, then run 2 s. Only the
    # running counts towards -t 3.
    with running(["-w", "1", "--threads", "2", "-t", "3", "testapps:routes"]) as srv:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: get(srv.port, "/sleep?seconds=2"), range(4)))
        assert [r.status_code for r in results] == [200] * 4
        assert len({r.text for r in results}) == 1  # one worker served them all
    assert "WORKER TIMEOUT" not in srv.log


def test_after_a_timeout_the_other_requests_finish_before_the_worker_goes(
    tmp_path: Path,
) -> None:
    release = tmp_path / "release"
    with running(["-w", "1", "--threads", "4", "-t", "3", "testapps:routes"]) as srv:
        victim = srv.worker_pids()[0]
        with ThreadPoolExecutor(2) as pool:
            stuck = pool.submit(get, srv.port, "/announced-sleep?seconds=3600")
            srv.wait_for(r"testapps: /announced-sleep\?seconds=3600 started")
            # A second later than the stuck one, so it is still within -t when that one
            # times out (the check runs once a second).
            time.sleep(1.5)
            other = pool.submit(get, srv.port, f"/until-file?path={release}")
            srv.wait_for(r"testapps: /until-file\S* started")
            srv.wait_for(rf"WORKER TIMEOUT \(pid:{victim}\) request GET /announced-sleep")
            assert stuck.result(20).status_code == 500
            # The worker is retiring but waits for the other request; its successor serves.
            poll(lambda: len(srv.worker_pids()) == 2, 20, "the successor")
            assert victim in srv.worker_pids()
            release.touch()
            response = other.result(20)
        assert response.status_code == 200
        assert response.text == str(victim)
        poll(lambda: srv.worker_pids() != [] and victim not in srv.worker_pids(), 20, "exit")
    assert [line for line in srv.lines if "WORKER TIMEOUT" in line and "until-file" in line] == []


def test_graceful_timeout_bounds_the_wait_for_the_other_requests(tmp_path: Path) -> None:
    never = tmp_path / "never"
    args = ["-w", "1", "--threads", "4", "-t", "3", "--graceful-timeout", "2", "testapps:routes"]
    with running(args) as srv:
        victim = srv.worker_pids()[0]
        with ThreadPoolExecutor(2) as pool:
            pool.submit(get, srv.port, "/announced-sleep?seconds=3600")
            srv.wait_for(r"testapps: /announced-sleep\?seconds=3600 started")
            time.sleep(1.5)  # as above: the second request must not time out with the first
            endless = pool.submit(get, srv.port, f"/until-file?path={never}")
            srv.wait_for(r"testapps: /until-file\S* started")
            srv.wait_for(rf"WORKER TIMEOUT \(pid:{victim}\)")
            timed_out = time.monotonic()
            poll(lambda: victim not in srv.worker_pids(), 10, "the worker to go")
            waited = time.monotonic() - timed_out
            with pytest.raises(requests.ConnectionError):
                endless.result(20)  # cut off at graceful_timeout: nothing was sent
        assert 1.5 < waited < 5, f"the retiring worker stayed {waited:.1f} s"
        assert get(srv.port, "/").status_code == 200


def test_threads_mean_gthread_in_print_config() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dynocorn",
            "--threads",
            "4",
            "--print-config",
            "app:app",
        ],
        cwd=APPS,
        env={**os.environ, "PYTHONPATH": str(REPO / "lib")},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "worker_class = 'gthread'  # command line (threads=4)" in result.stdout


def test_connections_past_the_limit_wait_in_the_backlog() -> None:
    args = [
        "-w",
        "1",
        "--threads",
        "2",
        "--worker-connections",
        "2",
        "--keep-alive",
        "30",
        "testapps:hello",
    ]
    with running(args) as srv:
        first, second = connect(srv.port), connect(srv.port)
        try:
            for sock in (first, second):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                assert b"Hello, World!" in sock.recv(4096)
            with connect(srv.port) as third:
                third.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
                third.settimeout(1.0)
                try:
                    data = third.recv(4096)
                except TimeoutError:
                    data = b""
                assert data == b"", "a third connection was served past worker_connections"
                first.close()  # a slot frees: the waiting connection is accepted and served
                third.settimeout(10)
                assert b"Hello, World!" in third.recv(4096)
        finally:
            first.close()
            second.close()


def test_a_users_worker_class_by_dotted_path() -> None:
    with running(["-k", "custom_worker.Loud", "testapps:hello"]) as srv:
        srv.wait_for(r"custom worker class is serving")
        assert get(srv.port, "/").text == "Hello, World!"


def test_a_bad_worker_class_is_one_line_and_exit_1() -> None:
    for name, why in [
        ("custom_worker.NotAWorker", "is not a subclass of dynocorn.workers.base.Worker"),
        ("nowhere.Thing", "cannot load nowhere.Thing"),
        ("threaded", "unknown worker class 'threaded'"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "dynocorn", "-k", name, "testapps:hello"],
            cwd=APPS,
            env={**os.environ, "PYTHONPATH": str(REPO / "lib")},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith(f"Error: worker_class = '{name}' from command line: ")
        assert why in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_request_waiting_behind_stuck_threads_goes_to_the_successor() -> None:
    # Both threads hang past -t 2; a third request waits for a thread that never frees.
    # When the worker gives up on the stuck ones, the waiting connection (its request still
    # unread) goes through the hand-off queue to the worker that replaces it, which answers
    # it: not left to be cut off when graceful_timeout (30 s here) ends.
    args = ["-w", "1", "--threads", "2", "-t", "2", "--graceful-timeout", "30", "testapps:routes"]
    with running(args) as srv:
        victim = srv.worker_pids()[0]
        with ThreadPoolExecutor(3) as pool:
            stuck = [pool.submit(get, srv.port, "/announced-sleep?seconds=3600") for _ in range(2)]
            srv.wait_for(r"testapps: /announced-sleep\?seconds=3600 started", count=2)
            started = time.monotonic()
            # A request is parked (kept unread, so that it can move) only behind requests
            # that have run 1 ms (PARK_FROM): give the stuck ones that before it arrives.
            poll(lambda: time.monotonic() - started > 0.005, what="the stuck requests to run")
            queued = pool.submit(get, srv.port, "/pid")
            response = queued.result(25)
            waited = time.monotonic() - started
            assert [f.result(25).status_code for f in stuck] == [500, 500]
        assert response.status_code == 200
        assert int(response.text) != victim
        assert waited < 10, f"the queued request waited {waited:.1f} s"
        poll(lambda: victim not in srv.worker_pids(), 20, "the worker to be replaced")
        assert get(srv.port, "/").status_code == 200
