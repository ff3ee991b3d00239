"""Apps that only the benchmark serves (`make bench`; bench/README.md): WSGI callables for
the WSGI servers and their ASGI counterparts (`*_asgi`) for the ASGI servers, each ASGI app
doing the same work the asyncio way."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

BODY = b"ok"
HELLO = b"Hello, World!"  # examples/hello.py's, for the ASGI hello-world
CPU_SECONDS = 0.005

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _answer(start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]


def _compute(seconds: float) -> None:
    """Computes for `seconds` of this thread's CPU time: pure Python, never sleeps, so it
    holds the GIL, the whole worker under gevent and the whole event loop under ASGI. The
    deadline is on `time.thread_time`, so each request costs the same CPU however many
    threads share the process or cores share the machine."""
    deadline = time.thread_time() + seconds
    x = 1
    while time.thread_time() < deadline:
        for _ in range(100):
            x = x * 31 % 1_000_003


def sleep10(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Waits 10 ms, as if on a database, then answers two bytes.

    `time.sleep` is looked up at call time, so under gevent's monkey patching it yields to
    the other connections instead of blocking the worker."""
    time.sleep(0.010)
    return _answer(start_response)


def io20(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Waits 20 ms, as if on a database, then answers two bytes (cooperative under gevent,
    as sleep10)."""
    time.sleep(0.020)
    return _answer(start_response)


def mixed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """`/slow` waits 200 ms, anything else 2 ms: fast pages and the odd slow report on the
    same connections (cooperative under gevent, as sleep10). bench/mixed.lua makes every
    tenth request slow, the same sequence for every server and round."""
    time.sleep(0.200 if environ.get("PATH_INFO") == "/slow" else 0.002)
    return _answer(start_response)


def cpu5(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Computes for 5 ms of this thread's CPU time (_compute), then answers two bytes."""
    _compute(CPU_SECONDS)
    return _answer(start_response)


# --- ASGI: the same work on the event loop -------------------------------------------------


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to set up or tear down, said so: servers that run the lifespan protocol
    (uvicorn, granian) then neither log a failure nor wait."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _send_text(send: Send, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def hello_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """examples/hello.py as an ASGI app: 13 bytes of plain text."""
    if scope["type"] != "http":
        return await _lifespan(receive, send)
    await _send_text(send, HELLO)


async def io20_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """io20 on the loop: awaits 20 ms, so every connection's request can wait at once."""
    if scope["type"] != "http":
        return await _lifespan(receive, send)
    await asyncio.sleep(0.020)
    await _send_text(send, BODY)


async def mixed_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """mixed on the loop: `/slow` awaits 200 ms, anything else 2 ms (bench/mixed.lua)."""
    if scope["type"] != "http":
        return await _lifespan(receive, send)
    await asyncio.sleep(0.200 if scope["path"] == "/slow" else 0.002)
    await _send_text(send, BODY)


async def cpu5_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """cpu5 in a coroutine: 5 ms of CPU that blocks the loop, and so every other connection
    of the worker, as an ASGI app that computes in its handler does."""
    if scope["type"] != "http":
        return await _lifespan(receive, send)
    _compute(CPU_SECONDS)
    await _send_text(send, BODY)
