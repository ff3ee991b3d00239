"""An app's CR, LF or NUL in a status or header never reaches the wire.

Each variant of `hostile_apps:app` would inject a header (or a body) if written as given.
The server must answer 500 instead, with nothing of the app's head or body, keep the worker,
and keep serving on the same connection or close it cleanly.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hostile_apps import VARIANTS

from reliability.harness import report
from server import Server, running


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with running(["-w", "1", "hostile_apps:app"]) as srv:
        yield srv


def wire_bytes(port: int, path: str) -> bytes:
    """Everything the server sends for `path` then a harmless request, up to its close."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: h\r\n\r\n"
        "GET /fine HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


@pytest.mark.parametrize("path", sorted(VARIANTS))
def test_no_injection_reaches_the_wire(server: Server, path: str) -> None:
    pids = server.worker_pids()
    raw = wire_bytes(server.port, path)
    first_line = raw.split(b"\r\n", 1)[0].decode("latin-1")
    heads = [part for part in raw.split(b"\r\n\r\n") if part.startswith(b"HTTP/1.1 ")]
    leaked = b"evil" in raw.lower()
    report(
        f"app header injection: {path}",
        1,
        int(leaked or not first_line.startswith("HTTP/1.1 500")),
        "500, nothing injected",
        f"{first_line!r}; {len(heads)} responses on the connection; leaked: {leaked}",
    )
    assert not leaked, raw[:500]
    assert first_line.startswith("HTTP/1.1 500 ")
    # Either the connection went on to answer the next request, or it was closed after 500.
    assert len(heads) in (1, 2)
    assert server.worker_pids() == pids
