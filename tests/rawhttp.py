"""A tiny HTTP/1.1 client over raw sockets: for pipelining and bytes that `requests` won't send."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import BinaryIO


@dataclass
class RawResponse:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def connect(port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout)


def read_response(stream: BinaryIO, method: str = "GET") -> RawResponse | None:
    """One response from a buffered stream; None if the server closed before sending any."""
    line = stream.readline(65537)
    if not line:
        return None
    version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
    code, _, reason = rest.partition(" ")
    response = RawResponse(version, int(code), reason)
    while True:
        header = stream.readline(65537).decode("latin-1")
        if header in ("\r\n", "\n", ""):
            break
        name, _, value = header.partition(":")
        response.headers.append((name.strip(), value.strip()))
    if method == "HEAD" or response.status in (204, 304) or 100 <= response.status < 200:
        return response
    length = response.header("Content-Length")
    if response.header("Transfer-Encoding") == "chunked":
        chunks = []
        while True:
            size = int(stream.readline().split(b";")[0], 16)
            if size == 0:
                while stream.readline() not in (b"\r\n", b""):
                    pass
                break
            chunks.append(stream.read(size))
            stream.readline()
        response.body = b"".join(chunks)
    elif length is not None:
        response.body = stream.read(int(length))
    else:
        response.body = stream.read()
    return response


def exchange(
    port: int, data: bytes, *, responses: int = 1, method: str = "GET", timeout: float = 10.0
) -> tuple[list[RawResponse], bool]:
    """Send bytes, read up to `responses` responses; also say whether the server then closed."""
    with connect(port, timeout=timeout) as sock:
        sock.sendall(data)
        stream = sock.makefile("rb")
        got = []
        for _ in range(responses):
            response = read_response(stream, method)
            if response is None:
                break
            got.append(response)
        closed = got_eof(sock, stream, wait=1.0)  # shorter than the 2 s keep-alive
        return got, closed


def got_eof(sock: socket.socket, stream: BinaryIO, wait: float = 3.0) -> bool:
    """True if the server closes the connection within `wait` seconds with nothing more sent."""
    sock.settimeout(wait)
    try:
        return stream.read(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
