import http.client
import io
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest

from dynocorn import __version__
from dynocorn.http import InvalidResponse, Request, RequestParser
from dynocorn.http.body import Body
from dynocorn.wsgi import EnvironBuilder, FileWrapper, Response, WSGISettings, call_app
from dynocorn.wsgi_input import IncompleteBody, Input


def body_of(data: bytes = b"") -> Body:
    """A request body holding `data`, as the parser leaves it."""
    body = Body()
    body.append(data)
    return body


SECURE = {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"}


def make_request(**fields: Any) -> Request:
    """A parsed request as the HTTP layer hands it over (defaults: GET / HTTP/1.1, no body)."""
    values: dict[str, Any] = {
        "method": "GET",
        "raw_target": "/",
        "path": "/",
        "query": "",
        "version": "HTTP/1.1",
        "headers": [("Host", "example.com")],
        "keep_alive": True,
        "content_length": None,
        "chunked": False,
        "expect_continue": False,
        "body": body_of(),
        "complete": True,
        "trailers": [],
    }
    values.update(fields)
    if "raw_target" not in fields:
        values["raw_target"] = values["path"] + ("?" + values["query"] if values["query"] else "")
    return Request(**values)


def settings(**fields: Any) -> WSGISettings:
    values: dict[str, Any] = {
        "multithread": False,
        "multiprocess": True,
        "errors": sys.stderr,
        "forwarded_allow_ips": ["127.0.0.1", "::1"],
        "secure_scheme_headers": SECURE,
    }
    values.update(fields)
    return WSGISettings(**values)


def build(
    request: Request,
    peer: tuple[str, int] | str = ("127.0.0.1", 40000),
    sockname: tuple[str, int] | str | None = ("0.0.0.0", 5000),
    **options: Any,
) -> dict[str, Any]:
    builder = EnvironBuilder(settings(**options), sockname)
    return builder.build(request, Input(request, lambda: False), peer)


# -- environ ------------------------------------------------------------------------------


def test_environ_table() -> None:
    request = make_request(
        method="POST",
        path="/a%20b/%E2%82%AC",
        query="x=1&y=%20",
        headers=[
            ("Host", "example.com:8080"),
            ("Content-Type", "text/plain"),
            ("Content-Length", "5"),
            ("User-Agent", "curl/8"),
            ("X-Request-Id", "abc"),
        ],
        content_length=5,
    )
    environ = build(request, peer=("10.1.2.3", 51234))
    assert {k: v for k, v in environ.items() if k != "wsgi.input"} == {
        "wsgi.version": (1, 0),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
        "wsgi.input_terminated": True,
        "wsgi.url_scheme": "http",
        "SERVER_SOFTWARE": f"dynocorn/{__version__}",
        "SCRIPT_NAME": "",
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/a b/\xe2\x82\xac",  # PEP 3333: the bytes, decoded as latin-1
        "QUERY_STRING": "x=1&y=%20",
        "RAW_URI": "/a%20b/%E2%82%AC?x=1&y=%20",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "example.com",
        "SERVER_PORT": "8080",
        "REMOTE_ADDR": "10.1.2.3",
        "REMOTE_PORT": "51234",
        "CONTENT_TYPE": "text/plain",
        "CONTENT_LENGTH": "5",
        "HTTP_HOST": "example.com:8080",
        "HTTP_USER_AGENT": "curl/8",
        "HTTP_X_REQUEST_ID": "abc",
    }
    assert isinstance(environ["wsgi.input"], Input)


def test_no_content_length_or_type_without_the_headers() -> None:
    environ = build(make_request())
    assert "CONTENT_LENGTH" not in environ
    assert "CONTENT_TYPE" not in environ
    assert "HTTP_CONTENT_LENGTH" not in environ


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/plain", "/plain"),
        ("/%2F%2f", "///"),  # an encoded slash is indistinguishable afterwards, as in gunicorn
        ("/caf%C3%A9", "/caf\xc3\xa9"),
        ("/%e9", "/\xe9"),
        ("/100%", "/100%"),
        ("/%zz", "/%zz"),
        ("*", "*"),
    ],
)
def test_path_info_is_percent_decoded_as_latin1(path: str, expected: str) -> None:
    assert build(make_request(path=path))["PATH_INFO"] == expected


@pytest.mark.parametrize(
    ("script_name", "path", "expected_script", "expected_path"),
    [
        ("/app", "/app/users", "/app", "/users"),
        ("/app", "/app", "/app", ""),
        ("/app/", "/app/users", "/app", "/users"),
        ("/app", "/apple", "/app", "/apple"),  # a prefix only at a segment boundary
        ("/app", "/other", "/app", "/other"),
        ("/app", "/app/%41", "/app", "/A"),
        ("", "/x", "", "/x"),
    ],
)
def test_script_name(script_name: str, path: str, expected_script: str, expected_path: str) -> None:
    environ = build(make_request(path=path), script_name=script_name)
    assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == (expected_script, expected_path)


@pytest.mark.parametrize(
    ("host", "proto", "sockname", "expected"),
    [
        ("example.com", None, ("0.0.0.0", 5000), ("example.com", "80")),
        ("example.com", "https", ("0.0.0.0", 5000), ("example.com", "443")),
        ("example.com:8443", "https", ("0.0.0.0", 5000), ("example.com", "8443")),
        ("[::1]:8000", None, ("::", 5000), ("[::1]", "8000")),
        ("[2001:db8::1]", None, ("::", 5000), ("[2001:db8::1]", "80")),
        ("[::1", None, ("::", 5000), ("[::1", "80")),
        ("example.com:junk", None, ("0.0.0.0", 5000), ("example.com", "80")),
        (None, None, ("10.0.0.7", 5000), ("10.0.0.7", "5000")),
        (None, None, ("::1", 5000, 0, 0), ("::1", "5000")),
        (None, None, "/run/app.sock", ("/run/app.sock", "")),
        ("example.com", None, "/run/app.sock", ("example.com", "80")),
        (None, None, None, ("", "")),
    ],
)
def test_server_name_and_port(
    host: str | None, proto: str | None, sockname: Any, expected: tuple[str, str]
) -> None:
    headers = [("Host", host)] if host is not None else []
    if proto:
        headers.append(("X-Forwarded-Proto", proto))
    environ = build(make_request(headers=headers), sockname=sockname)
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == expected


def test_repeated_headers_are_joined_with_commas() -> None:
    request = make_request(
        headers=[
            ("Host", "example.com"),
            ("Accept", "text/html"),
            ("X-Tag", "a"),
            ("accept", "application/json"),
            ("x-tag", "b"),
            ("X-TAG", "c"),
            ("Content-Length", "5"),
            ("Content-Length", "5"),
        ],
        content_length=5,
    )
    environ = build(request)
    assert environ["HTTP_ACCEPT"] == "text/html,application/json"
    assert environ["HTTP_X_TAG"] == "a,b,c"
    assert environ["CONTENT_LENGTH"] == "5"


def test_headers_cannot_override_server_keys() -> None:
    request = make_request(headers=[("Host", "h"), ("Request-Method", "x"), ("Remote-Addr", "y")])
    environ = build(request, peer=("10.0.0.1", 1))
    assert environ["REQUEST_METHOD"] == "GET"
    assert environ["REMOTE_ADDR"] == "10.0.0.1"
    assert environ["HTTP_REMOTE_ADDR"] == "y"


def test_unix_socket_peer() -> None:
    environ = build(make_request(), peer="", sockname="/tmp/dynocorn.sock")
    assert environ["REMOTE_ADDR"] == ""
    assert "REMOTE_PORT" not in environ


@pytest.mark.parametrize(
    ("allow", "peer", "headers", "scheme"),
    [
        (["127.0.0.1"], ("127.0.0.1", 1), [("X-Forwarded-Proto", "https")], "https"),
        (["127.0.0.1"], ("127.0.0.1", 1), [("X-Forwarded-Proto", "HTTPS")], "https"),
        (["127.0.0.1"], ("127.0.0.1", 1), [("X-Forwarded-Proto", "http")], "http"),
        (["127.0.0.1"], ("127.0.0.1", 1), [("X-Forwarded-Ssl", "on")], "https"),
        (["127.0.0.1"], ("127.0.0.1", 1), [("X-Forwarded-Protocol", "ssl")], "https"),
        (["127.0.0.1"], ("127.0.0.1", 1), [], "http"),
        (["127.0.0.1"], ("10.9.8.7", 1), [("X-Forwarded-Proto", "https")], "http"),
        (["10.0.0.0/8"], ("10.9.8.7", 1), [("X-Forwarded-Proto", "https")], "https"),
        (["10.0.0.0/8"], ("11.0.0.1", 1), [("X-Forwarded-Proto", "https")], "http"),
        (["10.0.0.0/8"], ("::ffff:10.1.1.1", 1), [("X-Forwarded-Proto", "https")], "https"),
        (["127.0.0.1"], ("::ffff:127.0.0.1", 1), [("X-Forwarded-Proto", "https")], "https"),
        (["fd00::/8"], ("fd12::5", 1, 0, 0), [("X-Forwarded-Proto", "https")], "https"),
        (["::1"], ("::1", 1, 0, 0), [("X-Forwarded-Proto", "https")], "https"),
        ([" 127.0.0.1 ", ""], ("127.0.0.1", 1), [("X-Forwarded-Proto", "https")], "https"),
        (["*"], ("203.0.113.9", 1), [("X-Forwarded-Proto", "https")], "https"),
        ([], "", [("X-Forwarded-Proto", "https")], "https"),  # unix-socket peers are trusted
        ([], ("127.0.0.1", 1), [("X-Forwarded-Proto", "https")], "http"),
        # Contradicting headers: one was not written by the proxy, so no https.
        (
            ["*"],
            ("127.0.0.1", 1),
            [("X-Forwarded-Proto", "http"), ("X-Forwarded-Ssl", "on")],
            "http",
        ),
    ],
)
def test_url_scheme_from_trusted_proxies(
    allow: list[str], peer: Any, headers: list[tuple[str, str]], scheme: str
) -> None:
    request = make_request(headers=[("Host", "example.com"), *headers])
    assert build(request, peer=peer, forwarded_allow_ips=allow)["wsgi.url_scheme"] == scheme


def test_trust_verdicts_are_cached_and_stable() -> None:
    builder = EnvironBuilder(settings(forwarded_allow_ips=["10.0.0.0/8"]), None)
    assert [builder.trusts(("10.0.0.1", 1)) for _ in range(3)] == [True, True, True]
    assert [builder.trusts(("8.8.8.8", 1)) for _ in range(3)] == [False, False, False]
    assert builder.trusts(("not-an-ip", 1)) is False


def test_no_secure_headers_configured() -> None:
    request = make_request(headers=[("X-Forwarded-Proto", "https")])
    assert build(request, secure_scheme_headers={})["wsgi.url_scheme"] == "http"


def test_environ_is_fresh_for_each_request() -> None:
    builder = EnvironBuilder(settings(), ("0.0.0.0", 5000))
    first = builder.build(make_request(), Input(make_request(), lambda: False), ("1.1.1.1", 1))
    first["HTTP_X_INJECTED"] = "yes"
    second = builder.build(make_request(), Input(make_request(), lambda: False), ("1.1.1.1", 1))
    assert "HTTP_X_INJECTED" not in second


# -- wsgi.input ---------------------------------------------------------------------------


class Feed:
    """Plays the worker: each read_more() hands the parser the next piece of the body."""

    def __init__(self, request: Request, pieces: list[bytes], eof: bool = False) -> None:
        self.request = request
        self.pieces = list(pieces)
        self.eof = eof  # the connection dies after the pieces, before the body is complete
        self.calls = 0

    def __call__(self) -> bool:
        assert not self.request.body, "read_more() called with bytes still buffered"
        assert not self.request.complete, "read_more() called after the body was complete"
        self.calls += 1
        if not self.pieces:
            return False
        self.request.body.append(self.pieces.pop(0))
        if not self.pieces and not self.eof:
            self.request.complete = True
        return True


def streaming(pieces: list[bytes], *, eof: bool = False) -> tuple[Input, Feed]:
    request = make_request(method="POST", complete=False, body=body_of())
    feed = Feed(request, pieces, eof)
    return Input(request, feed), feed


def test_read_all_across_pieces() -> None:
    wsgi_input, feed = streaming([b"hel", b"", b"lo ", b"world"])
    assert wsgi_input.read() == b"hello world"
    assert wsgi_input.read() == b""
    assert feed.calls == 4


@pytest.mark.parametrize("size", [None, -1])
def test_read_without_size(size: int | None) -> None:
    wsgi_input, _ = streaming([b"ab", b"cd"])
    assert wsgi_input.read(size) == b"abcd"


def test_sized_reads_wait_for_the_full_size() -> None:
    wsgi_input, _ = streaming([b"ab", b"cdef", b"g"])
    assert wsgi_input.read(3) == b"abc"
    assert wsgi_input.read(1) == b"d"
    assert wsgi_input.read(10) == b"efg"
    assert wsgi_input.read(10) == b""


def test_read_zero_reads_nothing() -> None:
    wsgi_input, feed = streaming([b"abc"])
    assert wsgi_input.read(0) == b""
    assert feed.calls == 0


def test_a_body_cut_short_is_an_error_not_a_short_body() -> None:
    # The client announced more than it sent: the app must not take it for the whole body.
    wsgi_input, _ = streaming([b"abc"], eof=True)
    with pytest.raises(IncompleteBody):
        wsgi_input.read(10)
    with pytest.raises(IncompleteBody):  # and at once the second time: no second wait
        wsgi_input.read()


def test_readline() -> None:
    wsgi_input, _ = streaming([b"one\ntw", b"o\nthr", b"ee"])
    assert wsgi_input.readline() == b"one\n"
    assert wsgi_input.readline() == b"two\n"
    assert wsgi_input.readline() == b"three"
    assert wsgi_input.readline() == b""


def test_readline_with_size() -> None:
    wsgi_input, _ = streaming([b"abcdef\n", b"gh\n"])
    assert wsgi_input.readline(4) == b"abcd"
    assert wsgi_input.readline(None) == b"ef\n"
    assert wsgi_input.readline(0) == b""
    assert wsgi_input.readline(10) == b"gh\n"


def test_readline_size_spanning_pieces() -> None:
    wsgi_input, _ = streaming([b"ab", b"cd", b"ef\n"])
    assert wsgi_input.readline(5) == b"abcde"
    assert wsgi_input.readline(5) == b"f\n"


def test_readlines_and_iteration() -> None:
    wsgi_input, _ = streaming([b"a\nb", b"\nc\n"])
    assert wsgi_input.readlines() == [b"a\n", b"b\n", b"c\n"]
    wsgi_input, _ = streaming([b"a\nbb\n", b"c\n"])
    assert wsgi_input.readlines(3) == [b"a\n", b"bb\n"]
    wsgi_input, _ = streaming([b"x\ny", b"\nz"])
    assert list(wsgi_input) == [b"x\n", b"y\n", b"z"]


def test_input_never_reads_past_the_body() -> None:
    # The parser keeps bytes of a pipelined next request to itself; once `complete` is set
    # the input reports end of body without asking for more.
    request = make_request(method="POST", body=body_of(b"body"), complete=True)
    wsgi_input = Input(request, lambda: pytest.fail("fill() past the end of the body"))
    assert wsgi_input.read() == b"body"
    assert wsgi_input.read(5) == b""
    assert wsgi_input.readline() == b""
    assert wsgi_input.drain(0) is True


class Connection:
    """Plays the worker with the real parser: each fill() feeds it the next `step` bytes."""

    def __init__(self, raw: bytes, first: int, step: int) -> None:
        self.parser = RequestParser()
        self.rest = raw[first:]
        self.step = step
        self.parser.feed(raw[:first])
        self.request = self.parser.requests.popleft()

    def read_more(self) -> bool:
        assert not self.request.body and not self.request.complete
        if not self.rest:
            return False
        piece, self.rest = self.rest[: self.step], self.rest[self.step :]
        self.parser.feed(piece)
        return True

    def next_request(self) -> Request:
        """What the worker does after the response: feed on until the next head is parsed."""
        while not self.parser.requests and self.rest:
            self.parser.feed(self.rest[: self.step])
            self.rest = self.rest[self.step :]
        return self.parser.requests.popleft()


NEXT = b"GET /next HTTP/1.1\r\nHost: example.com\r\n\r\n"
LENGTH_BODY = (
    b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n\r\nhello\nworld"
)
CHUNKED_BODY = (
    b"POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"6\r\nhello\n\r\n5\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\n"
)


def read_all(wsgi_input: Input) -> bytes:
    return wsgi_input.read()


def read_sized(wsgi_input: Input) -> bytes:
    return b"".join(iter(lambda: wsgi_input.read(4), b""))


def read_lines(wsgi_input: Input) -> bytes:
    return b"".join(wsgi_input)


@pytest.mark.parametrize("message", [LENGTH_BODY, CHUNKED_BODY], ids=["length", "chunked"])
@pytest.mark.parametrize("step", [1, 3, 1000])
@pytest.mark.parametrize("reader", [read_all, read_sized, read_lines])
def test_input_with_the_real_parser_stops_at_the_next_request(
    message: bytes, step: int, reader: Callable[[Input], bytes]
) -> None:
    head_end = message.index(b"\r\n\r\n") + 4
    connection = Connection(message + NEXT, head_end, step)
    wsgi_input = Input(connection.request, connection.read_more)
    assert reader(wsgi_input) == b"hello\nworld"
    assert wsgi_input.read() == b""
    assert connection.request.complete
    # Everything after the body is still the parser's: the pipelined request.
    assert connection.next_request().path == "/next"


@pytest.mark.parametrize("message", [LENGTH_BODY, CHUNKED_BODY], ids=["length", "chunked"])
def test_drain_with_the_real_parser(message: bytes) -> None:
    head_end = message.index(b"\r\n\r\n") + 4
    connection = Connection(message + NEXT, head_end + 2, 2)
    wsgi_input = Input(connection.request, connection.read_more)
    assert wsgi_input.read(3) == b"hel"
    assert wsgi_input.drain(100) is True
    assert connection.next_request().path == "/next"


def test_continue_is_sent_once_at_the_first_read_that_needs_bytes() -> None:
    wsgi_input, _ = streaming([b"abc", b"def"])
    sent: list[str] = []
    wsgi_input.on_first_read = lambda: sent.append("100 Continue")
    assert wsgi_input.read(0) == b""
    assert sent == []
    assert wsgi_input.read(2) == b"ab"
    assert wsgi_input.read() == b"cdef"
    assert sent == ["100 Continue"]


def test_no_continue_when_the_body_is_already_here() -> None:
    request = make_request(method="POST", body=body_of(b"abc"), complete=True)
    wsgi_input = Input(request, lambda: False)
    wsgi_input.on_first_read = lambda: pytest.fail("100 Continue after the body arrived")
    assert wsgi_input.read() == b"abc"


def test_drain() -> None:
    wsgi_input, _ = streaming([b"abc", b"defg"])
    assert wsgi_input.read(1) == b"a"
    assert wsgi_input.drain(6) is True
    wsgi_input, _ = streaming([b"abc", b"defg"])
    assert wsgi_input.drain(6) is False  # 7 bytes left: too many to be worth reading
    wsgi_input, _ = streaming([b"abc"], eof=True)
    assert wsgi_input.drain(100) is False


def test_drain_does_not_send_continue() -> None:
    wsgi_input, feed = streaming([b"abc"])
    wsgi_input.on_first_read = lambda: pytest.fail("100 Continue while draining")
    assert wsgi_input.drain(100) is False  # the client may or may not send the body now
    assert feed.calls == 0
    request = make_request(method="POST", body=body_of(b"abc"), complete=True)
    wsgi_input = Input(request, lambda: False)
    wsgi_input.on_first_read = lambda: pytest.fail("100 Continue while draining")
    assert wsgi_input.drain(100) is True  # it sent the body without waiting


# -- the response -------------------------------------------------------------------------


class Wire:
    """Collects what send() is given; parses it back with the standard library's client."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.sends: list[bytes] = []
        self.fail_after = fail_after

    def __call__(self, data: bytes) -> None:
        if self.fail_after is not None and len(self.sends) >= self.fail_after:
            raise BrokenPipeError("client went away")
        assert isinstance(data, bytes) and data
        self.sends.append(data)

    @property
    def data(self) -> bytes:
        return b"".join(self.sends)

    def parse(self, method: str = "GET") -> tuple[http.client.HTTPResponse, bytes]:
        class FakeSocket:
            def __init__(self, data: bytes) -> None:
                self.data = data

            def makefile(self, mode: str) -> io.BytesIO:
                return io.BytesIO(self.data)

        reply = http.client.HTTPResponse(FakeSocket(self.data), method=method)  # type: ignore[arg-type]
        reply.begin()
        return reply, reply.read()


App = Callable[[dict[str, Any], Any], Any]


def serve(
    app: App,
    request: Request | None = None,
    *,
    wire: Wire | None = None,
    sendfile: Callable[[Any, int, int], int] | None = None,
    keep_alive: bool = True,
) -> tuple[Response, Wire]:
    request = request or make_request()
    wire = wire or Wire()
    response = Response(request, wire, keep_alive=keep_alive, sendfile=sendfile)
    environ = build(request)
    call_app(app, environ, response)
    return response, wire


def hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, ", b"world!"]


def test_list_with_content_length_goes_out_in_one_send() -> None:
    response, wire = serve(hello)
    assert len(wire.sends) == 1
    reply, body = wire.parse()
    assert (reply.status, body) == (200, b"Hello, world!")
    assert reply.getheader("Content-Length") == "13"
    assert reply.getheader("Server") == "dynocorn"
    assert reply.getheader("Date")
    assert response.status_code == 200
    assert response.body_bytes == 13
    assert response.headers_sent and response.keep_alive
    assert not response.truncated


HEADERS = [("Content-Type", "text/plain")]


def test_list_without_content_length_gets_one() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> tuple[bytes, ...]:
        start_response("200 OK", HEADERS)
        return (b"abc", b"def")

    response, wire = serve(app)
    reply, body = wire.parse()
    assert body == b"abcdef"
    assert reply.getheader("Content-Length") == "6"
    assert reply.getheader("Transfer-Encoding") is None
    assert len(wire.sends) == 1
    assert HEADERS == [("Content-Type", "text/plain")]  # the app's own list is left alone
    assert ("Content-Length", "6") in response.headers


def test_streamed_body_is_chunked_and_head_rides_with_the_first_chunk() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""  # empty items must not trigger the head
        yield b"first "
        yield b""
        yield b"second"

    response, wire = serve(app)
    reply, body = wire.parse()
    assert body == b"first second"
    assert reply.getheader("Transfer-Encoding") == "chunked"
    assert wire.sends[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert wire.sends[0].endswith(b"6\r\nfirst \r\n")
    assert wire.sends[-1] == b"0\r\n\r\n"
    assert response.body_bytes == 12
    assert response.keep_alive


def test_streamed_body_to_http10_closes_the_connection() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"a"
        yield b"b"

    response, wire = serve(app, make_request(version="HTTP/1.0", keep_alive=False))
    assert wire.data.endswith(b"\r\n\r\nab")
    assert response.keep_alive is False


def test_empty_generator_gets_content_length_zero_in_one_send() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield from ()

    response, wire = serve(app)
    reply, body = wire.parse()
    assert (body, reply.getheader("Content-Length")) == (b"", "0")
    assert len(wire.sends) == 1
    assert response.keep_alive


def test_write_callable_then_result() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"one ")
        write(b"")
        return [b"two"]

    _, wire = serve(app)
    assert wire.parse()[1] == b"one two"


def test_content_length_is_enforced_by_truncation() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Length", "5")])
        yield b"hel"
        yield b"lo world"
        yield b"more"

    response, wire = serve(app)
    assert wire.parse()[1] == b"hello"
    assert wire.data.endswith(b"\r\n\r\nhello")
    assert response.body_bytes == 5
    assert response.truncated is True
    assert response.keep_alive is False


def test_truncation_in_the_list_fast_path() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "2")])
        return [b"abc"]

    response, wire = serve(app)
    assert wire.data.endswith(b"\r\n\r\nab")
    assert response.truncated and not response.keep_alive


def test_short_body_closes_the_connection() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Length", "10")])
        return [b"short"]

    response, wire = serve(app)
    assert wire.data.endswith(b"\r\n\r\nshort")
    assert response.keep_alive is False
    assert response.truncated is False


def test_head_sends_no_body() -> None:
    response, wire = serve(hello, make_request(method="HEAD"))
    reply, body = wire.parse("HEAD")
    assert body == b""
    assert wire.data.endswith(b"\r\n\r\n")
    assert reply.getheader("Content-Length") == "13"
    assert response.body_bytes == 0
    assert response.keep_alive


def test_head_of_a_list_declares_its_length() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"12345"]

    _, wire = serve(app, make_request(method="HEAD"))
    assert b"Content-Length: 5\r\n" in wire.data
    assert wire.data.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_body_statuses(status: str) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(status, [])
        return [b"ignored"]

    response, wire = serve(app)
    assert wire.data.endswith(b"\r\n\r\n")
    assert b"ignored" not in wire.data
    assert b"Content-Length" not in wire.data
    assert response.status_code == int(status[:3])


def test_keep_alive_false_from_the_worker_is_kept() -> None:
    response, wire = serve(hello, keep_alive=False)
    assert response.keep_alive is False
    assert b"Connection: close" in wire.data


def test_exc_info_before_the_head_replaces_the_response() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("boom")
        except ValueError:
            start_response("500 Internal Server Error", [("X-Error", "1")], sys.exc_info())
        return [b"error page"]

    response, wire = serve(app)
    reply, body = wire.parse()
    assert (reply.status, reply.getheader("X-Error"), body) == (500, "1", b"error page")
    assert response.status_code == 500


def test_exc_info_after_the_head_reraises() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        try:
            raise KeyError("late")
        except KeyError:
            start_response("500 Internal Server Error", [], sys.exc_info())
        yield b"never"

    with pytest.raises(KeyError, match="late"):
        serve(app)


def test_second_start_response_without_exc_info_is_an_error() -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        start_response("201 Created", [])
        return []

    with pytest.raises(RuntimeError, match="without exc_info"):
        serve(app)


class Closing:
    """A result that records close(), and optionally fails halfway."""

    def __init__(self, items: list[Any], fail_at: int | None = None) -> None:
        self.items = items
        self.fail_at = fail_at
        self.closed = 0

    def __iter__(self) -> Iterator[Any]:
        for index, item in enumerate(self.items):
            if index == self.fail_at:
                raise LookupError("app failed while streaming")
            yield item

    def close(self) -> None:
        self.closed += 1


def closing_app(result: Closing, headers: list[tuple[str, str]] | None = None) -> App:
    def app(environ: dict[str, Any], start_response: Any) -> Closing:
        start_response("200 OK", headers or [("Content-Type", "text/plain")])
        return result

    return app


def test_close_is_called_on_success() -> None:
    result = Closing([b"a", b"b"])
    serve(closing_app(result))
    assert result.closed == 1


def test_close_is_called_when_the_client_disconnects() -> None:
    result = Closing([b"a", b"b", b"c"])
    with pytest.raises(BrokenPipeError):
        serve(closing_app(result), wire=Wire(fail_after=1))
    assert result.closed == 1


def test_close_is_called_when_the_app_fails_while_streaming() -> None:
    result = Closing([b"a", b"b"], fail_at=1)
    wire = Wire()
    with pytest.raises(LookupError):
        serve(closing_app(result), wire=wire)
    assert result.closed == 1
    assert wire.sends  # the head went out: the worker can only close the connection


def test_non_bytes_item_before_anything_was_sent_becomes_a_500() -> None:
    result = Closing(["text, not bytes"])
    request = make_request()
    wire = Wire()
    response = Response(request, wire, keep_alive=True)
    with pytest.raises(TypeError, match="must be bytes"):
        call_app(closing_app(result), build(request), response)
    assert result.closed == 1
    assert wire.sends == []
    assert response.send_error() is True
    reply, body = wire.parse()
    assert (reply.status, body) == (500, b"500 Internal Server Error\n")
    assert reply.getheader("Connection") == "close"
    assert response.status_code == 500 and response.keep_alive is False


@pytest.mark.parametrize("result", [["text"], [b"ok", "text"], ("text",), [1]])
def test_non_bytes_in_a_list_is_a_type_error(result: Any) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [])
        return result

    with pytest.raises(TypeError):
        serve(app)


def test_error_after_the_head_cannot_be_replaced() -> None:
    request = make_request()
    wire = Wire()
    response = Response(request, wire, keep_alive=True)
    with pytest.raises(TypeError):
        call_app(closing_app(Closing([b"ok", "text"])), build(request), response)
    sent = wire.data
    assert response.send_error() is False
    assert wire.data == sent


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        ("200 OK", [("X-Evil", "a\r\nSet-Cookie: x=1")]),
        ("200 OK", [("X-Evil\r\nX", "a")]),
        ("200 OK\r\nX-Evil: 1", []),
        ("OK", []),
        ("2000 Too Much", []),
    ],
)
def test_invalid_head_becomes_a_500(status: str, headers: list[tuple[str, str]]) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(status, headers)
        return [b"body"]

    request = make_request()
    wire = Wire()
    response = Response(request, wire, keep_alive=True)
    with pytest.raises(InvalidResponse):
        call_app(app, build(request), response)
    assert wire.sends == []
    assert response.send_error() is True
    assert wire.parse()[0].status == 500
    assert b"Set-Cookie" not in wire.data and b"X-Evil" not in wire.data


def test_no_start_response_is_an_error_then_a_500() -> None:
    request = make_request()
    wire = Wire()
    response = Response(request, wire, keep_alive=True)
    with pytest.raises(RuntimeError, match="start_response"):
        call_app(lambda environ, start_response: [b"x"], build(request), response)
    assert response.send_error() is True


def test_send_error_with_an_unregistered_status() -> None:
    wire = Wire()
    assert Response(make_request(), wire, keep_alive=True).send_error(599) is True
    assert wire.parse()[0].status == 599


def test_send_error_to_head_has_no_body() -> None:
    wire = Wire()
    response = Response(make_request(method="HEAD"), wire, keep_alive=True)
    assert response.send_error(503) is True
    assert wire.data.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert wire.data.endswith(b"\r\n\r\n")
    assert response.body_bytes == 0


# -- wsgi.file_wrapper --------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(range(256)) * 100)  # 25,600 bytes
    return path


class SendFile:
    """Plays socket.sendfile: copies from the file at an offset, at most `step` at a time."""

    def __init__(self, wire: Wire, step: int = 10_000, stop_after: int | None = None) -> None:
        self.wire = wire
        self.step = step
        self.stop_after = stop_after
        self.calls: list[tuple[int, int]] = []

    def __call__(self, file: Any, offset: int, count: int) -> int:
        self.calls.append((offset, count))
        if self.stop_after is not None and len(self.calls) > self.stop_after:
            return 0
        data = os.pread(file.fileno(), min(count, self.step), offset)
        if data:
            self.wire(data)
        return len(data)


def file_app(path: Path, skip: int = 0, headers: list[tuple[str, str]] | None = None) -> App:
    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", headers or [("Content-Type", "application/octet-stream")])
        file = path.open("rb")
        file.read(skip)
        return environ["wsgi.file_wrapper"](file, 4096)

    return app


def test_file_wrapper_with_sendfile(data_file: Path) -> None:
    wire = Wire()
    sendfile = SendFile(wire)
    opened: list[Any] = []
    inner = file_app(data_file)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        wrapper = inner(environ, start_response)
        opened.append(wrapper.filelike)
        return wrapper

    response, _ = serve(app, wire=wire, sendfile=sendfile)
    reply, body = wire.parse()
    assert body == data_file.read_bytes()
    assert reply.getheader("Content-Length") == "25600"
    assert sendfile.calls == [(0, 25600), (10000, 15600), (20000, 5600)]
    assert wire.sends[0].endswith(b"\r\n\r\n")  # the head alone, then the file
    assert response.body_bytes == 25600 and response.keep_alive
    assert opened[0].closed


def test_file_wrapper_sendfile_from_the_current_position(data_file: Path) -> None:
    wire = Wire()
    sendfile = SendFile(wire, step=1 << 20)
    serve(file_app(data_file, skip=100), wire=wire, sendfile=sendfile)
    assert sendfile.calls == [(100, 25500)]
    assert wire.parse()[1] == data_file.read_bytes()[100:]


def test_file_wrapper_respects_the_apps_content_length(data_file: Path) -> None:
    wire = Wire()
    sendfile = SendFile(wire, step=1 << 20)
    app = file_app(data_file, headers=[("Content-Length", "1000")])
    response, _ = serve(app, wire=wire, sendfile=sendfile)
    assert sendfile.calls == [(0, 1000)]
    assert wire.parse()[1] == data_file.read_bytes()[:1000]
    assert response.keep_alive


def test_file_that_shrinks_during_sendfile_closes_the_connection(data_file: Path) -> None:
    wire = Wire()
    response, _ = serve(file_app(data_file), wire=wire, sendfile=SendFile(wire, stop_after=1))
    assert response.body_bytes == 10000
    assert response.keep_alive is False


def test_file_wrapper_without_sendfile_still_declares_the_length(data_file: Path) -> None:
    _, wire = serve(file_app(data_file), sendfile=None)
    reply, body = wire.parse()
    assert body == data_file.read_bytes()
    assert reply.getheader("Content-Length") == "25600"
    assert reply.getheader("Transfer-Encoding") is None
    assert len(wire.sends) == 25600 // 4096 + 1


def test_file_wrapper_over_a_file_like_is_chunked() -> None:
    class Stream(io.BytesIO):
        closed_by_server = False

        def close(self) -> None:
            self.closed_by_server = True
            super().close()

    stream = Stream(b"x" * 10000)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](stream, 4096)

    sendfile = SendFile(Wire())
    _, wire = serve(app, sendfile=sendfile)
    reply, body = wire.parse()
    assert body == b"x" * 10000
    assert reply.getheader("Transfer-Encoding") == "chunked"
    assert sendfile.calls == []
    assert stream.closed_by_server


def test_file_wrapper_head_does_not_sendfile(data_file: Path) -> None:
    wire = Wire()
    sendfile = SendFile(wire)
    response, _ = serve(
        file_app(data_file), make_request(method="HEAD"), wire=wire, sendfile=sendfile
    )
    assert sendfile.calls == []
    assert b"Content-Length: 25600\r\n" in wire.data
    assert wire.data.endswith(b"\r\n\r\n")
    assert response.keep_alive


def test_file_wrapper_attributes_and_close_without_close() -> None:
    wrapper = FileWrapper(iter_file := io.BytesIO(b"abcdefg"), 3)
    assert (wrapper.filelike, wrapper.blksize) == (iter_file, 3)
    assert list(wrapper) == [b"abc", b"def", b"g"]

    class NoClose:
        def read(self, size: int) -> bytes:
            return b""

    FileWrapper(NoClose()).close()  # nothing to close: no error


# -- PEP 3333 conformance as wsgiref checks it --------------------------------------------


def echo(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    line = environ["wsgi.input"].readline()
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"legacy;")
    yield environ["PATH_INFO"].encode("latin-1") + b";" + body + line


def streaming_file(environ: dict[str, Any], start_response: Any) -> Any:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return environ["wsgi.file_wrapper"](io.BytesIO(b"file body"))


def failing_then_recovering(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError
    except ValueError:
        start_response(
            "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
        )
    return [b"sorry"]


@pytest.mark.parametrize(
    ("app", "request_fields", "expected"),
    [
        (
            echo,
            {
                "method": "POST",
                "path": "/e%20cho",
                "headers": [("Host", "h"), ("Content-Length", "5")],
                "content_length": 5,
                "body": body_of(b"hello"),
            },
            b"legacy;/e cho;hello",
        ),
        (echo, {"method": "GET", "path": "/"}, b"legacy;/;"),
        (hello, {}, b"Hello, world!"),
        (streaming_file, {}, b"file body"),
        (failing_then_recovering, {}, b"sorry"),
    ],
)
def test_wsgiref_validator(app: App, request_fields: dict[str, Any], expected: bytes) -> None:
    request = make_request(**request_fields)
    wire = Wire()
    response = Response(request, wire, keep_alive=True)
    environ = build(request, errors=io.StringIO())
    call_app(validator(app), environ, response)
    assert wire.parse(request.method)[1] == expected
