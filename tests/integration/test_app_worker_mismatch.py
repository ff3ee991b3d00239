"""An app of the kind the worker class does not serve stops the server with one line naming
the `-k` to use, and exit code 1: in the worker, with --preload and with --check-config.
Real processes, real FastAPI and Flask apps."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from server import APPS, REPO, Server

ASGI_UNDER_SYNC = (
    "app 'app_kinds:api' is an ASGI app; the sync worker serves WSGI apps: use -k asgi"
)
WSGI_UNDER_ASGI = (
    "app 'testapps:hello' is a WSGI app; the custom_worker.ServesAsgi worker serves ASGI apps: "
    "use -k sync (or gthread, gevent)"
)
CASES = [
    pytest.param(["app_kinds:api"], ASGI_UNDER_SYNC, id="asgi-app-sync-class"),
    pytest.param(
        ["-k", "asgi", "testapps:hello"],
        "app 'testapps:hello' is a WSGI app; the asgi worker serves ASGI apps: "
        "use -k sync (or gthread, gevent)",
        id="wsgi-app-the-asgi-class",
    ),
    pytest.param(
        ["-k", "custom_worker.ServesAsgi", "testapps:hello"],
        WSGI_UNDER_ASGI,
        id="wsgi-app-asgi-class",
    ),
]


@pytest.mark.parametrize(("args", "line"), CASES)
def test_in_the_worker_it_stops_the_server_without_a_crash_loop(args: list[str], line: str) -> None:
    srv = Server(["-w", "1", *args])
    try:
        assert srv.wait_exit(30) == 1
        srv.wait_for(r"Reason: The app and the worker class do not match\.$")
        errors = [text for text in srv.lines if "[ERROR]" in text]
        assert len(errors) == 1 and errors[0].endswith(f"[ERROR] {line}"), srv.log
        assert "Traceback" not in srv.log
        assert "next spawn" not in srv.log  # stopped, not respawned
    finally:
        srv.kill_group()


@pytest.mark.parametrize(("args", "line"), CASES)
def test_with_preload_the_master_says_so_and_exits_1(args: list[str], line: str) -> None:
    srv = Server(["--preload", *args])
    try:
        assert srv.wait_exit(30) == 1
        srv.wait_for(rf"\[ERROR\] Failed to load the app with --preload: {re.escape(line)}$")
        assert "Traceback" not in srv.log
        assert "Booting worker" not in srv.log
    finally:
        srv.kill_group()


def check_config(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dynocorn", "--check-config", *args],
        cwd=APPS,
        env={**os.environ, "PYTHONPATH": str(REPO / "lib")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(("args", "line"), CASES)
def test_check_config_says_it_in_one_line_and_exits_1(args: list[str], line: str) -> None:
    result = check_config(args)
    assert (result.returncode, result.stderr) == (1, f"Error: {line}\n")


def test_check_config_passes_the_app_its_class_serves() -> None:
    result = check_config(["-k", "custom_worker.ServesAsgi", "app_kinds:raw"])
    assert result.returncode == 0, result.stderr
