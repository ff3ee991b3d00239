"""`dynocorn top` in a real terminal: tmux runs it, the test reads the screen (capture-pane)
and presses q (send-keys)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest

from clients import get, poll
from dynocorn.ctl import ask
from dynocorn.metrics.tally import Histogram
from server import REPO, running

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Terminal:
    """A tmux server of this test's own (its own socket name): nothing else's is touched."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.name = f"dynocorn-top-{uuid.uuid4().hex[:8]}"
        exports = [f"{key}={value}" for key, value in env.items()]
        self.tmux(
            "new-session", "-d", "-s", "top", "-x", "120", "-y", "30",
            "env", *exports, *command,
        )  # fmt: skip

    def tmux(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.name, *args], capture_output=True, text=True, timeout=10
        )

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", "top").stdout

    def running(self) -> bool:
        return self.tmux("has-session", "-t", "top").returncode == 0

    def close(self) -> None:
        self.tmux("kill-server")


@pytest.fixture
def terminal_for() -> Iterator[list[Terminal]]:
    made: list[Terminal] = []
    yield made
    for terminal in made:
        terminal.close()


def test_top_shows_the_workers_live_and_q_quits(terminal_for: list[Terminal]) -> None:
    with running(["-w", "2", "testapps:routes"], workers=2) as srv:
        path = Path(srv.wait_for(r"Control socket: (\S+) ")[0].group(1))
        env = {"PYTHONPATH": str(REPO / "lib"), "TERM": "xterm-256color"}
        command = [sys.executable, "-m", "dynocorn", "top", "--socket", str(path)]
        terminal = Terminal(command, env)
        terminal_for.append(terminal)
        pids = [str(pid) for pid in srv.worker_pids()]

        def shows_workers() -> bool:
            screen = terminal.screen()
            return all(pid in screen for pid in pids) and "req/s" in screen

        poll(shows_workers, 20, "top showing both workers")
        for _ in range(40):
            assert get(srv, "/").status_code == 200

        def counted(screen: str) -> int:
            rows = re.findall(r"^\s*\d+\s+(\d+)\s+\w+\s+(\d+)\s", screen, re.MULTILINE)
            return sum(int(requests) for pid, requests in rows if pid in pids)

        # A refresh a second: the 40 requests show without the test asking top for anything.
        poll(lambda: counted(terminal.screen()) == 40, 20, "the 40 requests on screen")
        screen = terminal.screen()
        assert re.search(r"memory\s.*\d+(\.\d)? MB of \d+(\.\d)? MB \(\d+%\)", screen), screen
        assert re.search(r"p50 \d+\.\d ms\s+p99 \d+\.\d ms", screen) or "p50 -" in screen
        terminal.tmux("send-keys", "-t", "top", "q")
        poll(lambda: not terminal.running(), 10, "top gone after q")


def test_top_without_a_server_says_so_and_exits_1(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dynocorn", "top", "--socket", str(tmp_path / "no.ctl")],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "lib")},
    )
    assert done.returncode == 1
    assert (
        done.stderr
        == f"dynocorn top: no control socket at {tmp_path / 'no.ctl'} (is the server running?)\n"
    )


def test_top_once_shows_the_last_interval_not_the_time_since_start() -> None:
    """`--once` is one frame of the live view: requests of the last `--interval` seconds.
    It used to divide everything since the server started by its uptime, so a script (or
    the tuning guide) reading it right after a load saw that load's rate blended with the
    warm-up's, and an idle server still showed requests per second."""
    with running(["-w", "1", "testapps:routes"], workers=1) as srv:
        path = srv.wait_for(r"Control socket: (\S+) ")[0].group(1)
        for _ in range(20):
            assert get(srv, "/").status_code == 200

        def counted() -> int:
            return Histogram.from_json(ask(Path(path), "stats", [])["requests"]["all"]).count

        # Workers report their counts with the heartbeat: all 20 in before top looks.
        poll(lambda: counted() == 20, 10, "the 20 requests counted by the master")
        done = subprocess.run(
            [sys.executable, "-m", "dynocorn", "top", "--once", "--interval", "0.5",
             "--socket", path],
            capture_output=True, text=True, timeout=30,
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "lib"), "COLUMNS": "120"},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        # Nothing was served in the half second top watched: no rate, no latency.
        assert re.search(r"req/s 0\.0\s+p50 -\s+p99 -", done.stdout), done.stdout
        assert re.search(r"^\s*1\s+\d+\s+idle\s+20\s", done.stdout, re.MULTILINE), done.stdout


def active_requests(path: Path, expected: int) -> bool:
    return bool(ask(path, "stats", [])["active_requests"] == expected)


def test_top_counts_every_request_a_threaded_worker_runs() -> None:
    """A gthread worker with every thread busy must not look like one with a single busy
    thread: how full its threads are is what says whether to add threads. `ctl status` says
    `+N more`; top says the same."""
    with running(["-w", "1", "--threads", "4", "testapps:routes"], workers=1) as srv:
        path = Path(srv.wait_for(r"Control socket: (\S+) ")[0].group(1))
        with ThreadPoolExecutor(3) as pool:
            answers = []
            for running_now in (1, 2, 3):  # one at a time: their records are written apart
                answers.append(pool.submit(get, srv, "/sleep?seconds=2"))
                poll(partial(active_requests, path, running_now), 10, f"{running_now} running")
            done = subprocess.run(
                [sys.executable, "-m", "dynocorn", "top", "--once", "--interval", "0.2",
                 "--socket", str(path)],
                capture_output=True, text=True, timeout=30,
                env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "lib"),
                     "COLUMNS": "160"},
            )  # fmt: skip
            assert [answer.result().status_code for answer in answers] == [200] * 3
        assert done.returncode == 0, done.stderr
        shown = done.stdout
        assert re.search(r"busy .* GET /sleep\?seconds=2 \d+\.\ds \+2 more", shown), shown
