"""What --reload watches and how changes are told (reloader.py), on real files in a
temporary directory, for both engines."""

from __future__ import annotations

import importlib
import queue
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynocorn.reloader import (
    MISSING_WATCHFILES,
    QUIET,
    Engine,
    PollingEngine,
    WatchfilesEngine,
    engine_for,
    extra_files,
    project_files,
)


def test_only_the_projects_own_modules_are_watched(tmp_path: Path) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("")
    (tmp_path / "shop" / "views.py").write_text("X = 1\n")
    vendored = tmp_path / ".venv" / "lib" / "site-packages"
    vendored.mkdir(parents=True)
    (vendored / "vendored_lib_for_reload_test.py").write_text("Y = 2\n")
    sys.path[:0] = [str(tmp_path), str(vendored)]
    try:
        views = importlib.import_module("shop.views")
        vendored_module = importlib.import_module("vendored_lib_for_reload_test")
        modules = [views, sys.modules["shop"], vendored_module, importlib.import_module("json")]
        assert project_files(modules, tmp_path) == {
            (tmp_path / "shop" / "views.py").resolve(),
            (tmp_path / "shop" / "__init__.py").resolve(),
        }
    finally:
        del sys.path[:2]
        for name in ("shop.views", "shop", "vendored_lib_for_reload_test"):
            sys.modules.pop(name, None)


def test_extra_files_are_paths_or_globs_as_in_gunicorn(tmp_path: Path) -> None:
    templates = tmp_path / "templates" / "shop"
    templates.mkdir(parents=True)
    (templates / "cart.html").write_text("<p>")
    (tmp_path / "templates" / "base.html").write_text("<html>")
    (tmp_path / "settings.toml").write_text("")
    found = extra_files(["templates/**/*.html", "settings.toml", "nothing/*.txt"], tmp_path)
    assert found == {
        (templates / "cart.html").resolve(),
        (tmp_path / "templates" / "base.html").resolve(),
        (tmp_path / "settings.toml").resolve(),
    }


def test_poll_is_polling_and_auto_is_the_kernel_when_watchfiles_is_there() -> None:
    warnings: list[str] = []
    assert isinstance(engine_for("poll", warnings.append), PollingEngine)
    assert isinstance(engine_for("auto", warnings.append), WatchfilesEngine)
    assert isinstance(engine_for("inotify", warnings.append), WatchfilesEngine)
    assert warnings == []


def test_without_watchfiles_it_polls_and_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # what an absent package looks like
    warnings: list[str] = []
    assert isinstance(engine_for("auto", warnings.append), PollingEngine)
    assert warnings == [MISSING_WATCHFILES] and "dynocorn[reload]" in MISSING_WATCHFILES


class Watching:
    """An engine's batches, collected by a thread; stopped at the end."""

    def __init__(self, engine: Engine, paths: set[Path]) -> None:
        self.batches: queue.Queue[set[Path]] = queue.Queue()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(engine, paths), daemon=True)
        self.thread.start()

    def _run(self, engine: Engine, paths: set[Path]) -> None:
        for batch in engine.batches(paths, self.stop):
            self.batches.put(batch)

    def until_watching(self, probe: Path) -> None:
        """The engine may start watching a moment after the thread starts: save the probe
        until a batch says it is seen, then forget that batch."""
        for attempt in range(100):
            probe.write_text(f"probe {attempt}\n")
            try:
                self.batches.get(timeout=QUIET * 5)
                break
            except queue.Empty:
                continue
        else:
            raise AssertionError("the engine never reported the probe")
        self.quiet()

    def quiet(self) -> list[set[Path]]:
        """The batches that come until none has come for a while."""
        batches = []
        while True:
            try:
                batches.append(self.batches.get(timeout=QUIET * 5))
            except queue.Empty:
                return batches

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture(params=[PollingEngine, WatchfilesEngine], ids=["poll", "watchfiles"])
def watched(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Watching, Path]]:
    files = [tmp_path / f"module{n}.py" for n in range(10)]
    for path in files:
        path.write_text("A = 0\n")
    (tmp_path / "unwatched.py").write_text("")
    watching = Watching(request.param(), set(files))
    watching.until_watching(files[0])
    yield watching, tmp_path
    watching.close()


def test_a_save_is_one_batch_naming_the_file(watched: tuple[Watching, Path]) -> None:
    watching, directory = watched
    (directory / "unwatched.py").write_text("B = 1\n")  # not asked for: never told
    (directory / "module3.py").write_text("A = 3\n")
    assert watching.quiet() == [{directory / "module3.py"}]


def test_a_burst_of_saves_is_one_batch(watched: tuple[Watching, Path]) -> None:
    watching, directory = watched
    for n in range(10):  # git checkout of ten files, back to back
        (directory / f"module{n}.py").write_text(f"A = {n + 1}\n")
    (directory / "module0.py").write_text("A = 11\n")  # an editor that writes twice
    batches = watching.quiet()
    assert len(batches) == 1
    assert batches[0] == {directory / f"module{n}.py" for n in range(10)}


def test_a_file_replaced_by_rename_counts_as_saved(watched: tuple[Watching, Path]) -> None:
    watching, directory = watched
    temporary = directory / ".module5.py.swp"
    temporary.write_text("A = 5\n")
    temporary.replace(directory / "module5.py")  # how many editors save
    assert watching.quiet() == [{directory / "module5.py"}]
