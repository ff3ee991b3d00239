"""The ASGI lifespan protocol: the app's startup before the worker serves, its shutdown after.

The app is run once with a `lifespan` scope, in a task of its own, for the worker's life; it
is told `lifespan.startup`, answers `lifespan.startup.complete` (or `.failed`), is told
`lifespan.shutdown` when the worker stops, and answers `lifespan.shutdown.complete` (or
`.failed`). What it puts in the scope's `state` during startup is handed to every request
(the lifespan state extension: Starlette's and FastAPI's `lifespan=` yield it).

Modes, as uvicorn's `--lifespan`: `auto` runs the protocol and serves without it when the app
raises on it before completing startup (Django's ASGIHandler, a bare ASGI callable: they do
not speak it); `on` takes that as a failure; `off` never runs it. An app that says
`lifespan.startup.failed` has failed in both modes: it cannot serve.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

from dynocorn.asgi import ASGI_VERSION, ASGIApp, Message
from dynocorn.asgi_settings import LIFESPAN_MODES

if TYPE_CHECKING:
    from dynocorn.logs import ErrorLog

Phase = Literal["starting", "serving", "stopping", "stopped"]


class Lifespan:
    """One app's lifespan in one worker. In the worker's event loop: `await startup()` before
    serving (False: the app cannot serve, stop the worker), give each request's scope
    `request_state()`, and `await shutdown(timeout)` when the worker stops."""

    def __init__(self, app: ASGIApp, mode: str, log: ErrorLog) -> None:
        if mode not in LIFESPAN_MODES:
            raise ValueError(f"lifespan mode {mode!r}: not one of {', '.join(LIFESPAN_MODES)}")
        self.app = app
        self.mode = mode
        self.log = log
        # The lifespan scope's state: what the app keeps there at startup, requests see.
        self.state: dict[str, Any] = {}
        self.phase: Phase = "starting"
        self.supported = False  # the app completed startup: it speaks the protocol
        self.shut_down = False  # and completed its shutdown
        self._messages: asyncio.Queue[Message] = asyncio.Queue()
        self._answered = asyncio.Event()  # to the last event sent, or the app has ended
        self._failure: str | None = None  # the message of a startup or shutdown `.failed`
        self._task: asyncio.Task[None] | None = None

    def request_state(self) -> dict[str, Any]:
        """A request scope's `state`: a shallow copy, as the extension asks, so that what
        one request sets is not seen by the next."""
        return dict(self.state)

    async def startup(self) -> bool:
        """Run the app's startup; whether the worker may serve. No timeout: a startup may
        take long (migrations, warm caches), and the worker's heartbeat goes on meanwhile."""
        if self.mode == "off":
            return True
        self._task = asyncio.create_task(self._run(), name="asgi lifespan")
        await self._messages.put({"type": "lifespan.startup"})
        await self._answered.wait()
        if self._failure is not None:
            self.log.error(f"Application startup failed: {self._failure or 'no message'}")
            return False
        if self.supported:
            self.log.info("Application startup complete.")
            return True
        return self.mode == "auto"  # the app ended without completing it (_run said why)

    async def shutdown(self, timeout: float) -> None:
        """Run the app's shutdown, at most `timeout` seconds (what is left of the worker's
        graceful_timeout): past it, the lifespan task is cancelled."""
        task = self._task
        if task is None or task.done() or self.phase != "serving":
            return  # off, not supported, failed, or ended already: nothing to tell the app
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.phase = "stopping"
        self._answered.clear()
        await self._messages.put({"type": "lifespan.shutdown"})
        try:
            await asyncio.wait_for(self._answered.wait(), timeout)
        except TimeoutError:
            self.log.error(f"Application shutdown did not complete in {timeout:g}s: cancelled")
        if self._failure is not None:
            self.log.error(f"Application shutdown failed: {self._failure or 'no message'}")
        elif self.shut_down:
            self.log.info("Application shutdown complete.")
        # Its code after `shutdown.complete` runs to the end, within the same deadline.
        await asyncio.wait({task}, timeout=max(0.0, deadline - loop.time()))
        if not task.done():
            task.cancel()
            # wait(), not `await task`: that would raise the task's CancelledError, which
            # cannot be told from a cancellation of this coroutine's caller.
            await asyncio.wait({task})

    async def _run(self) -> None:
        # The lifespan spec is at 2.0 (its `.failed` events and the state), below HTTP's.
        asgi = {"version": ASGI_VERSION["version"], "spec_version": "2.0"}
        scope = {"type": "lifespan", "asgi": asgi, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except Exception as error:
            self._log_error(error)
        else:
            if self.phase == "starting" and self._failure is None:
                self._log_unsupported("it returned without completing startup")
        finally:
            self._answered.set()  # whoever waits for an answer gets none now

    def _log_error(self, error: Exception) -> None:
        if self._failure is not None:
            return  # it said `.failed` before raising (as Starlette does): said once is enough
        if self.phase == "starting":
            self._log_unsupported(f"it raised {type(error).__name__}: {error}", error)
        else:
            self.log.error("Exception in the ASGI lifespan protocol", exc_info=error)

    def _log_unsupported(self, what: str, error: Exception | None = None) -> None:
        if self.mode == "auto":
            # Django's ASGIHandler raises on a lifespan scope: expected, not an error.
            self.log.info(f"ASGI lifespan unsupported by the app ({what}): serving without it")
        else:
            self.log.error(f"ASGI lifespan startup did not complete ({what})", exc_info=error)

    async def _receive(self) -> Message:
        return await self._messages.get()

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        expected = {
            "starting": ("lifespan.startup.complete", "lifespan.startup.failed"),
            "stopping": ("lifespan.shutdown.complete", "lifespan.shutdown.failed"),
        }.get(self.phase, ())
        if kind not in expected:
            raise RuntimeError(f"unexpected ASGI message {kind!r} in the lifespan {self.phase}")
        if kind.endswith(".failed"):
            self._failure = str(message.get("message", ""))
            self.phase = "stopped"
        elif self.phase == "starting":
            self.supported = True
            self.phase = "serving"
        else:
            self.shut_down = True
            self.phase = "stopped"
        self._answered.set()
