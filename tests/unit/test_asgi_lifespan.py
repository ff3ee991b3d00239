"""The ASGI lifespan protocol (asgi/lifespan.py) against real apps: a raw ASGI callable,
Starlette and FastAPI with `lifespan=`, FastAPI's on_event, Django's ASGIHandler, and apps
that fail, raise, hang or do not speak the protocol; in `auto`, `on` and `off`."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from dynocorn.asgi import ASGIApp, Message, Receive, Scope, Send
from dynocorn.asgi.lifespan import Lifespan
from dynocorn.logs import ErrorLog, LogFile
from server import REPO


class Log:
    """A real ErrorLog, writing to a buffer the test reads."""

    def __init__(self) -> None:
        self.buffer = io.StringIO()
        self.error_log = ErrorLog(LogFile("-", self.buffer), level="debug")

    @property
    def text(self) -> str:
        return self.buffer.getvalue()

    def lines(self, level: str) -> list[str]:
        marker = f"[{level.upper()}] "
        return [line.split(marker, 1)[1] for line in self.text.splitlines() if marker in line]


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 10))  # every wait bounded


async def http_get(app: ASGIApp, path: str, state: dict[str, Any]) -> tuple[int, bytes]:
    """One GET through the app as a server sends it, the lifespan state in its scope."""
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": state,
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(message.get("body", b"") for message in sent[1:])


# -- apps that speak the protocol


class RawApp:
    """A bare ASGI app that speaks lifespan, keeping a pool in the state; it records what
    it was told."""

    def __init__(self) -> None:
        self.events: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        assert scope["asgi"] == {"version": "3.0", "spec_version": "2.0"}
        while True:
            message = await receive()
            self.events.append(message["type"])
            if message["type"] == "lifespan.startup":
                scope["state"]["pool"] = "connected"
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return


def test_a_raw_app_starts_keeps_state_and_stops() -> None:
    async def test() -> None:
        app, log = RawApp(), Log()
        lifespan = Lifespan(app, "auto", log.error_log)
        assert await lifespan.startup() is True
        assert lifespan.state == {"pool": "connected"}
        state = lifespan.request_state()
        assert state == lifespan.state and state is not lifespan.state  # a copy per request
        await lifespan.shutdown(timeout=5)
        assert app.events == ["lifespan.startup", "lifespan.shutdown"]
        assert log.lines("info") == [
            "Application startup complete.",
            "Application shutdown complete.",
        ]
        assert log.lines("error") == []

    run(test)


def state_route(request: Request) -> JSONResponse:
    return JSONResponse({"pool": request.state.pool})


def test_starlette_lifespan_state_reaches_the_request() -> None:
    closed: list[bool] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"pool": "starlette pool"}
        closed.append(True)

    app = Starlette(routes=[Route("/", state_route)], lifespan=lifespan)

    async def test() -> None:
        log = Log()
        lifespan_ = Lifespan(app, "on", log.error_log)
        assert await lifespan_.startup() is True
        assert closed == []
        assert await http_get(app, "/", lifespan_.request_state()) == (
            200,
            b'{"pool":"starlette pool"}',
        )
        await lifespan_.shutdown(timeout=5)
        assert closed == [True]
        assert "Application shutdown complete." in log.lines("info")

    run(test)


def test_fastapi_lifespan_state_reaches_the_request() -> None:
    steps: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        steps.append("startup")
        yield {"model": "loaded"}
        steps.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/model")
    async def model(request: Request) -> dict[str, str]:
        return {"model": request.state.model}

    async def test() -> None:
        lifespan_ = Lifespan(app, "auto", Log().error_log)
        assert await lifespan_.startup() is True
        status, body = await http_get(app, "/model", lifespan_.request_state())
        assert (status, json.loads(body)) == (200, {"model": "loaded"})
        await lifespan_.shutdown(timeout=5)
        assert steps == ["startup", "shutdown"]

    run(test)


@pytest.mark.filterwarnings("ignore:\\s*on_event is deprecated:DeprecationWarning")
def test_fastapi_on_event_handlers_run() -> None:
    steps: list[str] = []
    app = FastAPI()

    @app.on_event("startup")
    async def started() -> None:
        steps.append("startup")

    @app.on_event("shutdown")
    def stopped() -> None:
        steps.append("shutdown")

    async def test() -> None:
        lifespan = Lifespan(app, "on", Log().error_log)
        assert await lifespan.startup() is True
        assert steps == ["startup"]
        await lifespan.shutdown(timeout=5)
        assert steps == ["startup", "shutdown"]

    run(test)


# -- apps that do not speak it


async def http_only(scope: Scope, receive: Receive, send: Send) -> None:
    """As Django's ASGIHandler does: anything but http (and websocket) is an error."""
    if scope["type"] != "http":
        raise ValueError(f"can only handle ASGI/HTTP connections, not {scope['type']}.")


async def returns_at_once(scope: Scope, receive: Receive, send: Send) -> None:
    return None


@pytest.mark.parametrize("app", [http_only, returns_at_once])
def test_auto_serves_without_it_when_the_app_does_not_speak_it(app: ASGIApp) -> None:
    async def test() -> None:
        log = Log()
        lifespan = Lifespan(app, "auto", log.error_log)
        assert await lifespan.startup() is True
        (line,) = log.lines("info")
        assert line.startswith("ASGI lifespan unsupported by the app (")
        assert line.endswith("): serving without it")
        await lifespan.shutdown(timeout=5)  # nothing to tell it
        assert log.lines("error") == [] and len(log.lines("info")) == 1

    run(test)


def test_the_info_line_says_what_the_app_raised() -> None:
    async def test() -> None:
        log = Log()
        assert await Lifespan(http_only, "auto", log.error_log).startup() is True
        assert "(it raised ValueError: can only handle ASGI/HTTP connections, not lifespan.)" in (
            log.text
        )

    run(test)


@pytest.mark.parametrize("app", [http_only, returns_at_once])
def test_on_is_a_failure_when_the_app_does_not_speak_it(app: ASGIApp) -> None:
    async def test() -> None:
        log = Log()
        assert await Lifespan(app, "on", log.error_log).startup() is False
        (line,) = log.lines("error")
        assert line.startswith("ASGI lifespan startup did not complete (")
        if app is http_only:
            assert "Traceback" in log.text and "ValueError: can only handle" in log.text

    run(test)


def test_off_never_calls_the_app() -> None:
    called: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(scope)

    async def test() -> None:
        log = Log()
        lifespan = Lifespan(app, "off", log.error_log)
        assert await lifespan.startup() is True
        await lifespan.shutdown(timeout=5)
        assert called == [] and log.text == ""

    run(test)


def test_a_mode_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError, match="lifespan mode 'yes'"):
        Lifespan(http_only, "yes", Log().error_log)


DJANGO_LIFESPAN = textwrap.dedent(
    """
    import asyncio, io
    import django_app  # examples/: configures the one-file project
    from django.core.asgi import get_asgi_application
    from dynocorn.asgi.lifespan import Lifespan
    from dynocorn.logs import ErrorLog, LogFile

    async def main():
        buffer = io.StringIO()
        log = ErrorLog(LogFile("-", buffer))
        ok = await Lifespan(get_asgi_application(), "auto", log).startup()
        print(ok, buffer.getvalue().strip())

    asyncio.run(main())
    """
)


def test_djangos_asgi_handler_is_served_without_it_in_auto() -> None:
    """Django's ASGIHandler raises on a lifespan scope; in its own process, as Django's
    settings are the process's."""
    result = subprocess.run(
        [sys.executable, "-c", DJANGO_LIFESPAN],
        cwd=REPO / "examples",
        env={**os.environ, "PYTHONPATH": f"{REPO / 'lib'}{os.pathsep}{REPO / 'examples'}"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("True [")
    assert (
        "[INFO] ASGI lifespan unsupported by the app (it raised ValueError: Django" in result.stdout
    )


# -- failures


async def says_startup_failed(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "no database"})


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_startup_failed_stops_the_worker_in_both_modes(mode: str) -> None:
    async def test() -> None:
        log = Log()
        lifespan = Lifespan(says_startup_failed, mode, log.error_log)
        assert await lifespan.startup() is False
        assert log.lines("error") == ["Application startup failed: no database"]
        await lifespan.shutdown(timeout=5)  # not told: it never started
        assert len(log.lines("error")) == 1

    run(test)


async def connect() -> None:
    raise ConnectionError("database unreachable")


def test_a_starlette_startup_that_raises_is_a_failure_said_once() -> None:
    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await connect()
        yield

    app = Starlette(lifespan=lifespan)

    async def test() -> None:
        log = Log()
        assert await Lifespan(app, "auto", log.error_log).startup() is False
        # Starlette says lifespan.startup.failed with the traceback, then raises it.
        assert log.text.count("ConnectionError: database unreachable") == 1
        assert log.lines("error")[0].startswith("Application startup failed: Traceback")

    run(test)


class ShutdownApp:
    """Completes startup; then does at shutdown what `how` says."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.cancelled = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        if self.how == "fails":
            await send({"type": "lifespan.shutdown.failed", "message": "pool would not close"})
        elif self.how == "raises":
            raise RuntimeError("boom at shutdown")
        elif self.how in ("hangs", "hangs-and-cleans-up-slowly"):
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                if self.how == "hangs-and-cleans-up-slowly":
                    await asyncio.sleep(5)
                raise


def test_shutdown_failed_is_logged() -> None:
    async def test() -> None:
        log = Log()
        lifespan = Lifespan(ShutdownApp("fails"), "auto", log.error_log)
        assert await lifespan.startup() is True
        await lifespan.shutdown(timeout=5)
        assert log.lines("error") == ["Application shutdown failed: pool would not close"]

    run(test)


def test_an_exception_at_shutdown_is_logged_with_its_traceback() -> None:
    async def test() -> None:
        log = Log()
        lifespan = Lifespan(ShutdownApp("raises"), "auto", log.error_log)
        assert await lifespan.startup() is True
        await lifespan.shutdown(timeout=5)
        assert log.lines("error")[0] == "Exception in the ASGI lifespan protocol"
        assert "RuntimeError: boom at shutdown" in log.text
        assert "Application shutdown complete." not in log.text

    run(test)


def test_a_shutdown_that_hangs_is_cancelled_at_the_timeout() -> None:
    async def test() -> None:
        log, app = Log(), ShutdownApp("hangs")
        lifespan = Lifespan(app, "auto", log.error_log)
        assert await lifespan.startup() is True
        await asyncio.wait_for(lifespan.shutdown(timeout=0.2), 5)
        assert app.cancelled
        assert log.lines("error") == ["Application shutdown did not complete in 0.2s: cancelled"]

    run(test)


def test_the_callers_cancellation_of_shutdown_is_not_swallowed() -> None:
    """The worker may cancel a shutdown (a quick stop) while it waits for the cancelled
    lifespan task to end: the cancellation must reach the worker."""

    async def test() -> None:
        app = ShutdownApp("hangs-and-cleans-up-slowly")
        lifespan = Lifespan(app, "auto", Log().error_log)
        assert await lifespan.startup() is True
        stopping = asyncio.create_task(lifespan.shutdown(timeout=0.1))
        while not app.cancelled:  # past the timeout: the lifespan task is being cancelled
            await asyncio.sleep(0.01)
        stopping.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stopping

    run(test)


def test_a_message_out_of_turn_is_raised_into_the_app() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "lifespan.shutdown.complete"})  # startup is what was asked

    async def test() -> None:
        log = Log()
        assert await Lifespan(app, "on", log.error_log).startup() is False
        assert "unexpected ASGI message 'lifespan.shutdown.complete' in the lifespan starting" in (
            log.text
        )

    run(test)
