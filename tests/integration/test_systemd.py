"""deploy/systemd/ for real: the units pass systemd-analyze verify, and dynocorn runs under
systemd-socket-activate (systemd's own socket-activation tool) on a unix socket and on TCP,
telling a notify socket of the test's own what systemd would hear, through a HUP under load
with no failed request."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from clients import poll
from honcho_runs import free_port
from server import DYNOCORN, REPO, Server

UNITS = REPO / "deploy" / "systemd"
pytestmark = pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None or shutil.which("systemd-analyze") is None,
    reason="systemd's tools are not installed",
)


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """As a user installs them, with the paths of this machine: no error, no warning."""
    dynocorn = Path(sys.executable).parent / "dynocorn"  # the venv's
    assert dynocorn.is_file()
    for unit in ("dynocorn.service", "dynocorn.socket"):
        text = (UNITS / unit).read_text().replace("/srv/app/venv/bin/dynocorn", str(dynocorn))
        (tmp_path / unit).write_text(text)
    done = subprocess.run(
        ["systemd-analyze", "verify", "dynocorn.socket", "dynocorn.service"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr == "" and done.stdout == "", done


class NotifySocket:
    """Where systemd would listen for sd_notify: the datagrams, as they arrive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []

    def close(self) -> None:
        self.sock.close()

    def read(self) -> list[dict[str, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return self.messages
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            self.messages.append(fields)

    def said(self, key: str) -> int:
        return sum(1 for message in self.read() if message.get(key) == "1")


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.unix_path)


class Load:
    """Requests back to back on one kept-alive connection (a new one when the server closes
    it), until stopped: every outcome counted."""

    def __init__(self, connect: Callable[[], http.client.HTTPConnection], target: str) -> None:
        self.target = target
        self.ok = 0
        self.failed: list[str] = []
        self.connect = connect
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        connection = self.connect()
        try:
            self._send(connection)
        finally:
            self.connection.close()

    def _send(self, connection: http.client.HTTPConnection) -> None:
        self.connection = connection
        deadline = time.monotonic() + 60
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                connection.request("GET", "/")
                response = connection.getresponse()
                response.read()
                if response.status == 200:
                    self.ok += 1
                else:
                    self.failed.append(str(response.status))
                if response.will_close:
                    connection.close()
                    connection = self.connection = self.connect()
            except (OSError, http.client.HTTPException) as error:
                self.failed.append(repr(error))
                connection.close()
                connection = self.connection = self.connect()

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)


@contextmanager
def socket_activated(
    address: str, notify: NotifySocket, app: str = "testapps:routes"
) -> Iterator[Server]:
    """dynocorn started by systemd-socket-activate on its first connection, as systemd
    starts a socket-activated service; the environment is what that tool passes on."""
    command = [
        "systemd-socket-activate", "--listen", address,
        "-E", f"PYTHONPATH={REPO / 'lib'}", "-E", "PYTHONUNBUFFERED=1",
        "-E", f"NOTIFY_SOCKET={notify.path}",
        *DYNOCORN, "-w", "2", "--graceful-timeout", "10", app,
    ]  # fmt: skip
    server = Server.from_command(command)
    try:
        server.wait_for(r"Listening on .* as 3\.")
        yield server
    finally:
        if server.process.poll() is None:
            server.stop()
        server.kill_group()


def hup_under_load(server: Server, notify: NotifySocket, load: Load) -> None:
    with load:
        poll(lambda: load.ok > 20, 30, "requests before the HUP")
        before = load.ok
        os.kill(server.pid, signal.SIGHUP)  # what ExecReload= sends to $MAINPID
        poll(lambda: notify.said("RELOADING") == 1, 15, "RELOADING=1")
        poll(lambda: notify.said("READY") == 2, 30, "READY=1 once the new workers serve")
        poll(lambda: load.ok > before + 20, 30, "requests after the HUP")
    assert load.failed == [], load.failed[:5]


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    listening = NotifySocket(tmp_path / "notify")
    yield listening
    listening.close()


def test_a_unix_socket_from_systemd_ready_reload_and_stop(
    tmp_path: Path, notify: NotifySocket
) -> None:
    path = str(tmp_path / "app.sock")
    with socket_activated(path, notify) as server:
        first = UnixHTTPConnection(path)
        first.request("GET", "/")  # this connection starts the service
        assert first.getresponse().status == 200
        first.close()
        assert server.wait_for(r"Listening at: unix:")
        poll(lambda: notify.said("READY") == 1, 30, "READY=1")
        ready = next(m for m in notify.read() if m.get("READY") == "1")
        assert ready["MAINPID"] == str(server.pid) and ready["STATUS"] == "2 workers"
        hup_under_load(server, notify, Load(lambda: UnixHTTPConnection(path), "/"))
        server.signal(signal.SIGTERM)
        assert server.wait_exit(30) == 0
        poll(lambda: notify.said("STOPPING") == 1, 5, "STOPPING=1")
        assert Path(path).exists()  # systemd's socket, not dynocorn's to remove


def test_tcp_from_systemd_hup_under_load(notify: NotifySocket) -> None:
    port = free_port()
    with socket_activated(f"127.0.0.1:{port}", notify) as server:
        first = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        first.request("GET", "/")
        assert first.getresponse().status == 200
        first.close()
        poll(lambda: notify.said("READY") == 1, 30, "READY=1")
        hup_under_load(
            server, notify, Load(lambda: http.client.HTTPConnection("127.0.0.1", port, 30), "/")
        )


def test_no_notify_socket_in_the_workers_environment(notify: NotifySocket) -> None:
    """The app must not speak for the service: NOTIFY_SOCKET is gone before the fork."""
    port = free_port()
    with socket_activated(f"127.0.0.1:{port}", notify, "testapps:environment"):
        values = {}
        for name in ("NOTIFY_SOCKET", "PYTHONPATH"):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request("GET", f"/?name={name}")
            values[name] = json.loads(connection.getresponse().read())["value"]
            connection.close()
        assert values == {"NOTIFY_SOCKET": None, "PYTHONPATH": str(REPO / "lib")}
        poll(lambda: notify.said("READY") == 1, 30, "READY=1, the master's own")


# Everything read-only, /run a fresh tmpfs with RuntimeDirectory's /run/dynocorn and a
# private temporary directory. (PrivateTmp= mounts its own /tmp; here /tmp stays read-only
# and TMPDIR points to /run/tmp instead, since this checkout may itself live under /tmp.)
HARDENED = """
mount --make-rprivate / && mount -o remount,bind,ro / && mount -t tmpfs tmpfs /run &&
mkdir -m 0755 /run/dynocorn && mkdir -m 1777 /run/tmp && exec "$@"
"""


def test_the_hardening_leaves_it_working() -> None:
    """What the unit's ProtectSystem=strict, PrivateTmp and RuntimeDirectory= make of the
    file system, built by hand (no systemd runs as PID 1 here): every file read-only but a
    private temporary directory and /run/dynocorn. dynocorn serves, keeps its control
    socket there, reloads on HUP and stops cleanly."""
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("no mount namespaces for this user (unshare --mount fails)")
    command = [
        "unshare", "--mount", "/bin/sh", "-c", HARDENED, "sh",
        "env", "XDG_RUNTIME_DIR=/run/dynocorn", "TMPDIR=/run/tmp", "PYTHONDONTWRITEBYTECODE=1",
        *DYNOCORN, "-w", "2", "-b", "127.0.0.1:0", "testapps:routes",
    ]  # fmt: skip
    server = Server.from_command(command)
    try:
        server.wait_listening(workers=1)
        server.wait_for(r"Control socket: /run/dynocorn/dynocorn/\d+\.ctl ")
        booted = server.wait_for(r"Booting worker with pid", count=2)
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request("GET", "/")
        assert connection.getresponse().status == 200
        connection.close()
        server.signal(signal.SIGHUP)
        server.wait_for(r"Booting worker with pid", count=len(booted) + 2, timeout=30)
        assert server.stop() == 0
        assert "[WARNING]" not in server.log and "[ERROR]" not in server.log, server.log
    finally:
        server.kill_group()
