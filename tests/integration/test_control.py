"""The control socket and `dynocorn ctl`, against a real server: every command, --json,
the errors a user can make, and who may connect."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from clients import get, poll
from server import REPO, Server, running
from worker_classes import WORKER_CLASSES

CONTROL = r"Control socket: (\S+) "
NOBODY = 65534


def control_path(server: Server) -> Path:
    return Path(server.wait_for(CONTROL)[0].group(1))


# Another user's try, with the system's Python (the test's own may sit where that user
# cannot read): what became of a status request on the socket.
OTHER_USER_TRY = """
import socket, sys
sock = socket.socket(socket.AF_UNIX)
try:
    sock.connect(sys.argv[1])
except PermissionError:
    print("denied"); sys.exit()
try:
    sock.sendall(b'{"command": "status"}\\n')
    print("answered" if sock.recv(65536) else "closed")
except (BrokenPipeError, ConnectionResetError):
    print("closed")
"""


def as_other_user(path: Path) -> str:
    done = subprocess.run(
        ["/usr/bin/python3", "-c", OTHER_USER_TRY, str(path)],
        capture_output=True, text=True, timeout=30, user=NOBODY, cwd="/",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "lib")}
    return subprocess.run(
        [sys.executable, "-m", "dynocorn", "ctl", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        cwd="/",
    )


def ctl_json(path: Path, *args: str) -> dict:  # type: ignore[type-arg]
    done = ctl("--socket", str(path), "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


@pytest.fixture
def server() -> Iterator[Server]:
    with running(["-w", "2", "--graceful-timeout", "5", "testapps:routes"]) as srv:
        srv.wait_listening(workers=2)
        yield srv


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_status_shows_the_request_a_worker_runs_and_what_each_served(
    worker_args: list[str], tmp_path: Path
) -> None:
    with running([*worker_args, "-w", "2", "testapps:routes"]) as srv:
        srv.wait_listening(workers=2)
        path = control_path(srv)
        for _ in range(6):
            assert get(srv, "/").status_code == 200
        release = tmp_path / "release"
        target = f"/until-file?path={release}"
        held = threading.Thread(target=lambda: get(srv, target, timeout=60))
        held.start()
        try:
            srv.wait_for(r"testapps: /until-file\S* started in")
            result = ctl_json(path, "status")
            text = ctl("--socket", str(path), "status")
        finally:
            release.touch()
            held.join(30)
        busy = [row for row in result["workers"] if row["state"] == "busy"]
        assert len(busy) == 1, result
        assert busy[0]["method"] == "GET" and busy[0]["path"] == target
        assert busy[0]["running"] == 1 and busy[0]["request_age"] > 0
        assert sum(row["requests"] for row in result["workers"]) == 6
        assert sorted(row["slot"] for row in result["workers"]) == [1, 2]
        assert sorted(row["pid"] for row in result["workers"]) == sorted(srv.worker_pids())
        for row in result["workers"]:
            assert row["memory"]["uss"] > 0 and row["memory"]["rss"] >= row["memory"]["uss"]
        assert result["master"]["pid"] == srv.pid
        assert result["target_workers"] == 2
        assert result["backlog"] == 0
        assert text.returncode == 0
        assert f"GET {target}" in text.stdout and f"master pid {srv.pid}" in text.stdout


def test_add_remove_kill_and_reload(server: Server) -> None:
    path = control_path(server)
    assert ctl_json(path, "add", "2") == {"previous": 2, "target": 4}
    server.wait_for_workers(4)
    assert ctl_json(path, "remove", "1") == {"previous": 4, "target": 3}
    poll(lambda: len(server.worker_pids()) == 3, 15, "three workers")
    rows = ctl_json(path, "status")["workers"]
    victim = next(row for row in rows if row["slot"] == 2)
    answer = ctl_json(path, "kill", "2")
    assert answer["pid"] == victim["pid"]
    poll(lambda: victim["pid"] not in server.worker_pids(), 15, "the killed worker gone")
    poll(lambda: len(server.worker_pids()) == 3, 15, "its successor")
    slots = {row["slot"]: row["pid"] for row in ctl_json(path, "status")["workers"]}
    assert 2 in slots and slots[2] != victim["pid"]
    before = set(server.worker_pids())
    assert ctl_json(path, "reload") == {"reloading": True}
    server.wait_for(r"Handling signal: hup")
    poll(lambda: not (before & set(server.worker_pids())), 30, "every worker replaced")
    assert get(server, "/").status_code == 200


def test_mistakes_get_one_line_and_exit_1(server: Server, tmp_path: Path) -> None:
    path = control_path(server)
    for args, expected in (
        (["bogus"], "unknown command 'bogus'; commands: status, stats, reload, add"),
        (["add"], "add takes one argument, N"),
        (["add", "two"], "add: N must be a whole number, not 'two'"),
        (["remove", "2"], "remove 2: 2 workers, and at least 1 must stay"),
        (["kill", "9"], "kill: no serving worker in slot 9"),
    ):
        done = ctl("--socket", str(path), *args)
        assert done.returncode == 1, (args, done)
        assert done.stderr.count("\n") == 1 and expected in done.stderr, (args, done.stderr)
    missing = ctl("--socket", str(tmp_path / "none.ctl"), "status")
    assert missing.returncode == 1
    assert (
        missing.stderr
        == f"dynocorn ctl: no control socket at {tmp_path / 'none.ctl'} (is the server running?)\n"
    )


@pytest.fixture
def open_directory() -> Iterator[Path]:
    """A directory any user can reach (pytest's tmp_path is private to root)."""
    directory = Path(tempfile.mkdtemp(prefix="dynocorn-ctl-test-"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_only_the_owner_may_use_it(open_directory: Path) -> None:
    # A mode that lets anyone open the file: the master still answers only its own user.
    path = open_directory / "ctl.sock"
    args = ["--control-socket", str(path), "--control-socket-mode", "666", "testapps:routes"]
    with running(args) as srv:
        srv.wait_listening()
        assert control_path(srv) == path
        assert stat.S_IMODE(path.stat().st_mode) == 0o666
        assert as_other_user(path) == "closed"
        assert ctl("--socket", str(path), "status").returncode == 0


def test_the_default_socket_is_private_and_found_without_socket(open_directory: Path) -> None:
    runtime = open_directory
    with running(["testapps:routes"], env={"XDG_RUNTIME_DIR": str(runtime)}) as srv:
        srv.wait_listening()
        path = control_path(srv)
        assert path == runtime / "dynocorn" / f"{srv.pid}.ctl"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert as_other_user(path) == "denied"
        env_found = subprocess.run(
            [sys.executable, "-m", "dynocorn", "ctl", "--json", "status"],
            capture_output=True,
            text=True,
            timeout=30,
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "lib"),
                 "XDG_RUNTIME_DIR": str(runtime)},
        )  # fmt: skip
        assert env_found.returncode == 0, env_found.stderr
        assert json.loads(env_found.stdout)["master"]["pid"] == srv.pid
    assert not path.exists()  # removed at stop


def test_no_control_socket() -> None:
    with running(["--no-control-socket", "testapps:routes"]) as srv:
        srv.wait_listening()
        assert get(srv, "/").status_code == 200
        assert "Control socket" not in srv.log


def test_a_scrape_of_the_control_socket_never_blocks_serving(server: Server) -> None:
    """A client that connects and says nothing is dropped; the master serves on."""
    import socket

    path = control_path(server)
    silent = socket.socket(socket.AF_UNIX)
    silent.connect(str(path))
    try:
        assert ctl_json(path, "status")["target_workers"] == 2
        assert requests.get(f"http://127.0.0.1:{server.port}/", timeout=5).status_code == 200
    finally:
        silent.close()
