"""Apps that try to put what they must not on the wire: CR, LF or NUL in a response head.

`app` picks the variant by path; every variant would inject `Set-Cookie: evil=1` (or the
word `evil`) if the server wrote its status and headers as given. The body is never meant
to be sent either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

# path -> (status, headers) the app hands to start_response
VARIANTS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "/value-crlf": ("200 OK", [("X-A", "a\r\nSet-Cookie: evil=1")]),
    "/value-lf": ("200 OK", [("X-A", "a\nSet-Cookie: evil=1")]),
    "/value-cr": ("200 OK", [("X-A", "a\rSet-Cookie: evil=1")]),
    "/value-crlfcrlf": ("200 OK", [("X-A", "a\r\n\r\n<html>evil</html>")]),
    "/value-nul": ("200 OK", [("X-A", "a\x00evil")]),
    "/value-not-latin1": ("200 OK", [("X-A", "evil \u20ac")]),
    "/name-crlf": ("200 OK", [("Set-Cookie: evil=1\r\nX-A", "b")]),
    "/name-lf": ("200 OK", [("Set-Cookie: evil=1\nX-A", "b")]),
    "/name-colon": ("200 OK", [("Set-Cookie: evil=1", "b")]),
    "/name-space": ("200 OK", [("Set-Cookie evil", "b")]),
    "/name-empty": ("200 OK", [("", "evil")]),
    "/status-crlf": ("200 OK\r\nSet-Cookie: evil=1", []),
    "/status-lf": ("200 OK\nSet-Cookie: evil=1", []),
    "/status-cr": ("200 OK\rSet-Cookie: evil=1", []),
    "/status-not-a-number": ("evil", []),
}


def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    variant = VARIANTS.get(environ["PATH_INFO"])
    if variant is None:
        body = b"fine"
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "4")])
        return [body]
    status, headers = variant
    start_response(status, [("Content-Type", "text/plain"), *headers])
    return [b"this body carries evil and must never be sent"]
