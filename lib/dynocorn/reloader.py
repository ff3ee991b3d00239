"""What `--reload` watches, and how it learns that a file changed (issue 15's first part).

The files: the source of every module the app imported that belongs to the project (not
the standard library, not site-packages, not a virtualenv, not `__pycache__` or `.git`),
plus `reload_extra_files`, glob patterns as in gunicorn 26.1.

The engine: watchfiles (the library uvicorn uses: inotify underneath, no polling on Linux),
an optional extra (`pip install dynocorn[reload]`, which `make install` includes); without
it, polling of the files' stat, with one warning naming the extra. Either way a burst of
saves (an editor writing a file twice, `git checkout` of ten files) comes out as one batch:
a batch ends once no change has come for QUIET seconds.
"""

from __future__ import annotations

import glob
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Protocol

IGNORED_DIRECTORIES = frozenset(
    {"__pycache__", ".git", ".hg", ".venv", "venv", "site-packages", "dist-packages", ".tox"}
)
QUIET = 0.1  # seconds without a change that end a batch
POLL_EVERY = 0.25  # seconds between two looks of the polling engine
ENGINES = ("auto", "poll", "inotify")  # gunicorn's reload_engine values
MISSING_WATCHFILES = (
    "watchfiles is not installed: --reload polls the files instead "
    "(install dynocorn[reload] to be told of changes by the kernel)"
)


def project_files(modules: Iterable[ModuleType], root: Path) -> set[Path]:
    """The source files of `modules` that are the project's: under `root`, outside the
    ignored directories (a virtualenv inside the project is not the project)."""
    root = root.resolve()
    found = set()
    for module in modules:
        filename = getattr(module, "__file__", None)
        if not filename or not filename.endswith(".py"):
            continue
        path = Path(filename).resolve()
        if path.is_relative_to(root) and not _ignored(path.relative_to(root)):
            found.add(path)
    return found


def imported_project_files(root: Path) -> set[Path]:
    """project_files() of what this process has imported so far."""
    return project_files(list(sys.modules.values()), root)


def extra_files(patterns: Iterable[str], cwd: Path) -> set[Path]:
    """`reload_extra_files`: paths or glob patterns (`templates/**/*.html`), relative to
    `cwd`; a pattern that matches nothing yet matches nothing."""
    found = set()
    for pattern in patterns:
        full = pattern if os.path.isabs(pattern) else str(cwd / pattern)
        for match in glob.glob(full, recursive=True):
            path = Path(match).resolve()
            if path.is_file():
                found.add(path)
    return found


def _ignored(relative: Path) -> bool:
    return any(part in IGNORED_DIRECTORIES for part in relative.parts)


class Engine(Protocol):
    """Tells of changes to a set of files, one batch per burst of saves."""

    def batches(self, paths: set[Path], stop: threading.Event) -> Iterator[set[Path]]:
        """Each batch: the files of `paths` changed (or removed) since the last one. Ends
        once `stop` is set (within about QUIET seconds)."""
        ...


class PollingEngine:
    """Looks at every file's stat every POLL_EVERY seconds."""

    def __init__(self, wait: Callable[[threading.Event, float], bool] | None = None) -> None:
        self.wait = wait or (lambda event, seconds: event.wait(seconds))

    def batches(self, paths: set[Path], stop: threading.Event) -> Iterator[set[Path]]:
        seen = {path: _stat(path) for path in paths}
        pending: set[Path] = set()
        while not self.wait(stop, QUIET if pending else POLL_EVERY):
            changed = {path for path in paths if _stat(path) != seen[path]}
            for path in changed:
                seen[path] = _stat(path)
            if changed:
                pending |= changed  # more may follow: wait for a quiet look
            elif pending:
                yield pending
                pending = set()


def _stat(path: Path) -> tuple[int, int, int] | None:
    """What changes when a file is saved: its modification time, size and inode (an
    editor that writes a new file and renames it over the old one)."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size, status.st_ino


class WatchfilesEngine:
    """The kernel tells (inotify through watchfiles); each watched file's directory is
    watched, not recursively, and only the files asked for count."""

    def batches(self, paths: set[Path], stop: threading.Event) -> Iterator[set[Path]]:
        import watchfiles

        directories = sorted({str(path.parent) for path in paths})
        wanted = {str(path) for path in paths}
        for changes in watchfiles.watch(
            *directories,
            watch_filter=lambda _change, name: name in wanted,
            step=int(QUIET * 1000),
            stop_event=stop,
            recursive=False,
            rust_timeout=int(QUIET * 1000),
            yield_on_timeout=False,
        ):
            changed = {Path(name) for _change, name in changes}
            if changed:
                yield changed


def engine_for(name: str, warn: Callable[[str], None]) -> Engine:
    """The engine `reload_engine` names: `inotify` and `auto` are watchfiles when it is
    installed (else polling, with one warning), `poll` is polling."""
    if name == "poll":
        return PollingEngine()
    try:
        import watchfiles  # noqa: F401
    except ImportError:
        warn(MISSING_WATCHFILES)
        return PollingEngine()
    return WatchfilesEngine()
