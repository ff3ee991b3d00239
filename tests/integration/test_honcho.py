"""Local runs as users do them: `honcho start` with a Procfile, and a .env file."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import requests

from clients import poll
from honcho_runs import (
    HONCHO,
    VENV_BIN,
    answers,
    exit_statuses,
    free_port_pair,
    kill_unstopped_children,
    port_is_free,
)
from server import APPS, REPO, Server, running


def honcho(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Server:
    environ = {
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    return Server.from_command([HONCHO, "start", *args], environ, cwd=cwd)


def stop_honcho(server: Server, sig: int = signal.SIGTERM) -> float:
    """Signal honcho (which stops its children) and return how long it took to exit."""
    started = time.monotonic()
    os.kill(server.pid, sig)
    try:
        server.wait_exit(15)
    finally:
        kill_unstopped_children(server)
        server.kill_group()
    return time.monotonic() - started


def test_procfile_example_under_honcho_with_two_instances() -> None:
    base = free_port_pair()
    env = {"DYNOCORN_CMD_ARGS": "--metrics-interval 1"}
    srv = honcho(["-f", "Procfile.example", "-p", str(base), "-c", "web=2"], REPO, env)
    try:
        assert answers(base).text == "Hello, World!"
        assert answers(base + 1).text == "Hello, World!"
        assert answers(base, "[::1]").status_code == 200  # dual stack, as on the platform
        srv.wait_for(r"web\.1 .*\| source=web\.1 dyno=\S+ sample#load_avg_1m", stdout=True)
        srv.wait_for(r"web\.2 .*\| source=web\.2 dyno=\S+ sample#memory_total", stdout=True)
    finally:
        elapsed = stop_honcho(srv)
    output = "\n".join(srv.stdout_lines)
    assert elapsed < 5.0, f"honcho took {elapsed:.1f} s to stop:\n{output}"
    assert "SIGKILL" not in output
    assert len(re.findall(r"\[INFO\] Shutting down: Master", output)) == 2
    # `exec` in the Procfile: honcho's SIGTERM reaches dynocorn itself, not a shell (-15).
    assert exit_statuses(srv) == {"web.1": 0, "web.2": 0}, output
    print(f"honcho stop with two instances: {elapsed:.2f} s")


def test_ctrl_c_stops_cleanly() -> None:
    base = free_port_pair()
    srv = honcho(["-f", "Procfile.example", "-p", str(base)], REPO)
    try:
        answers(base)
    finally:
        elapsed = stop_honcho(srv, signal.SIGINT)
    output = "\n".join(srv.stdout_lines)
    assert elapsed < 5.0, f"honcho took {elapsed:.1f} s to stop:\n{output}"
    assert "SIGKILL" not in output
    assert "Shutting down: Master" in output
    assert exit_statuses(srv) == {"web.1": 0}, output


def test_honcho_start_serves_on_5000_and_5001() -> None:
    """The README's `honcho start -c web=2`, as typed: honcho's own ports, no -p."""
    busy = [port for port in (5000, 5001) if not port_is_free(port)]
    if busy:
        pytest.skip(f"port {busy[0]} is in use on this machine")
    srv = honcho(["-c", "web=2"], REPO)  # the repository's Procfile
    try:
        assert answers(5000).text == "Hello, World!"
        assert answers(5001).text == "Hello, World!"
        srv.wait_for(r"web\.1 .*Listening at: http://\[::\]:5000 ", stdout=True)
        srv.wait_for(r"web\.2 .*Listening at: http://\[::\]:5001 ", stdout=True)
    finally:
        elapsed = stop_honcho(srv)
    output = "\n".join(srv.stdout_lines)
    assert elapsed < 5.0, f"honcho took {elapsed:.1f} s to stop:\n{output}"
    assert exit_statuses(srv) == {"web.1": 0, "web.2": 0}, output


def make_project(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "examples" / "hello.py", project / "app.py")
    (project / "Procfile").write_text("web: dynocorn app:app\n")
    # Quoted: honcho's own .env reader drops the spaces of an unquoted value.
    (project / ".env").write_text('WEB_CONCURRENCY=3\nDYNOCORN_CMD_ARGS="--metrics-interval 1"\n')
    return project


def test_env_file_under_honcho(tmp_path: Path) -> None:
    project = make_project(tmp_path)
    base = free_port_pair()
    srv = honcho(["-p", str(base)], project)
    try:
        answers(base)
        srv.wait_for(r"\| source=web\.1 sample#workers=3 ", stdout=True)
    finally:
        elapsed = stop_honcho(srv)
    # A Procfile line without `exec` (as most are): the shell dies of honcho's SIGTERM
    # (rc=-15 with dash), and dynocorn, signalled too, still stops cleanly and in time.
    output = "\n".join(srv.stdout_lines)
    assert elapsed < 5.0, f"honcho took {elapsed:.1f} s to stop:\n{output}"
    assert "SIGKILL" not in output
    assert "Shutting down: Master" in output


def value_of(server: Server, name: str) -> object:
    """The environment variable `name` as the app sees it."""
    return requests.get(f"{server.url}/?name={name}", timeout=10).json()["value"]


def test_a_dot_env_is_read_only_when_named(tmp_path: Path) -> None:
    """A `.env` committed for `heroku local` ships in the slug: production must not read it."""
    project = tmp_path / "project"
    project.mkdir()
    (project / ".env").write_text("ENVIRONMENT=development\nWEB_CONCURRENCY=3\n")
    app = ["--pythonpath", str(APPS), "testapps:environment"]
    with running(app, cwd=project) as srv:
        assert value_of(srv, "ENVIRONMENT") is None
        assert len(srv.worker_pids()) == 1
    with running(["--env-file", ".env", *app], workers=3, cwd=project) as srv:
        assert value_of(srv, "ENVIRONMENT") == "development"
    # A real environment variable wins over the file.
    with running(["--env-file", ".env", *app], cwd=project, env={"ENVIRONMENT": "prod"}) as srv:
        assert value_of(srv, "ENVIRONMENT") == "prod"


def test_hup_reads_the_env_files_again_for_the_config_file_and_the_app(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    env_file = project / "local.env"
    env_file.write_text("ENVIRONMENT=development\nGONE_LATER=1\n")
    (project / "gunicorn.conf.py").write_text(
        "import os\nworkers = 2 if os.environ.get('ENVIRONMENT') == 'development' else 3\n"
    )
    app = ["--env-file", "local.env", "--pythonpath", str(APPS), "testapps:environment"]
    with running(app, workers=2, cwd=project) as srv:
        env_file.write_text("ENVIRONMENT=staging\n")
        srv.signal(signal.SIGHUP)
        poll(lambda: len(srv.worker_pids()) == 3, what="3 workers after HUP")
        # Old workers leave one at a time: wait until only new ones answer.
        poll(
            lambda: all(value_of(srv, "ENVIRONMENT") == "staging" for _ in range(6)),
            what="every worker serving the new value",
        )
        assert value_of(srv, "GONE_LATER") is None


GETTING_STARTED_CONF = """\
# The shape of Heroku's getting-started gunicorn.conf.py: reload in development only.
import os

reload = os.environ.get("ENVIRONMENT") == "development"
"""


def test_the_getting_started_conf_reloads_on_edit_under_honcho(tmp_path: Path) -> None:
    """`honcho start` reads .env (ENVIRONMENT=development); the config file turns reload on;
    an edit is served without a restart by hand."""
    (tmp_path / "gunicorn.conf.py").write_text(GETTING_STARTED_CONF)
    (tmp_path / ".env").write_text("ENVIRONMENT=development\n")
    (tmp_path / "Procfile").write_text("web: exec dynocorn webapp:app\n")
    site = tmp_path / "webapp.py"
    body = "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [%r]\n"
    site.write_text(body % b"before")
    port = free_port_pair()
    srv = honcho(["-p", str(port)], tmp_path)
    try:
        assert answers(port).text == "before"
        srv.wait_for(r"Reloader is on\. Use in development only!", stdout=True)
        srv.wait_for(r"Reloader: watching \d+ files", stdout=True)
        site.write_text(body % b"after")
        poll(lambda: answers(port).text == "after", 20, "the edit to be served")
    finally:
        stop_honcho(srv)
