"""ASGI apps for the tests of what each worker class serves: a raw ASGI 3 callable and a real
FastAPI app, which the WSGI worker classes must refuse with a line naming `-k asgi`."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI


async def raw(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"Hello, ASGI"})


api = FastAPI()


@api.get("/")
def root() -> dict[str, str]:
    return {"hello": "world"}
