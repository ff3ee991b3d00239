"""Process-level chores: pidfile, daemon mode, switching user, process titles."""

from __future__ import annotations

import grp
import os
import pwd
import sys
import tempfile
from pathlib import Path


def drain_pipe(fd: int) -> None:
    """Empty a non-blocking wake-up pipe (the bytes only said: look)."""
    try:
        while os.read(fd, 4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def set_title(title: str) -> None:
    """Name the process in `ps` when the optional setproctitle extra is installed."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(title)


class Pidfile:
    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def write(self, pid: int) -> None:
        # Written whole then renamed, so a reader never sees an empty or half file.
        directory = self.path.parent if str(self.path.parent) else Path(".")
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".dynocorn-pid-")
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{pid}\n")
        os.chmod(temporary, 0o644)
        os.replace(temporary, self.path)

    def remove(self, pid: int) -> None:
        """Remove it only if it is still ours (a re-executed master may own it now)."""
        try:
            if self.path.read_text().strip() == str(pid):
                self.path.unlink()
        except OSError:
            pass

    def rename(self, new_path: str) -> None:
        try:
            os.replace(self.path, new_path)
        except OSError:
            pass
        self.path = Path(new_path)


def resolve_ids(user: int | str | None, group: int | str | None) -> tuple[int | None, int | None]:
    """Names to numeric ids; KeyError names what does not exist."""
    uid = None if user is None else (user if isinstance(user, int) else pwd.getpwnam(user).pw_uid)
    if group is None:
        gid = None
    elif isinstance(group, int):
        gid = group
    else:
        gid = grp.getgrnam(group).gr_gid
    return uid, gid


def switch_user(uid: int | None, gid: int | None, initgroups: bool) -> None:
    if gid is not None and gid != os.getgid():
        os.setgid(gid)
    if uid is not None and uid != os.getuid():
        if initgroups:
            name = pwd.getpwuid(uid).pw_name
            os.initgroups(name, gid if gid is not None else pwd.getpwuid(uid).pw_gid)
        os.setuid(uid)


def daemonize() -> None:
    """Detach: the usual double fork, a new session, stdio on /dev/null."""
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
