"""Errors that carry their HTTP status and render their own response."""

from http import HTTPStatus
from typing import ClassVar

from dynocorn.http.server_date import server_date_lines

ERROR_CONTENT_TYPE = "text/plain; charset=utf-8"
# Where Python's table still has RFC 2616's words, RFC 9110's.
_PHRASES = {414: "URI Too Long"}


def reason_phrase(status: int) -> str:
    """The words of a status line: "Internal Server Error" for 500."""
    if status in _PHRASES:
        return _PHRASES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def error_body(status: int) -> bytes:
    """The body of every error response dynocorn writes itself, a refused request's or a
    crashed app's: its status line's words ("500 Internal Server Error"), nothing of the
    request echoed back."""
    return b"%d %s\n" % (status, reason_phrase(status).encode("ascii"))


class HTTPError(Exception):
    """A request the server refuses; ``render()`` is the complete response to send.

    ``detail`` says what was wrong, for the error log; the body stays generic so that
    nothing of the request is echoed back.
    """

    status: ClassVar[int] = 400

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.reason)
        self.detail = detail

    @property
    def reason(self) -> str:
        return reason_phrase(self.status)

    def render(self) -> bytes:
        body = error_body(self.status)
        return b"".join(
            (
                b"HTTP/1.1 %d %s\r\n" % (self.status, self.reason.encode("ascii")),
                server_date_lines(),
                b"Content-Type: %s\r\n" % ERROR_CONTENT_TYPE.encode("ascii"),
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body),
                body,
            )
        )


class BadRequest(HTTPError):
    status = 400


class RequestTimeout(HTTPError):
    status = 408


class URITooLong(HTTPError):
    status = 414


class HeaderFieldsTooLarge(HTTPError):
    status = 431


class InternalServerError(HTTPError):
    """Sent by the server for a request it gave up on (a request timeout)."""

    status = 500


class UnsupportedTransferCoding(HTTPError):
    """A transfer coding the server does not implement, before ``chunked`` (RFC 9112 §6.1)."""

    status = 501


class ServiceUnavailable(HTTPError):
    """Sent by the server for a request it cannot start (every thread is stuck)."""

    status = 503


class VersionNotSupported(HTTPError):
    status = 505


class InvalidResponse(Exception):
    """The application produced a status or header that must not go on the wire."""
