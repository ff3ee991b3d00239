"""`-k asgi`: ASGI 3 apps (a raw callable, FastAPI) served by the real server, talked to by
real clients (requests, raw sockets), on asyncio's loop and on uvloop's."""

from __future__ import annotations

import json
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from clients import get, poll
from dynocorn.ctl import ask
from rawhttp import read_response
from server import REPO, Server, running

LOOPS = ["asyncio", "uvloop"]
EXAMPLES = REPO / "examples"


@pytest.fixture(params=LOOPS)
def loop_args(request: pytest.FixtureRequest) -> list[str]:
    return ["-k", "asgi", "--asgi-loop", request.param]


@pytest.fixture
def raw(loop_args: list[str]) -> Iterator[Server]:
    with running([*loop_args, "--access-logfile", "-", "asgi_apps:app"]) as server:
        yield server


def exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_request_and_its_body_reach_the_app(raw: Server) -> None:
    assert get(raw, "/x").text == "hello /x"
    echoed = requests.post(f"http://127.0.0.1:{raw.port}/echo", data=b"abc" * 1000, timeout=10)
    assert echoed.content == b"abc" * 1000
    assert echoed.headers["Content-Length"] == "3000"
    chunked = requests.post(
        f"http://127.0.0.1:{raw.port}/echo", data=iter([b"one", b"two"]), timeout=10
    )  # a generator: requests sends it chunked
    assert chunked.content == b"onetwo"


def test_a_large_upload_streams_through(raw: Server) -> None:
    body = bytes(range(256)) * 40_000  # 10 MB: more than the connection buffers unread
    echoed = requests.post(f"http://127.0.0.1:{raw.port}/echo", data=body, timeout=30)
    assert echoed.content == body


def test_pipelined_requests_are_answered_in_order(raw: Server) -> None:
    answer = exchange(
        raw.port,
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert answer.count(b"HTTP/1.1 200 OK") == 3
    echoed = answer.index(b"\r\n\r\nhelloHTTP/1.1")  # the body, then the next answer
    assert answer.index(b"hello /a") < echoed < answer.index(b"hello /c")


def test_a_streamed_response_is_chunked(raw: Server) -> None:
    response = get(raw, "/stream")
    assert response.text == "one two three"
    assert response.headers["Transfer-Encoding"] == "chunked"


def test_a_bad_request_gets_400_and_the_worker_serves_on(raw: Server) -> None:
    workers = raw.worker_pids()
    smuggling = b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n"
    answer = exchange(raw.port, b"GET /x HTTP/1.1\r\nHost: x\r\n" + smuggling + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert get(raw, "/after").text == "hello /after"
    assert raw.worker_pids() == workers


def test_an_app_that_fails_gets_500_and_its_traceback_logged(raw: Server) -> None:
    assert get(raw, "/boom").status_code == 500
    raw.wait_for(r"Error handling request /boom")
    raw.wait_for(r"RuntimeError: the app fails on purpose")
    assert get(raw, "/nothing").status_code == 500
    raw.wait_for(r"The app returned without a response to /nothing")
    assert get(raw, "/fine").status_code == 200


def test_the_scheme_follows_a_trusted_proxy(raw: Server) -> None:
    shown = requests.get(
        f"http://127.0.0.1:{raw.port}/scope", headers={"X-Forwarded-Proto": "https"}, timeout=10
    ).text
    assert "'scheme': 'https'" in shown  # 127.0.0.1 is trusted by default
    assert "'http_version': '1.1'" in shown


def test_the_access_log_has_gunicorn_s_line(raw: Server) -> None:
    get(raw, "/logged")
    raw.wait_for(r'"GET /logged HTTP/1.1" 200 13 "-" "python-requests/', stdout=True)


def test_a_request_past_timeout_gets_500_and_its_stack_is_logged(loop_args: list[str]) -> None:
    with running([*loop_args, "--timeout", "2", "asgi_apps:app"]) as server:
        workers = server.worker_pids()
        response = get(server, "/sleep?s=60", timeout=20)
        assert response.status_code == 500
        server.wait_for(r"Request timed out after 2s")
        server.wait_for(r"asgi_apps\.py.* in app")  # the app's own frame, where it waited
        assert get(server, "/after").status_code == 200
        assert server.worker_pids() == workers  # an awaiting request does not cost the worker


def test_term_answers_the_request_in_flight_and_exits_0(loop_args: list[str]) -> None:
    with running([*loop_args, "asgi_apps:app"]) as server:
        got: list[requests.Response] = []
        client = threading.Thread(target=lambda: got.append(get(server, "/sleep?s=1")))
        client.start()
        server.wait_for(r"Booting worker")
        poll(lambda: _busy(server), 10, "the request running")
        server.signal(signal.SIGTERM)
        assert server.wait_exit(20) == 0
        client.join(10)
        assert got and got[0].status_code == 200
        assert got[0].headers["Connection"] == "close"


def _busy(server: Server) -> bool:
    """Whether a worker runs a request now, as the control socket says."""
    path = Path(server.wait_for(r"Control socket: (\S+) ")[0].group(1))
    return any(row["running"] > 0 for row in ask(path, "status", [])["workers"])


def test_fastapi_json_and_streaming(loop_args: list[str]) -> None:
    with running([*loop_args, "-w", "2", "asgi_apps:api"], workers=2) as server:
        assert get(server, "/items/7?q=x").json() == {"item_id": 7, "q": "x"}
        created = requests.post(
            f"http://127.0.0.1:{server.port}/items", json={"name": "é" * 3}, timeout=10
        )
        sent = len(json.dumps({"name": "ééé"}))  # as requests encodes it: \u00e9, ASCII
        assert created.json() == {"received": {"name": "ééé"}, "size": sent}
        assert get(server, "/numbers").text == "0\n1\n2\n3\n4\n"
        assert get(server, "/items/nope").status_code == 422
        assert get(server, "/missing").status_code == 404


def test_lifespan_state_reaches_requests_and_shutdown_runs_at_stop(loop_args: list[str]) -> None:
    with running([*loop_args, "--lifespan", "on", "asgi_apps:lifespan_app"]) as server:
        worker = server.worker_pids()[0]
        assert get(server, "/").text == f"started in {worker}"
        server.wait_for(r"Application startup complete")
        assert server.stop() == 0
        server.wait_for(rf"lifespan shutdown in {worker}", stdout=True)


def test_a_failed_lifespan_startup_stops_the_server(loop_args: list[str]) -> None:
    env = {"LIFESPAN_FAIL": "1"}
    server = Server([*loop_args, "asgi_apps:lifespan_app"], env=env)
    try:
        assert server.wait_exit(30) == 4
        assert "no database" in server.log
        assert "its lifespan startup failed" in server.log
        assert len(server.booted_pids()) == 1  # stopped, not a crash loop
    finally:
        server.kill_group()


def test_a_websocket_echoes_and_closes_with_the_app_s_code(loop_args: list[str]) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with running([*loop_args, "--access-logfile", "-", "asgi_apps:ws_echo"]) as server:
        assert get(server, "/").text == "hello"
        with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=10) as websocket:
            websocket.send("hi")
            assert websocket.recv(timeout=10) == "hi"
            websocket.send(b"\x00\x01")
            assert websocket.recv(timeout=10) == b"\x00\x01"
            websocket.send("close")
            with pytest.raises(ConnectionClosed) as closed:
                websocket.recv(timeout=10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000
        server.wait_for(r'"GET /ws HTTP/1.1" 101 ', stdout=True)


def test_a_stopping_server_closes_websockets_with_1012(loop_args: list[str]) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with running([*loop_args, "asgi_apps:ws_echo"]) as server:
        with connect(f"ws://127.0.0.1:{server.port}/", open_timeout=10) as websocket:
            websocket.send("ping")
            assert websocket.recv(timeout=10) == "ping"
            server.signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as closed:
                websocket.recv(timeout=20)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        assert server.wait_exit(20) == 0
        server.wait_for(r"websocket closed 1012", stdout=True)


def test_django_s_asgi_handler(loop_args: list[str]) -> None:
    args = [*loop_args, "--chdir", str(EXAMPLES), "django_app:asgi_application"]
    with running(args) as server:
        assert get(server, "/").json()["message"] == "Hello from Django on dynocorn"
        echoed = requests.post(
            f"http://127.0.0.1:{server.port}/echo?x=1",
            data=b"z" * 100_000,
            headers={"X-Forwarded-Proto": "https"},
            timeout=10,
        ).json()
        assert echoed == {
            "method": "POST",
            "path": "/echo",
            "query": {"x": "1"},
            "length": 100_000,
            "secure": True,
        }


def test_at_worker_connections_the_rest_wait_without_a_spinning_loop(
    loop_args: list[str],
) -> None:
    """A full worker stops watching the listener: the next connection waits in the backlog
    (and is served once one ends), and the worker does not spin on the readable socket."""
    import psutil

    with running([*loop_args, "--worker-connections", "1", "asgi_apps:app"]) as server:
        first = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        first.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"hello /a" in first.recv(65536)  # held open: the worker is full
        worker = psutil.Process(server.worker_pids()[0])
        before = sum(worker.cpu_times()[:2])
        second = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        second.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        second.settimeout(1.0)
        with pytest.raises(TimeoutError):
            second.recv(65536)  # not accepted: a second of nothing
        spent = sum(worker.cpu_times()[:2]) - before
        assert spent < 0.5, f"the full worker used {spent:.2f}s of CPU in that second"
        first.close()
        second.settimeout(10)
        assert b"hello /b" in second.recv(65536)
        second.close()


def test_root_path_is_the_mount_point_and_path_includes_it(loop_args: list[str]) -> None:
    with running([*loop_args, "--root-path", "/api/", "asgi_apps:app"]) as server:
        shown = get(server, "/scope").text  # behind a proxy that strips /api
    assert "'root_path': '/api'" in shown and "'path': '/api/scope'" in shown


def test_hup_stops_an_old_worker_only_once_its_successor_has_started_up(
    loop_args: list[str],
) -> None:
    """Ready is after the lifespan startup: until then the new worker cannot serve, and
    the old one must go on (here the startup takes 1.5 s)."""
    env = {"LIFESPAN_DELAY": "1.5"}
    with running([*loop_args, "asgi_apps:lifespan_app"], env=env) as server:
        old = server.worker_pids()[0]
        assert get(server, "/").text == f"started in {old}"
        server.signal(signal.SIGHUP)
        server.wait_for(rf"Worker exiting \(pid: {old}\)", timeout=30)
        new = [pid for pid in server.booted_pids() if pid != old][-1]
        lines = list(server.lines)
        ready = _first(lines, f"[{new}] [INFO] Application startup complete")
        assert ready < _first(lines, f"Worker exiting (pid: {old})"), (
            f"the old worker left before its successor had started up:\n{server.log}"
        )
        assert get(server, "/").text == f"started in {new}"


def _first(lines: list[str], text: str) -> int:
    """Where `text` first appears in the log; past the end when it does not."""
    return next((i for i, line in enumerate(lines) if text in line), len(lines))


def test_an_upload_the_app_does_not_read_yet_waits_in_the_client(loop_args: list[str]) -> None:
    """Back-pressure: with the app not reading, the server stops reading too, so a 64 MB
    upload stays with the client (its send blocks) instead of growing the worker."""
    import psutil

    with running([*loop_args, "asgi_apps:slow_reader"]) as server:
        warm_up = requests.post(f"http://127.0.0.1:{server.port}/", data=b"abc", timeout=10)
        assert warm_up.text == "3"  # the request path has run once: what it costs is paid
        worker = psutil.Process(server.worker_pids()[0])
        before = worker.memory_info().rss
        sent = 0
        size = 64 * 1024 * 1024
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
            sock.settimeout(1.0)  # a send that blocks for a second: the server stopped reading
            part = b"x" * 65536
            with pytest.raises(TimeoutError):
                while sent < size:
                    sent += sock.send(part)
            grown = worker.memory_info().rss - before
        assert sent < size // 2, f"{sent} bytes taken while the app read nothing"
        assert grown < 16 * 1024 * 1024, f"the worker grew {grown} bytes"


def _leave_a_deaf_request(server: Server, query: str = "") -> float:
    """Start /deaf (it never answers), drop the connection once it runs; when that was.
    Dropped with a reset: a client that only shuts its side (FIN) may still be waiting for
    the answer, and is kept half open for it."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(f"GET /deaf{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        server.wait_for(r"deaf waits", stdout=True)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    return time.monotonic()


CANCELLED = r"\[DEBUG\] Request cancelled {}s after its client went away: GET /deaf"
TIMER_RESOLUTION = 0.005  # seconds: an event loop's timer may fire this much early


def test_a_request_its_client_left_is_cancelled_after_the_grace_period(
    loop_args: list[str],
) -> None:
    args = [*loop_args, "--log-level", "debug", "--asgi-disconnect-grace-period", "1"]
    with running([*args, "--access-logfile", "-", "asgi_apps:app"]) as server:
        workers = server.worker_pids()
        left = _leave_a_deaf_request(server)
        server.wait_for(r"deaf saw http\.disconnect", stdout=True)  # the app is told first
        server.wait_for(CANCELLED.format(1), timeout=10)
        # The loops' timers keep milliseconds (libuv rounds to them; asyncio fires a timer
        # within its clock resolution): 1 s can end 0.2 ms early (seen once under uvloop).
        assert time.monotonic() - left >= 1.0 - TIMER_RESOLUTION
        server.wait_for(r"deaf cancelled", stdout=True)
        server.wait_for(r'"GET /deaf HTTP/1.1" 0 ', stdout=True)  # as any client gone: no 500
        assert get(server, "/after").text == "hello /after"
        assert server.worker_pids() == workers
        assert "Traceback" not in server.log and "[ERROR]" not in server.log


def test_within_the_grace_period_the_request_runs_on(loop_args: list[str]) -> None:
    args = [*loop_args, "--log-level", "debug", "--asgi-disconnect-grace-period", "60"]
    with running([*args, "asgi_apps:app"]) as server:
        _leave_a_deaf_request(server, "?then=1")
        server.wait_for(r"deaf still running after its client left", stdout=True)
        assert "deaf cancelled" not in "\n".join(server.stdout_lines)
        assert "Request cancelled" not in server.log


def test_a_grace_period_of_0_cancels_at_once(loop_args: list[str]) -> None:
    args = [*loop_args, "--log-level", "debug", "--asgi-disconnect-grace-period", "0"]
    with running([*args, "asgi_apps:app"]) as server:
        _leave_a_deaf_request(server)
        server.wait_for(CANCELLED.format(0), timeout=10)
        server.wait_for(r"deaf cancelled", stdout=True)
        # Cancelled as the connection was lost: the app never got to run on.
        assert "deaf saw" not in "\n".join(server.stdout_lines)
        assert get(server, "/after").text == "hello /after"


def test_a_websocket_app_its_client_left_is_cancelled_after_the_grace_period(
    loop_args: list[str],
) -> None:
    """As gunicorn's: the grace period is for any request task, a WebSocket's too."""
    from websockets.sync.client import connect

    args = [*loop_args, "--log-level", "debug", "--asgi-disconnect-grace-period", "1"]
    with running([*args, "asgi_apps:ws_echo"]) as server:
        with connect(f"ws://127.0.0.1:{server.port}/ws", open_timeout=10) as websocket:
            websocket.send("deaf")
            server.wait_for(r"websocket deaf", stdout=True)
            linger = struct.pack("ii", 1, 0)  # a reset: no close handshake
            websocket.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            websocket.socket.close()
        server.wait_for(r"Request cancelled 1s after its client went away: GET /ws", timeout=10)
        assert get(server, "/").text == "hello"
        assert "Traceback" not in server.log and "[ERROR]" not in server.log


def test_a_websocket_frame_sent_with_the_upgrade_head_is_echoed(loop_args: list[str]) -> None:
    """RFC 6455 lets a client send frames without waiting for the 101: a first frame in the
    same segment as the head goes to the session, not to the HTTP parser."""
    head = (
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    key = bytes([1, 2, 3, 4])
    masked = bytes(byte ^ key[i % 4] for i, byte in enumerate(b"hello"))
    frame = bytes([0x81, 0x80 | 5]) + key + masked  # FIN, text, masked, 5 bytes
    with running([*loop_args, "asgi_apps:ws_echo"]) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(head + frame)
            got = b""
            while b"\r\n\r\n" not in got or not got.endswith(b"\x81\x05hello"):
                chunk = sock.recv(65536)
                assert chunk, f"closed after {got!r}"
                got += chunk
        assert got.startswith(b"HTTP/1.1 101 ")
        assert got.split(b"\r\n\r\n", 1)[1] == b"\x81\x05hello"  # the echo, unmasked


def test_response_headers_reach_the_access_log_and_post_request_as_text(
    loop_args: list[str], tmp_path: Path
) -> None:
    """An ASGI app's bytes headers are planned as given; the access log's `{name}o` and a
    post_request hook written for gunicorn still read them as text."""
    config = tmp_path / "conf.py"
    config.write_text(
        "def post_request(worker, req, environ, resp):\n"
        "    worker.log.info('post_request saw %r', list(resp.headers))\n"
    )
    log_format = "%(s)s type=%({content-type}o)s"
    args = [*loop_args, "-c", str(config), "--access-logfile", "-"]
    with running([*args, "--access-logformat", log_format, "asgi_apps:app"]) as server:
        assert get(server, "/typed").headers["Content-Type"] == "text/plain"
        server.wait_for(r"^200 type=text/plain$", stdout=True)
        server.wait_for(r"post_request saw \[\('content-type', 'text/plain'\)")


def test_a_request_that_came_with_the_stop_while_the_loop_was_held_is_answered(
    loop_args: list[str],
) -> None:
    """A connection's first request and TERM both come while another request holds
    the loop. When it turns again, the request's task is created just before the stop
    looks at the connections, and runs after that look: the look must see the request's
    arrival, not a time of 0, which timed it out at once and cancelled it before it began
    (no answer: the client waited, then the connection closed)."""
    args = [*loop_args, "--timeout", "10", "--graceful-timeout", "10", "asgi_apps:balance"]
    with running(args) as server:
        with (
            socket.create_connection(("127.0.0.1", server.port), timeout=20) as kept,
            socket.create_connection(("127.0.0.1", server.port), timeout=20) as holder,
        ):
            # `kept` is accepted before `holder`'s request can hold the loop: it connected
            # first. It sends nothing yet: a connection's first request is the case.
            stream = kept.makefile("rb")
            holder.sendall(b"GET /announced-spin?seconds=2 HTTP/1.1\r\nHost: x\r\n\r\n")
            server.wait_for(r"testapps: /announced-spin\?seconds=2 started")
            kept.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")  # read once the spin ends
            server.signal(signal.SIGTERM)
            server.wait_for(r"Handling signal: term")
            answer = read_response(stream)
            assert answer is not None, "the request sent before the stop got no answer"
            assert answer.status == 200
        assert server.wait_exit() == 0
        assert "timed out" not in server.log
