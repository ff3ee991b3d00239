"""The `http` scope of an ASGI request, built from dynocorn's parsed request.

What the WSGI environ says, said the ASGI way: the scheme follows the same trusted-proxy
rules (`forwarded_allow_ips`, `secure_scheme_headers`: wsgi.py decides, once for both),
`client` is the peer as `REMOTE_ADDR` is, and `root_path` is the mount point
(`--root-path`, else `SCRIPT_NAME`), which `path` and `raw_path` include, as the ASGI
spec asks and uvicorn does.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from dynocorn.asgi import ASGI_VERSION, Scope
from dynocorn.http import Request
from dynocorn.wsgi import EnvironBuilder, Peer

HTTP_VERSIONS = {"HTTP/1.1": "1.1", "HTTP/1.0": "1.0"}
# The scope's form of a header line, by the line as parsed: clients send the same lines
# request after request (Host, User-Agent, Accept...), so each is encoded once. Bounded:
# cleared when full, as the WSGI layer's caches are.
_ENCODED: dict[tuple[str, str], tuple[bytes, bytes]] = {}
_ENCODED_LIMIT = 4096


def encoded(header: tuple[str, str]) -> tuple[bytes, bytes]:
    pair = _ENCODED.get(header)
    if pair is None:
        name, value = header
        pair = (name.lower().encode("latin-1"), value.encode("latin-1"))
        if len(_ENCODED) >= _ENCODED_LIMIT:
            _ENCODED.clear()
        _ENCODED[header] = pair
    return pair


def server_of(sockname: Any) -> tuple[str, int | None] | None:
    """The scope's `server`: (host, port) of a TCP listener, (path, None) of a unix one."""
    if isinstance(sockname, tuple):
        return (str(sockname[0]), int(sockname[1]))
    if isinstance(sockname, str) and sockname:
        return (sockname, None)
    return None


class ScopeBuilder:
    """One per listener: what does not change between requests is worked out once."""

    def __init__(self, environ_builder: EnvironBuilder, sockname: Any, root_path: str) -> None:
        self.environ_builder = environ_builder
        self.server = server_of(sockname)
        self.root_path = root_path.rstrip("/")
        self.raw_root = self.root_path.encode("latin-1")
        # Copied for each request, then the request's own keys are set: measured, a copy
        # and stores cost a third less than a dict display of every key.
        self.base: dict[str, Any] = {
            "type": "http",
            "asgi": ASGI_VERSION,
            "http_version": "1.1",
            "server": self.server,
            "root_path": self.root_path,
        }

    def build(self, request: Request, peer: Peer, state: dict[str, Any]) -> Scope:
        target = request.path  # still percent-encoded, as sent
        path = unquote(target) if "%" in target else target
        raw_path = target.encode("latin-1")
        if self.root_path:
            path, raw_path = self.root_path + path, self.raw_root + raw_path
        scope = self.base.copy()
        if request.version != "HTTP/1.1":
            scope["http_version"] = HTTP_VERSIONS.get(request.version, "1.1")
        scope["client"] = peer if isinstance(peer, tuple) else None
        scope["scheme"] = self.environ_builder.scheme_of(request, peer)
        scope["method"] = request.method
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = request.query.encode("latin-1")
        headers: list[tuple[bytes, bytes]] = []
        for header in request.headers:  # a loop, not a comprehension: no frame per request
            headers.append(_ENCODED.get(header) or encoded(header))
        scope["headers"] = headers
        scope["state"] = state.copy()  # the lifespan's state, a shallow copy per request
        return scope
