"""One HTTP request's ASGI conversation: `receive()` hands the app its body, `send()` writes
its response.

The response is framed by the WSGI layer's own Response (wsgi.py: Content-Length or
chunked, keep-alive, HEAD, invalid headers refused), so both kinds of app get the same
bytes on the wire for the same status, headers and body. The app's int status and bytes
headers go to it as they are: the plan is remembered by them, so a repeated response is
not decoded again. The body streams both ways with
back-pressure: the connection stops reading while a body waits unread past a limit
(workers/asgi.py), and `send()` waits while the client is slower than the app.
"""

from __future__ import annotations

from typing import Protocol

from dynocorn.asgi import Message
from dynocorn.http import CONTINUE, Request
from dynocorn.wsgi import Response

DISCONNECT: Message = {"type": "http.disconnect"}


class Channel(Protocol):
    """What a cycle needs of its connection (workers/asgi.py's AsgiConnection)."""

    disconnected: bool
    write_paused: bool  # the client is slower than the app: drain() before writing more

    def write(self, data: bytes) -> None: ...

    async def more_body(self) -> None:
        """Until more of the request body, or the end of the connection, has come."""

    async def drain(self) -> None:
        """Until the client has read enough of what was written."""

    async def gone(self) -> None:
        """Until the connection has ended."""


class HttpCycle:
    __slots__ = ("body_done", "channel", "complete", "continued", "request", "response")

    def __init__(self, channel: Channel, request: Request, response: Response) -> None:
        self.channel = channel
        self.request = request
        self.response = response
        self.body_done = False  # the whole body went to the app
        self.complete = False  # the app sent its last body message
        self.continued = False  # 100 Continue sent

    async def receive(self) -> Message:
        channel, request = self.channel, self.request
        if self.body_done:
            # Nothing more to read: what is left to tell is the client leaving.
            if not self.complete and not channel.disconnected:
                await channel.gone()
            return DISCONNECT
        if request.expect_continue and not self.continued and not self.response.headers_sent:
            self.continued = True
            channel.write(CONTINUE)
        while not request.body and not request.complete and not channel.disconnected:
            await channel.more_body()
        if not request.body and not request.complete:  # the client left mid-body
            return DISCONNECT
        body = request.body.take()
        more = not request.complete
        self.body_done = not more
        return {"type": "http.request", "body": body, "more_body": more}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        response = self.response
        if self.channel.disconnected and kind in ("http.response.start", "http.response.body"):
            return  # nobody to answer (or refused already): the app learns it from receive()
        if kind == "http.response.start":
            if response.status is not None:
                raise RuntimeError("http.response.start sent twice")
            response.start_asgi(int(message["status"]), message.get("headers", ()))
        elif kind == "http.response.body":
            if response.status is None:
                raise RuntimeError("http.response.body before http.response.start")
            if self.complete:
                raise RuntimeError("http.response.body after the last one")
            await self.write_body(bytes(message.get("body", b"")), message.get("more_body", False))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} for an http request")

    async def write_body(self, body: bytes, more: bool) -> None:
        response = self.response
        if more:
            response.write(body)
        else:
            self.complete = True
            if response.headers_sent:
                response.write(body)
            else:
                response.send_whole(body)  # with its Content-Length
            response.finish()
        if self.channel.write_paused:  # checked here: a coroutine call costs every response
            await self.channel.drain()
