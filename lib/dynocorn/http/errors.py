"""Errors that carry their HTTP status and render their own response."""

from typing import ClassVar

from dynocorn.http._common import SERVER_NAME, http_date


class HTTPError(Exception):
    """A request the server refuses; ``render()`` is the complete response to send.

    ``detail`` says what was wrong, for the error log; the body stays generic so that
    nothing of the request is echoed back.
    """

    status: ClassVar[int] = 400
    reason: ClassVar[str] = "Bad Request"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.reason)
        self.detail = detail

    def render(self) -> bytes:
        body = b"%d %s\n" % (self.status, self.reason.encode("ascii"))
        return b"".join(
            (
                b"HTTP/1.1 %d %s\r\n" % (self.status, self.reason.encode("ascii")),
                b"Server: %s\r\nDate: %s\r\n" % (SERVER_NAME.encode("ascii"), http_date()),
                b"Content-Type: text/plain; charset=utf-8\r\n",
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body),
                body,
            )
        )


class BadRequest(HTTPError):
    status = 400
    reason = "Bad Request"


class RequestTimeout(HTTPError):
    status = 408
    reason = "Request Timeout"


class URITooLong(HTTPError):
    status = 414
    reason = "URI Too Long"


class HeaderFieldsTooLarge(HTTPError):
    status = 431
    reason = "Request Header Fields Too Large"


class InternalServerError(HTTPError):
    """Sent by the server for a request it gave up on (a request timeout)."""

    status = 500
    reason = "Internal Server Error"


class UnsupportedTransferCoding(HTTPError):
    """A transfer coding the server does not implement, before ``chunked`` (RFC 9112 §6.1)."""

    status = 501
    reason = "Not Implemented"


class ServiceUnavailable(HTTPError):
    """Sent by the server for a request it cannot start (every thread is stuck)."""

    status = 503
    reason = "Service Unavailable"


class VersionNotSupported(HTTPError):
    status = 505
    reason = "HTTP Version Not Supported"


class InvalidResponse(Exception):
    """The application produced a status or header that must not go on the wire."""
