"""ASGI apps for the `-k asgi` tests: a raw ASGI 3 callable (`app`) and a FastAPI one
(`api`), each doing what a test asks of it through its path."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

Scope = dict[str, Any]


async def deaf(receive: Any, query: dict[str, list[str]]) -> None:
    """Hears its client leave, then goes on: forever, or `?then=S` seconds. It never
    answers; what becomes of it is on stdout."""
    print("deaf waits", flush=True)
    try:
        await receive()  # the body (none)
        message = await receive()  # waits for the client to leave
        print(f"deaf saw {message['type']}", flush=True)
        if "then" in query:
            await asyncio.sleep(float(query["then"][0]))
            print("deaf still running after its client left", flush=True)
        else:
            await asyncio.Event().wait()
    except asyncio.CancelledError:
        print("deaf cancelled", flush=True)
        raise


async def read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return body
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def answer(send: Any, status: int, body: bytes, headers: list[Any] | None = None) -> None:
    start = headers or [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"][len(scope["root_path"]) :]  # the route, below the mount point
    query = parse_qs(scope["query_string"].decode())
    if path == "/echo":
        body = await read_body(receive)
        await answer(send, 200, body)
    elif path == "/scope":
        shown = {key: scope[key] for key in ("scheme", "root_path", "path", "http_version")}
        await answer(send, 200, repr(shown).encode())
    elif path == "/sleep":
        await asyncio.sleep(float(query["s"][0]))
        await answer(send, 200, f"slept {os.getpid()}".encode())
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one ", b"two ", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/boom":
        raise RuntimeError("the app fails on purpose")
    elif path == "/nothing":
        return  # no response at all
    elif path == "/deaf":
        await deaf(receive, query)
    elif path == "/disconnect":
        message = await receive()  # the body (none)
        message = await receive()  # then: waits for the client to leave
        print(f"saw {message['type']}", flush=True)
    else:
        await answer(send, 200, f"hello {path}".encode())


api = FastAPI()


@api.get("/items/{item_id}")
async def item(item_id: int, q: str | None = None) -> dict[str, Any]:
    return {"item_id": item_id, "q": q}


@api.post("/items")
async def create(request: Request) -> dict[str, Any]:
    data = await request.json()
    return {"received": data, "size": len(await request.body())}


@api.get("/numbers")
async def numbers() -> StreamingResponse:
    async def counting() -> AsyncIterator[bytes]:
        for number in range(5):
            yield f"{number}\n".encode()
            await asyncio.sleep(0)

    return StreamingResponse(counting(), media_type="text/plain")


def _environ_headers(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The headers as the WSGI environ names them (HTTP_X_Y, repeats joined with ","):
    the echo app answers in the WSGI twin's terms, so one test reads both."""
    keys: dict[str, str] = {}
    for name, value in headers:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        text = value.decode("latin-1")
        keys[key] = f"{keys[key]},{text}" if key in keys else text
    return keys


async def echo(scope: Scope, receive: Any, send: Any) -> None:
    """testapps.echo's twin: answers with what it saw, as JSON, and records it."""
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    headers = _environ_headers(scope["headers"])
    raw_path = scope["raw_path"]
    query = scope["query_string"].decode("latin-1")
    seen = {
        "method": scope["method"],
        "path": unquote_to_bytes(raw_path).decode("latin-1"),
        "script_name": scope["root_path"],
        "query": query,
        "raw_uri": raw_path.decode("latin-1") + (f"?{query}" if query else ""),
        "protocol": f"HTTP/{scope['http_version']}",
        "scheme": scope["scheme"],
        "remote_addr": scope["client"][0] if scope["client"] else None,
        "content_type": headers.get("CONTENT_TYPE"),
        "content_length": headers.get("CONTENT_LENGTH"),
        "headers": {k: v for k, v in headers.items() if k.startswith("HTTP_")},
        "body": body.decode("latin-1"),
        "pid": os.getpid(),
    }
    log = os.environ.get("ECHO_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(seen) + "\n")
    await answer(send, 200, json.dumps(seen).encode(), [(b"content-type", b"application/json")])


async def sleepy(scope: Scope, receive: Any, send: Any) -> None:
    """testapps.sleepy's twin: waits ?seconds (default 1), then answers with its pid."""
    if scope["type"] != "http":
        return
    query = parse_qs(scope["query_string"].decode())
    await asyncio.sleep(float(query.get("seconds", ["1"])[0]))
    await answer(send, 200, str(os.getpid()).encode())


async def lifespan_app(scope: Scope, receive: Any, send: Any) -> None:
    """Speaks the lifespan protocol: startup puts a greeting in the state (or fails, with
    LIFESPAN_FAIL set), requests read it, shutdown says so on stderr."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if os.environ.get("LIFESPAN_FAIL"):
                    await send({"type": "lifespan.startup.failed", "message": "no database"})
                    return
                await asyncio.sleep(float(os.environ.get("LIFESPAN_DELAY", "0")))
                scope["state"]["greeting"] = f"started in {os.getpid()}"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                print(f"lifespan shutdown in {os.getpid()}", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    elif scope["type"] == "http":
        await answer(send, 200, scope["state"]["greeting"].encode())


async def ws_echo(scope: Scope, receive: Any, send: Any) -> None:
    """A WebSocket echo ("close" makes the app close with 4000, "deaf" makes it wait
    forever); plain HTTP says hello."""
    if scope["type"] == "http":
        await answer(send, 200, b"hello")
        return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            print(f"websocket closed {message['code']}", flush=True)
            return
        if message.get("text") == "deaf":  # from now on, hears nothing
            print("websocket deaf", flush=True)
            await asyncio.Event().wait()
        if message.get("text") == "close":
            await send({"type": "websocket.close", "code": 4000, "reason": "asked"})
            return
        await send({"type": "websocket.send", **{k: v for k, v in message.items() if k != "type"}})


async def routes(scope: Scope, receive: Any, send: Any) -> None:
    """testapps.routes' twin for the routes the slow-client tests use: `/` and
    `/download?mb=N` (N MB, streamed in 64 KiB parts)."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/download":
        megabytes = int(parse_qs(scope["query_string"].decode()).get("mb", ["1"])[0])
        part = b"x" * 65536
        size = megabytes * 1024 * 1024
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", b"%d" % size),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(size // len(part)):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await answer(send, 200, b"Hello, World!")


async def slow_reader(scope: Scope, receive: Any, send: Any) -> None:
    """Takes one part of the body, then waits 5 s before reading on: the server must stop
    reading meanwhile, not hold the rest of the upload in memory."""
    if scope["type"] != "http":
        return
    first = await receive()
    body = bytes(first.get("body", b""))
    if first.get("more_body"):  # a small body (the test's warm-up) is answered at once
        await asyncio.sleep(5)
        body += await read_body(receive)
    await answer(send, 200, str(len(body)).encode())


async def balance(scope: Scope, receive: Any, send: Any) -> None:
    """testapps.routes' twin for the balance tests: `/pid` (which worker answers),
    `/announced-spin?seconds=S` (computes without awaiting: holds the loop, after a log line
    a test can wait for), `/announced-sleep?seconds=S` (awaits: holds nothing), `/echo`."""
    if scope["type"] != "http":
        return
    path = scope["path"]
    query = parse_qs(scope["query_string"].decode())
    seconds = float(query.get("seconds", ["1"])[0])
    if path in ("/announced-spin", "/announced-sleep"):
        target = f"{path}?{scope['query_string'].decode()}"
        os.write(2, f"testapps: {target} started in {os.getpid()}\n".encode())
        if path == "/announced-sleep":
            await asyncio.sleep(seconds)
        else:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                pass
    if path == "/echo":
        await answer(send, 200, await read_body(receive))
    else:
        await answer(send, 200, str(os.getpid()).encode())
