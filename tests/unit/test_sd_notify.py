"""What the master tells systemd, and when: each change once, in order."""

from __future__ import annotations

import socket
from pathlib import Path

from dynocorn.sd_notify import Notifier, ServiceState


def listen(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.5)
    return sock


def heard(sock: socket.socket) -> list[str]:
    messages = []
    sock.settimeout(0.05)
    while True:
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            return messages


def test_ready_reloading_ready_stopping_each_once(tmp_path: Path) -> None:
    sock = listen(tmp_path / "notify")
    environ = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "OTHER": "x"}
    state = ServiceState(Notifier.from_environ(environ), pid=42)
    assert environ == {"OTHER": "x"}  # taken: no worker inherits it
    state.look(serving=False, replacing=False, stopping=False, workers=1)
    state.look(serving=True, replacing=False, stopping=False, workers=2)
    state.look(serving=True, replacing=False, stopping=False, workers=2)
    state.look(serving=True, replacing=True, stopping=False, workers=2)
    state.look(serving=False, replacing=True, stopping=False, workers=1)
    state.look(serving=True, replacing=False, stopping=False, workers=2)
    state.look(serving=True, replacing=False, stopping=True, workers=2)
    state.look(serving=False, replacing=False, stopping=True, workers=0)
    messages = heard(sock)
    assert [m.splitlines()[0] for m in messages] == [
        "READY=1", "RELOADING=1", "READY=1", "STOPPING=1",
    ]  # fmt: skip
    assert messages[0] == "READY=1\nMAINPID=42\nSTATUS=2 workers"
    assert messages[1].splitlines()[1].startswith("MONOTONIC_USEC=")
    sock.close()


def test_an_abstract_address_and_no_address() -> None:
    name = f"dynocorn-test-{id(object())}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(1)
    assert Notifier("@" + name).send("READY=1")
    assert sock.recv(100) == b"READY=1"
    sock.close()
    assert not Notifier(None).send("READY=1")  # not under systemd: nothing to do
    assert not Notifier("/nonexistent/notify").send("READY=1")  # gone: no exception
