"""A small asyncio server for the WebSocket session tests, wired as the ASGI worker's
connection protocol must be, and a raw client that speaks frames by hand.

The order of calls the worker replicates:

1. bytes go to the HTTP parser only up to the end of the upgrade request's head (the
   parser would read frame bytes after it as a next request);
2. ``is_websocket_upgrade(request)``; if so, ``WebSocketSession(transport, request,
   http_scope, ...)``, which may already have answered a handshake it refuses (400, 426);
3. the bytes after the head, if any, go to ``session.feed``, then ``run(app)`` starts as a
   task; later ``data_received`` calls ``feed``, ``connection_lost`` calls
   ``connection_lost``, ``pause_writing``/``resume_writing`` drive ``drain``;
4. on a graceful stop, ``session.close()``, then the run task is awaited; its end is when
   the access log line is written (``status_code``, ``bytes_sent``).
"""

from __future__ import annotations

import asyncio
import os
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from dynocorn.asgi import ASGI_VERSION, ASGIApp, Scope
from dynocorn.asgi.websocket import WebSocketSession, is_websocket_upgrade
from dynocorn.http import Request, RequestParser

LOOPBACK = "127.0.0.1"


class RecordingLog:
    """The error log's four methods, keeping what was logged."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, type[BaseException] | None]] = []

    def _add(self, level: str, msg: object, args: tuple[object, ...]) -> None:
        text = str(msg) % args if args else str(msg)
        self.lines.append((level, text, sys.exc_info()[0] if level == "exception" else None))

    def debug(self, msg: object, *args: object) -> None:
        self._add("debug", msg, args)

    def info(self, msg: object, *args: object) -> None:
        self._add("info", msg, args)

    def warning(self, msg: object, *args: object) -> None:
        self._add("warning", msg, args)

    def exception(self, msg: object, *args: object) -> None:
        self._add("exception", msg, args)

    def levels(self) -> list[str]:
        return [level for level, _, _ in self.lines]


@dataclass
class Options:
    max_message_size: int = 1 << 20
    ping_interval: float | None = None
    ping_timeout: float | None = None
    close_timeout: float = 5.0


def http_scope(request: Request, transport: asyncio.Transport) -> Scope:
    """The ``http`` scope, as the worker builds it, of an upgrade request."""
    client = transport.get_extra_info("peername")
    server = transport.get_extra_info("sockname")
    return {
        "type": "http",
        "asgi": dict(ASGI_VERSION),
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": unquote(request.path),
        "raw_path": request.path.encode("latin-1"),
        "query_string": request.query.encode("latin-1"),
        "root_path": "",
        "headers": [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in request.headers
        ],
        "client": (client[0], client[1]),
        "server": (server[0], server[1]),
        "state": {},
        "extensions": {"http.response.trailers": {}},
    }


class _Connection(asyncio.Protocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.head = bytearray()
        self.session: WebSocketSession | None = None
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.append(self)

    def data_received(self, data: bytes) -> None:
        if self.session is not None:
            self.session.feed(data)
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return
        parser = RequestParser()
        parser.feed(bytes(self.head[: end + 4]))
        rest = bytes(self.head[end + 4 :])
        request = parser.requests.popleft()
        if not is_websocket_upgrade(request):
            self.transport.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
            self.transport.close()
            return
        options = self.server.options
        self.session = WebSocketSession(
            self.transport,
            request,
            http_scope(request, self.transport),
            max_message_size=options.max_message_size,
            ping_interval=options.ping_interval,
            ping_timeout=options.ping_timeout,
            log=self.server.log,
            drain=self.drain,
            close_timeout=options.close_timeout,
        )
        self.server.sessions.append(self.session)
        if rest:
            self.session.feed(rest)
        self.server.runs.append(asyncio.create_task(self.session.run(self.server.app)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.writable.set()
        if self.session is not None:
            self.session.connection_lost(exc)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    async def drain(self) -> None:
        await self.writable.wait()


@dataclass
class Server:
    """``async with Server(app) as server``: listening on loopback, port 0."""

    app: ASGIApp
    options: Options = field(default_factory=Options)
    log: RecordingLog = field(default_factory=RecordingLog)
    sessions: list[WebSocketSession] = field(default_factory=list)
    connections: list[_Connection] = field(default_factory=list)
    runs: list[asyncio.Task[None]] = field(default_factory=list)

    async def __aenter__(self) -> Server:
        loop = asyncio.get_running_loop()
        self.listener = await loop.create_server(lambda: _Connection(self), LOOPBACK, 0)
        self.port = self.listener.sockets[0].getsockname()[1]
        self.url = f"ws://{LOOPBACK}:{self.port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.listener.close()
        for session in self.sessions:
            session.close()
        await self.finished()
        await self.listener.wait_closed()

    async def finished(self) -> None:
        """Every session's run has returned (within 5 s)."""
        await asyncio.wait_for(asyncio.gather(*self.runs), 5)


async def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    """Poll ``condition`` until it holds (at most ``timeout`` seconds)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def run(scenario: Any, timeout: float = 15) -> None:
    """Run a test's coroutine on a fresh loop, bounded."""
    asyncio.run(asyncio.wait_for(scenario, timeout))


class RawClient:
    """A WebSocket client that writes and reads frames by hand: for what a library client
    will not do (stay silent to pings, send invalid frames, send frames early)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection(LOOPBACK, port)
        return cls(reader, writer)

    @staticmethod
    def upgrade_request(path: str = "/", *, key: bool = True, version: str = "13") -> bytes:
        lines = [
            f"GET {path} HTTP/1.1",
            "Host: example.com",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Version: {version}",
        ]
        if key:
            lines.append("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def read_head(self) -> tuple[int, bytes]:
        """The response's status and head."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), head

    @staticmethod
    def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
        """A client frame: masked, as RFC 6455 requires."""
        mask = os.urandom(4)
        first = (0x80 if fin else 0) | opcode
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", first, 0x80 | size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", first, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", first, 0x80 | 127, size)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        return header + mask + masked

    async def read_frame(self) -> tuple[int, bytes]:
        """The next server frame (unmasked): its opcode and payload."""
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(size)

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.writer.close()
        await self.writer.wait_closed()


def close_code(payload: bytes) -> int:
    return int(struct.unpack("!H", payload[:2])[0])
