"""RequestParser: refusals, valid shapes, bodies, limits, idle and end-of-input rules."""

from typing import Any

import pytest
from http_feed import run, run_all_ways, splits

from dynocorn.asgi.websocket import is_websocket_upgrade
from dynocorn.http import (
    DEFAULT_LIMITS,
    BadRequest,
    HeaderFieldsTooLarge,
    HTTPError,
    Limits,
    Request,
    RequestParser,
    URITooLong,
)

POST = b"POST / HTTP/1.1\r\nHost: h\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"

REFUSED = [
    # framing and smuggling
    ("cl_and_te", POST + b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te_and_cl", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", 400),
    ("te_not_chunked_last", POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n", 400),
    ("te_unknown", POST + b"Transfer-Encoding: foo\r\n\r\n", 400),
    ("te_coding_before_chunked", POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    ("te_xchunked", POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400),
    ("te_twice", POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    ("te_http10", b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("cl_list", POST + b"Content-Length: 5, 5\r\n\r\nhello", 400),
    ("cl_plus", POST + b"Content-Length: +1\r\n\r\nh", 400),
    ("cl_minus", POST + b"Content-Length: -0\r\n\r\n", 400),
    ("cl_space_inside", POST + b"Content-Length:  1 2\r\n\r\nh", 400),
    ("cl_twice_same", POST + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nh", 400),
    ("cl_twice_different", POST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\nhh", 400),
    # line ends and field syntax
    ("bare_lf_request_line", b"GET / HTTP/1.1\nHost: h\r\n\r\n", 400),
    ("bare_lf_header", b"GET / HTTP/1.1\r\nHost: h\n\r\n", 400),
    ("bare_lf_everywhere", b"GET / HTTP/1.1\nHost: h\n\n", 400),
    ("cr_in_value", b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400),
    ("nul_in_value", b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
    ("esc_in_value", b"GET / HTTP/1.1\r\nX: a\x1bb\r\n\r\n", 400),
    ("space_before_colon", b"GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
    ("obs_fold", b"GET / HTTP/1.1\r\nX: a\r\n\tb\r\n\r\n", 400),
    # chunked bodies
    ("chunk_size_bad", CHUNKED + b"x\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk_size_signed", CHUNKED + b"+5\r\nhello\r\n0\r\n\r\n", 400),
    ("chunk_without_crlf", CHUNKED + b"5\r\nhelloXX0\r\n\r\n", 400),
    ("chunk_line_bare_lf", CHUNKED + b"5\nhello\r\n0\r\n\r\n", 400),
    ("chunk_last_bare_lf", CHUNKED + b"5\r\nhello\r\n0\r\n\n", 400),
    # request line
    ("target_space", b"GET /a b HTTP/1.1\r\n\r\n", 400),
    ("target_control", b"GET /a\x7f HTTP/1.1\r\n\r\n", 400),
    ("target_non_ascii", b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n", 400),
    ("version_2", b"GET / HTTP/2.0\r\n\r\n", 505),
    ("version_9_9", b"GET / HTTP/9.9\r\n\r\n", 505),
    ("version_1_2", b"GET / HTTP/1.2\r\n\r\n", 400),
    ("version_1_9", b"GET / HTTP/1.9\r\n\r\n", 400),
    ("version_0_9", b"GET / HTTP/0.9\r\n\r\n", 400),
    ("version_0_9_partial", b"GET / HTTP/0.9\r\nHost: h\r\n", 400),
    ("version_none", b"GET /\r\n\r\n", 400),
    ("version_malformed", b"GET / HTTP/1.1.1\r\n\r\n", 400),
    ("method_empty", b" / HTTP/1.1\r\n\r\n", 400),
    ("method_garbage", b"G\x01T / HTTP/1.1\r\n\r\n", 400),
    ("method_lower_case", b"get / HTTP/1.1\r\n\r\n", 400),
    ("connect", b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 400),
    ("two_spaces", b"GET  / HTTP/1.1\r\n\r\n", 400),
    # limits
    ("request_line_414", b"GET /" + b"a" * 4090 + b" HTTP/1.1\r\n\r\n", 414),
    ("field_431", b"GET / HTTP/1.1\r\nX: " + b"a" * 8188 + b"\r\n\r\n", 431),
    ("fields_431", b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 101 + b"\r\n", 431),
]


@pytest.mark.parametrize(("raw", "status"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused(raw: bytes, status: int) -> None:
    assert run_all_ways(raw).status == status


def test_refusal_kills_the_parser() -> None:
    parser = RequestParser()
    with pytest.raises(BadRequest) as first:
        parser.feed(b"GET / HTTP/1.1\r\nX : y\r\n\r\n")
    with pytest.raises(BadRequest) as again:
        parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    assert again.value is first.value
    assert not parser.idle
    assert not parser.requests


def test_requests_before_a_refusal_are_kept() -> None:
    parser = RequestParser()
    with pytest.raises(BadRequest):
        parser.feed(b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\nGET /bad HTTP/1.1\r\nX: \x00\r\n\r\n")
    assert [request.path for request in parser.requests] == ["/ok"]


def one(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    outcome = run_all_ways(raw, limits)
    assert outcome.status is None and outcome.eof_status is None
    assert len(outcome.requests) == 1
    return outcome.requests[0]


def test_simple_get() -> None:
    request = one(b"GET /a%20b?x=1&y=%2F HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n")
    assert request == {
        "method": "GET",
        "raw_target": "/a%20b?x=1&y=%2F",
        "path": "/a%20b",
        "query": "x=1&y=%2F",
        "version": "HTTP/1.1",
        "headers": [["Host", "example.com"], ["Accept", "*/*"]],
        "body": "",
        "keep_alive": True,
        "content_length": None,
        "chunked": False,
        "expect_continue": False,
        "trailers": [],
        "complete": True,
    }


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("1.1", None, True),
        ("1.1", "close", False),
        ("1.1", "Close", False),
        ("1.1", "keep-alive, close", False),
        ("1.1", "keep-alive", True),
        ("1.1", "closed", True),
        ("1.0", None, False),
        ("1.0", "keep-alive", True),
        ("1.0", "Keep-Alive", True),
        ("1.0", "close", False),
    ],
)
def test_keep_alive_rules(version: str, connection: str | None, keep_alive: bool) -> None:
    head = f"GET / HTTP/{version}\r\nHost: h\r\n"
    if connection is not None:
        head += f"Connection: {connection}\r\n"
    assert one((head + "\r\n").encode())["keep_alive"] is keep_alive


def test_pipelined_requests_in_one_feed() -> None:
    parser = RequestParser()
    parser.feed(
        b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        b"HEAD /3 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /4 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        b"GET /ignored HTTP/1.1\r\nHost: h\r\n\r\n"
    )
    assert [(r.method, r.path, bytes(r.body)) for r in parser.requests] == [
        ("GET", "/1", b""),
        ("POST", "/2", b"abc"),
        ("HEAD", "/3", b""),
        ("GET", "/4", b""),
    ]
    assert parser.idle
    parser.feed(b"more bytes after close are ignored")
    parser.feed_eof()


def test_chunked_with_extensions_and_trailers() -> None:
    request = one(
        CHUNKED + b'4;a=b;c="d e"\r\nWiki\r\n6;x\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n'
        b"0;end\r\nX-Sum: 42 \r\nX_Hidden: 1\r\nX-Other:\tz\r\n\r\n"
    )
    assert request["body"] == "Wikipedia in \r\n\r\nchunks."
    assert request["chunked"] is True
    assert request["content_length"] is None
    assert request["trailers"] == [["X-Sum", "42"], ["X-Other", "z"]]


def test_trailer_limits() -> None:
    raw = CHUNKED + b"0\r\n" + b"T: v\r\n" * 3 + b"\r\n"
    assert run_all_ways(raw, Limits(fields=3)).status is None
    assert run_all_ways(raw, Limits(fields=2)).status == 431
    endless = CHUNKED + b"0\r\nT: " + b"v" * 200_000
    assert run([endless], Limits(fields=1, field_size=100)).status == 431


def test_expect_continue() -> None:
    body = b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\nhi"
    assert one(b"PUT / HTTP/1.1\r\nHost: h\r\n" + body)["expect_continue"] is True
    chunked = b"Expect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    assert one(b"PUT / HTTP/1.1\r\nHost: h\r\n" + chunked)["expect_continue"] is True
    assert one(b"PUT / HTTP/1.0\r\n" + body)["expect_continue"] is False
    # Nothing to wait for without a body.
    expect_only = b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n"
    assert one(expect_only)["expect_continue"] is False


def test_expect_continue_head_comes_before_the_body() -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    request = parser.requests.popleft()
    # (Tuples, because mypy would keep attributes narrowed across feed() calls.)
    assert (request.expect_continue, request.complete, parser.idle) == (True, False, False)
    parser.feed(b"hello")
    assert (request.complete, bytes(request.body), parser.idle) == (True, b"hello", True)


def test_head_method() -> None:
    request = one(b"HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n")
    assert request["method"] == "HEAD" and request["complete"]


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("http://example.com/p/q?x=1", "/p/q", "x=1"),
        ("https://example.com:8443/?", "/", ""),
        ("http://example.com", "/", ""),
        ("http://example.com?x=1", "/", "x=1"),
        ("http://user@example.com/p#frag", "/p", ""),
        ("*", "*", ""),
        ("/p?q#f", "/p", "q"),
        ("//double/slash", "//double/slash", ""),
    ],
)
def test_target_forms(target: str, path: str, query: str) -> None:
    request = one(f"OPTIONS {target} HTTP/1.1\r\nHost: h\r\n\r\n".encode())
    assert (request["raw_target"], request["path"], request["query"]) == (target, path, query)


def test_content_length_values() -> None:
    assert one(POST + b"Content-Length: 0\r\n\r\n")["content_length"] == 0
    assert one(b"GET / HTTP/1.1\r\nHost: h\r\ncontent-LENGTH: 0\r\n\r\n")["content_length"] == 0
    assert one(POST + b"Content-Length: 0003 \r\n\r\nabc")["content_length"] == 3


def test_large_body_in_pieces() -> None:
    body = bytes(range(256)) * 4096  # 1 MiB with every byte value, CRLFs included
    parser = RequestParser()
    parser.feed(b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body))
    request = parser.requests.popleft()
    received = bytearray()
    for at in range(0, len(body), 65536):
        parser.feed(body[at : at + 65536])
        received += request.body.take()  # the consumer takes them from the front
        assert request.complete == (at + 65536 >= len(body))
    assert received == body and parser.idle
    parser.feed(NEXT)
    assert parser.requests.popleft().path == "/next"


def test_large_chunked_body_in_pieces() -> None:
    body = bytes(range(256)) * 1024
    encoded = b"".join(
        b"%x\r\n%b\r\n" % (len(body[at : at + 3000]), body[at : at + 3000])
        for at in range(0, len(body), 3000)
    )
    raw = CHUNKED + encoded + b"0\r\n\r\n" + NEXT
    for _how, pieces in splits(raw, seeds=3):
        if len(pieces) > 100_000:
            continue  # byte by byte is covered by smaller bodies
        outcome = run(pieces)
        assert [r["body"].encode("latin-1") for r in outcome.requests] == [body, b""]


def test_body_keeps_flowing_after_the_request_was_taken() -> None:
    parser = RequestParser()
    parser.feed(CHUNKED + b"3\r\nabc\r\n")
    request = parser.requests.popleft()
    assert (bytes(request.body), request.complete) == (b"abc", False)
    assert request.body.take(2) == b"ab"
    parser.feed(b"2\r\nde\r\n0\r\n\r")
    assert (bytes(request.body), request.complete, parser.idle) == (b"cde", False, False)
    parser.feed(b"\n")
    assert (request.complete, parser.idle) == (True, True)


def test_underscore_headers() -> None:
    raw = b"GET / HTTP/1.1\r\nX-Real-IP: 1.2.3.4\r\nX_Real_IP: 6.6.6.6\r\nA: x_y\r\nHost: h\r\n\r\n"
    assert one(raw)["headers"] == [["X-Real-IP", "1.2.3.4"], ["A", "x_y"], ["Host", "h"]]
    kept = one(raw, Limits(drop_underscore_headers=False))["headers"]
    assert kept == [["X-Real-IP", "1.2.3.4"], ["X_Real_IP", "6.6.6.6"], ["A", "x_y"], ["Host", "h"]]


def test_header_values_are_stripped_and_latin1() -> None:
    request = one(b"GET / HTTP/1.1\r\nHost:h\r\nA:  a b \t\r\nB:\t\r\nC: caf\xe9\r\n\r\n")
    assert request["headers"] == [["Host", "h"], ["A", "a b"], ["B", ""], ["C", "caf\xe9"]]


def test_extension_methods_are_accepted() -> None:
    for method in ("PURGE", "PROPFIND", "BREW", "M-SEARCH", "GET_STATS"):
        assert one(f"{method} / HTTP/1.1\r\nHost: h\r\n\r\n".encode())["method"] == method


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        POST + b"Upgrade: h2c\r\nConnection: Upgrade\r\nContent-Length: 3\r\n\r\nabc",
        POST + b"Upgrade: h2c\r\nConnection: upgrade\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
    ],
)
def test_upgrade_is_served_as_http(raw: bytes) -> None:
    outcome = run_all_ways(raw + NEXT * 2)
    assert outcome.status is None and outcome.eof_status is None
    assert [r["path"] for r in outcome.requests] == [outcome.requests[0]["path"], "/next", "/next"]
    assert outcome.requests[0]["body"] in ("", "abc")
    assert all(r["keep_alive"] and r["complete"] for r in outcome.requests)


WEBSOCKET_HEAD = b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
FRAME = bytes([0x81, 0x82, 1, 2, 3, 4, ord("h") ^ 1, ord("i") ^ 2])  # masked text "hi"


@pytest.mark.parametrize("pieces", [p for _, p in splits(WEBSOCKET_HEAD + FRAME + NEXT)])
def test_an_upgrade_upgrade_if_takes_ends_http_and_hands_back_the_rest(
    pieces: list[bytes],
) -> None:
    """What follows the head (a frame sent without waiting for the 101, here with a request
    line behind it) is another protocol's: kept, not parsed or refused."""
    parser = RequestParser(upgrade_if=is_websocket_upgrade)
    rest = b""
    for piece in pieces:
        parser.feed(piece)
        rest += parser.take_upgraded_rest()
    assert [request.path for request in parser.requests] == ["/ws"]
    assert rest == FRAME + NEXT
    parser.feed_eof()  # no unfinished HTTP message to refuse
    assert parser.take_upgraded_rest() == b""


@pytest.mark.parametrize(
    "raw",
    [
        POST + b"Upgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 3\r\n\r\nabc",
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        b"GET / HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade, keep-alive\r\n\r\n",
    ],
)
def test_an_upgrade_upgrade_if_refuses_is_served_as_http(raw: bytes) -> None:
    parser = RequestParser(upgrade_if=is_websocket_upgrade)
    parser.feed(raw + NEXT)
    assert [request.path for request in parser.requests] == ["/", "/next"]
    assert parser.take_upgraded_rest() == b""


def test_empty_lines_between_requests() -> None:
    outcome = run_all_ways(
        b"\r\nGET /1 HTTP/1.1\r\nHost: h\r\n\r\n\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n\r\n"
    )
    assert [r["path"] for r in outcome.requests] == ["/1", "/2"]
    assert outcome.idle and outcome.eof_status is None


def test_idle() -> None:
    parser = RequestParser()
    steps = [
        (b"", True),
        (b"GE", False),
        (b"T / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n", False),  # a body to come
        (b"ok", True),
        (b"\r\n", True),  # a stray empty line is not the start of a request
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", True),
    ]
    for data, idle in steps:
        parser.feed(data)
        assert parser.idle is idle, data


def test_feed_eof_between_requests_is_quiet() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    parser.feed_eof()
    assert len(parser.requests) == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"G",
        b"GET / HTTP/1.1\r\nHost: h\r\n",
        POST + b"Content-Length: 5\r\n\r\nabc",
        CHUNKED + b"3\r\nabc\r\n",
        CHUNKED + b"0\r\n\r",
    ],
)
def test_feed_eof_in_a_message_is_refused(raw: bytes) -> None:
    outcome = run_all_ways(raw)
    assert outcome.status is None
    assert outcome.eof_status == 400
    assert not outcome.idle


def test_limits_exactly_at_the_edge_pass() -> None:
    line = b"GET /" + b"a" * (4094 - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == 4094
    assert one(line + b"\r\nHost: h\r\n\r\n")["method"] == "GET"
    # limit_request_field_size counts the CRLF, as gunicorn does: 8188 bytes and 2.
    field = b"X: " + b"a" * (8190 - 2 - 3)
    assert one(b"GET / HTTP/1.1\r\nHost: h\r\n" + field + b"\r\n\r\n")["headers"][1][0] == "X"
    many = b"GET / HTTP/1.1\r\nHost: h\r\n" + b"X: a\r\n" * 99 + b"\r\n"
    assert len(one(many)["headers"]) == 100


def test_limits_are_enforced_on_partial_input() -> None:
    parser = RequestParser(Limits(request_line=100))
    parser.feed(b"GET /" + b"a" * 90)
    with pytest.raises(URITooLong):
        parser.feed(b"a" * 20)
    parser = RequestParser(Limits(field_size=100))
    parser.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * 90)
    with pytest.raises(HeaderFieldsTooLarge):
        parser.feed(b"a" * 20)
    parser = RequestParser(Limits(fields=10))
    parser.feed(b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 10)
    with pytest.raises(HeaderFieldsTooLarge):
        parser.feed(b"X: a\r\n")


def test_unlimited_settings_are_still_bounded() -> None:
    limits = Limits(request_line=0, fields=0, field_size=0)
    huge = b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: " + b"b" * 100_000 + b"\r\n\r\n"
    assert one(huge, limits)["path"] == "/" + "a" * 100_000
    parser = RequestParser(limits)
    with pytest.raises(HTTPError) as refused:
        for _ in range(limits.max_head // 65536 + 2):
            parser.feed(b"X: " + b"b" * 65533)
    assert refused.value.status in (414, 431)


def test_fields_above_gunicorns_cap_are_capped() -> None:
    assert Limits(fields=1_000_000).max_fields == 32768
    assert Limits(fields=0).max_fields == 32768
    with pytest.raises(ValueError):
        Limits(fields=-1)


def test_early_refusal_of_garbage() -> None:
    parser = RequestParser()
    with pytest.raises(BadRequest):
        parser.feed(b"\x16\x03\x01\x00\xa5\x01\x00")  # a TLS ClientHello
    parser = RequestParser()
    with pytest.raises(HTTPError) as refused:
        parser.feed(b"GET / HTTP/2.0\r\nHost: h\r\n")  # refused before the head ends
    assert refused.value.status == 505


def test_request_repr_and_defaults() -> None:
    request = Request("GET", "/", "/", "", "HTTP/1.1", [])
    assert request.keep_alive and request.complete and bytes(request.body) == b""
    assert repr(request) == "<Request GET / HTTP/1.1 headers=0 complete=True>"
