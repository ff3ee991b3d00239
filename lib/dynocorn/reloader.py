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
import importlib.util
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dynocorn.config import Config
    from dynocorn.logs import ErrorLog

IGNORED_DIRECTORIES = frozenset(
    {"__pycache__", ".git", ".hg", ".venv", "venv", "site-packages", "dist-packages", ".tox"}
)
QUIET = 0.1  # seconds without a change that end a batch
POLL_EVERY = 0.25  # seconds between two looks of the polling engine
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


def _nothing() -> None:
    pass


class Engine(Protocol):
    """Tells of changes to a set of files, one batch per burst of saves."""

    def batches(
        self, paths: set[Path], stop: threading.Event, ready: Callable[[], None] = _nothing
    ) -> Iterator[set[Path]]:
        """Each batch: the files of `paths` changed (or removed) since the last one. Ends
        once `stop` is set (within about QUIET seconds). `ready` is called once changes
        from then on will be seen."""
        ...


class PollingEngine:
    """Looks at every file's stat every POLL_EVERY seconds."""

    def batches(
        self, paths: set[Path], stop: threading.Event, ready: Callable[[], None] = _nothing
    ) -> Iterator[set[Path]]:
        seen = {path: _stat(path) for path in paths}
        ready()
        pending: set[Path] = set()
        while not stop.wait(QUIET if pending else POLL_EVERY):
            now = {path: _stat(path) for path in paths}
            changed = {path for path in paths if now[path] != seen[path]}
            seen = now
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

    def batches(
        self, paths: set[Path], stop: threading.Event, ready: Callable[[], None] = _nothing
    ) -> Iterator[set[Path]]:
        import watchfiles

        directories = sorted({str(path.parent) for path in paths})
        wanted = {str(path) for path in paths}
        # An empty yield after each quiet rust_timeout: the first says the kernel watches.
        for changes in watchfiles.watch(
            *directories,
            watch_filter=lambda _change, name: name in wanted,
            step=int(QUIET * 1000),
            stop_event=stop,
            recursive=False,
            rust_timeout=int(QUIET * 1000),
            yield_on_timeout=True,
        ):
            if ready is not _nothing:
                ready()
                ready = _nothing
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


class ReloadWatch:
    """The master's side of --reload: watches the files the workers report (their imported
    project modules) and `reload_extra_files`, in a thread; on a change, checks in a fresh
    process that the app still loads before the arbiter replaces its workers. A mistake
    (a syntax error, a missing name) leaves the old workers serving, its traceback logged
    once; the next save that fixes it reloads."""

    def __init__(
        self,
        cfg: Config,
        log: ErrorLog,
        wake: Callable[[], None],
        check: Callable[[Config], str | None] | None = None,
    ) -> None:
        self.cfg, self.log, self.wake = cfg, log, wake
        self.check = check or app_load_error
        self.engine = engine_for(cfg.reload_engine, log.warning)
        # Relative to where the workers run (after --chdir), as their own modules are.
        self.files = extra_files(cfg.reload_extra_files, Path.cwd())
        self.changed = threading.Event()
        self.stop = threading.Event()
        self.last_error: str | None = None
        # A reload has happened: from then on a worker that cannot load the app is a
        # mistake being fixed; before it, as without --reload, the server stops.
        self.reloaded = False
        self.thread: threading.Thread | None = None
        self.restart()

    def watch(self, files: object) -> None:
        """More files to watch (a worker's report, a list of paths); the watch restarts
        when there are."""
        if not isinstance(files, list):
            return
        new = {Path(name) for name in files if isinstance(name, str)} - self.files
        if new:
            self.files |= new
            self.restart()

    def restart(self) -> None:
        self.close()
        if not self.files:
            return
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(set(self.files), self.stop), name="dynocorn-reload", daemon=True
        )
        self.thread.start()

    def _run(self, files: set[Path], stop: threading.Event) -> None:
        def ready() -> None:
            self.log.info(f"Reloader: watching {len(files)} files")

        for batch in self.engine.batches(files, stop, ready):
            self.log.info(f"Reloader: {', '.join(sorted(str(path) for path in batch))} changed")
            forget_bytecode(batch)
            self.changed.set()
            self.wake()

    def code_changed(self) -> bool:
        """In the master's loop: True once after a change, when the app still loads."""
        if not self.changed.is_set():
            return False
        self.changed.clear()
        error = self.check(self.cfg)
        if error is None:
            self.last_error = None
            self.reloaded = True
            return True
        if error != self.last_error:  # one traceback per mistake, not one per save
            self.last_error = error
            self.log.error(f"Reloader: the app does not load; the old workers go on:\n{error}")
        return False

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(5)
            self.thread = None


def forget_bytecode(paths: Iterable[Path]) -> None:
    """Remove the cached bytecode of changed modules. Python trusts a .pyc whose recorded
    source mtime (in whole seconds) and size still match: a save within the second of the
    last one, same size (v1 -> v2), would have the new workers import the old code."""
    for path in paths:
        if path.suffix == ".py":
            try:
                os.unlink(importlib.util.cache_from_source(str(path)))
            except (OSError, ValueError, NotImplementedError):
                pass  # none was written (PYTHONDONTWRITEBYTECODE), or it is gone


CHECK_TIMEOUT = 60.0  # seconds an import of the app may take in the check


def app_load_error(cfg: Config) -> str | None:
    """Whether the app loads, checked in a fresh process (`dynocorn --check-config` with the
    same arguments): None, or what it printed (the traceback)."""
    command = [sys.executable, "-m", "dynocorn", *cfg.argv, "--check-config"]
    try:
        done = subprocess.run(
            command, cwd=cfg.cwd, capture_output=True, text=True, timeout=CHECK_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return f"importing the app took more than {CHECK_TIMEOUT:.0f} s"
    if done.returncode == 0:
        return None
    return (done.stderr or done.stdout).strip() or f"exit status {done.returncode}"


RELOADER_ON = "Reloader is on. Use in development only!"  # gunicorn's line


def start_reloader(cfg: Config, log: ErrorLog, wake: Callable[[], None]) -> ReloadWatch | None:
    """--reload at start (None without it): say so, and warn on Heroku, where it costs CPU
    and memory."""
    if not cfg.reload:
        return None
    log.info(RELOADER_ON)
    if cfg.platform.on_heroku:
        log.warning(
            "reload is on in a dyno (DYNO is set): watching files costs CPU and memory in "
            "production; set it only for development"
        )
    return ReloadWatch(cfg, log, wake)
