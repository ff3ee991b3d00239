"""Sans-IO HTTP/1.1 request parsing: bytes in through ``feed``, ``Request`` heads out.

How this works
--------------
The parser keeps each request head in its own hands until the blank line that ends it
has arrived, then deals with the whole head at once:

1. the request line, with one regex: a method token, single spaces, a target of
   printable ASCII and ``HTTP/1.0`` or ``HTTP/1.1`` (``HTTP/2.0`` and later -> 505, any
   other version -> 400);
2. limits, on the raw text (request line -> 414, field count and line size -> 431; a
   field line is measured with its CRLF, as gunicorn does), skipped for heads too short
   to break any;
3. llhttp (httptools), fed exactly that head, validates the rest in C: header syntax,
   bare LF, control characters, obsolete folding, ``Content-Length`` syntax and
   duplicates, ``Content-Length`` with ``Transfer-Encoding``, codings not ending in
   ``chunked``. Its single callback tells whether the message is already complete and
   what the client wants for keep-alive;
4. one regex pass splits the header lines llhttp has just accepted, dropping names
   with "_" and the whitespace around values; a look at their names counts ``Host`` and
   ``Content-Type`` lines: an HTTP/1.1 request needs exactly one ``Host``, and no
   request may repeat either (RFC 9110 §7.2 and §5.3, as gunicorn for the repeats);
5. a target other than a plain "/" path is checked by ``dynocorn.http.target``
   (absolute-form, or "*" with ``OPTIONS`` only);
6. only when llhttp expects a body do we look at the framing headers, and refuse what
   llhttp lets through: chunked applied twice, a malformed or empty list element
   (``,chunked``), chunked on HTTP/1.0 (400), and a coding we do not implement before
   ``chunked`` (``gzip, chunked``: 501, RFC 9112 §6.1). ``identity`` before ``chunked``
   does nothing and is accepted, as by gunicorn.

A head that is still arriving is checked as it grows (limits, bare LF, the request
line once complete), so an endless line is refused rather than buffered forever.

Since llhttp never sees bytes beyond the message we hand it, we always know where the
next message starts. Bodies with a ``Content-Length`` are counted out by us (the same
bytes are passed through llhttp so that it stays in step); chunked bodies are decoded by
``dynocorn.http.chunked``, which accepts the whitespace RFC 9112 allows in chunk
extensions (llhttp does not) and refuses trailer fields a trailer may not carry.

Not supported by design: ``CONNECT`` (400). A request carrying ``Upgrade`` is served as an
ordinary request and the connection stays HTTP/1.1, unless the parser was given
``upgrade_if`` (the ASGI worker gives it its WebSocket handshake test) and that says yes:
then the connection is upgraded after that head. The parser reads no more HTTP on it and
keeps every later byte (a client may send its first frame with the head, without waiting
for the 101) until ``take_upgraded_rest()`` hands them to the new protocol.
"""

import re
from collections import deque
from collections.abc import Callable
from typing import NamedTuple, NoReturn

import httptools

from dynocorn.http.chunked import ChunkedDecoder
from dynocorn.http.errors import (
    BadRequest,
    HeaderFieldsTooLarge,
    HTTPError,
    UnsupportedTransferCoding,
    URITooLong,
    VersionNotSupported,
)
from dynocorn.http.grammar import QUOTED_STRING, TOKEN, line_too_long, new_line_ends
from dynocorn.http.limits import DEFAULT_LIMITS, Limits
from dynocorn.http.request import Request
from dynocorn.http.target import split_target

__all__ = ["Request", "RequestParser"]

# Parser states.
_HEAD = 0  # waiting for (more of) a request head
_LENGTH = 1  # inside a body framed by Content-Length
_CHUNKED = 2  # inside a chunked body
_CLOSED = 3  # the last request asked to close: later bytes are ignored
_DEAD = 4  # refused something; the connection is going away
_UPGRADED = 5  # an upgrade head `upgrade_if` took: later bytes are another protocol's

# gunicorn's method rule: a token without lower case or "#", 3 to 20 characters.
_METHOD = r"[!$%&'*+\-.^_`|~0-9A-Z]{3,20}"
_TARGET = r"[\x21-\x7e]+"  # printable ASCII: no controls, spaces or raw non-ASCII
_REQUEST_LINE = re.compile(rf"({_METHOD}) ({_TARGET}) (HTTP/1\.[01])\r\n")
# Versions other than 1.0 and 1.1 are refused with 400 (COMPAT.md), except 2.0 and later:
# there 505 tells a client that tried a newer protocol to fall back to HTTP/1.1.
_LATER_VERSION = re.compile(rf"{_METHOD} {_TARGET} HTTP/[2-9]\.\d\r\n")
# Used on heads llhttp accepted: "\n" name ":" OWS value OWS "\r". The request line
# holds no LF, so matching may start at 0. The second form skips names containing "_":
# the leading LF anchors each match to a line start, so such a line is dropped whole.
_HEADER_LINES = re.compile(r"\n([^:\r\n]+):[ \t]*([^\r]*[^\r \t]|)[ \t]*\r")
_HEADER_LINES_NO_UNDERSCORE = re.compile(r"\n([^:_\r\n]+):[ \t]*([^\r]*[^\r \t]|)[ \t]*\r")
# The field names the head checks count: Host, Content-Length and Content-Type, by the
# name as sent (clients send the same few spellings; a dict lookup per field line is
# cheaper than a second regex pass over the head). Cleared when full: a client sending
# endless distinct names costs a little speed, never memory.
_HOST, _LENGTH_FIELD, _TYPE_FIELD = 1, 2, 3
_NOTED_NAMES = {"host": _HOST, "content-length": _LENGTH_FIELD, "content-type": _TYPE_FIELD}
_noted_kinds: dict[str, int] = {}
_NOTED_CACHE_SIZE = 1024
# One element of a Transfer-Encoding list: a coding and its parameters (RFC 9112 §7).
_TRANSFER_CODING = re.compile(
    rf"{TOKEN}(?:[ \t]*;[ \t]*{TOKEN}[ \t]*=[ \t]*(?:{TOKEN}|{QUOTED_STRING}))*"
)
# A byte that cannot be part of a request line: refuses TLS or other garbage early.
_NOT_REQUEST_LINE = re.compile(rb"[^\x21-\x7e \r]")

# Methods llhttp knows; any other valid token is shown to llhttp as GET (llhttp only
# uses the method to recognise CONNECT, which is refused before this point).
_LLHTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


class _HeadProtocol:
    """The callback llhttp makes when a head it was fed completes a message."""

    __slots__ = ("done", "keep_alive", "llhttp")

    def __init__(self) -> None:
        self.done = False
        self.keep_alive = False
        self.llhttp: httptools.HttpRequestParser | None = None

    def on_message_complete(self) -> None:
        # llhttp resets its flags after this call returns, so ask now.
        assert self.llhttp is not None
        self.done = True
        self.keep_alive = self.llhttp.should_keep_alive()


def _new_validator() -> tuple[httptools.HttpRequestParser, _HeadProtocol]:
    proto = _HeadProtocol()
    proto.llhttp = httptools.HttpRequestParser(proto)
    return proto.llhttp, proto


def _empty_lines(data: bytes | bytearray, pos: int) -> int:
    """How many bytes of CRLF pairs start at ``pos``."""
    end = pos
    while data.startswith(b"\r\n", end):
        end += 2
    return end - pos


def _head_for_llhttp(method: str, head: bytes) -> bytes:
    """The head as llhttp should see it: it rejects methods it does not know."""
    if method == "CONNECT":
        raise BadRequest("CONNECT is not supported")
    return b"GET" + head[len(method) :]


def _noted_kind(name: str) -> int:
    kind = _NOTED_NAMES.get(name.lower(), 0)
    if len(_noted_kinds) >= _NOTED_CACHE_SIZE:
        _noted_kinds.clear()
    _noted_kinds[name] = kind
    return kind


def _check_noted_fields(headers: list[tuple[str, str]], version: str) -> int | None:
    """Refuse a missing or repeated ``Host``, or a repeated ``Content-Type``; return the
    ``Content-Length`` of a head without a body: 0 if it has one, else None."""
    hosts = lengths = types = 0
    kinds = _noted_kinds
    for name, _ in headers:
        kind = kinds.get(name)
        if kind is None:
            kind = _noted_kind(name)
        if kind:
            if kind == _HOST:
                hosts += 1
            elif kind == _LENGTH_FIELD:
                lengths += 1
            else:
                types += 1
    if hosts != 1:
        if hosts > 1:
            raise BadRequest("more than one Host field line")
        if version == "HTTP/1.1":
            raise BadRequest("HTTP/1.1 request without Host")
    if types > 1:
        raise BadRequest("more than one Content-Type field line")
    return 0 if lengths else None


def _check_transfer_codings(values: list[str]) -> None:
    """Refuse a ``Transfer-Encoding`` (its field values, in order) other than a chunked body
    with at most ``identity`` before it: 400 when the framing is in doubt, 501 for a coding
    we do not implement (RFC 9112 §6.1 and §6.3)."""
    codings = [element.strip(" \t") for value in values for element in value.split(",")]
    if codings[-1].lower() != "chunked":
        raise BadRequest(f"Transfer-Encoding not ending in chunked: {values!r}")
    unknown = False
    for coding in codings[:-1]:
        lower = coding.lower()
        if lower == "identity":
            continue  # no coding at all
        if lower == "chunked":
            raise BadRequest(f"chunked applied more than once: {values!r}")
        if not _TRANSFER_CODING.fullmatch(coding):
            raise BadRequest(f"malformed Transfer-Encoding {values!r}")
        unknown = True  # not refused yet: a later element may still be malformed
    if unknown:
        raise UnsupportedTransferCoding(f"unsupported transfer coding in {values!r}")


def _refuse_request_line(text: str, line_cap: int) -> NoReturn:
    """Raise the right error for a head whose request line did not match."""
    line_end = text.find("\r\n")
    if line_end > line_cap:
        raise URITooLong(f"request line longer than {line_cap} bytes")
    if _LATER_VERSION.match(text):
        raise VersionNotSupported(f"unsupported version in {text[:line_end]!r}")
    raise BadRequest(f"invalid request line {text[: min(line_end, 100)]!r}")


class _Derived(NamedTuple):
    """What a parser needs of its Limits, worked out once per Limits (a worker has one)."""

    line_cap: int  # bytes of the request line
    fields_cap: int  # header fields
    field_cap: int  # bytes of a field line before its CRLF
    max_head: int
    drop_underscore: bool
    header_lines: re.Pattern[str]  # the pattern that lists the head's fields
    # A field line takes at least 4 bytes ("a:\r\n"), so a head no longer than this
    # cannot break any limit and skips those checks.
    check_from: int


def _work_out(limits: Limits) -> _Derived:
    line_cap = limits.request_line or limits.max_head
    fields_cap = limits.max_fields
    # The bytes a field line may hold before its CRLF: gunicorn counts the CRLF in
    # limit_request_field_size, so at 8190 a line of 8189 bytes and its CRLF is refused.
    field_cap = limits.field_size - 2 if limits.field_size else limits.max_head
    drop = limits.drop_underscore_headers
    return _Derived(
        line_cap=line_cap,
        fields_cap=fields_cap,
        field_cap=field_cap,
        max_head=limits.max_head,
        drop_underscore=drop,
        header_lines=_HEADER_LINES_NO_UNDERSCORE if drop else _HEADER_LINES,
        check_from=min(line_cap, field_cap, 4 * fields_cap + 2),
    )


# Worked out once per worker rather than once per connection (a parser is made for every
# connection: measured, this halves its cost). A worker has one Limits, so the last one is
# remembered, by identity: hashing a dataclass would run Python code.
_last_derived: tuple[Limits, _Derived] = (DEFAULT_LIMITS, _work_out(DEFAULT_LIMITS))


class RequestParser:
    """Turns the bytes of one connection into ``Request`` objects (see module doc)."""

    __slots__ = (
        "_buf",
        "_check_from",
        "_current",
        "_decoder",
        "_drop_underscore",
        "_error",
        "_field_cap",
        "_fields_cap",
        "_header_lines",
        "_keep_alive_after",
        "_line_cap",
        "_line_start",
        "_lines",
        "_llhttp",
        "_max_head",
        "_proto",
        "_remaining",
        "_scanned",
        "_state",
        "_sync_llhttp",
        "_upgrade_if",
        "_upgraded_rest",
        "requests",
    )

    def __init__(
        self,
        limits: Limits = DEFAULT_LIMITS,
        upgrade_if: Callable[[Request], bool] | None = None,
    ) -> None:
        self.requests: deque[Request] = deque()
        global _last_derived
        if limits is not _last_derived[0]:
            _last_derived = (limits, _work_out(limits))
        derived = _last_derived[1]
        (
            self._line_cap,
            self._fields_cap,
            self._field_cap,
            self._max_head,
            self._drop_underscore,
            self._header_lines,
            self._check_from,
        ) = derived
        self._state = _HEAD
        self._error: HTTPError | None = None
        self._buf = bytearray()  # a head still arriving
        self._scanned = 0  # how much of _buf the partial-head checks have seen
        self._lines = 0  # line ends in _buf
        self._line_start = 0  # where the unfinished line in _buf starts
        self._llhttp, self._proto = _new_validator()
        self._current: Request | None = None  # the request whose body is arriving
        self._keep_alive_after = True
        self._remaining = 0  # Content-Length bytes still to come
        self._sync_llhttp = True  # whether llhttp expects those bytes too
        self._decoder: ChunkedDecoder | None = None
        # Asked only of a head llhttp takes as an upgrade: no cost to any other request.
        self._upgrade_if = upgrade_if
        self._upgraded_rest = b""  # what came after an upgrade head, not yet taken

    @property
    def idle(self) -> bool:
        """No part of an unfinished message is buffered (the connection is between requests)."""
        return (self._state == _HEAD and not self._buf) or self._state == _CLOSED

    @property
    def upgraded(self) -> bool:
        """The last head queued was an upgrade `upgrade_if` took: no HTTP follows it."""
        return self._state == _UPGRADED

    def take_upgraded_rest(self) -> bytes:
        """The bytes that came after the upgrade head, up to now; each is handed out once."""
        rest = self._upgraded_rest
        self._upgraded_rest = b""
        return rest

    def feed(self, data: bytes) -> None:
        """Parse as much of ``data`` as possible; raise an ``HTTPError`` for bad input."""
        if self._state != _HEAD or self._buf:
            if self._state == _DEAD:
                assert self._error is not None
                raise self._error
            if self._state == _CLOSED:
                return
            if self._state == _UPGRADED:
                self._upgraded_rest += data
                return
            if self._buf:
                data = self._join_buffered(data)
        pos = 0
        size = len(data)
        try:
            while pos < size:
                state = self._state
                if state == _HEAD:
                    pos = self._feed_head(data, pos, size)
                elif state == _LENGTH:
                    pos = self._feed_length(data, pos)
                elif state == _CHUNKED:
                    pos = self._feed_chunked(data, pos)
                else:
                    if state == _UPGRADED:  # what the client sent behind the head
                        self._upgraded_rest += data[pos:]
                    return
        except HTTPError as exc:
            self._die(exc)
            raise

    def _feed_head(self, data: bytes, pos: int, size: int) -> int:
        """The request head at ``pos``: its request is queued (or its body begins); returns
        where the next bytes start, ``size`` when the head is not all here yet (it waits in
        the buffer). The hot path of the whole server: one call per request."""
        end = data.find(b"\r\n\r\n", pos)
        if end < 0:
            self._buf += data[pos:]
            self._check_partial_head()
            return size
        stop = end + 4
        head = data if stop == size and not pos else data[pos:stop]
        text = head.decode("latin-1")
        match = _REQUEST_LINE.match(text)
        if match is None:
            if text.startswith("\r\n"):  # empty lines before a request line
                return pos + _empty_lines(data, pos)
            _refuse_request_line(text, self._line_cap)
        if len(text) > self._check_from:  # short heads cannot break a limit
            self._check_head_limits(text)
        method, target, version = match.groups()

        proto = self._proto
        proto.done = False
        upgraded = False
        try:
            if method in _LLHTTP_METHODS:
                self._llhttp.feed_data(head)
            else:
                self._llhttp.feed_data(_head_for_llhttp(method, head))
        except httptools.HttpParserUpgrade:
            upgraded = True  # llhttp skipped any body; we read it ourselves
        except httptools.HttpParserError as exc:
            raise BadRequest(str(exc)) from None

        # llhttp accepted the head: every line is now "token:" OWS value CRLF.
        headers: list[tuple[str, str]] = self._header_lines.findall(text)
        content_length = _check_noted_fields(headers, version)
        if target[0] == "/" and "#" not in target:
            path, _, query = target.partition("?")
        else:
            path, query = split_target(method, target)

        if upgraded or not proto.done:
            request = Request(method, target, path, query, version, headers, head=head)
            return self._start_body(request, upgraded, stop)
        # No body, the common case: complete (llhttp saw no body: Content-Length 0 if any).
        keep_alive = proto.keep_alive
        self.requests.append(
            # Positional: a keyword argument here cost 2% of a hello-world request.
            Request(method, target, path, query, version, headers, keep_alive, content_length, head)
        )
        if not keep_alive:
            self._state = _CLOSED
            return size
        return stop

    def feed_eof(self) -> None:
        """The peer closed its side: refuse a message it left unfinished."""
        state = self._state
        if state == _HEAD and self._buf:
            self._die(BadRequest("connection closed in the middle of a request head"))
        elif state in (_LENGTH, _CHUNKED):
            self._die(BadRequest("connection closed before the request body was complete"))
        else:
            return
        assert self._error is not None
        raise self._error

    def _die(self, exc: HTTPError) -> None:
        self._state = _DEAD
        self._error = exc
        self._buf.clear()

    # -- heads ---------------------------------------------------------------------

    def _join_buffered(self, data: bytes) -> bytes:
        """Combine a buffered head start with new data; b"" if the head is still incomplete."""
        buf = self._buf
        old = len(buf)
        buf += data
        if buf.find(b"\r\n\r\n", max(0, old - 3)) < 0:
            try:
                self._check_partial_head()
            except HTTPError as exc:
                self._die(exc)
                raise
            return b""
        data = bytes(buf)
        buf.clear()
        self._scanned = self._lines = self._line_start = 0
        return data

    def _check_head_limits(self, text: str) -> None:
        """Limits on a complete head whose request line matched."""
        # Splitting is linear; a regex hunting for a long line would be quadratic.
        lines = text.split("\r\n")  # request line, fields, "", ""
        if len(lines[0]) > self._line_cap:
            raise URITooLong(f"request line longer than {self._line_cap} bytes")
        if len(lines) - 3 > self._fields_cap:
            raise HeaderFieldsTooLarge(f"more than {self._fields_cap} header fields")
        if len(lines) > 3 and max(map(len, lines[1:-2])) > self._field_cap:
            raise line_too_long("header field line", self._field_cap)

    def _check_partial_head(self) -> None:
        """Refuse a head still arriving as soon as it cannot become valid or too big."""
        buf = self._buf
        if buf.startswith(b"\r\n"):  # empty lines before a request line are ignored
            del buf[: _empty_lines(buf, 0)]
            self._scanned = self._lines = self._line_start = 0
        size = len(buf)
        if not size:
            return
        if size > self._max_head:
            raise HeaderFieldsTooLarge(f"request head larger than {self._max_head} bytes")
        scanned = self._scanned
        region, ends = new_line_ends(buf, scanned, "request head")
        if ends:
            if not self._lines:
                line_end = buf.find(b"\r\n")
                text = bytes(buf[: line_end + 2]).decode("latin-1")
                if not _REQUEST_LINE.match(text):
                    _refuse_request_line(text, self._line_cap)
                if line_end > self._line_cap:
                    raise URITooLong(f"request line longer than {self._line_cap} bytes")
                fields_start = line_end + 2
            else:
                fields_start = self._line_start
            self._lines += ends
            if self._lines - 1 > self._fields_cap:
                raise HeaderFieldsTooLarge(f"more than {self._fields_cap} header fields")
            line_start = buf.rfind(b"\n") + 1
            # Field lines completed by this data: only the longest matters.
            if line_start - fields_start > self._field_cap + 2 and (
                max(map(len, buf[fields_start:line_start].split(b"\r\n"))) > self._field_cap
            ):
                raise line_too_long("header field line", self._field_cap)
            self._line_start = line_start
        # The unfinished line, not counting a CR that may start its line end.
        unfinished = size - self._line_start - (buf[-1] == 13)
        if not self._lines:
            if unfinished > self._line_cap:
                raise URITooLong(f"request line longer than {self._line_cap} bytes")
            if _NOT_REQUEST_LINE.search(region):
                raise BadRequest("invalid byte in request line")
        elif unfinished > self._field_cap:
            raise line_too_long("header field line", self._field_cap)
        self._scanned = size

    def _start_body(self, request: Request, upgraded: bool, stop: int) -> int:
        content_length = None
        codings: list[str] = []
        expect = ""
        for name, value in request.headers:
            lower = name.lower()
            if lower == "content-length":
                content_length = int(value)  # llhttp checked: digits, not repeated
            elif lower == "transfer-encoding":
                codings.append(value)
            elif lower == "expect":
                expect = value
        chunked = bool(codings)
        if chunked:
            if request.version == "HTTP/1.0":
                raise BadRequest("chunked Transfer-Encoding on HTTP/1.0")
            # llhttp only checks that "chunked" comes last.
            _check_transfer_codings(codings)
        has_body = chunked or bool(content_length)
        proto = self._proto
        if not upgraded and proto.done == has_body:
            # llhttp sees the framing differently from us: refuse rather than guess.
            raise BadRequest("ambiguous message framing")
        keep_alive = proto.keep_alive if proto.done else self._llhttp.should_keep_alive()
        request.keep_alive = keep_alive
        request.content_length = content_length
        request.chunked = chunked
        request.expect_continue = (
            has_body and request.version == "HTTP/1.1" and expect.lower() == "100-continue"
        )
        request.complete = not has_body
        self.requests.append(request)
        if not has_body:
            if upgraded and self._upgrade_if is not None and self._upgrade_if(request):
                self._state = _UPGRADED
            elif not keep_alive:
                self._state = _CLOSED
            return stop
        self._current = request
        self._keep_alive_after = keep_alive
        if chunked:
            if not upgraded:  # this llhttp now waits for chunks it will never see
                self._llhttp, self._proto = _new_validator()
            self._decoder = ChunkedDecoder(
                request.body,
                self._field_cap,
                self._fields_cap,
                self._max_head,  # a trailer section is bounded like a head
                self._drop_underscore,
            )
            self._state = _CHUNKED
        else:
            assert content_length is not None
            self._remaining = content_length
            self._sync_llhttp = not upgraded
            self._state = _LENGTH
        return stop

    # -- bodies --------------------------------------------------------------------

    def _finish_body(self) -> None:
        assert self._current is not None
        self._current.complete = True
        self._current = None
        self._decoder = None
        self._state = _HEAD if self._keep_alive_after else _CLOSED

    def _feed_length(self, data: bytes, pos: int) -> int:
        stop = min(len(data), pos + self._remaining)
        chunk = data if pos == 0 and stop == len(data) else data[pos:stop]
        assert self._current is not None
        self._current.body.append(chunk)
        if self._sync_llhttp:
            self._llhttp.feed_data(chunk)
        self._remaining -= stop - pos
        if not self._remaining:
            self._finish_body()
        return stop

    def _feed_chunked(self, data: bytes, pos: int) -> int:
        decoder = self._decoder
        assert decoder is not None and self._current is not None
        pos = decoder.feed(data, pos)
        if decoder.complete:
            self._current.trailers = decoder.trailers
            self._finish_body()
        return pos
