"""plan_response, chunk encoding and the Date cache."""

import email.utils
import random
import re
from typing import Any

import pytest

from dynocorn.http import (
    CONTINUE,
    LAST_CHUNK,
    InvalidResponse,
    ResponsePlan,
    encode_chunk,
    http_date,
    plan_response,
    server_date,
)

NOW = 1_795_000_000.25  # a fixed wall clock for exact heads
DATE = email.utils.formatdate(NOW, usegmt=True).encode()


@pytest.fixture(autouse=True)
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_date, "_clock", lambda: NOW)


def plan(
    status: str | int = "200 OK",
    headers: list[tuple[str, str]] | None = None,
    *,
    version: str = "HTTP/1.1",
    method: str = "GET",
    keep_alive: bool = True,
) -> ResponsePlan:
    return plan_response(
        status,
        [] if headers is None else headers,
        version=version,
        method=method,
        keep_alive=keep_alive,
    )


def head_lines(result: ResponsePlan) -> list[str]:
    assert result.head.endswith(b"\r\n\r\n")
    return result.head[:-4].decode("latin-1").split("\r\n")


def test_head_layout() -> None:
    result = plan("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    assert result.head == (
        b"HTTP/1.1 200 OK\r\nServer: dynocorn\r\nDate: " + DATE + b"\r\n"
        b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
    )
    assert (result.chunked, result.content_length, result.keep_alive, result.send_body) == (
        False,
        5,
        True,
        True,
    )


CL5 = [("Content-Length", "5")]
FRAMING: list[tuple[str, str, str, str, list[tuple[str, str]], bool, dict[str, Any]]] = [
    # id, version, method, status, headers, keep_alive -> expected
    ("11_length", "HTTP/1.1", "GET", "200 OK", CL5, True, dict(cl=5, ka=True, body=True)),
    ("11_no_length", "HTTP/1.1", "GET", "200 OK", [], True, dict(chunked=True, ka=True, body=True)),
    ("10_length", "HTTP/1.0", "GET", "200 OK", CL5, True, dict(cl=5, ka=True, body=True)),
    ("10_no_length", "HTTP/1.0", "GET", "200 OK", [], True, dict(ka=False, body=True)),
    ("11_head_length", "HTTP/1.1", "HEAD", "200 OK", CL5, True, dict(cl=5, ka=True)),
    ("11_head_no_length", "HTTP/1.1", "HEAD", "200 OK", [], True, dict(ka=True)),
    ("10_head_length", "HTTP/1.0", "HEAD", "200 OK", CL5, True, dict(cl=5, ka=True)),
    ("10_head_no_length", "HTTP/1.0", "HEAD", "200 OK", [], True, dict(ka=True)),
    ("11_204", "HTTP/1.1", "GET", "204 No Content", [], True, dict(ka=True)),
    ("11_204_length", "HTTP/1.1", "GET", "204 No Content", CL5, True, dict(ka=True)),
    ("10_204", "HTTP/1.0", "GET", "204 No Content", [], True, dict(ka=True)),
    ("11_304", "HTTP/1.1", "GET", "304 Not Modified", [], True, dict(ka=True)),
    ("11_304_length", "HTTP/1.1", "GET", "304 Not Modified", CL5, True, dict(cl=5, ka=True)),
    ("10_304_length", "HTTP/1.0", "GET", "304 Not Modified", CL5, True, dict(cl=5, ka=True)),
    ("11_1xx", "HTTP/1.1", "GET", "103 Early Hints", [], True, dict(ka=True)),
    ("11_no_keep_alive", "HTTP/1.1", "GET", "200 OK", CL5, False, dict(cl=5, body=True)),
    (
        "11_no_keep_alive_chunked",
        "HTTP/1.1",
        "POST",
        "200 OK",
        [],
        False,
        dict(chunked=True, body=True),
    ),
    ("10_no_keep_alive", "HTTP/1.0", "GET", "200 OK", CL5, False, dict(cl=5, body=True)),
    ("11_head_204", "HTTP/1.1", "HEAD", "204 No Content", [], True, dict(ka=True)),
]


@pytest.mark.parametrize(
    ("version", "method", "status", "headers", "keep_alive", "expected"),
    [case[1:] for case in FRAMING],
    ids=[case[0] for case in FRAMING],
)
def test_framing(
    version: str,
    method: str,
    status: str,
    headers: list[tuple[str, str]],
    keep_alive: bool,
    expected: dict[str, Any],
) -> None:
    result = plan(status, headers, version=version, method=method, keep_alive=keep_alive)
    chunked = expected.get("chunked", False)
    ka = expected.get("ka", False)
    assert result.chunked is chunked
    assert result.content_length == expected.get("cl")
    assert result.keep_alive is ka
    assert result.send_body is expected.get("body", False)
    lines = head_lines(result)
    assert lines[0] == f"HTTP/1.1 {status}"
    assert ("Transfer-Encoding: chunked" in lines) is chunked
    assert ("Content-Length: 5" in lines) is (expected.get("cl") == 5)
    connection = [line for line in lines if line.startswith("Connection:")]
    if not ka:
        assert connection == ["Connection: close"]
    elif version == "HTTP/1.0":
        assert connection == ["Connection: keep-alive"]
    else:
        assert connection == []


@pytest.mark.parametrize(
    "status",
    ["200", "200 OK\r\nX-Evil: 1", "200 OK\n", "2000 OK", "20 OK", "600 Nope", "099 X", "abc",
     "200 O\x00K", "200 O\x7fK", " 200 OK", "200  OK\r", "200 \u20ac", ""],
)  # fmt: skip
def test_invalid_status(status: str) -> None:
    if status == "200":
        assert head_lines(plan(status))[0] == "HTTP/1.1 200 "  # a reason may be empty
        return
    with pytest.raises(InvalidResponse):
        plan(status)


def test_status_neither_text_nor_an_asgi_int() -> None:
    for status in (b"200 OK", 200.0, True, None):
        with pytest.raises(InvalidResponse):
            plan(status)  # type: ignore[arg-type]


def test_an_asgi_status_and_bytes_headers_frame_as_their_text_form() -> None:
    """An ASGI app's int status and bytes headers: the same head, and the same checks."""
    as_bytes = [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    as_text = [("content-type", "text/plain"), ("content-length", "5")]
    assert plan(404, as_bytes).head == plan("404 Not Found", as_text).head  # type: ignore[arg-type]
    assert head_lines(plan(299, []))[0] == "HTTP/1.1 299 Error"
    for status in (99, 600, 1000):
        with pytest.raises(InvalidResponse):
            plan(status)
    for bad in ([(b"x-a", b"1\r\nx-b: 2")], [(b"bad name", b"1")], [(b"x-a", "text")]):
        with pytest.raises(InvalidResponse):
            plan(200, bad)  # type: ignore[arg-type]


def test_reason_phrase_may_hold_tabs_and_latin1() -> None:
    assert head_lines(plan("404 Not\tFound \xe9"))[0] == "HTTP/1.1 404 Not\tFound \xe9"


@pytest.mark.parametrize(
    "name",
    ["", "X Y", "X:Y", "X\r\nY", "X\n", "X\x00", "X\t", "(X)", "X/Y", "\xe9", "X-A\r\nX-B"],
)
def test_invalid_header_names(name: str) -> None:
    with pytest.raises(InvalidResponse):
        plan("200 OK", [(name, "v")])


@pytest.mark.parametrize(
    "value",
    ["a\r\nX-Evil: 1", "a\nb", "a\rb", "a\x00", "a\x01b", "a\x1f", "a\x7f", "\r\n", "\u20ac"],
)
def test_invalid_header_values(value: str) -> None:
    with pytest.raises(InvalidResponse):
        plan("200 OK", [("X-A", "ok"), ("X-B", value)])


@pytest.mark.parametrize(
    "headers",
    [
        [(b"X-A", "v")],
        [("X-A", b"v")],
        [("X-A", 5)],
        [("X-A",)],
        [("X-A", "v", "w")],
        ["X-A: v"],
        [(None, "v")],
        [("Content-Length", 5)],
        [("Connection", None)],
    ],
)
def test_headers_of_the_wrong_type(headers: Any) -> None:
    with pytest.raises(InvalidResponse):
        plan("200 OK", headers)


def test_header_values_allow_tabs_spaces_and_latin1() -> None:
    lines = head_lines(plan("200 OK", [("X-A", "a\tb  c"), ("X-B", ""), ("X-C", "caf\xe9")]))
    assert lines[3:6] == ["X-A: a\tb  c", "X-B: ", "X-C: caf\xe9"]


def test_no_injection_gets_through() -> None:
    rng = random.Random(7)
    alphabet = "aZ:; \t\r\n\x00\x0b\x7f-"
    for _ in range(3000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        name = rng.choice(["X-A", "X-A\r\n", "X A", "X-A\n"])
        try:
            result = plan("200 OK", [(name, value), ("X-Z", "z")])
        except InvalidResponse:
            assert re.search(r"[\x00-\x08\x0a-\x1f\x7f]", name + value) or name != "X-A"
            continue
        lines = head_lines(result)
        assert lines[3:] == [f"{name}: {value}", "X-Z: z", "Transfer-Encoding: chunked"]
        assert "\r" not in value and "\n" not in value


def test_server_and_date_are_added_unless_set() -> None:
    lines = head_lines(plan("200 OK", [("Server", "mine"), ("Date", "yesterday")]))
    assert lines[1:3] == ["Server: mine", "Date: yesterday"]
    assert sum(line.lower().startswith(("server:", "date:")) for line in lines) == 2
    lines = head_lines(plan("200 OK", [("server", "mine")]))
    assert lines[1:3] == [f"Date: {DATE.decode()}", "server: mine"]
    lines = head_lines(plan("200 OK", [("DATE", "yesterday")]))
    assert lines[1:3] == ["Server: dynocorn", "DATE: yesterday"]


def test_connection_header_from_the_app() -> None:
    result = plan("200 OK", [("Connection", "Keep-Alive, CLOSE"), *CL5])
    assert not result.keep_alive
    assert [line for line in head_lines(result) if "onnection" in line] == ["Connection: close"]
    result = plan("200 OK", [("Connection", "keep-alive"), *CL5])
    assert result.keep_alive
    assert not [line for line in head_lines(result) if "onnection" in line]


def test_chunking_asked_by_the_app_is_done_once() -> None:
    result = plan("200 OK", [("Transfer-Encoding", "Chunked")])
    assert result.chunked
    assert head_lines(result).count("Transfer-Encoding: chunked") == 1
    assert sum("ransfer-" in line for line in head_lines(result)) == 1
    result = plan("200 OK", [("Transfer-Encoding", "chunked")], version="HTTP/1.0")
    assert not result.chunked and not result.keep_alive
    assert not [line for line in head_lines(result) if "ransfer" in line]
    with pytest.raises(InvalidResponse):
        plan("200 OK", [("Transfer-Encoding", "gzip, chunked")])
    with pytest.raises(InvalidResponse):
        plan("200 OK", [("Transfer-Encoding", "chunked"), *CL5])


def test_hop_by_hop_headers_are_dropped() -> None:
    hop = [("Keep-Alive", "timeout=5"), ("Upgrade", "h2c"), ("Proxy-Connection", "x"), ("TE", "t")]
    lines = head_lines(plan("200 OK", [*hop, ("X-Kept", "1"), *CL5]))
    assert lines[3:] == ["X-Kept: 1", "Content-Length: 5"]


@pytest.mark.parametrize("value", ["-1", "+5", "5.0", "0x5", "5, 5", "", "five", "\u0665"])
def test_invalid_content_length(value: str) -> None:
    with pytest.raises(InvalidResponse):
        plan("200 OK", [("Content-Length", value)])


def test_content_length_forms() -> None:
    assert plan("200 OK", [("Content-Length", " 7 ")]).content_length == 7
    result = plan("200 OK", [("Content-Length", "7"), ("content-length", "7")])
    assert result.content_length == 7
    assert sum("ontent-" in line for line in head_lines(result)) == 1
    with pytest.raises(InvalidResponse):
        plan("200 OK", [("Content-Length", "7"), ("Content-Length", "8")])


def test_many_distinct_names_and_statuses() -> None:
    for i in range(3000):  # more than the validation caches hold
        result = plan(f"2{i % 100:02d} Custom {i}", [(f"X-H{i}", str(i)), *CL5])
        assert head_lines(result)[3] == f"X-H{i}: {i}"


def test_encode_chunk() -> None:
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert encode_chunk(b"x" * 255) == b"ff\r\n" + b"x" * 255 + b"\r\n"
    assert encode_chunk(b"") == b""  # never a premature last chunk
    assert encode_chunk(bytearray(b"ab")) == b"2\r\nab\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"
    assert CONTINUE == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_http_date_format() -> None:
    assert http_date() == DATE
    assert http_date(0) == b"Thu, 01 Jan 1970 00:00:00 GMT"
    for when in (951_782_400.0, 1_709_210_096.9, 4_102_444_799.0):
        assert http_date(when) == email.utils.formatdate(int(when), usegmt=True).encode()


def test_http_date_is_cached_per_second() -> None:
    first = http_date(2_000_000_000.1)
    assert http_date(2_000_000_000.9) is first
    later = http_date(2_000_000_001.0)
    assert later is not first and later.endswith(b":21 GMT")
