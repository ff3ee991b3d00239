"""Request smuggling: shapes COMPAT.md lists that the request corpus does not hold yet.

tests/integration/test_corpus_socket.py replays every refused corpus case over a socket with
a second request behind it and proves the app never runs that second request. This file
does the same for the variants the corpus lacks: each is refused (400) and closed, and
neither the request behind it nor any request hidden in its body reaches the app (the echo
app records what it runs in ECHO_LOG).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from corpus_cases import load_cases
from rawhttp import read_response
from reliability.harness import report
from server import Server, running
from worker_classes import app_for

HIDDEN = b"GET /hidden HTTP/1.1\r\nHost: h\r\n\r\n"  # would run if the framing were misread

# name -> (COMPAT's wording, raw request). Every one must be refused with 400.
SHAPES: dict[str, tuple[str, bytes]] = {
    "te_chunked_twice_in_a_list": (
        "a Transfer-Encoding other than a single chunked",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    ),
    "te_identity_alone": (
        "a Transfer-Encoding whose last coding is not chunked",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n" + HIDDEN,
    ),
    "te_chunked_with_parameter": (
        "a Transfer-Encoding whose last coding is not chunked",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n",
    ),
    "te_nul_after_chunked": (
        "NUL in a header value",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\x00\r\n\r\n0\r\n\r\n",
    ),
    "te_tab_before_colon": (
        "whitespace between a header name and its colon",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding\t: chunked\r\nContent-Length: 34"
        b"\r\n\r\n" + HIDDEN,
    ),
    "cl_and_te_on_http10": (
        "both Content-Length and Transfer-Encoding; chunked on HTTP/1.0",
        b"POST / HTTP/1.0\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n" + HIDDEN,
    ),
    "te_then_cl_with_hidden_request": (
        "both Content-Length and Transfer-Encoding (TE first)",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        b"0\r\n\r\n" + HIDDEN,
    ),
    "cl_then_te_with_hidden_request": (
        "both Content-Length and Transfer-Encoding (CL first)",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 39\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n" + HIDDEN,
    ),
    "cl_negative": (
        "a sign in Content-Length",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n" + HIDDEN,
    ),
    "cl_trailing_letter": (
        "a non-digit in Content-Length",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5x\r\n\r\nhello",
    ),
    "cl_trailing_comma": (
        "a list in Content-Length",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,\r\n\r\nhello",
    ),
    "cl_list_different": (
        "a list in Content-Length (different values)",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0, 34\r\n\r\n" + HIDDEN,
    ),
    "cl_folded": (
        "obsolete line folding (of Content-Length)",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n 34\r\n\r\n" + HIDDEN,
    ),
    "obs_fold_tab": (
        "obsolete line folding (with HTAB)",
        b"GET / HTTP/1.1\r\nHost: h\r\nX-A: first\r\n\tsecond\r\n\r\n",
    ),
    "cl_space_before_colon": (
        "whitespace between a header name and its colon (Content-Length)",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length : 34\r\n\r\n" + HIDDEN,
    ),
    "space_inside_header_name": (
        "a header name that is not a token",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent Length: 34\r\n\r\n" + HIDDEN,
    ),
    "bare_cr_line_end": (
        "bare CR as a line end",
        b"GET / HTTP/1.1\rHost: h\r\n\r\n",
    ),
    "lf_in_value_then_te": (
        "LF in a header value (a header hidden behind a bare LF)",
        b"POST / HTTP/1.1\r\nHost: h\r\nX-A: a\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 34\r\n\r\n" + HIDDEN,
    ),
    "nul_in_target": (
        "a request target with controls",
        b"GET /a\x00b HTTP/1.1\r\nHost: h\r\n\r\n",
    ),
    "chunk_size_negative": (
        "a bad chunk size (sign)",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    ),
    "chunk_size_plus": (
        "a bad chunk size (sign)",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
    ),
    "chunk_size_leading_space": (
        "a bad chunk size (whitespace)",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
    ),
    "chunk_size_empty": (
        "a bad chunk size (empty)",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n",
    ),
    "chunk_extension_bare_lf": (
        "a chunk without its CRLF (bare LF after an extension)",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\nhello\r\n"
        b"0\r\n\r\n",
    ),
    "chunk_extension_control": (
        "a bad chunk (control character in an extension)",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x01b\r\nhello\r\n"
        b"0\r\n\r\n",
    ),
    "chunk_data_longer_than_size": (
        "a chunk without its CRLF (data overruns the size)",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nhello\r\n0\r\n\r\n",
    ),
    "last_chunk_bare_lf": (
        "bare LF as a line end (the last chunk)",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n" + HIDDEN,
    ),
}


@pytest.fixture(scope="module", params=[[], ["-k", "asgi"]], ids=["sync", "asgi"])
def echo_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The sync class, and the ASGI class (its own connection code, the same parser)."""
    log = tmp_path_factory.mktemp("smuggling") / "seen.jsonl"
    log.touch()
    args = [*request.param, "-w", "2", app_for(request.param, "testapps:echo")]
    with running(args, workers=2, env={"ECHO_LOG": str(log)}) as srv:
        srv.echo_log = log  # type: ignore[attr-defined]
        yield srv


def test_shapes_are_new_to_the_corpus() -> None:
    corpus = {case.raw for case in load_cases() if not case.valid}
    repeated = [name for name, (_, raw) in SHAPES.items() if raw in corpus]
    total = len(corpus) + len(SHAPES)
    report(
        "smuggling shapes covered",
        total,
        len(repeated),
        "0 repeated",
        f"{len(corpus)} refused corpus cases (test_corpus_socket.py) + {len(SHAPES)} here",
    )
    assert repeated == []


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("name", sorted(SHAPES))
def test_refused_and_nothing_behind_it_runs(echo_server: Server, name: str, bytewise: bool) -> None:
    pids = sorted(echo_server.worker_pids())
    marker = f"/behind-{name}-{bytewise}"
    raw = SHAPES[name][1] + f"GET {marker} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", echo_server.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if bytewise:
                for index in range(len(raw)):
                    sock.sendall(raw[index : index + 1])
            else:
                sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed while we were still sending
        statuses = []
        with sock.makefile("rb") as stream:  # closed here, not by a later garbage collection
            while True:
                try:
                    response = read_response(stream)
                except (ConnectionResetError, TimeoutError):
                    break
                if response is None:
                    break
                statuses.append(response.status)
    log: Path = echo_server.echo_log  # type: ignore[attr-defined]
    seen = log.read_text()
    ran_behind = marker in seen
    ran_hidden = '"/hidden"' in seen
    failed = statuses != [400] or ran_behind or ran_hidden
    if not bytewise:
        report(
            f"smuggling: {name}",
            1,
            int(failed),
            "400 + close; nothing behind it runs",
            f"statuses {statuses}; behind ran: {ran_behind}; hidden ran: {ran_hidden}",
        )
    assert not ran_behind, f"{name}: the request behind it ran"
    assert not ran_hidden, f"{name}: a request hidden in its body ran"
    assert statuses == [400], f"{name}: {statuses}"
    assert sorted(echo_server.worker_pids()) == pids
