import base64
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from dynocorn.access_log import AccessLog
from dynocorn.http import Request
from dynocorn.settings import ACCESS_LOG_STYLES
from dynocorn.settings import DEFAULT_ACCESS_LOG_FORMAT as DEFAULT_FORMAT
from dynocorn.wsgi import EnvironBuilder, Response, WSGISettings, call_app
from dynocorn.wsgi_input import Input

# 2026-11-22 01:29:22 UTC
NOW = 1795310962.25


@pytest.fixture(autouse=True)
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def served(
    method: str = "GET",
    target: str = "/path?q=1",
    headers: list[tuple[str, str]] | None = None,
    status: str = "200 OK",
    response_headers: list[tuple[str, str]] | None = None,
    body: bytes = b"Hello, world!",
) -> tuple[dict[str, Any], Request, Response]:
    """A request run through a tiny app, as the worker would have it when logging."""
    path, _, query = target.partition("?")
    request = Request(
        method,
        target,
        path,
        query,
        "HTTP/1.1",
        headers
        if headers is not None
        else [
            ("Host", "example.com"),
            ("Referer", "http://example.com/"),
            ("User-Agent", "curl/8.5"),
        ],
    )
    settings = WSGISettings(False, True, sys.stderr, ["127.0.0.1"], {})
    environ = EnvironBuilder(settings, ("0.0.0.0", 5000)).build(
        request, Input(request, lambda: False), ("10.0.0.1", 54321)
    )
    response = Response(request, lambda data: None, keep_alive=True)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(status, response_headers or [("Content-Type", "text/plain")])
        return [body]

    call_app(app, environ, response)
    return environ, request, response


def line(fmt: str = DEFAULT_FORMAT, duration: float = 0.5, **kwargs: Any) -> str:
    lines: list[str] = []
    environ, request, response = served(**kwargs)
    AccessLog(lines.append, fmt, clock=lambda: NOW).log(environ, request, response, duration)
    assert len(lines) == 1 and lines[0].endswith("\n") and lines[0].count("\n") == 1
    return lines[0][:-1]


def test_default_format() -> None:
    assert line() == (
        '10.0.0.1 - - [22/Nov/2026:01:29:22 +0000] "GET /path?q=1 HTTP/1.1" 200 13 '
        '"http://example.com/" "curl/8.5"'
    )


@pytest.mark.parametrize(
    ("atom", "expected"),
    [
        ("h", "10.0.0.1"),
        ("l", "-"),
        ("u", "-"),
        ("t", "[22/Nov/2026:01:29:22 +0000]"),
        ("r", "GET /path?q=1 HTTP/1.1"),
        ("m", "GET"),
        ("U", "/path"),
        ("q", "q=1"),
        ("H", "HTTP/1.1"),
        ("s", "200"),
        ("B", "13"),
        ("b", "13"),
        ("f", "http://example.com/"),
        ("a", "curl/8.5"),
        ("T", "1"),
        ("M", "1234"),
        ("D", "1234567"),
        ("L", "1.234567"),
        ("{user-agent}i", "curl/8.5"),
        ("{User-Agent}i", "curl/8.5"),
        ("{x-missing}i", "-"),
        ("{content-type}o", "text/plain"),
        ("{CONTENT-LENGTH}o", "13"),  # added by the server for a list body
        ("{x-missing}o", "-"),
        ("{REMOTE_ADDR}e", "10.0.0.1"),
        ("{remote_addr}e", "10.0.0.1"),
        ("{wsgi.url_scheme}e", "http"),
        ("{wsgi.version}e", "(1, 0)"),
        ("{NOT_SET}e", "-"),
        ("zz", "-"),
        ("{name}z", "-"),
        ("{}i", "-"),
        ("", "-"),
    ],
)
def test_atoms(atom: str, expected: str) -> None:
    assert line(f"%({atom})s", duration=1.2345678) == expected


def test_pid_atom() -> None:
    # Not a parameter above: a test id must not depend on the collecting process.
    assert line("%(p)s") == f"<{os.getpid()}>"


def test_unix_socket_peer_renders_a_dash() -> None:
    environ, request, response = served()
    environ["REMOTE_ADDR"] = ""
    lines: list[str] = []
    AccessLog(lines.append, "%(h)s").log(environ, request, response, 0.1)
    assert lines == ["-\n"]


def test_missing_headers_render_dashes() -> None:
    assert line("%(f)s %(a)s %(u)s", headers=[("Host", "h")]) == "- - -"


def test_no_bytes() -> None:
    assert line("%(b)s %(B)s", body=b"") == "- 0"
    assert line("%(b)s %(B)s", method="HEAD") == "- 0"


@pytest.mark.parametrize(
    ("authorization", "user"),
    [
        ("Basic " + base64.b64encode(b"alice:secret").decode(), "alice"),
        ("basic " + base64.b64encode(b"bob").decode(), "bob"),
        ("Basic " + base64.b64encode("zoë:x".encode()).decode(), "zoë"),
        ("Basic not*base64", "-"),
        ("Bearer abc.def", "-"),
        ("Basic", "-"),
    ],
)
def test_user_from_basic_auth(authorization: str, user: str) -> None:
    assert line("%(u)s", headers=[("Host", "h"), ("Authorization", authorization)]) == user


def test_repeated_request_headers_are_joined() -> None:
    headers = [("Host", "h"), ("X-Tag", "a"), ("x-tag", "b")]
    assert line("%({x-tag}i)s", headers=headers) == "a,b"


def test_status_of_an_error_response() -> None:
    assert line("%(s)s %(b)s", status="404 Not Found", body=b"nope") == "404 4"


def test_quotes_and_controls_are_escaped() -> None:
    headers = [("Host", "h"), ("User-Agent", 'evil" agent')]
    assert line('"%(a)s"', headers=headers) == '"evil\\" agent"'
    assert line("%(U)s", target="/a%0Ab%22") == '/a\\x0ab\\"'


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("%(s)d", "200"),  # s is a string, as in gunicorn: the format is repaired
        ("%(B)d bytes", "13 bytes"),
        ("%(B)5d|", "   13|"),
        ("100%% %(s)s", "100% 200"),
        ("100% %(s)s", "100% 200"),
        ("%(s)s %", "200 %"),
        ("%s %(s)s", "%s 200"),
        ("%(s) %(m)s", "%(s) GET"),
        ("%(unclosed", "%(unclosed"),
        ("no atoms at all", "no atoms at all"),
        ("", ""),
    ],
)
def test_bad_formats_never_crash(fmt: str, expected: str) -> None:
    assert line(fmt) == expected


def test_time_zone_offset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    assert line("%(t)s") == "[22/Nov/2026:06:59:22 +0530]"
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    assert line("%(t)s") == "[21/Nov/2026:20:29:22 -0500]"


def test_time_is_formatted_once_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [NOW]
    lines: list[str] = []
    log = AccessLog(lines.append, "%(t)s", clock=lambda: now[0])
    calls = []
    real_localtime = time.localtime

    def counting_localtime(seconds: float | None = None) -> time.struct_time:
        calls.append(seconds)
        return real_localtime(seconds)

    monkeypatch.setattr(time, "localtime", counting_localtime)
    environ, request, response = served()
    for step in (0.0, 0.3, 0.7, 1.0, 1.5):
        now[0] = NOW + step
        log.log(environ, request, response, 0.01)
    assert lines == ["[22/Nov/2026:01:29:22 +0000]\n"] * 3 + ["[22/Nov/2026:01:29:23 +0000]\n"] * 2
    assert len(calls) == 2


# -- logfmt -------------------------------------------------------------------------------


def logfmt_line(
    headers: list[tuple[str, str]], target: str = "/x", duration: float = 0.0031
) -> str:
    lines: list[str] = []
    environ, request, response = served(target=target, headers=[("Host", "h"), *headers])
    log = AccessLog(lines.append, DEFAULT_FORMAT, style="logfmt", clock=lambda: NOW)
    log.log(environ, request, response, duration)
    assert len(lines) == 1 and lines[0].endswith("\n")
    return lines[0][:-1]


def test_logfmt_line() -> None:
    start_ms = round((NOW - 0.0031) * 1000) - 12
    headers = [
        ("X-Request-Id", "9f2c-41"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Request-Start", str(start_ms)),
    ]
    assert logfmt_line(headers) == (
        'method=GET path="/x" status=200 bytes=13 duration_ms=3.1 request_id=9f2c-41 '
        'fwd="203.0.113.7" queue_ms=12'
    )


def test_logfmt_without_router_headers() -> None:
    assert logfmt_line([]) == (
        'method=GET path="/x" status=200 bytes=13 duration_ms=3.1 request_id=- fwd="10.0.0.1"'
    )


@pytest.mark.parametrize(
    ("header", "queue_ms"),
    [
        (str(int(NOW * 1000) - 250), "250"),  # Heroku: epoch milliseconds
        (f"t={int(NOW * 1_000_000) - 40_000}", "40"),  # "t=" with microseconds
        (f"t={NOW - 0.5:.3f}", "500"),  # nginx's $msec: seconds with a fraction
        (str(int(NOW * 1000) + 5000), "0"),  # clocks disagree: never negative
        ("yesterday", None),
        ("t=", None),
        ("nan", None),
        ("-5", None),
        ("", None),
    ],
)
def test_logfmt_queue_time(header: str, queue_ms: str | None) -> None:
    fields = dict(
        part.split("=", 1)
        for part in logfmt_line([("X-Request-Start", header)], duration=0.0).split()
    )
    assert fields.get("queue_ms") == queue_ms


def test_logfmt_queue_time_excludes_the_service_time() -> None:
    header = str(int(NOW * 1000) - 1000)
    fields = dict(
        part.split("=", 1)
        for part in logfmt_line([("X-Request-Start", header)], duration=0.6).split()
    )
    assert fields["queue_ms"] == "400"


def test_logfmt_quotes_what_needs_quoting() -> None:
    text = logfmt_line(
        [("X-Request-Id", 'a b"c'), ("X-Forwarded-For", "1.1.1.1, 2.2.2.2")],
        target='/a%20b?x="y"',
    )
    assert 'path="/a%20b?x=\\"y\\""' in text
    assert 'request_id="a b\\"c"' in text
    assert 'fwd="1.1.1.1, 2.2.2.2"' in text
    assert logfmt_line([("X-Request-Id", "k=v")]).count('request_id="k=v"') == 1


# -- json ---------------------------------------------------------------------------------


def json_text(requests: list[tuple[str, list[tuple[str, str]]]], duration: float = 0.0031) -> str:
    """What the json style writes for each (target, headers) request, all in one text."""
    lines: list[str] = []
    log = AccessLog(lines.append, style="json", clock=lambda: NOW)
    for target, headers in requests:
        environ, request, response = served(target=target, headers=[("Host", "h"), *headers])
        log.log(environ, request, response, duration)
    assert len(lines) == len(requests)
    return "".join(lines)


def json_line(headers: list[tuple[str, str]], target: str = "/x", **kwargs: Any) -> Any:
    text = json_text([(target, headers)], **kwargs)
    # One line, even to readers that also split on U+2028, NEL and the like.
    assert text.isascii() and text.endswith("\n") and len(text.splitlines()) == 1
    return json.loads(text)


def test_json_line() -> None:
    start_ms = round((NOW - 0.0031) * 1000) - 12
    headers = [
        ("X-Request-Id", "9f2c-41"),
        ("X-Forwarded-For", "203.0.113.7"),
        ("X-Request-Start", str(start_ms)),
    ]
    assert json_line(headers) == {
        "time": "2026-11-22T01:29:22.250Z",
        "method": "GET",
        "path": "/x",
        "status": 200,
        "bytes": 13,
        "duration_ms": 3.1,
        "request_id": "9f2c-41",
        "fwd": "203.0.113.7",
        "queue_ms": 12,
    }
    text = json_text([("/x", headers)])
    assert text == (
        '{"time":"2026-11-22T01:29:22.250Z","method":"GET","path":"/x","status":200,'
        '"bytes":13,"duration_ms":3.1,"request_id":"9f2c-41","fwd":"203.0.113.7",'
        '"queue_ms":12}\n'
    )


def test_json_has_the_logfmt_fields_and_time() -> None:
    headers = [("X-Request-Id", "r"), ("X-Request-Start", str(int(NOW * 1000)))]
    logfmt_keys = re.findall(r"(?:^| )([a-z_]+)=", logfmt_line(headers))
    assert list(json_line(headers)) == ["time", *logfmt_keys]


def test_json_without_router_headers() -> None:
    fields = json_line([])
    assert (fields["request_id"], fields["fwd"]) == (None, "10.0.0.1")
    assert "queue_ms" not in fields


def test_json_from_a_unix_socket_has_no_fwd() -> None:
    lines: list[str] = []
    environ, request, response = served()
    environ["REMOTE_ADDR"] = ""
    AccessLog(lines.append, style="json", clock=lambda: NOW).log(environ, request, response, 0)
    assert json.loads(lines[0])["fwd"] is None


def test_json_time_is_utc_whatever_the_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    assert json_line([])["time"] == "2026-11-22T01:29:22.250Z"


HOSTILE = {
    "quote": 'a"b',
    "forged field": '","status":500,"x":"',
    "backslash": "a\\b\\",
    "newline": "a\nb",
    "carriage return": "a\rb",
    "nul": "a\x00b",
    "escape": "\x1b[31m",
    "line separator": "a\u2028b\u2029",
    "next line": "a\x85b",
    "not utf-8": b"\xff\xfe".decode("latin-1"),  # the server decodes header bytes as latin-1
    "utf-8 as latin-1": "zoë".encode().decode("latin-1"),
}


@pytest.mark.parametrize("value", HOSTILE.values(), ids=HOSTILE.keys())
def test_json_survives_hostile_values(value: str) -> None:
    target = f"/p{value}?q={value}"
    fields = json_line([("X-Request-Id", value), ("X-Forwarded-For", value)], target=target)
    assert fields["request_id"] == value
    assert fields["fwd"] == value
    assert fields["path"] == target
    assert fields["status"] == 200 and set(fields) == {
        "time",
        "method",
        "path",
        "status",
        "bytes",
        "duration_ms",
        "request_id",
        "fwd",
    }


def test_json_bytes_come_back_through_latin_1() -> None:
    sent = b"\xff\xfe\xe2\x80\xa8"
    fields = json_line([("X-Request-Id", sent.decode("latin-1"))])
    assert fields["request_id"].encode("latin-1") == sent


def test_json_one_line_per_request() -> None:
    requests = [(f"/{i}{v}", [("X-Request-Id", v)]) for i, v in enumerate(HOSTILE.values())]
    text = json_text(requests)
    assert text.isascii()
    lines = text.splitlines()
    assert len(lines) == len(requests)
    for line, (target, headers) in zip(lines, requests, strict=True):
        fields = json.loads(line)
        assert (fields["path"], fields["request_id"]) == (target, headers[0][1])


def test_every_style_is_known_and_no_other() -> None:
    for style in ACCESS_LOG_STYLES:
        AccessLog(print, style=style)
    with pytest.raises(ValueError, match="xml"):
        AccessLog(print, style="xml")
