"""The master: signals, worker lifecycle, exit codes, hooks, as a real process."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from clients import SteadyLoad, get, poll
from server import Server, running
from worker_classes import WORKER_CLASSES, worker_class_name

# What follows gunicorn's `was sent SIGKILL!` for a SIGKILL the test sent.
FOREIGN_SIGKILL = r"(?:It was sent by another process|Perhaps out of memory\?)"


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_log_lines_people_alert_on(worker_args: list[str]) -> None:
    with running([*worker_args, "-w", "2", "testapps:hello"], workers=2) as srv:
        srv.wait_for(r"\[INFO\] Starting dynocorn \d+\.\d+\.\d+")
        srv.wait_for(r"\[INFO\] Listening at: http://127\.0\.0\.1:\d+ \(\d+\)")
        srv.wait_for(rf"\[INFO\] Using worker: {worker_class_name(worker_args)}$")
        assert len(srv.booted_pids()) == 2
    srv.wait_for(r"\[INFO\] Handling signal: term")
    srv.wait_for(r"\[INFO\] Worker exiting \(pid: \d+\)", count=2)
    srv.wait_for(r"\[INFO\] Shutting down: Master")
    assert srv.process.returncode == 0


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_term_lets_the_request_in_flight_finish(worker_args: list[str]) -> None:
    with running([*worker_args, "-w", "1", "testapps:routes"]) as srv:
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(get, srv, "/announced-sleep?seconds=2")
            srv.wait_for(r"testapps: /announced-sleep\?seconds=2 started")
            started = time.monotonic()
            srv.signal(signal.SIGTERM)
            response = future.result(10)
        assert response.status_code == 200
        assert srv.wait_exit(20) == 0
        assert time.monotonic() - started < 10
        # New connections are refused once it is gone.
        with pytest.raises(requests.ConnectionError):
            get(srv, "/", timeout=2)


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_term_to_master_and_workers_at_once_like_heroku(worker_args: list[str]) -> None:
    with running([*worker_args, "-w", "2", "testapps:routes"], workers=2) as srv:
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(get, srv, "/announced-sleep?seconds=1.5") for _ in range(2)]
            srv.wait_for(r"testapps: /announced-sleep\?seconds=1\.5 started", count=2)
            for pid in [srv.pid, *srv.worker_pids()]:
                # An idle worker (gthread: both requests may be on one) may have gone at
                # the master's TERM already, before its own: Heroku's TERM misses it too.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
            results = [future.result(10) for future in futures]
        assert [r.status_code for r in results] == [200, 200]
        assert srv.wait_exit(20) == 0


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_int_stops_quickly(worker_args: list[str]) -> None:
    with running([*worker_args, "-w", "2", "testapps:hello"], workers=2) as srv:
        srv.signal(signal.SIGINT)
        assert srv.wait_exit(10) == 0


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_graceful_timeout_bounds_the_stop(worker_args: list[str], tmp_path: Path) -> None:
    never = tmp_path / "never"  # the request runs until the worker is stopped
    with (
        running([*worker_args, "--graceful-timeout", "2", "testapps:routes"]) as srv,
        ThreadPoolExecutor(1) as pool,
    ):
        pool.submit(get, srv, f"/until-file?path={never}", 30)
        srv.wait_for(r"testapps: /until-file\S* started")
        started = time.monotonic()
        srv.signal(signal.SIGTERM)
        assert srv.wait_exit(15) == 0
        assert time.monotonic() - started < 6


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_hup_replaces_every_worker_without_failing_a_request(worker_args: list[str]) -> None:
    with running([*worker_args, "-w", "2", "testapps:sleepy"], workers=2, env={}) as srv:
        old = set(srv.worker_pids())
        assert len(old) == 2
        with SteadyLoad(srv, "/?seconds=0.01") as load:
            poll(lambda: load.ok > 5, what="traffic")
            srv.signal(signal.SIGHUP)
            poll(lambda: not (set(srv.worker_pids()) & old), 30, "old workers to go")
            poll(lambda: len(srv.worker_pids()) == 2, 30, "two new workers")
            seen = load.ok
            poll(lambda: load.ok > seen + 5, what="traffic after the reload")
        assert load.failed == []
        new = set(srv.worker_pids())
        assert len(new) == 2 and not (new & old)
        assert {int(pid) for pid in load.pids} & new  # served by the new workers


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_ttin_and_ttou_change_the_worker_count(worker_args: list[str]) -> None:
    with running([*worker_args, "-w", "2", "testapps:hello"], workers=2) as srv:
        srv.signal(signal.SIGTTIN)
        poll(lambda: len(srv.worker_pids()) == 3, what="3 workers")
        # One at a time: the kernel merges a signal sent while the same one is pending.
        srv.signal(signal.SIGTTOU)
        poll(lambda: len(srv.worker_pids()) == 2, what="2 workers")
        srv.signal(signal.SIGTTOU)
        poll(lambda: len(srv.worker_pids()) == 1, what="1 worker")
        assert get(srv).status_code == 200


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_a_killed_worker_is_replaced(worker_args: list[str]) -> None:
    with running([*worker_args, "-w", "2", "testapps:hello"], workers=2) as srv:
        victim = srv.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        poll(
            lambda: victim not in srv.worker_pids() and len(srv.worker_pids()) == 2,
            what="replacement",
        )
        # By another process (test_worker_deaths.py), or of unknown cause where no cgroup
        # OOM-kill count can be read.
        srv.wait_for(rf"Worker \(pid:{victim}\) was sent SIGKILL! {FOREIGN_SIGKILL}")
        for _ in range(10):
            assert get(srv).status_code == 200


def test_hung_request_times_out_with_500_and_the_worker_is_replaced() -> None:
    with running(["-w", "1", "-t", "2", "testapps:routes"]) as srv:
        victim = srv.worker_pids()[0]
        started = time.monotonic()
        response = get(srv, "/hang", timeout=20)
        assert response.status_code == 500
        assert time.monotonic() - started < 10
        # The request, from the master's own view: its line is the one a worker stuck in C
        # code gets, with no stack of its own.
        srv.wait_for(rf"WORKER TIMEOUT \(pid:{victim}\) request GET /hang running \d+\.\ds$")
        srv.wait_for(r"\[ERROR\] Request aborted at timeout: GET /hang")
        # The stack the request was stuck in, down to the app's own line.
        srv.wait_for(r"in hang$")
        srv.wait_for(r"time\.sleep\(3600\)$")
        poll(lambda: len(srv.worker_pids()) == 1 and victim not in srv.worker_pids())
        assert get(srv).status_code == 200
        # The stack once, with its request; the master's own abort is no crash to back off.
        assert srv.log.count("time.sleep(3600)") == 1
        assert "Exception in worker process" not in srv.log
        assert "crashed soon after start" not in srv.log


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_the_timeout_is_per_request_when_requests_queue_up(worker_args: list[str]) -> None:
    """Three 2 s requests at once, one worker, -t 3: under sync the second and third run
    back to back (6 s after the first began), but none runs 3 s; none is a WORKER TIMEOUT."""
    with running([*worker_args, "-w", "1", "-t", "3", "testapps:routes"]) as srv:
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: get(srv, "/sleep?seconds=2", timeout=20), range(3)))
        assert [answer.status_code for answer in answers] == [200, 200, 200], srv.log
    assert "WORKER TIMEOUT" not in srv.log


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_timeout_zero_disables_it(worker_args: list[str]) -> None:
    with running([*worker_args, "-w", "1", "-t", "0", "testapps:routes"]) as srv:
        assert get(srv, "/sleep?seconds=2").status_code == 200
        assert "WORKER TIMEOUT" not in srv.log


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
@pytest.mark.parametrize(
    ("app", "code", "reason"),
    [
        ("broken_import:app", 3, "Worker failed to boot."),
        ("no_such_module:app", 3, "Worker failed to boot."),
        ("testapps:missing", 4, "App failed to load."),
        ("testapps:not_callable", 4, "App failed to load."),
    ],
)
def test_boot_failures_stop_the_master_with_their_exit_code(
    app: str, code: int, reason: str, worker_args: list[str]
) -> None:
    srv = Server([*worker_args, "-w", "2", app])
    try:
        assert srv.wait_exit(30) == code
        srv.wait_for(rf"Reason: {reason}")
    finally:
        srv.kill_group()


def test_a_worker_that_exits_as_it_boots_says_why_and_backs_off() -> None:
    """sys.exit("message") at import: Python would print the message, the worker must log
    it (where it was called too), or the crash loop that follows has nothing to go on."""
    srv = Server(["-w", "1", "exits_at_import:app"])
    try:
        srv.wait_for(r"\[ERROR\] Worker exiting by sys\.exit\('DATABASE_URL is not set'\)$")
        srv.wait_for(r"exits_at_import\.py\", line 5, in <module>$")
        srv.wait_for(r"^SystemExit: DATABASE_URL is not set$")
        srv.wait_for(r"Worker crashed soon after start; next spawn in 0\.2s$")
    finally:
        srv.kill_group()


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_preload_failure_exits_1(worker_args: list[str]) -> None:
    srv = Server([*worker_args, "--preload", "no_such_module:app"])
    try:
        assert srv.wait_exit(30) == 1
    finally:
        srv.kill_group()


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_preload_serves_from_the_master_import(worker_args: list[str]) -> None:
    with running([*worker_args, "--preload", "-w", "2", "testapps:routes"], workers=2) as srv:
        assert get(srv, "/echo").json()["multiprocess"] is True


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_max_requests_recycles_without_losing_requests(worker_args: list[str]) -> None:
    with running(
        [*worker_args, "-w", "2", "--max-requests", "20", "testapps:sleepy"], workers=2
    ) as srv:
        with SteadyLoad(srv, "/?seconds=0") as load:
            poll(lambda: load.ok >= 120, 60, "120 requests")
        assert load.failed == []
        assert len(load.pids) >= 4  # workers were replaced along the way
        srv.wait_for(r"Autorestarting worker after current request")
    # Each said why it retired (`x max_requests` over its pipe): no exit came unannounced.
    assert "unasked" not in srv.log and "[ERROR]" not in srv.log, srv.log


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_pidfile_and_hooks(tmp_path: Path, worker_args: list[str]) -> None:
    pidfile = tmp_path / "master.pid"
    marks = tmp_path / "marks.txt"
    config = tmp_path / "conf.py"
    config.write_text(
        f"MARKS = {str(marks)!r}\n"
        "def _mark(text):\n"
        "    with open(MARKS, 'a') as handle:\n"
        "        handle.write(text + '\\n')\n"
        "def on_starting(server): _mark('on_starting')\n"
        "def when_ready(server): _mark('when_ready')\n"
        "def pre_fork(server, worker): _mark('pre_fork')\n"
        "def post_fork(server, worker): _mark('post_fork')\n"
        "def post_worker_init(worker): _mark('post_worker_init')\n"
        "def pre_request(worker, req): _mark('pre_request ' + req.method)\n"
        "def post_request(worker, req, environ, resp): _mark('post_request')\n"
        "def worker_exit(server, worker): _mark('worker_exit')\n"
        "def child_exit(server, worker): _mark('child_exit')\n"
        "def on_exit(server): _mark('on_exit')\n"
    )
    with running([*worker_args, "-c", str(config), "-p", str(pidfile), "testapps:hello"]) as srv:
        assert pidfile.read_text().strip() == str(srv.pid)
        assert get(srv).status_code == 200
    assert not pidfile.exists()
    lines = marks.read_text().split("\n")
    for mark in [
        "on_starting",
        "when_ready",
        "pre_fork",
        "post_fork",
        "post_worker_init",
        "pre_request GET",
        "post_request",
        "worker_exit",
        "child_exit",
        "on_exit",
    ]:
        assert mark in lines, mark
    assert lines.index("on_starting") < lines.index("pre_fork") < lines.index("on_exit")


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_usr2_reexec_then_old_master_term(worker_args: list[str]) -> None:
    with running([*worker_args, "-w", "1", "testapps:sleepy"]) as srv:
        with SteadyLoad(srv, "/?seconds=0.01") as load:
            poll(lambda: load.ok > 5, what="traffic")
            old_workers = set(srv.worker_pids())
            srv.signal(signal.SIGUSR2)
            # The new master is a child of the old one, with its own worker.
            poll(lambda: len(srv.worker_pids()) == 2, 30, "the new master")
            new_master = (set(srv.worker_pids()) - old_workers).pop()
            srv.signal(signal.SIGTERM)
            assert srv.wait_exit(30) == 0
            seen = load.ok
            poll(lambda: load.ok > seen + 5, 30, "traffic served by the new master")
        try:
            assert load.failed == []
        finally:
            os.kill(new_master, signal.SIGTERM)
            poll(lambda: not Path(f"/proc/{new_master}").exists(), 30, "new master to stop")


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_access_log_in_gunicorn_format(worker_args: list[str]) -> None:
    with running([*worker_args, "--access-logfile", "-", "testapps:hello"]) as srv:
        requests.get(
            f"http://127.0.0.1:{srv.port}/x?y=1", headers={"User-Agent": "probe/1"}, timeout=5
        )
        line = srv.wait_for(r'"GET /x\?y=1 HTTP/1.1" 200 13', stdout=True)[0].string
        assert line.startswith("127.0.0.1 - - [")
        assert line.endswith('"-" "probe/1"')


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_heroku_access_log_is_logfmt_on_stdout(worker_args: list[str]) -> None:
    env = {"DYNO": "web.1"}
    with running([*worker_args, "testapps:hello"], env=env) as srv:
        now_ms = int(time.time() * 1000) - 12
        requests.get(
            f"http://127.0.0.1:{srv.port}/x",
            headers={"X-Request-Id": "abc-123", "X-Request-Start": str(now_ms)},
            timeout=5,
        )
        line = srv.wait_for(r"method=GET path=", stdout=True)[0].string
        assert 'path="/x" status=200 bytes=13' in line
        assert "request_id=abc-123" in line
        assert "queue_ms=" in line
