"""The control socket's pieces alone: the records workers write, the command protocol, the
loop server's limits, and the socket's file."""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from dynocorn.control import ControlServer, listen, private_directory
from dynocorn.loop_servers import MAX_REQUEST, LoopServer
from dynocorn.scoreboard import BEGIN, ENDED_AT, RECORD_SIZE, Scoreboard


def test_a_record_says_what_a_worker_serves_now() -> None:
    board = Scoreboard(4)
    slot = board.claim()
    assert slot is not None
    records = board.records
    assert records.read(slot).running == 0
    started = time.monotonic() - 2.0
    head = b"POST /upload?x=1 HTTP/1.1\r\nHost: a\r\n" + b"X-Long: " + b"y" * 200 + b"\r\n\r\n"
    BEGIN.pack_into(records.memory, slot * RECORD_SIZE, started, 5, head)
    records.ends[(slot * RECORD_SIZE + ENDED_AT) // 4] = 4
    serving = records.read(slot)
    assert serving.running == 1 and serving.ended == 4
    assert (serving.method, serving.target) == ("POST", "/upload?x=1")
    assert 2.0 <= serving.age < 10
    # A long request line is cut at the record's size: the target shows its start.
    BEGIN.pack_into(records.memory, slot * RECORD_SIZE, started, 6, b"GET /" + b"a" * 300)
    assert records.read(slot).target.startswith("/aaa") and records.read(slot).method == "GET"
    # Ended more than begun (threads writing out of order): no negative count.
    records.ends[(slot * RECORD_SIZE + ENDED_AT) // 4] = 9
    assert records.read(slot).running == 0
    # A slot claimed again starts blank.
    board.release(slot)
    assert board.claim() == slot and records.read(slot) == (0, 0, "", "", 0.0)


class Recorder:
    """Controls that say what they were asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def status(self) -> dict[str, Any]:
        self.calls.append(("status", None))
        return {"workers": []}

    def stats(self) -> dict[str, Any]:
        return {}

    def reload(self) -> dict[str, Any]:
        self.calls.append(("reload", None))
        return {"reloading": True}

    def scale(self, change: int) -> dict[str, Any]:
        self.calls.append(("scale", change))
        return {}

    def stop_slot(self, slot: int) -> dict[str, Any]:
        self.calls.append(("stop_slot", slot))
        return {}


@pytest.fixture
def server(tmp_path: Path) -> ControlServer:
    return ControlServer(tmp_path / "c.ctl", 0o600, Recorder())


def ask(server: ControlServer, message: bytes) -> Any:
    answer = server.answer(message)
    assert answer is not None and answer.endswith(b"\n") and answer.count(b"\n") == 1
    return json.loads(answer)


def test_commands_reach_the_controls(server: ControlServer) -> None:
    recorder = server.controls
    assert isinstance(recorder, Recorder)
    assert ask(server, b'{"command": "status"}\n') == {"ok": True, "result": {"workers": []}}
    ask(server, b'{"command": "add", "args": ["3"]}\n')
    ask(server, b'{"command": "remove", "args": [2]}\n')
    ask(server, b'{"command": "kill", "args": [1]}\n')
    ask(server, b'{"command": "reload"}\n')
    assert recorder.calls == [
        ("status", None), ("scale", 3), ("scale", -2), ("stop_slot", 1), ("reload", None),
    ]  # fmt: skip
    server.close()


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (b'{"command": "shutdown"}\n', "unknown command 'shutdown'"),
        (b'{"command": "add", "args": []}\n', "add takes one argument, N"),
        (b'{"command": "add", "args": ["0"]}\n', "add: N must be 1 or more, not 0"),
        (b'{"command": "kill", "args": ["x"]}\n', "kill: SLOT must be a whole number, not 'x'"),
        (b'{"command": "add", "args": "3"}\n', "args must be a list"),
        (b"not json\n", "not a JSON request"),
        (b"[1, 2]\n", "not a JSON request"),
    ],
)
def test_a_bad_request_gets_its_reason(server: ControlServer, message: bytes, error: str) -> None:
    reply = ask(server, message)
    assert reply["ok"] is False and error in reply["error"]
    server.close()


def test_a_request_is_answered_only_once_whole(server: ControlServer) -> None:
    assert server.answer(b'{"command": "sta') is None
    server.close()


def test_the_socket_file_is_made_with_its_mode_and_a_stale_one_replaced(tmp_path: Path) -> None:
    path = tmp_path / "s.ctl"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file with no server: what a SIGKILLed master leaves
    sock = listen(path, 0o640)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    sock.close()


def test_a_private_directory_is_made_or_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    private_directory(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    directory.chmod(0o755)
    private_directory(directory)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    other = tmp_path / "theirs"
    other.mkdir()
    os.chown(other, 65534, 65534)
    with pytest.raises(OSError, match="is not a directory of user"):
        private_directory(other)


def test_a_loop_server_drops_too_much_and_too_slow(tmp_path: Path) -> None:
    import selectors

    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "l.sock"))
    listener.listen()
    server = LoopServer(listener, lambda data: None, "test")  # never a whole request
    selector = selectors.DefaultSelector()
    server.register(selector)
    flood, silent = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
    for client in (flood, silent):
        client.connect(str(tmp_path / "l.sock"))
    server.on_listener()
    assert len(server.clients) == 2
    flood.sendall(b"x" * (MAX_REQUEST + 1))
    while len(server.clients) == 2:
        for key, _ in selector.select(5):
            if key.fileobj is not listener:
                key.data()
    assert len(server.clients) == 1  # the flood, dropped
    server.expire(time.monotonic() + 60)
    assert server.clients == {}  # the silent one, past its deadline
    assert silent.recv(10) == b""
    server.close()
    selector.close()
    flood.close()
    silent.close()
