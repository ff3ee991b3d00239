"""The request corpus replayed over a real socket against the echo app, for every worker class.

Valid cases must produce one answer per request, in order, carrying what the corpus says the
request was, headers included (so a dropped `X_Forwarded_For` is proven dropped end to end).
Refused cases must get their status and a closed connection; a second request sent behind
them on the same connection must never reach the app (the echo app records every request it
runs). One server per worker class serves every case.
"""

from __future__ import annotations

import json
import random
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from corpus_cases import Case, load_cases
from rawhttp import RawResponse, read_response
from server import Server, running
from worker_classes import WITH_ASGI, app_for, worker_class_name

CASES = load_cases()
MODES = ["whole", "bytewise", "random"]


@pytest.fixture(scope="module", params=WITH_ASGI)
def echo_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("echo") / "seen.jsonl"
    log.touch()
    args = [*request.param, "-w", "2", app_for(request.param, "testapps:echo")]
    with running(args, workers=2, env={"ECHO_LOG": str(log)}) as srv:
        srv.echo_log = log  # type: ignore[attr-defined]
        srv.worker_class = worker_class_name(request.param)  # type: ignore[attr-defined]
        yield srv


def split_seed(case: Case) -> int:
    """The same random split on every run (hash() of a str changes with PYTHONHASHSEED)."""
    return zlib.crc32(case.name.encode())


def environ_headers(headers: list[list[str]]) -> dict[str, str]:
    """The environ keys PEP 3333 makes of the headers a request carries, repeats joined."""
    environ: dict[str, str] = {}
    for name, value in headers:
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        environ[key] = f"{environ[key]},{value}" if key in environ else value
    return environ


def send(sock: socket.socket, raw: bytes, mode: str, seed: int) -> None:
    if mode == "whole":
        sock.sendall(raw)
    elif mode == "bytewise":
        for index in range(len(raw)):
            sock.sendall(raw[index : index + 1])
    else:
        rng = random.Random(seed)
        position = 0
        while position < len(raw):
            step = rng.randint(1, 40)
            sock.sendall(raw[position : position + step])
            position += step


def responses_until_close(
    sock: socket.socket, limit: int, methods: list[str] | None = None
) -> list[RawResponse]:
    stream = sock.makefile("rb")
    got: list[RawResponse] = []
    while len(got) < limit:
        method = methods[len(got)] if methods and len(got) < len(methods) else "GET"
        try:
            response = read_response(stream, method)
        except (ConnectionResetError, TimeoutError):
            break
        if response is None:
            break
        if 100 <= response.status < 200:
            continue  # 100 Continue before the final answer
        got.append(response)
    return got


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", [c for c in CASES if c.valid], ids=lambda c: c.name)
def test_valid_case(echo_server: Server, case: Case, mode: str) -> None:
    expected = case.requests
    if echo_server.worker_class == "asgi" and _asks_for_websocket(expected[0]):  # type: ignore[attr-defined]
        check_refused_handshake(echo_server, case, mode)
        return
    with connect(echo_server) as sock:
        try:
            send(sock, case.raw, mode, seed=split_seed(case))
        except (BrokenPipeError, ConnectionResetError):
            # Only where the last request asked to close: the server answered it and closed
            # while we were still sending the bytes it ignores. Its answers are still read.
            assert not expected[-1]["keep_alive"], f"{case.name}: closed while sending"
        got = responses_until_close(sock, len(expected), [r["method"] for r in expected])
    assert len(got) == len(expected), f"{case.name}: {len(got)} answers for {len(expected)}"
    for response, request in zip(got, expected, strict=True):
        assert response.status == 200
        if request["method"] == "HEAD":
            assert response.body == b""
            continue
        seen = json.loads(response.body)
        assert seen["method"] == request["method"]
        assert seen["path"] == unquote(request["path"], encoding="latin-1")
        assert seen["query"] == request["query"]
        assert seen["body"] == request["body"]
        expected_headers = environ_headers(request["headers"])
        assert seen["headers"] == {
            key: value for key, value in expected_headers.items() if key.startswith("HTTP_")
        }
        assert seen["content_type"] == expected_headers.get("CONTENT_TYPE")
        assert seen["content_length"] == expected_headers.get("CONTENT_LENGTH")


def _asks_for_websocket(request: dict[str, object]) -> bool:
    headers = {str(name).lower(): str(value).lower() for name, value in request["headers"]}  # type: ignore[attr-defined]
    return headers.get("upgrade") == "websocket"


def check_refused_handshake(echo_server: Server, case: Case, mode: str) -> None:
    """A server that speaks WebSocket (the ASGI class) takes an upgrade to websocket as a
    handshake, not as a plain request: this one lacks Sec-WebSocket-Key, so 400, and the
    request pipelined behind it is never run (the WSGI classes serve both as HTTP)."""
    with connect(echo_server) as sock:
        try:
            send(sock, case.raw, mode, seed=split_seed(case))
        except (BrokenPipeError, ConnectionResetError):
            pass
        got = responses_until_close(sock, 3)
    assert [response.status for response in got] == [400], case.name
    log: Path = echo_server.echo_log  # type: ignore[attr-defined]
    assert case.requests[-1]["path"] not in log.read_text()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", [c for c in CASES if not c.valid], ids=lambda c: c.name)
def test_refused_case_and_the_request_behind_it(echo_server: Server, case: Case, mode: str) -> None:
    marker = f"/behind-{case.name.replace('/', '-')}-{mode}"
    follow_up = f"GET {marker} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
    with connect(echo_server) as sock:
        try:
            send(sock, case.raw + follow_up, mode, seed=split_seed(case))
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed while we were still sending: fine
        got = responses_until_close(sock, 10)
    assert got, f"{case.name}: no answer"
    assert got[-1].status == case.status, f"{case.name}: {got[-1].status} != {case.status}"
    assert all(r.status == 200 for r in got[:-1])
    log: Path = echo_server.echo_log  # type: ignore[attr-defined]
    assert marker not in log.read_text(), f"{case.name}: the request behind it ran"
