"""Response framing: the head to send, and how the body must follow it.

Status lines and header names are validated once and remembered (applications send
the same few again and again), so the usual response costs a dict lookup per header
and three C-level scans of the joined header block.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from dynocorn.http.errors import InvalidResponse, reason_phrase
from dynocorn.http.server_date import SERVER_NAME, http_date, server_date_lines

__all__ = [
    "CONTINUE",
    "LAST_CHUNK",
    "ResponsePlan",
    "as_text",
    "encode_chunk",
    "http_date",
    "plan_response",
]

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"

# RFC 9110 status-code and reason-phrase (HTAB, SP, VCHAR, obs-text).
_STATUS = re.compile(r"([1-5][0-9][0-9])(?: [\t\x20-\x7e\x80-\xff]*)?")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Controls other than HTAB, CR and LF; CR and LF are counted separately, since the
# joined block legitimately holds one of each per line.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_DIGITS = re.compile(r"[ \t]*([0-9]+)[ \t]*")

# What a header name means to the framing; anything else is passed through.
_PLAIN, _LENGTH, _CODING, _CONNECTION, _HOP, _SERVER, _DATE = range(7)
_SPECIAL = {
    "content-length": _LENGTH,
    "transfer-encoding": _CODING,
    "connection": _CONNECTION,
    "keep-alive": _HOP,
    "proxy-connection": _HOP,
    "te": _HOP,
    "upgrade": _HOP,
    "server": _SERVER,
    "date": _DATE,
}
_CACHE_SIZE = 1024
_name_kinds: dict[str, int] = {}
_status_lines: dict[str, tuple[bytes, int]] = {}

_SERVER_LINE = b"Server: %s\r\n" % SERVER_NAME.encode("ascii")
_CHUNKED_LINE = b"Transfer-Encoding: chunked\r\n"
_CLOSE_LINE = b"Connection: close\r\n"
_KEEP_ALIVE_LINE = b"Connection: keep-alive\r\n"


@dataclass(frozen=True, slots=True)
class ResponsePlan:
    head: bytes  # status line, headers and the blank line
    chunked: bool  # send the body through encode_chunk() and end with LAST_CHUNK
    content_length: int | None
    keep_alive: bool  # the connection may serve another request afterwards
    send_body: bool  # False for HEAD, 1xx, 204 and 304: discard the app's body bytes
    framed: bool = False  # the app's headers gave Content-Length or Transfer-Encoding


def encode_chunk(data: bytes | bytearray | memoryview) -> bytes:
    """One chunk of a chunked body; nothing for empty data (that would end the body)."""
    if not data:
        return b""
    return b"".join((b"%x\r\n" % len(data), data, b"\r\n"))


def _status_line(status: object) -> tuple[bytes, int]:
    if not isinstance(status, str) or not _STATUS.fullmatch(status):
        raise InvalidResponse(f"invalid status {status!r}")
    line = f"HTTP/1.1 {status}\r\n" if " " in status else f"HTTP/1.1 {status} \r\n"
    entry = (line.encode("latin-1"), int(status[:3]))
    if len(_status_lines) >= _CACHE_SIZE:
        _status_lines.clear()
    _status_lines[status] = entry
    return entry


def _name_kind(name: str) -> int:
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise InvalidResponse(f"invalid header name {name!r}")
    kind = _SPECIAL.get(name.lower(), _PLAIN)
    if len(_name_kinds) >= _CACHE_SIZE:
        _name_kinds.clear()
    _name_kinds[name] = kind
    return kind


def _content_length(value: str) -> int:
    if value.isdigit() and value.isascii():
        return int(value)
    match = _DIGITS.fullmatch(value)
    if match is None:
        raise InvalidResponse(f"invalid Content-Length {value!r}")
    return int(match.group(1))


def _tokens(value: str) -> list[str]:
    return [token.strip(" \t").lower() for token in value.split(",")]


def plan_response(
    status: str | int,
    headers: Sequence[tuple[Any, Any]],
    *,
    version: str,
    method: str,
    keep_alive: bool,
) -> ResponsePlan:
    """Frame a response to a ``version``/``method`` request; raise ``InvalidResponse``.

    ``keep_alive`` is what the server and the client allow; the plan's ``keep_alive``
    is the final word once the application's headers and the framing are considered.
    A WSGI app gives the status line and headers as text; an ASGI app the status as an
    int and headers as bytes, read here as latin-1 text, so both are checked alike.

    Apps answer most requests with the same status and headers (the same values, though
    usually new objects), so the plan is remembered by value, and rebuilt only when the
    Date changes: a repeat costs a tuple, a dict lookup and an identity check. Measured on
    the hello app: the worker's CPU per request drops by about 2 us.
    """
    try:
        key = (status, tuple(headers), version, method == "HEAD", keep_alive)
        entry = _plans.get(key)
    except TypeError:  # an unhashable (so invalid) header: let the full check say why
        key, entry = None, None
    if entry is None:
        entry = [_plan_parts(status, headers, version, method, keep_alive), None]
        if key is not None:
            if len(_plans) >= _PLAN_CACHE_SIZE:
                _plans.clear()
            _plans[key] = entry
    parts: _Parts = entry[0]
    preamble_kind = parts.preamble_kind
    if preamble_kind == _BOTH:
        preamble = server_date_lines()
    elif preamble_kind == _DATE_ONLY:
        preamble = b"Date: %s\r\n" % http_date()
    else:
        preamble = _SERVER_LINE if preamble_kind == _SERVER_ONLY else b""
    # The Date lines are one cached object per second: the same object, the same head.
    # (preamble, plan) is stored as one tuple, so threads never see half an update.
    made = entry[1]
    if made is not None and made[0] is preamble:
        return made[1]  # type: ignore[no-any-return]
    status_line, _, app_block, tail, chunked, content_length, keep, send_body, framed = parts
    plan = ResponsePlan(
        b"".join((status_line, preamble, app_block, tail)),
        chunked,
        content_length,
        keep,
        send_body,
        framed,
    )
    entry[1] = (preamble, plan)
    return plan


_BOTH, _DATE_ONLY, _SERVER_ONLY, _NEITHER = range(4)  # which of Server/Date we add
_PLAN_CACHE_SIZE = 256
# key -> [parts, (the preamble the last plan was made with, that plan) or None]
_plans: dict[tuple[object, ...], list[Any]] = {}


class _Parts(NamedTuple):
    """What plan_response remembers per distinct response: everything but the Date."""

    status_line: bytes
    preamble_kind: int  # _BOTH, _DATE_ONLY, _SERVER_ONLY or _NEITHER
    app_block: bytes  # the app's header lines, those we frame ourselves left out
    tail: bytes  # our framing lines and the blank line
    chunked: bool
    content_length: int | None
    keep_alive: bool
    send_body: bool
    framed: bool


@dataclass(slots=True)
class _AppHeaders:
    """The app's headers, read: the lines passed on, and what the framing needs of them."""

    block: bytes = b""
    content_length: int | None = None
    chunked: bool = False  # Transfer-Encoding: chunked (we chunk, once)
    close: bool = False  # Connection: close
    has_server: bool = False
    has_date: bool = False


def as_text(name: Any, value: Any) -> tuple[str, str]:
    """A header in WSGI's text form: an ASGI app gives bytes, sent as latin-1 text."""
    if type(name) is bytes:
        return name.decode("latin-1"), value.decode("latin-1")
    return name, value


def _plan_parts(
    status: str | int,
    headers: Sequence[tuple[Any, Any]],
    version: str,
    method: str,
    keep_alive: bool,
) -> _Parts:
    """Everything of a response's plan but the Date (plan_response() caches it)."""
    if type(status) is int:  # an ASGI app's
        status = f"{status} {reason_phrase(status)}"
    entry = _status_lines.get(status) if isinstance(status, str) else None
    status_line, code = entry or _status_line(status)
    no_body = code < 200 or code == 204 or code == 304 or method == "HEAD"
    app = _read_app_headers(headers, code)
    content_length = app.content_length
    chunked = False
    keep = keep_alive and not app.close
    if no_body:
        if code < 200 or code == 204:
            content_length = None
    elif content_length is None:
        if version == "HTTP/1.1":
            chunked = True
        else:
            keep = False  # the end of the body is the end of the connection
    if app.has_server:
        preamble_kind = _NEITHER if app.has_date else _DATE_ONLY
    else:
        preamble_kind = _SERVER_ONLY if app.has_date else _BOTH
    if keep:
        tail = _KEEP_ALIVE_LINE + b"\r\n" if version == "HTTP/1.0" else b"\r\n"
    else:
        tail = _CLOSE_LINE + b"\r\n"
    if chunked:
        tail = _CHUNKED_LINE + tail
    framed = app.chunked or app.content_length is not None
    return _Parts(
        status_line,
        preamble_kind,
        app.block,
        tail,
        chunked,
        content_length,
        keep,
        not no_body,
        framed,
    )


def _read_app_headers(headers: Sequence[tuple[Any, Any]], code: int) -> _AppHeaders:
    """Check the app's headers and keep the lines we pass on; raise InvalidResponse."""
    app = _AppHeaders()
    parts: list[str] = []
    lines = 0
    try:
        for name, value in headers:
            if type(name) is bytes:  # an ASGI app's
                name, value = as_text(name, value)
            kind = _name_kinds.get(name)
            if kind is None:
                kind = _name_kind(name)
            if kind and _framed_by_us(app, kind, value, code):
                continue
            parts += (name, ": ", value, "\r\n")
            lines += 1
        block = "".join(parts)
        # Every CR and LF must be one of ours, one pair per line: anything else in a
        # name or value would split it into a header of the client's choosing.
        if lines and (
            block.count("\n") != lines or block.count("\r") != lines or _CONTROL.search(block)
        ):
            raise InvalidResponse("control character in a response header")
        app.block = block.encode("latin-1")
    except (TypeError, ValueError, AttributeError) as exc:  # not str, not pairs, not latin-1
        raise InvalidResponse(f"invalid response headers: {exc}") from None
    if app.chunked and app.content_length is not None:
        raise InvalidResponse("both Content-Length and Transfer-Encoding")
    return app


def _framed_by_us(app: _AppHeaders, kind: int, value: str, code: int) -> bool:
    """Note a header that matters to the framing; True when its line is not passed on (we
    write the framing ourselves, and hop-by-hop headers stop here)."""
    if kind == _LENGTH:
        length = _content_length(value)
        if app.content_length is not None:
            if length != app.content_length:
                raise InvalidResponse("conflicting Content-Length headers")
            return True  # a repeat of the same length: once is enough
        app.content_length = length
        return code < 200 or code == 204  # RFC 9110: MUST NOT be sent
    if kind == _CODING:
        if value.strip(" \t").lower() != "chunked":
            raise InvalidResponse(f"unsupported Transfer-Encoding {value!r}")
        app.chunked = True
        return True
    if kind == _CONNECTION:
        if "close" in _tokens(value):
            app.close = True
        return True
    if kind == _HOP:
        return True
    if kind == _SERVER:
        app.has_server = True
    else:
        app.has_date = True
    return False
