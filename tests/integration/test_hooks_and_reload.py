"""Master-level behaviour a config file drives: hooks at gunicorn's moments, HUP re-reading
the file, the quick stop (INT/QUIT) and --preload's gc.freeze(), as real processes.

Hooks write marks ("name pid arguments") to a file; the tests read the marks back.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from clients import get, poll
from rawhttp import connect, read_response
from server import Server, running
from worker_classes import HAVE_GEVENT, WORKER_CLASSES

HOOKS = """
import os
MARKS = {marks!r}
def _mark(*words):
    with open(MARKS, "a") as handle:
        handle.write(" ".join(str(word) for word in words) + "\\n")
def on_reload(server): _mark("on_reload", os.getpid())
def worker_int(worker): _mark("worker_int", os.getpid())
def worker_abort(worker): _mark("worker_abort", os.getpid())
def worker_exit(server, worker): _mark("worker_exit", os.getpid())
def pre_exec(server): _mark("pre_exec", os.getpid(), os.getppid())
def nworkers_changed(server, new_value, old_value): _mark("nworkers_changed", new_value, old_value)
"""


class Hooks:
    """A config file whose hooks leave marks, plus the settings a test puts in it."""

    def __init__(self, directory: Path, settings: str = "") -> None:
        self.marks = directory / "marks.txt"
        self.config = directory / "hooks.conf.py"
        self.write(settings)

    def write(self, settings: str) -> None:
        """Rewrite the file (HUP re-reads it), keeping the hooks."""
        self.config.write_text(HOOKS.format(marks=str(self.marks)) + settings)

    def args(self) -> list[str]:
        return ["-c", str(self.config)]

    def lines(self, name: str | None = None) -> list[str]:
        if not self.marks.exists():
            return []
        lines = self.marks.read_text().splitlines()
        return [line for line in lines if name is None or line.split()[0] == name]

    def wait_for(self, name: str, count: int = 1, timeout: float = 15.0) -> list[str]:
        poll(lambda: len(self.lines(name)) >= count, timeout, f"{count} {name} mark(s)")
        return self.lines(name)


def pids_in(lines: list[str]) -> set[int]:
    return {int(line.split()[1]) for line in lines}


# -- INT and QUIT: quick, but every worker runs worker_int and worker_exit


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT], ids=["INT", "QUIT"])
@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_quick_stop_lets_every_worker_run_its_hooks(
    tmp_path: Path, worker_args: list[str], sig: int
) -> None:
    hooks = Hooks(tmp_path)
    args = [*worker_args, *hooks.args(), "-w", "4", "--graceful-timeout", "30", "testapps:routes"]
    with running(args, workers=4) as srv, ThreadPoolExecutor(1) as pool:
        workers = set(srv.worker_pids())
        # A request in the app and an idle kept-alive connection must not hold the stop up.
        in_flight = pool.submit(get, srv, "/announced-sleep?seconds=30", 30)
        srv.wait_for(r"testapps: /announced-sleep\?seconds=30 started")
        with connect(srv.port) as idle:
            idle.sendall(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
            assert read_response(idle.makefile("rb")) is not None
            started = time.monotonic()
            srv.signal(sig)
            assert srv.wait_exit(10) == 0
            elapsed = time.monotonic() - started
        with pytest.raises(requests.RequestException):
            in_flight.result(10)  # cut off: that is what a quick stop is
    assert pids_in(hooks.lines("worker_int")) == workers
    assert pids_in(hooks.lines("worker_exit")) == workers
    srv.wait_for(r"Worker exiting \(pid: \d+\)", count=4)
    # graceful_timeout is 30 s: a quick stop does not wait for it.
    assert elapsed < 3, f"quick stop took {elapsed:.1f} s"


def test_quick_stop_kills_a_worker_whose_hook_hangs_after_a_moment(tmp_path: Path) -> None:
    hooks = Hooks(tmp_path)
    hooks.write(
        "import time\n"
        "def worker_int(worker):\n"
        "    _mark('worker_int', os.getpid())\n"
        "    time.sleep(60)\n"
    )
    args = [*hooks.args(), "-w", "2", "--graceful-timeout", "30", "testapps:hello"]
    with running(args, workers=2) as srv:
        started = time.monotonic()
        srv.signal(signal.SIGINT)
        hooks.wait_for("worker_int", count=2)
        assert srv.wait_exit(10) == 0
        elapsed = time.monotonic() - started
    assert hooks.lines("worker_exit") == []  # SIGKILLed inside worker_int
    assert elapsed < 4, f"the master waited {elapsed:.1f} s for hung workers"


# -- nworkers_changed, on_reload and HUP re-reading the config file


def test_nworkers_changed_at_start_and_on_ttin_and_ttou(tmp_path: Path) -> None:
    hooks = Hooks(tmp_path, "workers = 2\n")
    with running([*hooks.args(), "testapps:hello"], workers=2) as srv:
        assert hooks.lines("nworkers_changed") == ["nworkers_changed 2 None"]
        srv.signal(signal.SIGTTIN)
        poll(lambda: len(srv.worker_pids()) == 3, what="3 workers")
        srv.signal(signal.SIGTTOU)
        poll(lambda: len(srv.worker_pids()) == 2, what="2 workers")
        assert hooks.lines("nworkers_changed") == [
            "nworkers_changed 2 None",
            "nworkers_changed 3 2",
            "nworkers_changed 2 3",
        ]
        # A reload that keeps the count calls on_reload, not nworkers_changed.
        srv.signal(signal.SIGHUP)
        assert pids_in(hooks.wait_for("on_reload")) == {srv.pid}
        srv.wait_for(r"Booting worker with pid", count=5)  # both workers replaced
        assert len(hooks.lines("nworkers_changed")) == 3


def test_hup_rereads_the_config_file(tmp_path: Path) -> None:
    hooks = Hooks(tmp_path, "workers = 1\n")
    with running([*hooks.args(), "testapps:hello"]) as srv:
        old = set(srv.worker_pids())
        hooks.write("workers = 3\n")
        srv.signal(signal.SIGHUP)
        poll(lambda: len(srv.worker_pids()) == 3, 30, "3 workers")
        poll(lambda: not (set(srv.worker_pids()) & old), 30, "the old worker to be replaced")
        assert hooks.lines("on_reload") == [f"on_reload {srv.pid}"]
        assert hooks.lines("nworkers_changed") == [
            "nworkers_changed 1 None",
            "nworkers_changed 3 1",
        ]
        assert get(srv).status_code == 200


def reload_lines(srv: Server) -> list[str]:
    return [m.group(1) for line in srv.lines if (m := re.search(r"\[INFO\] (Reload: .*)$", line))]


def test_hup_logs_each_changed_setting_and_its_source(tmp_path: Path) -> None:
    hooks = Hooks(tmp_path, "workers = 2\n")
    env_file = tmp_path / "app.env"
    env_file.write_text("FORWARDED_ALLOW_IPS=10.0.0.1\n")
    args = [*hooks.args(), "--env-file", str(env_file), "testapps:hello"]
    with running(args, workers=2) as srv:
        hooks.write('workers = 3\ntimeout = 45\nraw_env = ["API_TOKEN=hunter2"]\n')
        env_file.write_text("FORWARDED_ALLOW_IPS=10.0.0.1,10.0.0.2\n")
        srv.signal(signal.SIGHUP)
        from_file = f"(config file ({hooks.config}))"
        expected = [
            f"Reload: workers 2 -> 3 {from_file}",
            f"Reload: timeout 30 -> 45 {from_file}",
            f"Reload: raw_env changed {from_file}",  # a value that may be a secret is not shown
            "Reload: forwarded_allow_ips ['10.0.0.1'] -> ['10.0.0.1', '10.0.0.2'] "
            "(platform (FORWARDED_ALLOW_IPS=10.0.0.1,10.0.0.2))",
        ]
        srv.wait_for(r"Reload: ", count=len(expected))
        assert reload_lines(srv) == expected  # in the order of the settings table
        assert "hunter2" not in srv.log
        poll(lambda: len(srv.booted_pids()) == 5, 30, "3 new workers")
        # Nothing changed: the next HUP replaces the workers and logs no Reload line. The
        # master logs those lines before it forks, so a new worker's boot line comes after.
        srv.signal(signal.SIGHUP)
        srv.wait_for(r"Booting worker with pid", count=6, timeout=30)
        assert len(hooks.lines("on_reload")) == 2
        assert reload_lines(srv) == expected  # in the order of the settings table


def test_hup_with_a_worker_class_that_cannot_load_keeps_the_server(tmp_path: Path) -> None:
    hooks = Hooks(tmp_path, 'worker_class = "sync"\nworkers = 2\n')
    with running([*hooks.args(), "testapps:hello"], workers=2) as srv:
        workers = set(srv.worker_pids())
        hooks.write('worker_class = "nowhere.Thing"\nworkers = 3\n')
        srv.signal(signal.SIGHUP)
        srv.wait_for(
            r"\[ERROR\] Reload failed, keeping the running configuration: "
            r"worker_class = 'nowhere.Thing': cannot load nowhere.Thing: "
            r"No module named 'nowhere'"
        )
        for _ in range(5):
            assert get(srv).status_code == 200
        assert srv.process.poll() is None
        assert set(srv.worker_pids()) == workers  # same workers, same count
        assert hooks.lines("on_reload") == []
        # Once the file is fixed, the next HUP applies it.
        hooks.write('worker_class = "sync"\nworkers = 3\n')
        srv.signal(signal.SIGHUP)
        poll(lambda: len(srv.worker_pids()) == 3, 30, "3 workers")
        poll(lambda: not (set(srv.worker_pids()) & workers), 30, "old workers to be replaced")


# -- worker_abort on a timeout, pre_exec on USR2


def test_worker_abort_runs_in_the_worker_that_timed_out(tmp_path: Path) -> None:
    hooks = Hooks(tmp_path)
    with running([*hooks.args(), "-w", "1", "-t", "2", "testapps:routes"]) as srv:
        victim = srv.worker_pids()[0]
        assert get(srv, "/hang", timeout=20).status_code == 500
        assert hooks.wait_for("worker_abort") == [f"worker_abort {victim}"]
        assert pids_in(hooks.wait_for("worker_exit")) == {victim}


def test_worker_abort_on_a_gthread_request_timeout(tmp_path: Path) -> None:
    hooks = Hooks(tmp_path)
    args = [*hooks.args(), "-w", "1", "--threads", "2", "-t", "2", "testapps:routes"]
    with running(args) as srv:
        victim = srv.worker_pids()[0]
        assert get(srv, "/hang", timeout=20).status_code == 500
        assert hooks.wait_for("worker_abort") == [f"worker_abort {victim}"]


@pytest.mark.skipif(not HAVE_GEVENT, reason="gevent is not installed")
def test_worker_abort_when_a_greenlet_holds_the_hub(tmp_path: Path) -> None:
    hooks = Hooks(tmp_path)
    with running([*hooks.args(), "-k", "gevent", "-t", "2", "gevent_apps:app"]) as srv:
        victim = srv.worker_pids()[0]
        assert get(srv, "/busy", timeout=20).status_code == 500
        assert hooks.wait_for("worker_abort") == [f"worker_abort {victim}"]


def test_pre_exec_runs_in_the_new_master_before_the_exec(tmp_path: Path) -> None:
    hooks = Hooks(tmp_path)
    with running([*hooks.args(), "-w", "1", "testapps:hello"]) as srv:
        old_workers = set(srv.worker_pids())
        srv.signal(signal.SIGUSR2)
        [mark] = hooks.wait_for("pre_exec")
        _, pid, parent = mark.split()
        assert int(parent) == srv.pid  # the forked child that becomes the new master
        new_master = int(pid)
        assert new_master not in old_workers
        poll(lambda: len(srv.worker_pids()) == 2, 30, "the new master to run")
        assert new_master in srv.worker_pids()
        # The new master serves on the inherited socket; stop it, the old one goes on.
        os.kill(new_master, signal.SIGTERM)
        srv.wait_for(r"Re-executed master exited; keeping the old one", timeout=30)
        assert get(srv).status_code == 200


# -- --preload freezes what the master imported


def test_preload_freezes_the_imported_objects() -> None:
    with running(["--preload", "-w", "2", "testapps:routes"], workers=2) as srv:
        frozen = [int(get(srv, "/gc-freeze-count").text) for _ in range(4)]
    assert min(frozen) > 1000, frozen  # the app, its modules, dynocorn's own


def test_without_preload_nothing_is_frozen() -> None:
    # Nothing beyond what the interpreter freezes by itself: 0 on 3.11 and 3.13, but 3.12
    # starts with a few hundred objects in the permanent generation.
    bare = subprocess.run(
        [sys.executable, "-c", "import gc; print(gc.get_freeze_count())"],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    with running(["-w", "1", "testapps:routes"]) as srv:
        assert get(srv, "/gc-freeze-count").text == bare
