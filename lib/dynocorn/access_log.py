"""The access log, in one of three styles (`access_log_style`): gunicorn's
`access_log_format` atoms, one Heroku-router-like logfmt line, or the same fields as one JSON
object a line.

The format is read once: only the atoms it names are computed for each request, instead of
gunicorn's dict of every atom, header and environ variable.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from dynocorn import logfmt
from dynocorn.http import Request
from dynocorn.metrics.queue_time import queue_ms
from dynocorn.settings import DEFAULT_ACCESS_LOG_FORMAT
from dynocorn.wsgi import Response

Getter = Callable[[Mapping[str, Any], Request, Response, float], object]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# A log line is one line: controls (a percent-decoded %0A in a path, say) become visible
# escapes, and quotes are escaped as gunicorn does, so quoted fields stay parseable.
_ESCAPES = {code: f"\\x{code:02x}" for code in [*range(0x20), *range(0x7F, 0xA0)]}
_ESCAPES[ord('"')] = '\\"'


def _safe(text: str) -> str:
    if text.isprintable() and '"' not in text:
        return text
    return text.translate(_ESCAPES)


def _user(environ: Mapping[str, Any]) -> str:
    auth = environ.get("HTTP_AUTHORIZATION")
    if not auth:
        return "-"
    scheme, _, credentials = auth.partition(" ")
    if scheme.lower() != "basic":
        return "-"
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True)
    except (binascii.Error, ValueError):
        return "-"
    return _safe(decoded.decode("utf-8", "replace").partition(":")[0]) or "-"


def _environ(key: str, default: str = "-") -> Getter:
    def get(environ: Mapping[str, Any], request: Request, response: Response, d: float) -> str:
        value = environ.get(key)
        return _safe(value) if isinstance(value, str) else default

    return get


def _request_line(environ: Mapping[str, Any], request: Request, r: Response, d: float) -> str:
    return _safe(f"{request.method} {request.raw_target} {request.version}")


def _seconds(duration: float) -> str:
    # Truncated to whole microseconds, like gunicorn, so that L and D agree.
    micros = int(duration * 1_000_000)
    return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"


def _bytes_clf(environ: Mapping[str, Any], request: Request, response: Response, d: float) -> str:
    return str(response.body_bytes) if response.body_bytes else "-"


ATOMS: dict[str, Getter] = {
    "h": lambda e, q, r, d: _safe(e.get("REMOTE_ADDR") or "-"),  # "" from a unix socket
    "l": lambda e, q, r, d: "-",
    "u": lambda e, q, r, d: _user(e),
    "r": _request_line,
    "m": _environ("REQUEST_METHOD"),
    "U": _environ("PATH_INFO"),
    "q": _environ("QUERY_STRING"),
    "H": _environ("SERVER_PROTOCOL"),
    "s": lambda e, q, r, d: str(r.status_code),
    "B": lambda e, q, r, d: r.body_bytes,
    "b": _bytes_clf,
    "f": _environ("HTTP_REFERER"),
    "a": _environ("HTTP_USER_AGENT"),
    "T": lambda e, q, r, d: int(d),
    "M": lambda e, q, r, d: int(d * 1_000),
    "D": lambda e, q, r, d: int(d * 1_000_000),
    "L": lambda e, q, r, d: _seconds(d),
    "p": lambda e, q, r, d: f"<{os.getpid()}>",  # not cached: the log may outlive a fork
}
_INT_ATOMS = {"B", "T", "M", "D"}


def _header(pairs: list[tuple[str, str]], lowered: str) -> str:
    values = [value for name, value in pairs if name.lower() == lowered]
    return _safe(",".join(values)) if values else "-"


def _environ_any_case(environ: Mapping[str, Any], name: str) -> str:
    # gunicorn lower-cases environ keys, so %({remote_addr}e)s and %({REMOTE_ADDR}e)s agree.
    value = environ.get(name)
    if value is None:
        value = environ.get(name.upper())
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in environ.items() if k.lower() == lowered), None)
    if value is None:
        return "-"
    return _safe(value if isinstance(value, str) else str(value))


def _braced(atom: str) -> Getter | None:
    """`{name}i` request header, `{name}o` response header, `{name}e` environ variable."""
    if not (atom.startswith("{") and len(atom) > 3 and atom[-2] == "}"):
        return None
    name, kind = atom[1:-2], atom[-1]
    lowered = name.lower()
    if kind == "i":
        return lambda e, q, r, d: _header(q.headers, lowered)
    if kind == "o":
        return lambda e, q, r, d: _header(r.text_headers(), lowered)
    if kind == "e":
        return lambda e, q, r, d: _environ_any_case(e, name)
    return None


_ATOM = re.compile(r"%\(([^)]*)\)")
_DIRECTIVE = re.compile(r"%%|%\(([^)]*)\)([-#0 +]*\d*(?:\.\d*)?[diouxXeEfFgGcrsa])?|%")


def _is_clean(fmt: str) -> bool:
    """Only %% and %(atom)<conversion>: a bare %s would print the whole dict of atoms."""
    return all(match.group(0) == "%%" or match.group(2) for match in _DIRECTIVE.finditer(fmt))


def _sanitize(fmt: str) -> str:
    """A format that cannot fail: every atom as %(name)s, every other % literal."""

    def replace(match: re.Match[str]) -> str:
        if match.group(2):
            return f"%({match.group(1)})s"
        if match.group(0) == "%%":
            return "%%"
        return match.group(0).replace("%", "%%")

    return _DIRECTIVE.sub(replace, fmt)


class RouterFields(NamedTuple):
    """The fields of the logfmt and json lines, unquoted: their names are the lines' keys.

    Text is as the server decoded it, latin-1 (as in the WSGI environ), so that any byte a
    client sent is one character: `text.encode("latin-1")` gives the bytes back, whether or
    not they were UTF-8. None is a value the request did not carry.
    """

    method: str
    path: str  # the request target as sent, query included
    status: int
    bytes: int  # of the response body
    duration_ms: float  # to 0.1 ms
    request_id: str | None  # X-Request-Id
    fwd: str | None  # X-Forwarded-For, else the peer's address
    queue_ms: int | None  # what X-Request-Start implies; omitted from the lines when None


class AccessLog:
    """Formats one line per request and hands it, newline included, to `write`.

    `style` is one of settings.ACCESS_LOG_STYLES: "gunicorn" formats `fmt`; "logfmt" and
    "json" write RouterFields and ignore `fmt`.
    """

    def __init__(
        self,
        write: Callable[[str], None],
        fmt: str = DEFAULT_ACCESS_LOG_FORMAT,
        *,
        style: str = "gunicorn",
        clock: Callable[[], float] = time.time,
    ) -> None:
        lines = {
            "gunicorn": self._gunicorn_line,
            "logfmt": self._logfmt_line,
            "json": self._json_line,
        }
        if style not in lines:
            raise ValueError(f"unknown access log style {style!r}")
        self._write = write
        self._line = lines[style]
        self._clock = clock
        self._stamp: tuple[int, str] = (-1, "")
        self._utc_stamp: tuple[int, str] = (-1, "")
        getters: dict[str, Getter] = {}
        for atom in dict.fromkeys(_ATOM.findall(fmt)):
            getter = self._time if atom == "t" else ATOMS.get(atom) or _braced(atom)
            getters[atom] = getter or (lambda e, q, r, d: "-")  # unknown atoms, as gunicorn
        self._getters = list(getters.items())
        sample = {atom: 0 if atom in _INT_ATOMS else "-" for atom in getters}
        try:
            fmt % sample
            clean = _is_clean(fmt)
        except (TypeError, ValueError, KeyError):
            clean = False
        # A typo in a format must not cost a request its response, nor the log its line.
        self._fmt = fmt if clean else _sanitize(fmt)

    def log(
        self, environ: Mapping[str, Any], request: Request, response: Response, duration: float
    ) -> None:
        self._write(self._line(environ, request, response, duration) + "\n")

    def _gunicorn_line(
        self, environ: Mapping[str, Any], request: Request, response: Response, duration: float
    ) -> str:
        values = {atom: get(environ, request, response, duration) for atom, get in self._getters}
        return self._fmt % values

    def _time(self, e: Mapping[str, Any], q: Request, r: Response, d: float) -> str:
        second = int(self._clock())
        stamp = self._stamp
        if stamp[0] != second:
            tm = time.localtime(second)
            offset = tm.tm_gmtoff // 60
            sign = "-" if offset < 0 else "+"
            hours, minutes = divmod(abs(offset), 60)
            text = (
                f"[{tm.tm_mday:02d}/{_MONTHS[tm.tm_mon - 1]}/{tm.tm_year}:"
                f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} {sign}{hours:02d}{minutes:02d}]"
            )
            # One tuple, assigned at once: threads never see a second paired with another's text.
            stamp = self._stamp = (second, text)
        return stamp[1]

    def _router_fields(
        self,
        environ: Mapping[str, Any],
        request: Request,
        response: Response,
        duration: float,
        now: float,
    ) -> RouterFields:
        # Queue time ends when the app started on the request, not when it finished.
        queued = queue_ms(environ.get("HTTP_X_REQUEST_START"), now - duration)
        return RouterFields(
            method=request.method,
            path=request.raw_target,
            status=response.status_code,
            bytes=response.body_bytes,
            duration_ms=round(duration * 1000, 1),
            request_id=environ.get("HTTP_X_REQUEST_ID") or None,
            fwd=environ.get("HTTP_X_FORWARDED_FOR") or environ.get("REMOTE_ADDR") or None,
            queue_ms=None if queued is None else round(queued),
        )

    def _logfmt_line(
        self, environ: Mapping[str, Any], request: Request, response: Response, duration: float
    ) -> str:
        fields = self._router_fields(environ, request, response, duration, self._clock())
        parts = [
            f"method={logfmt.value(fields.method)}",
            f"path={logfmt.quoted(fields.path)}",
            f"status={fields.status}",
            f"bytes={fields.bytes}",
            f"duration_ms={fields.duration_ms:.1f}",
            f"request_id={logfmt.value(fields.request_id or '-')}",
            f"fwd={logfmt.quoted(fields.fwd or '-')}",
        ]
        if fields.queue_ms is not None:
            parts.append(f"queue_ms={fields.queue_ms}")
        return " ".join(parts)

    def _json_line(
        self, environ: Mapping[str, Any], request: Request, response: Response, duration: float
    ) -> str:
        """The logfmt line's fields as one JSON object, after a `time` (when the line was
        written: ISO 8601, UTC, milliseconds) as structured loggers expect; no other field.

        Numbers are JSON numbers; a value the request did not carry is null, except queue_ms,
        left out as from the logfmt line. json.dumps does all the quoting and escapes every
        control character; ensure_ascii escapes everything beyond ASCII too (U+2028, NEL,
        latin-1 decoded bytes), so a hostile header cannot end the line or forge a field.
        """
        now = self._clock()
        fields: dict[str, object] = {"time": self._utc_time(now)}
        fields.update(self._router_fields(environ, request, response, duration, now)._asdict())
        if fields["queue_ms"] is None:
            del fields["queue_ms"]
        return json.dumps(fields, ensure_ascii=True, separators=(",", ":"))

    def _utc_time(self, now: float) -> str:
        """`2026-11-22T01:29:22.250Z`; the seconds are formatted once a second."""
        second, millis = divmod(int(now * 1000), 1000)
        stamp = self._utc_stamp
        if stamp[0] != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            stamp = self._utc_stamp = (second, text)  # one tuple: see _time
        return f"{stamp[1]}.{millis:03d}Z"
