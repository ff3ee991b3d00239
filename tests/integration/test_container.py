"""dynocorn as a container runs it: PID 1 of a new PID namespace, in a memory cgroup with a
limit. No image is built (no Docker engine here): what makes a container a container for
the server is its PID namespace and its cgroup, and those are real here.

`docker stop` and Kubernetes send SIGTERM to PID 1 only; `docker run -it` turns Ctrl-C into
SIGINT. PID 1 is the parent of every orphan in its namespace and must reap them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

import cgroups
from clients import get, poll
from server import DYNOCORN, REPO, Server

MB = 1024 * 1024


def _can_unshare() -> bool:
    try:
        done = subprocess.run(
            ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


pytestmark = [
    pytest.mark.skipif(
        not _can_unshare(), reason="no PID namespaces for this user (unshare --pid fails)"
    ),
    pytest.mark.skipif(not cgroups.can_create(), reason="no memory cgroups can be made here"),
]


@contextmanager
def container(args: list[str], limit: int = 512 * MB) -> Iterator[tuple[Server, psutil.Process]]:
    """The server as PID 1 of a new PID namespace, in a new cgroup of `limit` bytes; the
    master as the host sees it."""
    cgroup = cgroups.create(limit)
    assert cgroup is not None
    command = cgroups.command_in(
        cgroup, ["unshare", "--pid", "--fork", "--mount-proc", *DYNOCORN, *args]
    )
    server = Server.from_command(command)
    try:
        # The pid the master logs is its own in its namespace: 1.
        url = server.wait_for(r"Listening at: (http://\S+) \(1\)", timeout=30)[0].group(1)
        server.url, server.port = url, int(url.rsplit(":", 1)[1])
        workers = int(args[args.index("-w") + 1]) if "-w" in args else 2
        server.wait_for(r"Booting worker with pid", timeout=30, count=workers)
        master = psutil.Process(server.pid).children()[0]  # unshare's one child
        yield server, master
    finally:
        if server.process.poll() is None:
            server.kill_group()
        server.process.wait(30)
        server.kill_group()
        cgroups.remove(cgroup)


def test_sigterm_to_pid_1_finishes_the_request_and_exits_0(tmp_path: Path) -> None:
    release = tmp_path / "release"
    with container(["-w", "2", "--graceful-timeout", "10", "testapps:routes"]) as (srv, master):
        answers: list[int] = []
        held = threading.Thread(
            target=lambda: answers.append(get(srv, f"/until-file?path={release}", 30).status_code)
        )
        held.start()
        srv.wait_for(r"testapps: /until-file\S* started in")
        master.send_signal(signal.SIGTERM)  # to PID 1 only, as `docker stop` does
        srv.wait_for(r"Handling signal: term")
        release.touch()
        held.join(30)
        assert answers == [200]
        assert srv.wait_exit(15) == 0  # unshare exits with PID 1's status
        assert "SIGKILL" not in srv.log


def test_sigint_stops_it_too() -> None:
    with container(["-w", "1", "testapps:routes"]) as (srv, master):
        assert get(srv, "/").status_code == 200
        master.send_signal(signal.SIGINT)  # Ctrl-C in `docker run -it`
        assert srv.wait_exit(15) == 0
        srv.wait_for(r"Shutting down: Master")


def test_orphans_are_reaped_never_left_as_zombies() -> None:
    with container(["-w", "1", "testapps:routes"]) as (srv, master):
        for _ in range(3):
            assert get(srv, "/orphan?seconds=0.5").status_code == 200

        def sleeps() -> list[psutil.Process]:
            found = []
            for child in master.children():
                try:  # reaped between the listing and this look: what the test waits for
                    if child.name() == "sleep":
                        found.append(child)
                except psutil.NoSuchProcess:
                    pass
            return found

        # Their shells exited at once: the sleeps are PID 1's now...
        poll(lambda: len(sleeps()) == 3, 10, "three orphans handed to PID 1")

        def zombies() -> list[psutil.Process]:
            found = []
            for child in master.children():
                try:
                    if child.status() == psutil.STATUS_ZOMBIE:
                        found.append(child)
                except psutil.NoSuchProcess:
                    pass
            return found

        # ... and once they end, PID 1 reaps them: no zombie stays.
        poll(lambda: not sleeps() and not zombies(), 15, "the orphans reaped")
        assert get(srv, "/").status_code == 200
        assert "[ERROR]" not in srv.log


def test_workers_are_sized_from_the_cgroup_limit() -> None:
    # No -w and no WEB_CONCURRENCY: 512 MB / 256 MB per worker (2 CPUs allow 5).
    with container(["testapps:routes"], limit=512 * MB) as (srv, master):
        assert get(srv, "/").status_code == 200
        assert len(master.children()) == 2
        assert len(srv.booted_pids()) == 2


DOCKERFILE = REPO / "Dockerfile"


def instructions() -> dict[str, str]:
    """The Dockerfile's instructions (the last of each), continuation lines joined."""
    joined = DOCKERFILE.read_text().replace("\\\n", " ")
    found = {}
    for line in joined.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            found[word] = rest.strip()
    return found


def test_the_dockerfile_runs_dynocorn_as_pid_1_unprivileged_within_docker_stops_grace() -> None:
    """No engine here to build it: what the container's behaviour rests on is checked."""
    found = instructions()
    command = json.loads(found["CMD"])  # exec form: a JSON array, no shell as PID 1
    assert command[0] == "dynocorn" and command[-1] == "app:app"
    assert found["USER"] not in ("root", "0") and found["STOPSIGNAL"] == "SIGTERM"
    assert "PORT=8000" in found["ENV"] and found["EXPOSE"] == "8000"
    # docker stop's SIGKILL comes 10 s after SIGTERM: the graceful timeout must end first.
    flags = command[1:-1]
    assert float(flags[flags.index("--graceful-timeout") + 1]) < 10
    # The flags are dynocorn's: the same command, on a test app, passes --check-config.
    done = subprocess.run(
        [*DYNOCORN, *flags, "--check-config", "testapps:routes"],
        capture_output=True, text=True, timeout=60, cwd=REPO / "tests" / "apps",
        env={**os.environ, "PYTHONPATH": str(REPO / "lib"), "PORT": "8000"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
