"""Decoding one chunked request body (RFC 9112 §7.1) as its bytes arrive.

Each chunk is a size line, ``chunk-size [ chunk-ext ] CRLF``, its data and a CRLF; a size of
0 ends the data and a trailer section follows, ended by an empty line. Extensions may carry
whitespace around ``;`` and ``=`` (the BWS of §7.1.1) and are ignored, as a recipient must
ignore extensions it does not know. Everything else is strict: hex digits only in the size,
exactly CRLF after the data, trailer lines with the syntax of header field lines.

The decoder never reads past the end of its message: ``feed`` says where the message ended,
and what follows belongs to the next request.
"""

import re

from dynocorn.http.body import Body
from dynocorn.http.errors import BadRequest, HeaderFieldsTooLarge
from dynocorn.http.grammar import QUOTED_STRING, TOKEN, line_too_long, new_line_ends

__all__ = ["FORBIDDEN_TRAILERS", "ChunkedDecoder"]

_TOKEN = TOKEN.encode()
_QUOTED_STRING = QUOTED_STRING.encode()
# chunk-ext = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] ), the value a
# token or a quoted-string. Unambiguous (a token holds no ";", "=" or space): no backtracking.
_CHUNK_EXT = (
    rb"(?:[ \t]*;[ \t]*"
    + _TOKEN
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN
    + rb"|"
    + _QUOTED_STRING
    + rb"))?)*"
)
_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]+)" + _CHUNK_EXT)  # without its CRLF
# A size that does not fit in 64 bits is refused, as by llhttp.
_MAX_SIZE_DIGITS = 16
# A whole size line of at most that many digits, CRLF included: the usual case, one match.
_WHOLE_SIZE_LINE = re.compile(rb"([0-9A-Fa-f]{1,16})" + _CHUNK_EXT + rb"\r\n")
# name ":" OWS value OWS, the value of visible characters, SP, HTAB and obs-text (its
# surrounding whitespace is stripped afterwards: a lazy match would backtrack on it).
_FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"):([\t\x20-\x7e\x80-\xff]*)")

# Fields a trailer may not carry (RFC 9110 §6.5.1), lower case: the six gunicorn 27 refuses
# (host, content-length, transfer-encoding, trailer, authorization, te) and the others that
# section names, by name or by section.
FORBIDDEN_TRAILERS = frozenset(
    {
        # message framing and routing
        "content-length",
        "transfer-encoding",
        "host",
        # request modifiers: controls and the conditionals of RFC 9110 §13
        "cache-control",
        "expect",
        "max-forwards",
        "pragma",
        "range",
        "te",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "if-range",
        # authentication
        "authorization",
        "proxy-authorization",
        # how to process the content
        "content-encoding",
        "content-type",
        "content-range",
        "trailer",
    }
)

# Decoder states.
_SIZE = 0  # reading a chunk-size line
_DATA = 1  # inside chunk data
_DATA_END = 2  # expecting the CRLF after chunk data
_TRAILERS = 3  # reading the trailer section
_DONE = 4


class ChunkedDecoder:
    """Appends the data of one chunked body to ``body``; sets ``complete`` at its end."""

    __slots__ = (
        "_crlf_seen",
        "_drop_underscore",
        "_field_cap",
        "_fields_cap",
        "_line_start",
        "_lines",
        "_max_section",
        "_pending",
        "_remaining",
        "_state",
        "body",
        "complete",
        "trailers",
    )

    def __init__(
        self,
        body: Body,
        field_cap: int,
        fields_cap: int,
        max_section: int,
        drop_underscore: bool,
    ) -> None:
        self.body = body
        self.complete = False
        self.trailers: list[tuple[str, str]] = []
        self._field_cap = field_cap  # bytes of a size or trailer line, CRLF excluded
        self._fields_cap = fields_cap  # trailer field lines
        self._max_section = max_section  # bytes of the whole trailer section
        self._drop_underscore = drop_underscore
        self._state = _SIZE
        self._pending = bytearray()  # the start of a line or trailer section still arriving
        self._remaining = 0  # data bytes of the current chunk still to come
        self._crlf_seen = 0  # bytes of the CRLF after chunk data seen so far
        self._lines = 0  # complete lines in a pending trailer section
        self._line_start = 0  # where its unfinished line starts

    def feed(self, data: bytes, pos: int) -> int:
        """Decode ``data`` from ``pos``; return where the body ended, or ``len(data)``."""
        size = len(data)
        body = self.body
        while pos < size:
            state = self._state
            if state == _SIZE:
                match = None if self._pending else _WHOLE_SIZE_LINE.match(data, pos)
                if match is None or match.end() - pos - 2 > self._field_cap:
                    pos = self._feed_size_line(data, pos)  # split, too long or invalid
                    continue
                chunk = int(match.group(1), 16)
                pos = match.end()
                stop = pos + chunk
                if not chunk:
                    self._state = _TRAILERS
                elif data.startswith(b"\r\n", stop):  # the whole chunk is here: the fast way
                    body.append(memoryview(data)[pos:stop])
                    pos = stop + 2
                else:
                    self._remaining = chunk
                    self._state = _DATA
            elif state == _DATA:
                stop = min(size, pos + self._remaining)
                body.append(memoryview(data)[pos:stop])
                self._remaining -= stop - pos
                pos = stop
                if not self._remaining:
                    self._state = _DATA_END
            elif state == _DATA_END:
                if data[pos] != b"\r\n"[self._crlf_seen]:
                    raise BadRequest("chunk data not followed by CRLF")
                pos += 1
                self._crlf_seen += 1
                if self._crlf_seen == 2:
                    self._crlf_seen = 0
                    self._state = _SIZE
            elif state == _TRAILERS:
                pos = self._feed_trailers(data, pos)
            else:
                break
        return pos

    # -- size lines ----------------------------------------------------------------

    def _feed_size_line(self, data: bytes, pos: int) -> int:
        end = data.find(b"\n", pos)
        if end < 0:
            self._hold_size_line(data, pos)
            return len(data)
        line = data[pos : end + 1]
        if self._pending:
            line = bytes(self._pending) + line
            self._pending.clear()
        if not line.endswith(b"\r\n"):
            raise BadRequest("bare LF in a chunk size line")
        self._start_chunk(line[:-2])
        return end + 1

    def _hold_size_line(self, data: bytes, pos: int) -> None:
        """Keep the start of a size line (no LF in it yet); refuse one that cannot end well."""
        pending = self._pending
        # Held bytes hold no CR but at their end; a CR there must be followed by the LF.
        if pending.endswith(b"\r") or 0 <= data.find(b"\r", pos) < len(data) - 1:
            raise BadRequest("bare CR in a chunk size line")
        pending += memoryview(data)[pos:]
        if len(pending) - pending.endswith(b"\r") > self._field_cap:
            raise line_too_long("chunk size line", self._field_cap)

    def _start_chunk(self, line: bytes) -> None:
        if len(line) > self._field_cap:
            raise line_too_long("chunk size line", self._field_cap)
        match = _SIZE_LINE.fullmatch(line)
        if match is None:
            raise BadRequest(f"invalid chunk size line {line[:100]!r}")
        digits = match.group(1)
        if len(digits.lstrip(b"0")) > _MAX_SIZE_DIGITS:
            raise BadRequest("chunk size too large")
        self._remaining = int(digits, 16)
        self._state = _DATA if self._remaining else _TRAILERS

    # -- trailers ------------------------------------------------------------------

    def _feed_trailers(self, data: bytes, pos: int) -> int:
        pending = self._pending
        held = len(pending)
        if not held:  # the usual case: the whole section is in this read
            if data.startswith(b"\r\n", pos):
                return self._finish(b"", pos + 2)
            end = data.find(b"\r\n\r\n", pos)
            if end >= 0:
                return self._finish(data[pos:end], end + 4)
        pending += memoryview(data)[pos:]
        if pending.startswith(b"\r\n"):  # a lone CR was held, and its LF came
            pending.clear()
            return self._finish(b"", pos + 2 - held)
        end = pending.find(b"\r\n\r\n", max(0, held - 3))
        if end < 0:
            self._check_partial_trailers(held)
            return len(data)
        section = bytes(pending[:end])
        pending.clear()
        return self._finish(section, pos + end + 4 - held)

    def _check_partial_trailers(self, held: int) -> None:
        """Refuse a trailer section still arriving once it cannot be valid or is too big."""
        pending = self._pending
        if len(pending) > self._max_section:
            raise HeaderFieldsTooLarge(f"trailer section larger than {self._max_section} bytes")
        _, ends = new_line_ends(pending, held, "the trailer section")
        if ends:
            self._lines += ends
            if self._lines > self._fields_cap:
                raise HeaderFieldsTooLarge(f"more than {self._fields_cap} trailer fields")
            self._line_start = pending.rfind(b"\n") + 1
        unfinished = len(pending) - self._line_start - pending.endswith(b"\r")
        if unfinished > self._field_cap:
            raise line_too_long("trailer line", self._field_cap)

    def _finish(self, section: bytes, end: int) -> int:
        self._set_trailers(section)
        self.complete = True
        self._state = _DONE
        return end

    def _set_trailers(self, section: bytes) -> None:
        lines = section.split(b"\r\n") if section else []
        if len(lines) > self._fields_cap:
            raise HeaderFieldsTooLarge(f"more than {self._fields_cap} trailer fields")
        for line in lines:
            if len(line) > self._field_cap:
                raise line_too_long("trailer line", self._field_cap)
            match = _FIELD_LINE.fullmatch(line)
            if match is None:
                raise BadRequest(f"invalid trailer line {line[:100]!r}")
            name = match.group(1).decode("latin-1")
            if name.lower() in FORBIDDEN_TRAILERS:
                raise BadRequest(f"{name} may not be sent in a trailer")
            if not (self._drop_underscore and "_" in name):
                value = match.group(2).decode("latin-1").strip(" \t")
                self.trailers.append((name, value))
