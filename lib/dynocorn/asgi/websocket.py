"""WebSocket sessions (RFC 6455) for ASGI apps, on wsproto's sans-IO connection.

The worker's connection protocol hands over a parsed upgrade request
(`is_websocket_upgrade`), then passes on every byte it reads (`feed`) and the loss of the
connection (`connection_lost`), while `run` calls the app with the ASGI ``websocket``
scope and its two callables.

How a session goes, as the app sees it (ASGI spec, "WebSocket"):

1. ``receive()`` returns ``websocket.connect``. The app answers with ``websocket.accept``
   (101, wsproto's ``AcceptConnection``), ``websocket.close`` (403, the handshake refused)
   or ``websocket.http.response.start`` and ``.body`` (the denial response extension: its
   own HTTP response). An app that raises first gets 500; one that returns without
   answering too (as uvicorn and hypercorn do: the app failed, the client did nothing
   forbidden). Frames a client sends before the answer wait for it.
2. Once accepted, each complete message (fragments joined) is a ``websocket.receive``;
   ``websocket.send`` sends one, ``websocket.close`` a close frame. Pings are answered
   here; the server pings every ``ping_interval`` and closes with 1011 when no pong comes
   within ``ping_timeout``. A message larger than ``max_message_size`` closes with 1009,
   without holding more than that limit of it.
3. Whichever side closes, the app's ``receive()`` returns ``websocket.disconnect`` with
   the close code, then again on every later call; ``send()`` then raises
   `ClientDisconnected`, an ``OSError`` (spec 2.4), except that a ``websocket.close`` on
   a closed session does nothing. An app that raises after accepting closes with 1011,
   one that returns closes with 1000.

Closing follows RFC 6455 §7: when the client closes, the reply frame goes out and the
server closes TCP; when the server closes, it waits for the client's close frame at most
``close_timeout`` seconds, then drops the connection.

Not negotiated: permessage-deflate. wsproto inflates a frame without bounding its output,
so a small compressed frame could grow past any message size limit.
"""

from __future__ import annotations

import asyncio
import enum
import os
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol, cast

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from dynocorn.asgi import ASGIApp, Message, Scope
from dynocorn.http import HTTPError, InternalServerError, ServiceUnavailable, http_date
from dynocorn.http import Request as HTTPRequest
from dynocorn.http.server_date import SERVER_NAME

__all__ = ["ClientDisconnected", "WebSocketSession", "is_websocket_upgrade", "websocket_scope"]

CLOSE_TIMEOUT = 10.0  # seconds a server-initiated close waits for the client's close frame
# The code the app is told when the connection ended without a close frame (RFC 6455 §7.1.5).
ABNORMAL_CLOSURE = 1006
SERVICE_RESTART = 1012
# Reading pauses while the app has this many messages waiting, or more than
# max_message_size bytes of them: a slow app holds the client back rather than filling
# memory.
_QUEUED_MESSAGES = 16


class ClientDisconnected(OSError):
    """``send()`` on a WebSocket session that is closed, by either side or by the network
    (ASGI spec 2.4 asks for an ``OSError``): the app may catch it and clean up."""


class Forbidden(HTTPError):
    """A WebSocket the app closed before accepting it (the ASGI spec's answer)."""

    status = 403


class _Log(Protocol):
    def debug(self, msg: object, *args: object) -> None: ...
    def warning(self, msg: object, *args: object) -> None: ...
    def exception(self, msg: object, *args: object) -> None: ...


class _State(enum.Enum):
    HANDSHAKE = "the app has not answered websocket.connect yet"
    RESPONDING = "sending the app's denial response"
    OPEN = "accepted, no close frame sent or received"
    CLOSING = "the server sent its close frame and waits for the client's"
    CLOSED = "nothing more can be sent"


def is_websocket_upgrade(request: HTTPRequest) -> bool:
    """A bodiless HTTP/1.1 GET asking to upgrade to WebSocket: an ``Upgrade`` list naming
    ``websocket`` and a ``Connection`` list naming ``upgrade`` (RFC 6455 §4.2.1)."""
    if request.method != "GET" or request.version != "HTTP/1.1":
        return False
    if request.chunked or request.content_length:
        return False
    upgrade = connection = False
    for name, value in request.headers:
        lower = name.lower()
        if lower == "upgrade":
            upgrade = upgrade or _lists_token(value, "websocket")
        elif lower == "connection":
            connection = connection or _lists_token(value, "upgrade")
    return upgrade and connection


def _lists_token(value: str, token: str) -> bool:
    return any(element.strip(" \t").lower() == token for element in value.split(","))


def websocket_scope(http_scope: Scope, subprotocols: list[str]) -> Scope:
    """The ``websocket`` scope of the request the ``http`` scope describes: the same
    connection and request details, a ws/wss scheme, no method, the client's subprotocols,
    and the denial response extension instead of any ``http.*`` one."""
    scope = dict(http_scope)
    scope.pop("method", None)
    scope["type"] = "websocket"
    scheme = http_scope.get("scheme", "http")
    scope["scheme"] = {"http": "ws", "https": "wss"}.get(scheme, scheme)
    scope["subprotocols"] = subprotocols
    extensions = {
        name: value
        for name, value in (http_scope.get("extensions") or {}).items()
        if not name.startswith("http.")
    }
    extensions["websocket.http.response"] = {}
    scope["extensions"] = extensions
    return scope


class WebSocketSession:
    """One upgraded connection and the app's WebSocket cycle on it (see module doc)."""

    def __init__(
        self,
        transport: asyncio.Transport,
        request: HTTPRequest,
        http_scope: Scope,
        *,
        max_message_size: int,
        ping_interval: float | None,
        ping_timeout: float | None,
        log: _Log,
        drain: Callable[[], Awaitable[None]] | None = None,
        close_timeout: float = CLOSE_TIMEOUT,
    ) -> None:
        self._transport = transport
        self._target = request.raw_target
        self._max_message_size = max_message_size
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._log = log
        self._drain = drain
        self._close_timeout = close_timeout
        self._loop = asyncio.get_running_loop()
        self._conn = WSConnection(ConnectionType.SERVER)
        self._state = _State.HANDSHAKE
        self._status: int | None = None
        self._bytes_sent = 0
        # What the app's receive() returns next: (message, its payload size).
        self._inbox: deque[tuple[Message, int]] = deque([({"type": "websocket.connect"}, 0)])
        self._inbox_bytes = 0
        self._inbox_waiter: asyncio.Future[None] | None = None
        self._disconnect_queued = False
        self._disconnect: Message | None = None  # once the app has received it
        self._early_frames = bytearray()  # sent by the client before the app's answer
        self._reading_paused = False
        self._fragments: list[str | bytes | bytearray] = []  # of the message arriving
        self._fragments_size = 0
        self._pong_waiter: asyncio.Future[None] | None = None
        self._ping_payload = b""
        self._keepalive: asyncio.Task[None] | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._finished = asyncio.Event()  # the transport is closed, or closing for good
        self.scope = websocket_scope(http_scope, self._read_handshake(request))

    # -- what the worker reads -----------------------------------------------------

    @property
    def status_code(self) -> int | None:
        """101 once accepted; the status of the HTTP response sent instead; None before."""
        return self._status

    @property
    def bytes_sent(self) -> int:
        """Bytes written to the connection: the handshake's response and every frame."""
        return self._bytes_sent

    # -- what the worker's protocol calls ------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes read from the connection after the upgrade request's head."""
        state = self._state
        if state is _State.OPEN or state is _State.CLOSING:
            self._receive_frames(data)
        elif state is _State.HANDSHAKE:
            self._early_frames += data
            self._update_reading()
        # RESPONDING or CLOSED: nothing the client sends matters any more.

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone: the app is told (1006 if no close frame came first)."""
        self._state = _State.CLOSED
        self._disconnect_app(ABNORMAL_CLOSURE, "")
        self._stop_timers()
        self._finished.set()

    def close(self, code: int = SERVICE_RESTART) -> None:
        """The server is stopping: close frame ``code`` (1012, service restart) on an
        accepted WebSocket; 503 while the app has not answered the handshake. A denial
        response being sent is left to finish."""
        if self._state is _State.OPEN:
            self._disconnect_app(code, "")
            self._start_closing(code, "")
        elif self._state is _State.HANDSHAKE:
            self._disconnect_app(code, "")
            self._refuse(ServiceUnavailable())

    async def run(self, app: ASGIApp) -> None:
        """Run the app's WebSocket cycle, then end the connection; returns once the close
        handshake is over or has timed out. Only a cancelled run raises (the connection
        is dropped)."""
        try:
            if self._state is _State.HANDSHAKE:  # not refused already
                await self._call(app)
            await self._finished.wait()
        except BaseException:
            self._end(abort=True)
            raise

    async def _call(self, app: ASGIApp) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            self._after_app(failed=False)
        except Exception:
            self._log.exception(f"Error handling WebSocket {self._target}")
            self._after_app(failed=True)
        else:
            self._after_app(failed=False, returned=True)

    # -- the app's callables -------------------------------------------------------

    async def receive(self) -> Message:
        """The app's ``receive``: connect, then messages, then disconnect for good."""
        while not self._inbox:
            if self._disconnect is not None:
                return dict(self._disconnect)
            self._inbox_waiter = self._loop.create_future()
            try:
                await self._inbox_waiter
            finally:
                self._inbox_waiter = None
        message, size = self._inbox.popleft()
        if message["type"] == "websocket.disconnect":
            self._disconnect = message
            return dict(message)
        if size:
            self._inbox_bytes -= size
            self._update_reading()
        return message

    async def send(self, message: Message) -> None:
        """The app's ``send``: the handshake's answer, then messages and the close."""
        kind = message["type"]
        state = self._state
        if state is _State.HANDSHAKE:
            self._answer_handshake(kind, message)
        elif state is _State.RESPONDING:
            self._send_denial_body(kind, message)
        elif state is _State.OPEN:
            self._send_open(kind, message)
        elif kind == "websocket.close":
            return  # closing or closed already
        else:
            raise ClientDisconnected(f"{kind} on a closed WebSocket ({self._target})")
        if self._drain is not None:
            await self._drain()

    # -- the handshake -------------------------------------------------------------

    def _read_handshake(self, request: HTTPRequest) -> list[str]:
        """Feed wsproto the request's head; return the client's subprotocols. A handshake
        wsproto refuses (no key, another version) is answered here: 400 or 426."""
        refusal = RejectConnection()
        try:
            self._conn.receive_data(request.head)
            for event in self._conn.events():
                if isinstance(event, Request):
                    return list(event.subprotocols)
            detail = "incomplete upgrade request"
        except RemoteProtocolError as exc:
            if isinstance(exc.event_hint, RejectConnection):
                refusal = exc.event_hint
            detail = str(exc)
        self._log.debug(f"WebSocket handshake refused ({self._target}): {detail}")
        headers = [*refusal.headers, (b"connection", b"close")]
        self._write(self._conn.send(RejectConnection(refusal.status_code, headers)))
        self._status = refusal.status_code
        self._end(abort=False)
        return []

    def _answer_handshake(self, kind: str, message: Message) -> None:
        if kind == "websocket.accept":
            self._accept(message)
        elif kind == "websocket.close":
            self._disconnect_app(ABNORMAL_CLOSURE, "")
            self._refuse(Forbidden())
        elif kind == "websocket.http.response.start":
            self._start_denial(message)
        else:
            raise RuntimeError(
                "expected ASGI message 'websocket.accept', 'websocket.close' or"
                f" 'websocket.http.response.start', got {kind!r}"
            )

    def _accept(self, message: Message) -> None:
        headers = _response_headers(message)
        if any(name == b"sec-websocket-protocol" for name, _ in headers):
            raise RuntimeError("websocket.accept: use 'subprotocol', not the header")
        event = AcceptConnection(subprotocol=message.get("subprotocol"), extra_headers=headers)
        try:
            data = self._conn.send(event)
        except LocalProtocolError as exc:  # a subprotocol the client did not offer, a bad header
            raise RuntimeError(f"websocket.accept refused: {exc}") from None
        self._state = _State.OPEN
        self._status = 101
        self._write(data)
        if self._ping_interval is not None:
            self._keepalive = self._loop.create_task(self._ping_every(self._ping_interval))
        early, self._early_frames = bytes(self._early_frames), bytearray()
        self._update_reading()
        if early:
            self._receive_frames(early)

    def _start_denial(self, message: Message) -> None:
        status = message["status"]
        if not isinstance(status, int) or not 200 <= status <= 599:
            raise RuntimeError(f"websocket.http.response.start: invalid status {status!r}")
        headers = _response_headers(message)
        if not any(name == b"connection" for name, _ in headers):
            headers.append((b"connection", b"close"))  # the connection ends with the response
        try:
            data = self._conn.send(RejectConnection(status, headers, has_body=True))
        except LocalProtocolError as exc:
            raise RuntimeError(f"websocket.http.response.start refused: {exc}") from None
        self._state = _State.RESPONDING
        self._status = status
        self._write(data)

    def _send_denial_body(self, kind: str, message: Message) -> None:
        if kind != "websocket.http.response.body":
            raise RuntimeError(f"expected 'websocket.http.response.body', got {kind!r}")
        more = bool(message.get("more_body", False))
        event = RejectData(bytes(message.get("body", b"")), body_finished=not more)
        try:
            data = self._conn.send(event)
        except LocalProtocolError as exc:  # more body than its Content-Length
            raise RuntimeError(f"websocket.http.response.body refused: {exc}") from None
        self._write(data)
        if not more:
            self._disconnect_app(ABNORMAL_CLOSURE, "")
            self._end(abort=False)

    def _refuse(self, error: HTTPError) -> None:
        """Answer the handshake with one of the server's own error responses."""
        self._status = error.status
        self._write(error.render())
        self._end(abort=False)

    # -- an open WebSocket ---------------------------------------------------------

    def _send_open(self, kind: str, message: Message) -> None:
        if kind == "websocket.send":
            self._write(self._conn.send(_data_message(message)))
        elif kind == "websocket.close":
            code = message.get("code") or 1000
            reason = message.get("reason") or ""
            self._disconnect_app(code, reason)
            self._start_closing(code, reason)
        else:
            raise RuntimeError(f"expected 'websocket.send' or 'websocket.close', got {kind!r}")

    def _receive_frames(self, data: bytes) -> None:
        self._conn.receive_data(data)
        for event in self._conn.events():
            if isinstance(event, TextMessage | BytesMessage):
                if self._state is _State.OPEN:  # after a close frame, data is dropped
                    self._add_fragment(event.data, event.message_finished)
            elif isinstance(event, Ping):
                if self._conn.state is ConnectionState.OPEN:
                    self._write(self._conn.send(event.response()))
            elif isinstance(event, Pong):
                waiter = self._pong_waiter
                if waiter is not None and not waiter.done() and event.payload == self._ping_payload:
                    waiter.set_result(None)
            elif isinstance(event, CloseConnection):
                self._on_close_frame(event)

    def _add_fragment(self, data: str | bytes | bytearray, finished: bool) -> None:
        # Text is measured as its UTF-8 bytes, like binary data.
        size = len(data.encode()) if isinstance(data, str) and not data.isascii() else len(data)
        self._fragments_size += size
        if self._fragments_size > self._max_message_size:
            self._fragments.clear()
            limit = self._max_message_size
            self._log.debug(f"WebSocket message over {limit} bytes ({self._target}): closing")
            self._disconnect_app(1009, "")
            self._start_closing(1009, "message too big")
            return
        self._fragments.append(data)
        if not finished:
            return
        fragments, self._fragments = self._fragments, []
        size, self._fragments_size = self._fragments_size, 0
        message: Message = {"type": "websocket.receive"}
        if isinstance(data, str):
            message["text"] = "".join(cast("list[str]", fragments))
        else:
            message["bytes"] = b"".join(cast("list[bytes | bytearray]", fragments))
        self._deliver(message, size)

    def _on_close_frame(self, event: CloseConnection) -> None:
        state = self._conn.state
        if state is ConnectionState.REMOTE_CLOSING:  # the client closes: reply, then end
            self._disconnect_app(event.code, event.reason or "")
            self._write(self._conn.send(event.response()))
        elif state is ConnectionState.OPEN:
            # wsproto found the client's frames invalid (1002, 1007): fail the connection.
            self._log.debug(f"WebSocket protocol error ({self._target}): {event.reason}")
            self._disconnect_app(event.code, "")
            self._write(self._conn.send(CloseConnection(event.code)))
        # Otherwise the reply to the server's own close frame: the handshake is over.
        self._end(abort=False)

    def _start_closing(self, code: int, reason: str) -> None:
        """Send the server's close frame and wait, at most close_timeout, for the reply."""
        self._state = _State.CLOSING
        self._stop_timers()
        self._write(self._conn.send(CloseConnection(code, reason)))
        self._close_timer = self._loop.call_later(self._close_timeout, self._end, True)

    async def _ping_every(self, interval: float) -> None:
        """Keepalive: a ping every ``interval``; no pong within ping_timeout closes 1011."""
        timeout = self._ping_timeout
        count = 0
        while True:
            await asyncio.sleep(interval)
            if self._state is not _State.OPEN:
                return
            count += 1
            self._ping_payload = count.to_bytes(4, "big") + os.urandom(4)
            self._pong_waiter = self._loop.create_future()
            self._write(self._conn.send(Ping(self._ping_payload)))
            if timeout is None:
                continue
            while True:
                try:
                    await asyncio.wait_for(asyncio.shield(self._pong_waiter), timeout)
                    break
                except TimeoutError:
                    # While the app is behind, the pong may be waiting unread: not a
                    # dead client.
                    if self._reading_paused:
                        continue
                    if self._state is _State.OPEN:
                        self._log.debug(f"WebSocket keepalive timeout ({self._target})")
                        self._disconnect_app(1011, "")
                        self._start_closing(1011, "keepalive ping timeout")
                    return

    # -- the app's end -------------------------------------------------------------

    def _after_app(self, *, failed: bool, returned: bool = False) -> None:
        """End the connection as the app left it: an unanswered handshake gets 500, an
        open WebSocket a close frame (1011 after an error, 1000 after a return)."""
        state = self._state
        if state is _State.HANDSHAKE:
            if returned:
                self._log.warning(
                    f"WebSocket app returned without answering the handshake ({self._target})"
                )
            self._disconnect_app(ABNORMAL_CLOSURE, "")
            self._refuse(InternalServerError())
        elif state is _State.RESPONDING:
            if returned:
                self._log.warning(
                    f"WebSocket app returned before the end of its response ({self._target})"
                )
            self._end(abort=False)
        elif state is _State.OPEN:
            code = 1011 if failed else 1000
            self._disconnect_app(code, "")
            self._start_closing(code, "")

    # -- plumbing ------------------------------------------------------------------

    def _deliver(self, message: Message, size: int) -> None:
        self._inbox.append((message, size))
        self._inbox_bytes += size
        self._update_reading()
        waiter = self._inbox_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _disconnect_app(self, code: int, reason: str) -> None:
        """Queue the app's ``websocket.disconnect``: the first cause is the one it sees."""
        if not self._disconnect_queued:
            self._disconnect_queued = True
            self._deliver({"type": "websocket.disconnect", "code": code, "reason": reason}, 0)

    def _update_reading(self) -> None:
        backlog = len(self._early_frames) > self._max_message_size or (
            self._inbox_bytes > self._max_message_size or len(self._inbox) >= _QUEUED_MESSAGES
        )
        if backlog != self._reading_paused and not self._transport.is_closing():
            self._reading_paused = backlog
            if backlog:
                self._transport.pause_reading()
            else:
                self._transport.resume_reading()

    def _write(self, data: bytes) -> None:
        if data and not self._transport.is_closing():
            self._transport.write(data)
            self._bytes_sent += len(data)

    def _stop_timers(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None

    def _end(self, abort: bool) -> None:
        """Close the connection: flushing what is written, or at once (``abort``)."""
        self._state = _State.CLOSED
        self._stop_timers()
        if abort:
            self._transport.abort()
        else:
            self._transport.close()
        self._finished.set()


def _response_headers(message: Message) -> list[tuple[bytes, bytes]]:
    """The headers of an accept or a denial, with ``Server`` and ``Date`` as on every
    response, unless the app gave its own."""
    headers = [(bytes(name).lower(), bytes(value)) for name, value in message.get("headers") or ()]
    names = {name for name, _ in headers}
    if b"server" not in names:
        headers.append((b"server", SERVER_NAME.encode("ascii")))
    if b"date" not in names:
        headers.append((b"date", http_date()))
    return headers


def _data_message(message: Message) -> TextMessage | BytesMessage:
    """The frame for a ``websocket.send``: exactly one of ``bytes`` and ``text``."""
    data = message.get("bytes")
    text = message.get("text")
    if (data is None) == (text is None):
        raise RuntimeError("websocket.send needs exactly one of 'bytes' and 'text'")
    if data is not None:
        return BytesMessage(bytes(data))
    if not isinstance(text, str):
        raise TypeError(f"websocket.send 'text' must be str, not {type(text).__name__}")
    return TextMessage(text)
