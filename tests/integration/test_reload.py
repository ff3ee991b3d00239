"""--reload under a running server, with real files: an edit is served, a mistake keeps the
old code serving, the fix is served, an extra file restarts, a burst restarts once."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import requests

from clients import poll
from server import Server, running
from worker_classes import WORKER_CLASSES

APP = """\
def app(environ, start_response):
    body = {body!r}
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""
BROKEN = "def app(environ, start_response)\n    pass\n"  # a SyntaxError


def write_app(directory: Path, body: bytes) -> None:
    (directory / "editable.py").write_text(APP.format(body=body))


def serves(server: Server, body: bytes) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{server.port}/", timeout=5).content == body
    except requests.RequestException:
        return False


def until_served(server: Server, body: bytes, what: str) -> float:
    """Poll until the server answers `body`; how long it took. The log says why not."""
    try:
        return poll(lambda: serves(server, body), 20, what)
    except AssertionError as error:
        raise AssertionError(f"{error}; the server's log:\n{server.log}") from None


def reloading(
    directory: Path, *args: str, launched_in: Path | None = None
) -> AbstractContextManager[Server]:
    """A server of `directory`'s app (--chdir there), started in `launched_in`."""
    write_app(directory, b"v1")
    args = (*args, "--reload", "--chdir", str(directory), "editable:app")
    return running(list(args), cwd=launched_in or directory)


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_an_edit_is_served_a_mistake_keeps_the_old_code_and_the_fix_is_served(
    tmp_path: Path, worker_args: list[str]
) -> None:
    with reloading(tmp_path, *worker_args) as srv:
        srv.wait_for(r"\[INFO\] Reloader is on\. Use in development only!")
        until_served(srv, b"v1", "the first answer")
        srv.wait_for(r"Reloader: watching \d+ files")  # what the worker imported
        write_app(tmp_path, b"v2")
        took = until_served(srv, b"v2", "the edit to be served")
        print(f"\nthe edit was served {took:.2f} s after the save")
        (tmp_path / "editable.py").write_text(BROKEN)
        srv.wait_for(r"\[ERROR\] Reloader: the app does not load; the old workers go on")
        srv.wait_for(r"Traceback \(most recent call last\):")  # where, not only what
        srv.wait_for(r'File ".*editable\.py", line 1')
        assert serves(srv, b"v2")
        write_app(tmp_path, b"v3")
        until_served(srv, b"v3", "the fix to be served")
        assert srv.log.count("the app does not load") == 1


def test_an_extra_file_restarts_the_workers_and_a_burst_restarts_once(tmp_path: Path) -> None:
    template = tmp_path / "templates" / "page.html"
    template.parent.mkdir()
    template.write_text("<p>1</p>")
    # Started elsewhere: the pattern is relative to the app's directory (--chdir), where the
    # workers run, as in gunicorn.
    elsewhere = tmp_path.parent
    with reloading(
        tmp_path, "--reload-extra-file", "templates/*.html", launched_in=elsewhere
    ) as srv:
        until_served(srv, b"v1", "the first answer")
        srv.wait_for(r"Reloader: watching 2 files")  # the template, and the app's module
        template.write_text("<p>2</p>")
        srv.wait_for(r"Reloader: .*page\.html changed")
        srv.wait_for(r"\[INFO\] Hang up: Master")
        srv.wait_for(r"Worker exiting", count=1)  # the new worker serves: the old one left
        for n in range(10):  # git checkout of ten versions, back to back
            write_app(tmp_path, b"burst %d" % n)
        until_served(srv, b"burst 9", "the last version to be served")
        srv.wait_for(r"Booting worker", count=3)
        assert srv.log.count("Hang up: Master") == 2  # the template, then the burst once


def test_reload_with_preload_is_refused_in_one_line(tmp_path: Path) -> None:
    write_app(tmp_path, b"v1")
    server = Server(["--reload", "--preload", "editable:app"], cwd=tmp_path)
    try:
        assert server.wait_exit(20) == 1
    finally:
        server.kill_group()  # nothing is left; this releases the pipes
    assert server.log.strip().splitlines() == [
        "Error: reload = True from command line: it cannot reload an app preloaded in the "
        "master (preload_app from command line); use one or the other"
    ]


def test_on_heroku_reload_is_warned_about(tmp_path: Path) -> None:
    with reloading(tmp_path) as srv:
        pass
    assert "reload is on in a dyno" not in srv.log
    write_app(tmp_path, b"v1")
    with running(["--reload", "editable:app"], cwd=tmp_path, env={"DYNO": "web.1"}) as srv:
        srv.wait_for(r"\[WARNING\] reload is on in a dyno \(DYNO is set\)")


LAZY_APP = """\
import sys
import time


def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        print("slow request started", file=sys.stderr, flush=True)
        time.sleep(1.5)
        body = b"slow done"
    else:
        import lazy  # imported only once a request asks: after the first report

        body = lazy.BODY
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
"""


def test_a_module_imported_after_start_is_watched_and_a_request_in_flight_is_answered(
    tmp_path: Path,
) -> None:
    (tmp_path / "lazy.py").write_text('BODY = b"lazy v1"\n')
    (tmp_path / "editable.py").write_text(LAZY_APP)
    args = ["--reload", "--chdir", str(tmp_path), "-k", "gthread", "editable:app"]
    with running(args, cwd=tmp_path) as srv, ThreadPoolExecutor(1) as pool:
        until_served(srv, b"lazy v1", "the lazy module's answer")
        srv.wait_for(r"Reloader: watching 2 files")  # the worker reported lazy.py too
        slow = pool.submit(requests.get, f"http://127.0.0.1:{srv.port}/slow", timeout=20)
        srv.wait_for(r"slow request started")  # in flight when the save lands
        (tmp_path / "lazy.py").write_text('BODY = b"lazy v2"\n')
        until_served(srv, b"lazy v2", "the edited lazy module")
        assert slow.result(20).content == b"slow done"  # answered across the reload
