"""ASGI apps for the `-k asgi` tests: a raw ASGI 3 callable (`app`) and a FastAPI one
(`api`), each doing what a test asks of it through its path."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

Scope = dict[str, Any]


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
    start = [(b"content-type", b"text/plain"), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
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
