"""Sans-IO HTTP/1.1 request parsing: bytes in through ``feed``, ``Request`` heads out.

How this works
--------------
The parser keeps each request head in its own hands until the blank line that ends it
has arrived, then deals with the whole head at once:

1. the request line, with one regex: a method token, single spaces, a target of
   printable ASCII and ``HTTP/1.0`` or ``HTTP/1.1`` (``HTTP/2.0`` and later -> 505, any
   other version -> 400);
2. limits, on the raw text (request line -> 414, field count and line size -> 431),
   skipped for heads too short to break any;
3. llhttp (httptools), fed exactly that head, validates the rest in C: header syntax,
   bare LF, control characters, obsolete folding, ``Content-Length`` syntax and
   duplicates, ``Content-Length`` with ``Transfer-Encoding``, codings not ending in
   ``chunked``. Its single callback tells whether the message is already complete and
   what the client wants for keep-alive;
4. one regex pass splits the header lines llhttp has just accepted, dropping names
   with "_" and the whitespace around values;
5. only when llhttp expects a body do we look at the framing headers, and refuse what
   llhttp lets through: a coding list other than a single ``chunked`` (``gzip,
   chunked``, ``,chunked``, a repeated header) and chunked on HTTP/1.0.

A head that is still arriving is checked as it grows (limits, bare LF, the request
line once complete), so an endless line is refused rather than buffered forever.

Since llhttp never sees bytes beyond the message we hand it, we always know where the
next message starts. Bodies with a ``Content-Length`` are counted out by us (the same
bytes are passed through llhttp so that it stays in step); chunked bodies are decoded
by a second llhttp parser made for that one message. That parser is fed up to each
CRLF CRLF at most, the only place where a chunked message can end, so it never runs
into the next request.

Not supported by design: ``CONNECT`` (400) and protocol upgrades (a request carrying
``Upgrade`` is served as an ordinary request; the connection stays HTTP/1.1).
"""

import re
from collections import deque
from typing import NoReturn

import httptools

from dynocorn.http.errors import (
    BadRequest,
    HeaderFieldsTooLarge,
    HTTPError,
    URITooLong,
    VersionNotSupported,
)
from dynocorn.http.limits import DEFAULT_LIMITS, Limits

__all__ = ["Request", "RequestParser"]

# Parser states.
_HEAD = 0  # waiting for (more of) a request head
_LENGTH = 1  # inside a body framed by Content-Length
_CHUNKED = 2  # inside a chunked body
_CLOSED = 3  # the last request asked to close: later bytes are ignored
_DEAD = 4  # refused something; the connection is going away

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
_CONTENT_LENGTH = re.compile(r"\n(?i:content-length):")
# A byte that cannot be part of a request line: refuses TLS or other garbage early.
_NOT_REQUEST_LINE = re.compile(rb"[^\x21-\x7e \r]")

# Methods llhttp knows; any other valid token is shown to llhttp as GET (llhttp only
# uses the method to recognise CONNECT, which is refused before this point).
_LLHTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
_CHUNKED_PREAMBLE = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"


class Request:
    """One request head, and its body as it arrives."""

    __slots__ = (
        "body",
        "chunked",
        "complete",
        "content_length",
        "expect_continue",
        "headers",
        "keep_alive",
        "method",
        "path",
        "query",
        "raw_target",
        "trailers",
        "version",
    )

    def __init__(
        self,
        method: str,
        raw_target: str,
        path: str,
        query: str,
        version: str,
        headers: list[tuple[str, str]],
        keep_alive: bool = True,
        content_length: int | None = None,
        chunked: bool = False,
        expect_continue: bool = False,
        body: bytearray | None = None,
        complete: bool = True,
        trailers: list[tuple[str, str]] | None = None,
    ) -> None:
        self.method = method
        self.raw_target = raw_target  # as sent, latin-1
        self.path = path  # before "?", still percent-encoded
        self.query = query  # after "?", fragment removed
        self.version = version  # "HTTP/1.1" or "HTTP/1.0"
        self.headers = headers  # (name as sent, value without surrounding OWS)
        self.keep_alive = keep_alive  # what the client wants
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue  # only when a body is expected
        # Body bytes parsed and not yet taken; consumers take them in place
        # (``del request.body[:n]``): the parser keeps appending to this object.
        self.body = bytearray() if body is None else body
        self.complete = complete  # the whole message, body and trailers included
        self.trailers = [] if trailers is None else trailers

    def __repr__(self) -> str:
        return (
            f"<Request {self.method} {self.raw_target} {self.version}"
            f" headers={len(self.headers)} complete={self.complete}>"
        )


_new_request = object.__new__


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


class _ChunkedBody:
    """Callbacks of the llhttp parser that decodes one chunked body."""

    __slots__ = ("complete", "drop_underscore", "in_body", "request", "saw_data", "trailers")

    def __init__(self, request: Request, drop_underscore: bool) -> None:
        self.request = request
        self.drop_underscore = drop_underscore
        self.in_body = False  # the preamble's own header is not a trailer
        self.saw_data = False
        self.complete = False
        self.trailers: list[tuple[str, str]] = []

    def on_headers_complete(self) -> None:
        self.in_body = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.in_body and not (self.drop_underscore and b"_" in name):
            self.trailers.append((name.decode("latin-1"), value.decode("latin-1").strip(" \t")))

    def on_body(self, data: bytes) -> None:
        self.request.body += data
        self.saw_data = True

    def on_message_complete(self) -> None:
        self.complete = True


def _new_validator() -> tuple[httptools.HttpRequestParser, _HeadProtocol]:
    proto = _HeadProtocol()
    proto.llhttp = httptools.HttpRequestParser(proto)
    return proto.llhttp, proto


def _split_target(target: str) -> tuple[str, str]:
    """Path and query of any target llhttp accepted (origin, absolute or "*" form)."""
    target = target.partition("#")[0]
    if not target.startswith("/") and target != "*":
        # absolute-form: scheme "://" authority [path] ["?" query]
        scheme_end = target.find("://")
        rest = target[scheme_end + 3 :] if scheme_end > 0 else target
        cut = len(rest)
        for sep in "/?":
            at = rest.find(sep)
            if 0 <= at < cut:
                cut = at
        target = rest[cut:]
        if not target.startswith("/"):
            target = "/" + target
    path, _, query = target.partition("?")
    return path, query


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


def _refuse_request_line(text: str, line_cap: int) -> NoReturn:
    """Raise the right error for a head whose request line did not match."""
    line_end = text.find("\r\n")
    if line_end > line_cap:
        raise URITooLong(f"request line longer than {line_cap} bytes")
    if _LATER_VERSION.match(text):
        raise VersionNotSupported(f"unsupported version in {text[:line_end]!r}")
    raise BadRequest(f"invalid request line {text[: min(line_end, 100)]!r}")


_Derived = tuple[int, int, int, int, bool, "re.Pattern[str]", int]
# What a parser needs from its Limits, worked out once per worker rather than once per
# connection (a parser is made for every connection: measured, this halves its cost). A
# worker has one Limits, so the last one is remembered, by identity: hashing a dataclass
# would run Python code.


def _work_out(limits: Limits) -> _Derived:
    line_cap = limits.request_line or limits.max_head
    fields_cap = limits.max_fields
    field_cap = limits.field_size or limits.max_head
    drop = limits.drop_underscore_headers
    return (
        line_cap,
        fields_cap,
        field_cap,
        limits.max_head,
        drop,
        _HEADER_LINES_NO_UNDERSCORE if drop else _HEADER_LINES,
        # A field line takes at least 4 bytes ("a:\r\n"), so a head no longer than
        # this cannot break any limit and skips those checks.
        min(line_cap, field_cap, 4 * fields_cap + 2),
    )


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
        "_overhead",
        "_proto",
        "_remaining",
        "_scanned",
        "_state",
        "_sync_llhttp",
        "requests",
    )

    def __init__(self, limits: Limits = DEFAULT_LIMITS) -> None:
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
        self._buf = bytearray()  # a head still arriving, or up to 3 bytes of a chunked body
        self._scanned = 0  # how much of _buf the partial-head checks have seen
        self._lines = 0  # line ends in _buf
        self._line_start = 0  # where the unfinished line in _buf starts
        self._llhttp, self._proto = _new_validator()
        self._current: Request | None = None  # the request whose body is arriving
        self._keep_alive_after = True
        self._remaining = 0  # Content-Length bytes still to come
        self._sync_llhttp = True  # whether llhttp expects those bytes too
        self._decoder: tuple[httptools.HttpRequestParser, _ChunkedBody] | None = None
        self._overhead = 0  # chunked framing bytes seen since the last data

    @property
    def idle(self) -> bool:
        """No part of an unfinished message is buffered (the connection is between requests)."""
        return (self._state == _HEAD and not self._buf) or self._state == _CLOSED

    def feed(self, data: bytes) -> None:
        """Parse as much of ``data`` as possible; raise an ``HTTPError`` for bad input."""
        if self._state != _HEAD or self._buf:
            if self._state == _DEAD:
                assert self._error is not None
                raise self._error
            if self._state == _CLOSED:
                return
            if self._buf:
                data = self._join_buffered(data)
        pos = 0
        size = len(data)
        try:
            while pos < size:
                if self._state != _HEAD:
                    if self._state == _LENGTH:
                        pos = self._feed_length(data, pos)
                    elif self._state == _CHUNKED:
                        pos = self._feed_chunked(data, pos)
                    else:
                        return
                    continue
                end = data.find(b"\r\n\r\n", pos)
                if end < 0:
                    self._buf += data[pos:]
                    self._check_partial_head()
                    return
                # The head is complete. This is the hot path of the whole server, so it
                # is written out here rather than split into smaller methods.
                stop = end + 4
                head = data if stop == size and not pos else data[pos:stop]
                text = head.decode("latin-1")
                match = _REQUEST_LINE.match(text)
                if match is None:
                    if text.startswith("\r\n"):  # empty lines before a request line
                        pos += _empty_lines(data, pos)
                        continue
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
                if target[0] == "/" and "#" not in target:
                    path, _, query = target.partition("?")
                else:
                    path, query = _split_target(target)

                if upgraded or not proto.done:
                    request = Request(method, target, path, query, version, headers)
                    pos = self._start_body(request, upgraded, stop)
                    continue
                # No body, the common case. Attributes are set one by one: cheaper than
                # passing thirteen arguments to __init__.
                request = _new_request(Request)
                request.method = method
                request.raw_target = target
                request.path = path
                request.query = query
                request.version = version
                request.headers = headers
                request.keep_alive = keep_alive = proto.keep_alive
                request.content_length = 0 if _CONTENT_LENGTH.search(text) else None
                request.chunked = False
                request.expect_continue = False
                request.body = bytearray()
                request.complete = True
                request.trailers = []
                self.requests.append(request)
                if not keep_alive:
                    self._state = _CLOSED
                    return
                pos = stop
        except HTTPError as exc:
            self._die(exc)
            raise

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
        """Combine buffered bytes with new data; b"" if a head is still incomplete."""
        buf = self._buf
        if self._state != _HEAD:  # the held-back end of a chunked body
            data = bytes(buf) + data
            buf.clear()
            return data
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
            raise HeaderFieldsTooLarge(f"header line longer than {self._field_cap} bytes")

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
        # Start one byte early when that byte is a CR, so a CRLF split between two
        # reads counts as one line end and not as a bare LF.
        start = scanned - 1 if scanned and buf[scanned - 1] == 13 else scanned
        region = buf[start:]
        ends = region.count(b"\n")
        if ends:
            if ends != region.count(b"\r\n"):
                raise BadRequest("bare LF in request head")
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
                raise HeaderFieldsTooLarge(f"header line longer than {self._field_cap} bytes")
            self._line_start = line_start
        # The unfinished line, not counting a CR that may start its line end.
        unfinished = size - self._line_start - (buf[-1] == 13)
        if not self._lines:
            if unfinished > self._line_cap:
                raise URITooLong(f"request line longer than {self._line_cap} bytes")
            if _NOT_REQUEST_LINE.search(region):
                raise BadRequest("invalid byte in request line")
        elif unfinished > self._field_cap:
            raise HeaderFieldsTooLarge(f"header line longer than {self._field_cap} bytes")
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
            # llhttp accepts "gzip, chunked", ",chunked", or TE repeated with chunked
            # last; only a single plain "chunked" is unambiguous, so only that passes.
            if len(codings) > 1 or codings[0].lower() != "chunked":
                raise BadRequest(f"unsupported Transfer-Encoding {codings!r}")
            if request.version == "HTTP/1.0":
                raise BadRequest("chunked Transfer-Encoding on HTTP/1.0")
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
            if not keep_alive:
                self._state = _CLOSED
            return stop
        self._current = request
        self._keep_alive_after = keep_alive
        if chunked:
            if not upgraded:  # this llhttp now waits for chunks it will never see
                self._llhttp, self._proto = _new_validator()
            body = _ChunkedBody(request, self._drop_underscore)
            decoder = httptools.HttpRequestParser(body)
            decoder.feed_data(_CHUNKED_PREAMBLE)
            self._decoder = (decoder, body)
            self._overhead = 0
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
        self._current.body += chunk
        if self._sync_llhttp:
            self._llhttp.feed_data(chunk)
        self._remaining -= stop - pos
        if not self._remaining:
            self._finish_body()
        return stop

    def _feed_chunked(self, data: bytes, pos: int) -> int:
        assert self._decoder is not None
        decoder, body = self._decoder
        size = len(data)
        while pos < size:
            end = data.find(b"\r\n\r\n", pos)
            if end >= 0:
                stop = end + 4
            else:
                # Hold back a possible start of CRLF CRLF: the message may end there.
                stop = size
                if data.endswith(b"\r\n\r"):
                    stop -= 3
                elif data.endswith(b"\r\n"):
                    stop -= 2
                elif data.endswith(b"\r"):
                    stop -= 1
                stop = max(stop, pos)
            if stop > pos:
                body.saw_data = False
                try:
                    decoder.feed_data(data[pos:stop])
                except httptools.HttpParserError as exc:
                    raise BadRequest(f"invalid chunked body: {exc}") from None
                if body.saw_data:
                    self._overhead = 0
                else:
                    # Sizes, extensions and trailers only: bound them like a head.
                    self._overhead += stop - pos
                    if self._overhead > self._max_head:
                        raise HeaderFieldsTooLarge("chunk framing or trailers too large")
                pos = stop
            if body.complete:
                if len(body.trailers) > self._fields_cap:
                    raise HeaderFieldsTooLarge(f"more than {self._fields_cap} trailer fields")
                assert self._current is not None
                self._current.trailers = body.trailers
                self._finish_body()
                return pos
            if end < 0:
                self._buf += data[pos:]
                return size
        return pos
