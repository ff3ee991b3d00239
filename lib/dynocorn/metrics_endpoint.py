"""`--metrics-bind HOST:PORT`: the master answers `GET /metrics` (opt-in).

The master, not a worker, serves it: the sums live there, every scrape sees every worker,
and a scrape never waits behind a slow request. One request per connection, parsed by the
same HTTP parser as the app's requests; anything but `GET /metrics` (or `HEAD`) gets its 404
or 405.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from dynocorn import addresses, sockets
from dynocorn.http import ERROR_CONTENT_TYPE, HTTPError, RequestParser, error_body, reason_phrase
from dynocorn.loop_servers import LoopServer
from dynocorn.metrics.exposition import expose, registry_for


def listen(spec: str) -> socket.socket:
    """The endpoint's socket, bound as `--bind` binds (`[::]` serves IPv4 too)."""
    return sockets.bind_once(addresses.parse(spec), backlog=16, reuse_port=False)


def _response(status: int, body: bytes, content_type: str, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason_phrase(status)}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode("latin-1")
    return head if head_only else head + body


def _error(status: int) -> bytes:
    return _response(status, error_body(status), ERROR_CONTENT_TYPE)


class MetricsServer:
    def __init__(self, spec: str, take_snapshot: Callable[[], dict[str, object]]) -> None:
        self.registry = registry_for(take_snapshot)
        self.loop_server = LoopServer(listen(spec), self.answer, "metrics")

    @property
    def url(self) -> str:
        host, port = self.loop_server.sock.getsockname()[:2]
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}/metrics"

    def answer(self, data: bytes) -> bytes | None:
        parser = RequestParser()
        try:
            parser.feed(data)
        except HTTPError as error:
            return _error(error.status)
        if not parser.requests:
            return None  # the head is not all here yet
        request = parser.requests[0]
        if request.path != "/metrics":
            return _error(404)
        if request.method not in ("GET", "HEAD"):
            return _error(405)
        accept = next((value for name, value in request.headers if name.lower() == "accept"), None)
        body, content_type = expose(self.registry, accept)
        return _response(200, body, content_type, head_only=request.method == "HEAD")
