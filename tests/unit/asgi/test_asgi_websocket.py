"""WebSocket sessions (dynocorn.asgi.websocket) served over real loopback sockets to the
websockets client library, to a raw client for what that library will not do, and to
Starlette's WebSocket endpoints."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from ws_harness import Options, RawClient, Server, close_code, run, until

from dynocorn.asgi import Message, Receive, Scope, Send
from dynocorn.asgi.websocket import is_websocket_upgrade
from dynocorn.http import RequestParser

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        data = {"bytes": message.get("bytes"), "text": message.get("text")}
        await send({"type": "websocket.send", **data})


class Recording:
    """An app that accepts, then records what it receives until the disconnect, then what
    a receive and a send after the disconnect do."""

    def __init__(self) -> None:
        self.received: list[Message] = []
        self.send_after_disconnect: BaseException | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] != "websocket.disconnect":
            self.received.append(message)
        self.received.append(message)
        self.received.append(await receive())
        try:
            await send({"type": "websocket.send", "text": "too late"})
        except OSError as exc:
            self.send_after_disconnect = exc

    def disconnect(self) -> Message:
        assert self.received[-1] == self.received[-2]
        return self.received[-1]


def test_echoes_text_binary_and_fragmented_messages() -> None:
    async def scenario() -> None:
        async with Server(echo) as server:
            async with connect(server.url + "/echo") as ws:
                await ws.send("héllo")
                assert await ws.recv() == "héllo"
                await ws.send(b"\x00\xff")
                assert await ws.recv() == b"\x00\xff"
                await ws.send(["frag", "mé", "nts"])  # one message in three frames
                assert await ws.recv() == "fragménts"
            await server.finished()
        session = server.sessions[0]
        assert session.status_code == 101
        assert session.bytes_sent > 150  # the 101 response (about 130 bytes) and the frames
        assert server.log.lines == []

    run(scenario())


def test_scope_and_subprotocol_and_accept_headers() -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scopes.append(scope)
        await receive()
        headers = [(b"x-served-by", b"dynocorn")]
        await send({"type": "websocket.accept", "subprotocol": "chat.v2", "headers": headers})
        await send({"type": "websocket.close"})

    async def scenario() -> None:
        async with Server(app) as server:
            url = server.url + "/chat%20room?a=1"
            async with connect(url, subprotocols=["chat.v1", "chat.v2"]) as ws:  # type: ignore[list-item]
                assert ws.subprotocol == "chat.v2"
                assert ws.response is not None
                assert ws.response.headers["x-served-by"] == "dynocorn"
                assert ws.response.headers["server"] == "dynocorn"
                assert "date" in ws.response.headers
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000

    run(scenario())
    (scope,) = scopes
    assert scope["type"] == "websocket"
    assert scope["scheme"] == "ws"
    assert "method" not in scope
    assert (scope["path"], scope["raw_path"]) == ("/chat room", b"/chat%20room")
    assert scope["query_string"] == b"a=1"
    assert scope["subprotocols"] == ["chat.v1", "chat.v2"]
    assert scope["extensions"] == {"websocket.http.response": {}}  # no http.* extension
    assert scope["asgi"]["version"] == "3.0"
    assert (b"upgrade", b"websocket") in scope["headers"]
    assert scope["client"][0] == scope["server"][0] == "127.0.0.1"


@pytest.mark.parametrize(
    ("message", "passes"),
    [
        pytest.param(b"x" * (1 << 20), True, id="binary-at-limit"),
        pytest.param("é" * (1 << 19), True, id="text-at-limit-in-utf8-bytes"),
        pytest.param(b"x" * (2 << 20), False, id="binary-2MB"),
        pytest.param("é" * ((1 << 19) + 1), False, id="text-over-in-utf8-bytes"),
        pytest.param(["x" * 600_000, "x" * 600_000], False, id="fragments-over"),
    ],
)
def test_message_size_limit_closes_1009(message: Any, passes: bool) -> None:
    recording = Recording()

    async def scenario() -> None:
        async with Server(recording, Options(max_message_size=1 << 20)) as server:
            async with connect(server.url, max_size=None) as ws:
                await ws.send(message)
                if passes:
                    await ws.close()
                else:
                    with pytest.raises(ConnectionClosed) as closed:
                        await ws.recv()
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
            await server.finished()

    run(scenario())
    if passes:
        assert len(recording.received) == 3
        assert recording.received[0]["type"] == "websocket.receive"
        assert recording.disconnect()["code"] == 1000
    else:
        assert len(recording.received) == 2  # no message, the disconnect twice
        assert recording.disconnect()["code"] == 1009


def test_client_close_code_reaches_the_app_and_send_after_it_raises_oserror() -> None:
    recording = Recording()

    async def scenario() -> None:
        async with Server(recording) as server:
            async with connect(server.url) as ws:
                await ws.send("one")
                await ws.close(4001, "bye")
            await server.finished()
        assert server.log.lines == []  # the app's caught OSError is not an error

    run(scenario())
    assert recording.received[0] == {"type": "websocket.receive", "text": "one"}
    assert recording.disconnect() == {"type": "websocket.disconnect", "code": 4001, "reason": "bye"}
    assert isinstance(recording.send_after_disconnect, OSError)


def test_app_close_code_and_reason_reach_the_client() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 4000, "reason": "done"})
        await send({"type": "websocket.close"})  # closed already: nothing happens

    async def scenario() -> None:
        async with Server(app) as server:
            async with connect(server.url) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None
                assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "done")
            await server.finished()
        assert server.log.lines == []

    run(scenario())


def test_denial_response_extension() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        assert "websocket.http.response" in scope["extensions"]
        headers = [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]
        await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": b"go ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"away"})

    async def scenario() -> None:
        async with Server(app) as server:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(server.url):
                    pass
            response = refused.value.response
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.headers["server"] == "dynocorn"
            assert response.body == b"go away"
            await server.finished()
        assert server.sessions[0].status_code == 401

    run(scenario())


async def close_before_accept(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.close"})


async def raise_before_accept(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    raise ValueError("app bug")


async def return_before_accept(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()


async def accept_unoffered_subprotocol(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept", "subprotocol": "not-offered"})


@pytest.mark.parametrize(
    ("app", "status", "logged"),
    [
        (close_before_accept, 403, []),
        (raise_before_accept, 500, ["exception"]),
        (return_before_accept, 500, ["warning"]),
        (accept_unoffered_subprotocol, 500, ["exception"]),
    ],
)
def test_handshake_refused_by_the_app(app: Any, status: int, logged: list[str]) -> None:
    async def scenario() -> None:
        async with Server(app) as server:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(server.url):
                    pass
            assert refused.value.response.status_code == status
            await server.finished()
        assert server.sessions[0].status_code == status
        assert server.log.levels() == logged

    run(scenario())


@pytest.mark.parametrize(("fails", "code"), [(True, 1011), (False, 1000)])
def test_app_end_after_accept_closes(fails: bool, code: int) -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await receive()
        if fails:
            raise ValueError("app bug")

    async def scenario() -> None:
        async with Server(app) as server:
            async with connect(server.url) as ws:
                await ws.send("go")
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == code
            await server.finished()
        assert server.log.levels() == (["exception"] if fails else [])

    run(scenario())


def test_server_close_sends_1012_and_tells_the_app() -> None:
    recording = Recording()

    async def scenario() -> None:
        async with Server(recording) as server:
            async with connect(server.url) as ws:
                server.sessions[0].close()
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            await server.finished()

    run(scenario())
    assert recording.disconnect()["code"] == 1012


def test_server_close_during_the_handshake_answers_503() -> None:
    connected = asyncio.Event()
    gate = asyncio.Event()
    accept_error: list[BaseException] = []
    disconnects: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        connected.set()
        await gate.wait()
        disconnects.append((await receive())["code"])
        try:
            await send({"type": "websocket.accept"})
        except OSError as exc:
            accept_error.append(exc)

    async def scenario() -> None:
        async with Server(app) as server:
            client = asyncio.create_task(connect(server.url).__aenter__())
            await connected.wait()
            server.sessions[0].close()
            with pytest.raises(InvalidStatus) as refused:
                await client
            assert refused.value.response.status_code == 503
            gate.set()
            await server.finished()
        assert server.sessions[0].status_code == 503

    run(scenario())
    assert len(accept_error) == 1
    assert disconnects == [1012]


def test_client_ping_is_answered() -> None:
    async def scenario() -> None:
        async with Server(echo) as server, connect(server.url, ping_interval=None) as ws:
            pong = await ws.ping(b"are you there")
            await pong

    run(scenario())


def test_keepalive_pings_and_closes_1011_without_a_pong() -> None:
    recording = Recording()
    options = Options(ping_interval=0.02, ping_timeout=1.0, close_timeout=0.05)

    async def scenario() -> None:
        async with (
            Server(recording, options) as server,
            await RawClient.connect(server.port) as client,
        ):
            client.writer.write(RawClient.upgrade_request())
            assert (await client.read_head())[0] == 101
            opcode, payload = await client.read_frame()
            assert opcode == PING
            client.writer.write(RawClient.frame(PONG, payload))
            # A second ping, not a close: the pong was taken. This one goes unanswered.
            assert (await client.read_frame())[0] == PING
            opcode, payload = await client.read_frame()
            assert (opcode, close_code(payload)) == (CLOSE, 1011)
            assert await client.reader.read() == b""  # dropped after close_timeout
            await server.finished()

    run(scenario())
    assert recording.disconnect()["code"] == 1011


def test_frames_sent_before_the_101_wait_for_the_accept() -> None:
    async def scenario() -> None:
        async with Server(echo) as server, await RawClient.connect(server.port) as client:
            frames = RawClient.frame(TEXT, b"ear", fin=False) + RawClient.frame(0, b"ly")
            client.writer.write(RawClient.upgrade_request() + frames)
            assert (await client.read_head())[0] == 101
            assert await client.read_frame() == (TEXT, b"early")
            client.writer.write(RawClient.frame(CLOSE, b"\x03\xe8"))
            assert (await client.read_frame())[0] == CLOSE
            assert await client.reader.read() == b""  # the server closes TCP first
            await server.finished()

    run(scenario())


def test_invalid_utf8_closes_1007() -> None:
    recording = Recording()

    async def scenario() -> None:
        async with Server(recording) as server, await RawClient.connect(server.port) as client:
            client.writer.write(RawClient.upgrade_request())
            assert (await client.read_head())[0] == 101
            client.writer.write(RawClient.frame(TEXT, b"\xff\xfe"))
            opcode, payload = await client.read_frame()
            assert (opcode, close_code(payload)) == (CLOSE, 1007)
            assert await client.reader.read() == b""
            await server.finished()

    run(scenario())
    assert recording.disconnect()["code"] == 1007


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (RawClient.upgrade_request(key=False), 400),
        (RawClient.upgrade_request(version="8"), 426),
    ],
)
def test_handshake_refused_by_the_server(request_bytes: bytes, status: int) -> None:
    called: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        called.append(scope)

    async def scenario() -> None:
        async with Server(app) as server, await RawClient.connect(server.port) as client:
            client.writer.write(request_bytes)
            got, head = await client.read_head()
            assert got == status
            if status == 426:
                assert b"Sec-WebSocket-Version: 13" in head
            await server.finished()
        assert server.sessions[0].status_code == status

    run(scenario())
    assert called == []


def _parse(head: str) -> Any:
    parser = RequestParser()
    parser.feed(head.replace("\n", "\r\n").encode() + b"\r\n")
    return parser.requests[0]


UPGRADE = "Host: a\nUpgrade: websocket\nConnection: Upgrade\n"


@pytest.mark.parametrize(
    ("head", "upgrade"),
    [
        ("GET / HTTP/1.1\n" + UPGRADE, True),
        ("GET / HTTP/1.1\nHost: a\nUpgrade: WebSocket\nConnection: keep-alive, Upgrade\n", True),
        ("GET / HTTP/1.1\nHost: a\nUpgrade: h2c, websocket\nConnection: upgrade\n", True),
        ("GET / HTTP/1.1\nHost: a\nUpgrade: h2c\nConnection: Upgrade\n", False),
        ("GET / HTTP/1.1\nHost: a\nUpgrade: websocket\nConnection: keep-alive\n", False),
        ("GET / HTTP/1.1\nHost: a\n", False),
        ("POST / HTTP/1.1\n" + UPGRADE, False),
        ("GET / HTTP/1.0\n" + UPGRADE, False),
        ("GET / HTTP/1.1\n" + UPGRADE + "Content-Length: 3\n", False),
    ],
)
def test_is_websocket_upgrade(head: str, upgrade: bool) -> None:
    assert is_websocket_upgrade(_parse(head)) is upgrade


def starlette_app(close_codes: list[int]) -> Starlette:
    """Starlette's WebSocket endpoint class, a denial through its response extension
    support, and its router's refusal of a path it does not know."""

    class Echo(WebSocketEndpoint):
        encoding = "text"

        async def on_receive(self, websocket: WebSocket, data: Any) -> None:
            await websocket.send_text(f"echo: {data}")

        async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
            close_codes.append(close_code)

    async def deny(websocket: WebSocket) -> None:
        await websocket.send_denial_response(PlainTextResponse("no entry", status_code=401))

    return Starlette(routes=[WebSocketRoute("/echo", Echo), WebSocketRoute("/deny", deny)])


def test_starlette_endpoints() -> None:
    close_codes: list[int] = []

    async def scenario() -> None:
        async with Server(starlette_app(close_codes)) as server:
            async with connect(server.url + "/echo") as ws:
                await ws.send("hi")
                assert await ws.recv() == "echo: hi"
            with pytest.raises(InvalidStatus) as denied:
                async with connect(server.url + "/deny"):
                    pass
            assert denied.value.response.status_code == 401
            assert denied.value.response.body == b"no entry"
            with pytest.raises(InvalidStatus) as missing:
                async with connect(server.url + "/missing"):
                    pass
            assert missing.value.response.status_code == 403
            await server.finished()
        assert [session.status_code for session in server.sessions] == [101, 401, 403]
        assert server.log.lines == []

    run(scenario())
    assert close_codes == [1000]


def test_reading_pauses_while_the_app_is_behind() -> None:
    gate = asyncio.Event()
    received: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await gate.wait()
        while (message := await receive())["type"] == "websocket.receive":
            received.append(message["text"])

    async def scenario() -> None:
        async with Server(app) as server, connect(server.url) as ws:
            for number in range(40):
                await ws.send(str(number))
            transport = server.connections[0].transport
            await until(lambda: not transport.is_reading())  # 16 messages wait
            gate.set()
            await until(lambda: len(received) == 40)
            assert transport.is_reading()

    run(scenario())
    assert received == [str(number) for number in range(40)]


def test_sending_waits_for_the_client_to_read() -> None:
    sent: list[int] = []
    chunk = b"x" * (64 << 10)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        for number in range(400):  # 25 MiB: more than the sockets' buffers hold
            await send({"type": "websocket.send", "bytes": chunk})
            sent.append(number)

    async def scenario() -> None:
        async with Server(app) as server, await RawClient.connect(server.port) as client:
            client.writer.write(RawClient.upgrade_request())
            assert (await client.read_head())[0] == 101
            connection = server.connections[0]
            await until(lambda: not connection.writable.is_set())
            # The app waits in send() for the buffer to drain: it has not sent everything.
            assert len(sent) < 400
            assert connection.transport.get_write_buffer_size() < 1 << 20
        assert server.log.lines == []  # the send after the client left raised quietly

    run(scenario())


def test_cancelled_run_drops_the_connection() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close"})

    async def scenario() -> None:
        options = Options(close_timeout=60)  # never reached: the cancel drops at once
        async with Server(app, options) as server, await RawClient.connect(server.port) as client:
            client.writer.write(RawClient.upgrade_request())
            assert (await client.read_head())[0] == 101
            assert (await client.read_frame())[0] == CLOSE  # not answered
            run_task = server.runs.pop()
            run_task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run_task
            assert await client.reader.read() == b""

    run(scenario())
