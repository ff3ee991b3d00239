"""The control socket: a unix socket on which the master answers `dynocorn ctl`.

One request per connection, one JSON object per line each way: `{"command": "status",
"args": []}` in, `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}` out.

Where it is: `control_socket` when set (gunicorn's setting); else a file named after the
master's pid in a directory only its user can enter: `$XDG_RUNTIME_DIR/dynocorn/` when
that is set (systemd's per-user runtime directory), else `<tmp>/dynocorn-<uid>/`. Not
gunicorn's `./gunicorn.ctl`: the app's directory is often read-only or shared between
releases, and a second server in it would take the first one's socket. `dynocorn ctl`
finds the socket there by itself when one server runs.

Who may use it: the socket file is `control_socket_mode` (0600), and the master also asks
the kernel who connected (SO_PEERCRED) and answers only its own user, or root.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import tempfile
from pathlib import Path
from typing import Any, Protocol

from dynocorn.loop_servers import LoopServer

COMMANDS = ("status", "stats", "reload", "add", "remove", "kill")


class ControlError(Exception):
    """A command the master refuses: its text is the answer's error."""


class Controls(Protocol):
    """What the master does for each command."""

    def status(self) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...

    def reload(self) -> dict[str, Any]: ...

    def scale(self, change: int) -> dict[str, Any]: ...

    def stop_slot(self, slot: int) -> dict[str, Any]: ...


def socket_directory(environ: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "dynocorn"
    return Path(tempfile.gettempdir()) / f"dynocorn-{os.getuid()}"


def default_socket_path(master_pid: int) -> Path:
    return socket_directory() / f"{master_pid}.ctl"


def private_directory(directory: Path) -> None:
    """Make `directory` (mode 0700), or check that the one there is ours and private: in a
    shared /tmp, another user could have made it first to catch our sockets."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise OSError(f"{directory} is not a directory of user {os.getuid()}")
    if info.st_mode & 0o077:
        os.chmod(directory, 0o700)


def listen(path: Path, mode: int) -> socket.socket:
    """The control socket at `path`, replacing a stale file left by a server that died."""
    if path.is_socket() and not answers(path):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o777 & ~mode)  # never a moment with looser permissions
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, mode)
        sock.listen(16)
    except OSError:
        sock.close()
        raise
    return sock


def answers(path: Path) -> bool:
    """Whether a server listens on the unix socket at `path`."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        probe.close()


def peer_uid(client: socket.socket) -> int | None:
    try:
        creds = client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    uid: int = struct.unpack("3i", creds)[1]
    return uid


def same_user(client: socket.socket) -> bool:
    return peer_uid(client) in (os.getuid(), 0)


class ControlServer:
    """The master's end: a LoopServer that runs each command on `controls`."""

    def __init__(self, path: Path, mode: int, controls: Controls) -> None:
        self.path = path
        self.controls = controls
        self.loop_server = LoopServer(listen(path, mode), self.answer, "control")
        self.loop_server.admit = same_user
        self.inode = path.stat().st_ino

    def answer(self, request: bytes) -> bytes | None:
        if b"\n" not in request:
            return None
        try:
            message = json.loads(request.partition(b"\n")[0])
            result = self.run(message.get("command"), message.get("args", []))
            reply: dict[str, Any] = {"ok": True, "result": result}
        except ControlError as error:
            reply = {"ok": False, "error": str(error)}
        except (ValueError, AttributeError):
            reply = {"ok": False, "error": "not a JSON request"}
        return json.dumps(reply).encode() + b"\n"

    def run(self, command: Any, args: Any) -> dict[str, Any]:
        if command not in COMMANDS:
            raise ControlError(f"unknown command {command!r}; commands: {', '.join(COMMANDS)}")
        if not isinstance(args, list):
            raise ControlError("args must be a list")
        if command == "status":
            return self.controls.status()
        if command == "stats":
            return self.controls.stats()
        if command == "reload":
            return self.controls.reload()
        number = _one_count(command, args)
        if command == "kill":
            return self.controls.stop_slot(number)
        return self.controls.scale(number if command == "add" else -number)

    def close(self) -> None:
        self.loop_server.close()
        try:
            if self.path.stat().st_ino == self.inode:  # not a newer server's socket
                self.path.unlink()
        except OSError:
            pass


def _one_count(command: str, args: list[Any]) -> int:
    what = "SLOT" if command == "kill" else "N"
    if len(args) != 1:
        raise ControlError(f"{command} takes one argument, {what}")
    try:
        number = int(args[0])
    except (TypeError, ValueError):
        raise ControlError(f"{command}: {what} must be a whole number, not {args[0]!r}") from None
    if number < 1:
        raise ControlError(f"{command}: {what} must be 1 or more, not {number}")
    return number
