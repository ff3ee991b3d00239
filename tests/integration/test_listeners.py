"""Listening sockets and the settings around them, and how the processes present themselves.

Several listeners at once, `--backlog`, `--reuse-port`, fairness between listeners,
`--no-sendfile`, `-n NAME` process titles, `--chdir`, and the error log's line format.
"""

from __future__ import annotations

import errno
import importlib.util
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import pytest
import requests

from clients import poll
from rawhttp import read_response
from server import LISTENING, Server, running
from worker_classes import WORKER_CLASSES

HAVE_SETPROCTITLE = importlib.util.find_spec("setproctitle") is not None
# gunicorn's error log line: `[2026-11-22 01:29:22 +0000] [13672] [INFO] message`.
LOG_LINE = re.compile(
    r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4})\] \[(\d+)\] "
    r"\[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\] "
)
HELLO = b"Hello, World!"


def listener_ports(server: Server, count: int) -> list[int]:
    """The ports of the first `count` `Listening at` lines, in the order they were logged."""
    return [
        int(m.group(1).rsplit(":", 1)[1]) for m in server.wait_for(LISTENING.pattern, count=count)
    ]


def get_fresh(port: int, path: str = "/", timeout: float = 10.0) -> requests.Response:
    """One request on a connection of its own."""
    return requests.get(
        f"http://127.0.0.1:{port}{path}", headers={"Connection": "close"}, timeout=timeout
    )


# -- several listeners ---------------------------------------------------------------------


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_two_listeners_on_port_zero_both_answer(worker_args: list[str]) -> None:
    args = [*worker_args, "-b", "127.0.0.1:0", "-b", "127.0.0.1:0", "testapps:hello"]
    with running(args, bind=None) as srv:
        ports = listener_ports(srv, 2)
        assert len(set(ports)) == 2, ports
        for port in ports:
            assert get_fresh(port).content == HELLO


class PipelinedFlood:
    """One connection sending pipelined requests back to back, and a reader of the answers.

    The writer never waits for answers, so the server always has this connection's next
    request in hand: a worker that serves a connection until it runs dry never leaves it.
    """

    BATCH = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n" * 200

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.answers = 0
        self.sent = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._write, daemon=True),
            threading.Thread(target=self._read, daemon=True),
        ]

    def _write(self) -> None:
        deadline = time.monotonic() + 60  # bounded, whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.sock.sendall(self.BATCH)
            except OSError as error:
                if not self._stop.is_set():
                    self.error = f"send: {error!r}"
                return
            self.sent += 200

    def _read(self) -> None:
        stream = self.sock.makefile("rb")
        while not self._stop.is_set():
            try:
                response = read_response(stream)
            except (OSError, ValueError) as error:
                if not self._stop.is_set():
                    self.error = f"read: {error!r}"
                return
            if response is None:
                if not self._stop.is_set():
                    self.error = "the server closed the flooding connection"
                return
            if response.body != HELLO:
                self.error = f"unexpected answer {response.status} {response.body[:100]!r}"
                return
            self.answers += 1

    def __enter__(self) -> PipelinedFlood:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes both threads
        except OSError:
            pass
        for thread in self._threads:
            thread.join(15)
        self.sock.close()


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_a_pipelining_connection_does_not_starve_another_listener(
    worker_args: list[str],
) -> None:
    args = [*worker_args, "-w", "1", "-b", "127.0.0.1:0", "-b", "127.0.0.1:0", "testapps:hello"]
    with running(args, bind=None) as srv:
        flooded, other = listener_ports(srv, 2)
        with PipelinedFlood(flooded) as flood:
            poll(lambda: flood.answers >= 1000 or flood.error, 20, "the flood to flow")
            assert flood.error is None, flood.error
            latencies = []
            for _ in range(20):
                started = time.monotonic()
                # A timeout twice the bound: an answer that late fails either way.
                assert get_fresh(other, timeout=2).content == HELLO
                latencies.append(time.monotonic() - started)
            answered_during = flood.answers
            # The flood still flows: the worker shared itself rather than switching over.
            poll(
                lambda: flood.answers > answered_during + 1000 or flood.error,
                20,
                "more flood answers",
            )
            assert flood.error is None, flood.error
        assert max(latencies) < 1.0, f"worst {max(latencies):.2f}s, all {latencies}"
        assert flood.answers >= 2000


# -- listener settings ---------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs `ss` (iproute2)")
def test_backlog_is_the_listen_queue_length() -> None:
    with running(["--backlog", "77", "testapps:hello"]) as srv:
        # For a listening TCP socket, `ss` shows the backlog as Send-Q.
        shown = subprocess.run(
            ["ss", "-Hltn", "sport", "=", f":{srv.port}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.split()
        assert shown[:3] == ["LISTEN", "0", "77"], shown


def bind_beside(port: int) -> None:
    """Bind a socket of our own, with SO_REUSEPORT, to the port the server listens on."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))  # bound, never listening: takes no connections


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
def test_reuse_port_lets_another_socket_bind_the_port() -> None:
    with running(["--reuse-port", "testapps:hello"]) as srv:
        bind_beside(srv.port)
        assert get_fresh(srv.port).content == HELLO
    with running(["testapps:hello"]) as srv, pytest.raises(OSError) as refused:
        bind_beside(srv.port)
    assert refused.value.errno == errno.EADDRINUSE


# -- sendfile ------------------------------------------------------------------------------


@contextmanager
def file_server(worker_args: list[str], tmp_path: Path) -> Iterator[tuple[Server, bytes]]:
    payload = bytes(range(256)) * 4096 * 3  # 3 MiB
    path = tmp_path / "payload.bin"
    path.write_bytes(payload)
    env = {"SENDFILE_PATH": str(path), "CLOSE_MARKER": str(tmp_path / "closed.txt")}
    with running([*worker_args, "-w", "1", "testapps:routes"], env=env) as srv:
        yield srv, payload


def bytes_written_by_files(pid: int) -> int:
    """`wchar` of /proc/PID/io: sendfile() counts there, send() on a socket does not."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        name, _, value = line.partition(": ")
        if name == "wchar":
            return int(value)
    raise AssertionError(f"no wchar in /proc/{pid}/io")


def fetch_file_and_measure(srv: Server) -> tuple[bytes, int]:
    """The /sendfile body, and the bytes its worker wrote through file writes meanwhile."""
    (worker,) = srv.worker_pids()
    assert get_fresh(srv.port).content == HELLO  # the worker is warm: no boot-time writes
    before = bytes_written_by_files(worker)
    body = get_fresh(srv.port, "/sendfile").content
    return body, bytes_written_by_files(worker) - before


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_no_sendfile_sends_the_same_body_without_sendfile(
    worker_args: list[str], tmp_path: Path
) -> None:
    with file_server([*worker_args, "--no-sendfile"], tmp_path) as (srv, payload):
        body, written = fetch_file_and_measure(srv)
    assert body == payload
    assert written < len(payload), f"{written} bytes went through sendfile()"


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_file_wrapper_uses_sendfile_by_default(worker_args: list[str], tmp_path: Path) -> None:
    with file_server(worker_args, tmp_path) as (srv, payload):
        body, written = fetch_file_and_measure(srv)
    assert body == payload
    assert written >= len(payload), f"only {written} bytes went through sendfile()"


# -- how the processes present themselves --------------------------------------------------


def title(pid: int) -> str:
    return " ".join(psutil.Process(pid).cmdline())


@pytest.mark.skipif(not HAVE_SETPROCTITLE, reason="setproctitle is not installed")
@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_proc_name_titles_the_master_and_the_workers(worker_args: list[str]) -> None:
    with running(
        [*worker_args, "-w", "2", "-n", "billing-api", "testapps:hello"], workers=2
    ) as srv:
        assert "dynocorn: master [billing-api]" in title(srv.pid)
        workers = srv.worker_pids()
        # A new worker names itself as it starts up, a moment after it is forked.
        poll(
            lambda: all("dynocorn: worker [billing-api]" in title(pid) for pid in workers),
            10,
            "the workers' titles",
        )


def test_chdir_runs_the_app_from_that_directory(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "chdir_app.py").write_text(
        "import os\n"
        "def app(environ, start_response):\n"
        "    body = os.getcwd().encode()\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # Started from another directory: only --chdir makes `chdir_app` importable.
    with running(["--chdir", str(site), "chdir_app:app"], cwd=elsewhere) as srv:
        assert get_fresh(srv.port).text == str(site)
        assert psutil.Process(srv.pid).cwd() == str(site)


def parse_log_line(line: str) -> tuple[datetime, int, str, str]:
    """Time, pid, level and message of an error log line; fails on any other shape."""
    match = LOG_LINE.match(line)
    assert match, f"not in the error log format: {line!r}"
    stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S %z")
    return stamp, int(match.group(2)), match.group(3), line[match.end() :]


def test_error_log_lines_have_gunicorns_format() -> None:
    # An offset other than +0000, so a timestamp that disagrees with its offset shows.
    with running(["-w", "2", "testapps:hello"], workers=2, env={"TZ": "XYZ-3"}) as srv:
        assert get_fresh(srv.port).content == HELLO
        workers = set(srv.worker_pids())
    srv.wait_for(r"Shutting down: Master")
    now = datetime.now(UTC)
    parsed = [parse_log_line(line) for line in srv.lines]
    assert len(parsed) >= 8
    for (stamp, pid, level, _message), line in zip(parsed, srv.lines, strict=True):
        assert level == "INFO", line  # a clean start and stop says nothing louder
        assert stamp.utcoffset() == timedelta(hours=3), line
        assert abs(stamp - now) < timedelta(seconds=60), line
        assert pid in workers | {srv.pid}, line
    # Each process writes its own pid: the master's lines and the workers' own.
    for start, pids in [
        ("Starting dynocorn ", {srv.pid}),
        ("Listening at: ", {srv.pid}),
        ("Using worker: sync", {srv.pid}),
        ("Booting worker with pid: ", workers),
        ("Worker exiting (pid: ", workers),
        ("Shutting down: Master", {srv.pid}),
    ]:
        seen = {pid for _, pid, _, message in parsed if message.startswith(start)}
        assert seen == pids, (start, seen, pids)
