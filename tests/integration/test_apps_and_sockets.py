"""Real frameworks, other ways to get a socket, and a misbehaving master or app."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests

from server import DYNOCORN, REPO, Server, running
from worker_classes import WORKER_CLASSES

EXAMPLES = REPO / "examples"


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_flask_example(worker_args: list[str]) -> None:
    with running([*worker_args, "-w", "2", "flask_app:app"], workers=2, cwd=EXAMPLES) as srv:
        base = f"http://127.0.0.1:{srv.port}"
        assert requests.get(f"{base}/json", timeout=10).json() == {"message": "Hello, World!"}
        posted = requests.post(f"{base}/echo", data=b"x" * 1000, timeout=10).json()
        assert posted["length"] == 1000
        seen = requests.get(
            f"{base}/headers",
            headers={"X-Forwarded-Proto": "https", "X-Request-Id": "r1"},
            timeout=10,
        ).json()
        assert seen["scheme"] == "https"
        assert seen["request_id"] == "r1"
        assert requests.get(f"{base}/missing", timeout=10).status_code == 404


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_django_example(worker_args: list[str]) -> None:
    with running([*worker_args, "django_app:application"], cwd=EXAMPLES) as srv:
        base = f"http://127.0.0.1:{srv.port}"
        assert (
            requests.get(f"{base}/", timeout=10).json()["message"].startswith("Hello from Django")
        )
        seen = requests.post(f"{base}/echo?a=1", data=b"abc", timeout=10).json()
        assert seen == {
            "method": "POST",
            "path": "/echo",
            "query": {"a": "1"},
            "length": 3,
            "secure": False,
        }


def assert_serves_on(srv: Server, port: int) -> None:
    """The server took over the socket we bound: it answers on that port; then stop it."""
    try:
        srv.wait_listening()
        assert srv.port == port
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).text == "Hello, World!"
    finally:
        srv.stop()
        srv.kill_group()


def _bound_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_fd_bind(worker_args: list[str]) -> None:
    sock = _bound_socket()
    port = sock.getsockname()[1]
    srv = Server.from_command(
        [*DYNOCORN, *worker_args, "-b", f"fd://{sock.fileno()}", "testapps:hello"],
        pass_fds=(sock.fileno(),),
    )
    sock.close()
    assert_serves_on(srv, port)


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_systemd_socket_activation(worker_args: list[str]) -> None:
    sock = _bound_socket()
    port = sock.getsockname()[1]
    launcher = (
        "import os, sys\n"
        "os.dup2(int(sys.argv[1]), 3)\n"
        "os.environ['LISTEN_PID'] = str(os.getpid())\n"
        "os.environ['LISTEN_FDS'] = '1'\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'dynocorn', *sys.argv[2:]])\n"
    )
    srv = Server.from_command(
        [
            sys.executable,
            "-c",
            launcher,
            str(sock.fileno()),
            *worker_args,
            "testapps:hello",
        ],
        pass_fds=(sock.fileno(),),
    )
    sock.close()
    assert_serves_on(srv, port)


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_workers_exit_when_the_master_dies(worker_args: list[str]) -> None:
    srv = Server([*worker_args, "-w", "2", "testapps:hello"])
    try:
        srv.wait_listening(workers=2)
        workers = [psutil.Process(pid) for pid in srv.worker_pids()]
        os.kill(srv.pid, signal.SIGKILL)
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, "orphaned workers kept running"
    finally:
        srv.kill_group()


def test_a_crash_loop_does_not_spin(tmp_path: Path) -> None:
    config = tmp_path / "crash.conf.py"
    config.write_text("def post_worker_init(worker):\n    raise RuntimeError('boom')\n")
    srv = Server(["-c", str(config), "-w", "2", "testapps:hello"])
    try:
        srv.wait_for(r"Listening at")
        time.sleep(4)  # measuring a rate over a fixed window: nothing to poll for
        boots = len(srv.booted_pids())
        master_cpu = psutil.Process(srv.pid).cpu_times()
        assert boots < 25, f"{boots} boots in 4 s"
        assert master_cpu.user + master_cpu.system < 1.5
        assert "next spawn in" in srv.log
    finally:
        srv.stop()
        srv.kill_group()


def test_capture_output_sends_prints_to_the_error_log(tmp_path: Path) -> None:
    errorlog = tmp_path / "error.log"
    config = tmp_path / "conf.py"
    config.write_text(
        "def post_worker_init(worker):\n    print('hello from the app', flush=True)\n"
    )
    srv = Server(
        ["-c", str(config), "--capture-output", "--error-logfile", str(errorlog), "testapps:hello"]
    )
    try:
        deadline = time.monotonic() + 15
        while "hello from the app" not in (errorlog.read_text() if errorlog.exists() else ""):
            assert time.monotonic() < deadline, "print() did not reach the error log"
            time.sleep(0.05)
        assert "Booting worker with pid" in errorlog.read_text()
    finally:
        os.kill(srv.pid, signal.SIGTERM)
        srv.wait_exit(15)
        srv.kill_group()


def test_check_config_loads_the_app() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "dynocorn", "--check-config", "testapps:hello"],
        cwd=REPO / "tests" / "apps",
        env={**os.environ, "PYTHONPATH": str(REPO / "lib")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "dynocorn", "--check-config", "testapps:nope"],
        cwd=REPO / "tests" / "apps",
        env={**os.environ, "PYTHONPATH": str(REPO / "lib")},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert bad.returncode == 1
    assert "Failed to find attribute 'nope'" in bad.stderr
