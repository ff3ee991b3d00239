"""RequestParser against the RFC 9110/9112 rules on what must be accepted and refused:
chunk extensions, transfer codings, Host, trailer fields, target forms, field line size."""

from typing import Any

import pytest
from http_feed import run, run_all_ways

from dynocorn.http import (
    DEFAULT_LIMITS,
    HeaderFieldsTooLarge,
    Limits,
    RequestParser,
    UnsupportedTransferCoding,
)
from dynocorn.http.chunked import FORBIDDEN_TRAILERS

POST = b"POST / HTTP/1.1\r\nHost: h\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"
NEXT = b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n"


def accepted(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> list[dict[str, Any]]:
    """The requests ``raw`` holds, fed every way; fails if any is refused or left over."""
    outcome = run_all_ways(raw, limits)
    assert outcome.status is None and outcome.eof_status is None and outcome.idle, outcome
    return outcome.requests


def refused(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> int | None:
    """The status ``raw`` is refused with while it arrives, fed every way."""
    return run_all_ways(raw, limits).status


# -- chunk extensions (RFC 9112 §7.1.1: BWS around ";" and "=") ---------------------


@pytest.mark.parametrize(
    "size_line",
    [
        b"5;a=b",
        b"5; name=value",
        b"5; blahblah; blah",
        b"5 ;a",
        b"5\t;\ta\t=\tb",
        b"5 ; a = b ; c",
        b'5; a = "quoted ; value"',
        b'5;a="esc\\"aped"',
        b"05;x=" + b"y" * 100,
    ],
)
def test_chunk_extensions_with_whitespace_are_ignored(size_line: bytes) -> None:
    raw = CHUNKED + size_line + b"\r\nhello\r\n0; last = 1\r\n\r\n" + NEXT
    requests = accepted(raw)
    assert [r["body"] for r in requests] == ["hello", ""]
    assert [r["path"] for r in requests] == ["/", "/next"]


@pytest.mark.parametrize(
    "size_line",
    [
        b"5 ",  # whitespace is allowed only before a ";"
        b" 5",
        b"5;",  # an extension needs a name
        b"5; ",
        b"5;a b",
        b"5;a=",
        b"5;a=b c",
        b'5;a="open',
        b"5;a=\x01",
        b"5;a\x00",
        b"5\x0b;a",
        b"0x5",
        b"5\rX",
        b"1" + b"0" * 16,  # more than 64 bits
    ],
)
def test_malformed_chunk_size_lines_are_refused(size_line: bytes) -> None:
    assert refused(CHUNKED + size_line + b"\r\nhello\r\n0\r\n\r\n" + NEXT) == 400


def test_chunk_size_lines_are_bounded_like_field_lines() -> None:
    limits = Limits(field_size=100)
    fits = b"5;x=" + b"y" * (98 - 4)
    assert accepted(CHUNKED + fits + b"\r\nhello\r\n0\r\n\r\n", limits)[0]["body"] == "hello"
    assert refused(CHUNKED + fits + b"y\r\nhello\r\n0\r\n\r\n", limits) == 431
    assert run([CHUNKED + b"5;x=" + b"y" * 10_000], limits).status == 431  # no CRLF yet


def test_chunk_data_must_end_in_crlf() -> None:
    for after in (b"\n", b"\r", b"X\r\n", b"\r\r\n", b"hello\r\n"):
        assert refused(CHUNKED + b"5\r\nhello" + after + b"0\r\n\r\n" + NEXT) == 400, after


# -- transfer codings (RFC 9112 §6.1, §6.3, §7) ------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        [b"identity, chunked"],
        [b"Identity ,\tCHUNKED"],
        [b"identity, identity, chunked"],
        [b"identity", b"chunked"],
    ],
)
def test_identity_before_chunked_is_accepted(fields: list[bytes]) -> None:
    head = POST + b"".join(b"Transfer-Encoding: %s\r\n" % field for field in fields)
    requests = accepted(head + b"\r\n5\r\nhello\r\n0\r\n\r\n" + NEXT)
    assert [(r["body"], r["chunked"]) for r in requests] == [("hello", True), ("", False)]


@pytest.mark.parametrize(
    "fields",
    [
        [b"gzip, chunked"],
        [b"x-gzip, chunked"],
        [b"foo, chunked"],
        [b"gzip;level=1, chunked"],
        [b'x;a="b", chunked'],
        [b"identity, deflate, chunked"],
        [b"compress", b"chunked"],
        [b"identity;q=1, chunked"],  # identity takes no parameters: some other coding
    ],
)
def test_an_unimplemented_coding_before_chunked_gets_501(fields: list[bytes]) -> None:
    head = POST + b"".join(b"Transfer-Encoding: %s\r\n" % field for field in fields)
    assert refused(head + b"\r\n5\r\nhello\r\n0\r\n\r\n" + NEXT) == 501


@pytest.mark.parametrize(
    "fields",
    [
        [b"gzip"],  # chunked must come last (a MUST: 400, not 501)
        [b"identity"],
        [b"chunked, identity"],
        [b"chunked, gzip"],
        [b"chunked, chunked"],
        [b"gzip, chunked, chunked"],
        [b",chunked"],
        [b"gzip, , chunked"],
        [b"gzip chunked"],
        [b'"chunked"'],
        [b"chunked;q=1"],
        [b"gzip;q, chunked"],  # malformed wins over unimplemented
        [b"foo, bar baz, chunked"],
        [b"chunked", b"chunked"],
        [b"chunked", b"identity"],
    ],
)
def test_ambiguous_transfer_codings_get_400(fields: list[bytes]) -> None:
    head = POST + b"".join(b"Transfer-Encoding: %s\r\n" % field for field in fields)
    assert refused(head + b"\r\n0\r\n\r\n" + NEXT) == 400


def test_framing_faults_outrank_an_unimplemented_coding() -> None:
    both = POST + b"Transfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\nhello"
    assert refused(both) == 400
    http10 = b"POST / HTTP/1.0\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    assert refused(http10) == 400


def test_501_is_an_http_error_that_closes() -> None:
    error = UnsupportedTransferCoding("gzip")
    assert (error.status, error.reason) == (501, "Not Implemented")
    assert error.render().startswith(b"HTTP/1.1 501 Not Implemented\r\n")
    assert b"\r\nConnection: close\r\n" in error.render()


# -- Host and other fields that may appear once (RFC 9110 §7.2, §5.3) --------------


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Host: h\r\nHost-Name: h\r\n\r\n",
        b"GET http://example.com/ HTTP/1.1\r\n\r\n",  # absolute-form needs Host too
        b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nhOST: a\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Type: a\r\ncontent-type: a\r\n\r\n",
        b"GET / HTTP/1.0\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n",
        POST + b"Content-Type: a\r\nContent-Type: b\r\nContent-Length: 2\r\n\r\nhi",
    ],
)
def test_missing_or_repeated_singletons_get_400(raw: bytes) -> None:
    assert refused(raw + NEXT) == 400


def test_host_rules_accept_what_they_should() -> None:
    assert accepted(b"GET / HTTP/1.0\r\n\r\n")[0]["headers"] == []  # only 1.1 needs Host
    assert accepted(b"GET / HTTP/1.1\r\nhost:\r\n\r\n")[0]["headers"] == [["host", ""]]
    head = b"GET / HTTP/1.1\r\nX_Host: 1\r\nHost: h\r\nContent-Type: a\r\nContent-Length: 0\r\n"
    request = accepted(head + b"\r\n")[0]
    assert request["headers"] == [["Host", "h"], ["Content-Type", "a"], ["Content-Length", "0"]]
    assert request["content_length"] == 0


# -- trailer fields (RFC 9110 §6.5.1) ----------------------------------------------


@pytest.mark.parametrize("name", sorted(FORBIDDEN_TRAILERS))
def test_forbidden_trailer_fields_get_400(name: str) -> None:
    for spelled in (name, name.title(), name.upper()):
        trailer = b"X-Ok: 1\r\n%s: v\r\n" % spelled.encode()
        assert refused(CHUNKED + b"5\r\nhello\r\n0\r\n" + trailer + b"\r\n" + NEXT) == 400


def test_gunicorns_forbidden_trailers_are_all_refused() -> None:
    gunicorn = {"host", "content-length", "transfer-encoding", "trailer", "authorization", "te"}
    assert gunicorn <= FORBIDDEN_TRAILERS
    assert {"content-type", "content-encoding", "content-range"} <= FORBIDDEN_TRAILERS


def test_allowed_trailers_are_kept_apart_from_the_headers() -> None:
    trailers = b'X-Checksum: 42\r\nServer-Timing: db;dur=5\r\nX_Dropped: 1\r\nETag-X: \t"e" \r\n'
    request = accepted(CHUNKED + b"5\r\nhello\r\n0\r\n" + trailers + b"\r\n")[0]
    assert request["headers"] == [["Host", "h"], ["Transfer-Encoding", "chunked"]]
    assert request["trailers"] == [
        ["X-Checksum", "42"],
        ["Server-Timing", "db;dur=5"],
        ["ETag-X", '"e"'],
    ]


@pytest.mark.parametrize(
    "trailer",
    [
        b"X-A : b",
        b" X-A: b",
        b"X-A",
        b": b",
        b"X-A: a\x00b",
        b"X-A: a\rb",
        b"X@A: b",
        b"X-A: a\x7f",
    ],
)
def test_malformed_trailer_lines_get_400(trailer: bytes) -> None:
    assert refused(CHUNKED + b"0\r\n" + trailer + b"\r\n\r\n" + NEXT) == 400


def test_trailer_lines_are_bounded_like_field_lines() -> None:
    limits = Limits(field_size=100)
    fits = b"X: " + b"v" * (98 - 3)
    assert accepted(CHUNKED + b"0\r\n" + fits + b"\r\n\r\n", limits)[0]["trailers"]
    assert refused(CHUNKED + b"0\r\n" + fits + b"v\r\n\r\n", limits) == 431
    assert run([CHUNKED + b"0\r\nX: " + b"v" * 10_000], limits).status == 431
    assert refused(CHUNKED + b"0\r\nX: 1\n\r\n") == 400  # bare LF, as it arrives


# -- request target forms (RFC 9112 §3.2) ------------------------------------------


def test_asterisk_form_only_with_options() -> None:
    assert accepted(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")[0]["path"] == "*"
    for method in (b"GET", b"HEAD", b"POST", b"DELETE", b"PURGE"):
        raw = method + b" * HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"
        assert refused(raw + NEXT) == 400, method


@pytest.mark.parametrize(
    "target",
    [
        b"s://]ufd/:",
        b"http://",
        b"https:///p",
        b"http://[::1/",
        b"http://[::1::2]/",
        b"http://[zz]/",
        b"http://a]/",
        b"http://a:80x/",
        b"http://a@b@c/",
        b"http://%zz/",
        b"http://a{b}/",
        b"*x",
        b"*/p",
    ],
)
def test_targets_in_no_accepted_form_get_400(target: bytes) -> None:
    assert refused(b"OPTIONS " + target + b" HTTP/1.1\r\nHost: h\r\n\r\n" + NEXT) == 400


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("http://[::1]:8080/p?q", "/p", "q"),
        ("http://[::ffff:192.0.2.1]/", "/", ""),
        ("http://[v1.x]/p", "/p", ""),
        ("http://u:p%41@h:/p", "/p", ""),
        ("http://192.0.2.1:80", "/", ""),
        ("http://a-b.c_d~e!$&'()*+,;=f/p", "/p", ""),
        ("coap://x/p?q#f", "/p", "q"),
        ("foo://", "/", ""),  # only http and https need a host
    ],
)
def test_absolute_form_authorities(target: str, path: str, query: str) -> None:
    request = accepted(f"GET {target} HTTP/1.1\r\nHost: h\r\n\r\n".encode())[0]
    assert (request["raw_target"], request["path"], request["query"]) == (target, path, query)


# -- limit_request_field_size counts the whole field line, as gunicorn does ---------


@pytest.mark.parametrize("field_size", [8190, 100, 20])
def test_field_size_counts_the_crlf(field_size: int) -> None:
    limits = Limits(field_size=field_size)
    line = b"X: " + b"a" * (field_size - 2 - 3)  # exactly field_size with its CRLF
    head = b"GET / HTTP/1.1\r\nHost: h\r\n"
    assert accepted(head + line + b"\r\n\r\n", limits)[0]["headers"][1][1].startswith("a")
    assert refused(head + line + b"a\r\n\r\n", limits) == 431
    assert run([head + line + b"a"], limits).status == 431  # refused before its CRLF


def test_trailer_section_is_bounded_like_a_head_when_fields_are_unlimited() -> None:
    limits = Limits(field_size=0)
    parser = RequestParser(limits)
    parser.feed(CHUNKED + b"0\r\n")
    line = b"X: " + b"v" * 65_000 + b"\r\n"
    with pytest.raises(HeaderFieldsTooLarge):
        for _ in range(limits.max_head // len(line) + 2):
            parser.feed(line)
