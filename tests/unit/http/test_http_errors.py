"""HTTPError and its subclasses render complete, closing responses."""

import re

import pytest

from dynocorn.http import (
    BadRequest,
    HeaderFieldsTooLarge,
    HTTPError,
    InvalidResponse,
    RequestTimeout,
    UnsupportedTransferCoding,
    URITooLong,
    VersionNotSupported,
)

ERRORS = [
    (BadRequest, 400, "Bad Request"),
    (RequestTimeout, 408, "Request Timeout"),
    (URITooLong, 414, "URI Too Long"),
    (HeaderFieldsTooLarge, 431, "Request Header Fields Too Large"),
    (UnsupportedTransferCoding, 501, "Not Implemented"),
    (VersionNotSupported, 505, "HTTP Version Not Supported"),
]


@pytest.mark.parametrize(("cls", "status", "reason"), ERRORS)
def test_render(cls: type[HTTPError], status: int, reason: str) -> None:
    error = cls("secret detail <script>")
    assert (error.status, error.reason, error.detail) == (status, reason, "secret detail <script>")
    assert str(error) == "secret detail <script>"
    head, _, body = error.render().partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    assert lines[0] == f"HTTP/1.1 {status} {reason}"
    assert lines[1] == "Server: dynocorn"
    assert re.fullmatch(r"Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", lines[2])
    assert lines[3:] == [
        "Content-Type: text/plain; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    assert body == f"{status} {reason}\n".encode()


def test_defaults() -> None:
    assert str(BadRequest()) == "Bad Request"
    assert BadRequest().detail == ""
    assert issubclass(BadRequest, HTTPError)
    assert not issubclass(InvalidResponse, HTTPError)
