"""Process settings: env, paths, user, umask, daemon, log reopening, lifetime recycling."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import requests

from clients import SteadyLoad, poll
from server import APPS, REPO, Server, running
from worker_classes import WORKER_CLASSES


def test_raw_env_pythonpath_and_umask(tmp_path: Path) -> None:
    (tmp_path / "extra_module.py").write_text("VALUE = 1\n")
    args = [
        "-e",
        "GREETING=hi there",
        "--pythonpath",
        str(tmp_path),
        "-m",
        "027",
        "testapps:environment",
    ]
    with running(args) as srv:
        seen = requests.get(f"http://127.0.0.1:{srv.port}/?name=GREETING", timeout=5).json()
    assert seen["value"] == "hi there"
    assert seen["extra_module"] is True
    assert seen["umask"] == 0o027


@pytest.mark.skipif(os.getuid() != 0, reason="switching user needs root")
def test_workers_switch_user() -> None:
    nobody = pwd.getpwnam("nobody")
    # --preload: this machine's Python lives under /root, which `nobody` cannot read.
    args = ["--preload", "-u", "nobody", "-g", str(nobody.pw_gid), "testapps:environment"]
    with running(args) as srv:
        seen = requests.get(f"http://127.0.0.1:{srv.port}/", timeout=5).json()
        assert seen["uid"] == nobody.pw_uid
        assert psutil.Process(srv.pid).uids().real == 0  # the master keeps its user


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_usr1_reopens_the_log_files(tmp_path: Path, worker_args: list[str]) -> None:
    errorlog = tmp_path / "error.log"
    srv = Server([*worker_args, "--error-logfile", str(errorlog), "testapps:hello"])
    try:
        poll(lambda: errorlog.exists() and "Booting worker" in errorlog.read_text(), what="boot")
        rotated = tmp_path / "error.log.1"
        errorlog.rename(rotated)
        srv.signal(signal.SIGUSR1)
        poll(errorlog.exists, what="the reopened log")
        srv.signal(signal.SIGTTIN)
        poll(lambda: "Handling signal: ttin" in errorlog.read_text(), what="a line in the new file")
        assert "Handling signal: usr1" in rotated.read_text() + errorlog.read_text()
    finally:
        srv.stop()
        srv.kill_group()


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_lifetime_recycling_loses_nothing(worker_args: list[str]) -> None:
    args = [*worker_args, "-w", "2", "--max-worker-lifetime", "2", "testapps:sleepy"]
    with running(args, workers=2) as srv:
        first = set(srv.worker_pids())
        with SteadyLoad(srv, "/?seconds=0.01") as load:
            poll(lambda: not (set(srv.worker_pids()) & first), 20, "every worker recycled")
            seen = load.ok
            poll(lambda: load.ok > seen + 5, what="traffic after recycling")
        assert load.failed == []
        srv.wait_for(r"Autorestarting worker after current request. \(max worker lifetime\)")


def test_daemon_mode(tmp_path: Path) -> None:
    pidfile = tmp_path / "daemon.pid"
    sock = tmp_path / "daemon.sock"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dynocorn",
            "-D",
            "-p",
            str(pidfile),
            "-b",
            f"unix:{sock}",
            "testapps:hello",
        ],
        cwd=APPS,
        env={**os.environ, "PYTHONPATH": str(REPO / "lib")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0  # the launching process returns at once
    poll(lambda: pidfile.exists() and sock.exists(), what="the daemon to start")
    daemon = psutil.Process(int(pidfile.read_text()))
    try:
        assert daemon.ppid() != os.getpid()  # detached from us
        poll(lambda: len(daemon.children()) == 1, what="its worker")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(20)
    assert not pidfile.exists()
