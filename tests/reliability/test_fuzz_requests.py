"""Fuzzing the HTTP front door with hypothesis, against the real server and the echo app.

Request bytes come from a grammar of valid HTTP/1.x requests (methods, targets, headers,
Content-Length and chunked bodies, one or two pipelined), then up to three mutations: byte
flips, inserted CR/LF/NUL/SP/HTAB, deletions, truncation, duplicated header lines, and
Transfer-Encoding or Content-Length headers with hostile values.

The property, for every connection (sent whole, then half-closed so that nothing waits):
the server answers with well-formed responses whose status is 1xx, 2xx, 4xx, 501 (a
transfer coding it does not implement, such as ``gzip, chunked``) or 505, or closes; never
another 5xx (the echo app does not fail, so a 5xx would be the server's own error), never a
hang, never a dead or replaced worker.

300 derandomized examples run with the suite; the `soak` case runs 20000.
"""

from __future__ import annotations

import re
import socket
from collections import Counter
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reliability.harness import report
from server import Server, running

FAST_EXAMPLES = 300
SOAK_EXAMPLES = 20000
READ_TIMEOUT = 5.0
# 5xx statuses that refuse a request rather than report a failure of the server.
REFUSING_5XX = (501, 505)

TOKEN = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-",
    min_size=1,
    max_size=12,
)
VALUE = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=0, max_size=24
).map(str.strip)
SEGMENT = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~%", min_size=0, max_size=8)
HOSTILE_TE = [
    "chunked",
    "CHUNKED",
    " chunked",
    "chunked ",
    "identity",
    "gzip",
    "gzip, chunked",
    "chunked, gzip",
    "chunked, chunked",
    ",chunked",
    '"chunked"',
    "chunked;x=1",
    "",
]
HOSTILE_CL = [
    "0",
    "5",
    "-1",
    "+5",
    "1, 1",
    "0x10",
    "99999999999999999999999",
    "",
    " 3",
    "3 ",
    "1 2",
]
INSERTS = [b"\r", b"\n", b"\x00", b" ", b"\t", b"\r\n", b"\r\n\r\n", b"\x7f", b"\xff"]


@st.composite
def valid_request(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]))
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]))
    path = "/" + "/".join(draw(st.lists(SEGMENT, max_size=3)))
    if draw(st.booleans()):
        path += "?" + draw(SEGMENT) + "=" + draw(SEGMENT)
    headers = [("Host", "example.com")]
    headers += draw(st.lists(st.tuples(TOKEN, VALUE), max_size=5))
    if draw(st.booleans()):
        headers.append(("Connection", draw(st.sampled_from(["keep-alive", "close"]))))
    body = b""
    framing = draw(st.sampled_from(["none", "length", "chunked"]))
    if framing == "chunked" and version == "HTTP/1.1":
        pieces = draw(st.lists(st.binary(min_size=1, max_size=40), max_size=3))
        headers.append(("Transfer-Encoding", "chunked"))
        body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    elif framing != "none":
        body = draw(st.binary(max_size=80))
        headers.append(("Content-Length", str(len(body))))
    head = f"{method} {path} {version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    return head.encode("latin-1") + b"\r\n" + body


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = draw(valid_request())
    if draw(st.integers(0, 3)) == 0:
        data += draw(valid_request())  # pipelined
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(
            st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate", "te", "cl"])
        )
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            mask = draw(st.integers(1, 255))
            data = data[:at] + bytes([data[at] ^ mask]) + data[at + 1 :]
        elif kind == "insert":
            data = data[:at] + draw(st.sampled_from(INSERTS)) + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + draw(st.integers(1, 8)) :]
        elif kind == "truncate":
            data = data[:at]
        elif kind == "duplicate":
            lines = data.split(b"\r\n")
            if len(lines) > 2:
                index = draw(st.integers(1, len(lines) - 2))
                lines.insert(index, lines[index])
                data = b"\r\n".join(lines)
        else:
            name = "Transfer-Encoding" if kind == "te" else "Content-Length"
            value = draw(st.sampled_from(HOSTILE_TE if kind == "te" else HOSTILE_CL))
            line_end = data.find(b"\r\n")
            if line_end >= 0:
                header = f"\r\n{name}: {value}".encode()
                data = data[:line_end] + header + data[line_end:]
    return data


STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) [^\r\n]*\r\n")
HEADER_LINE = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+): ?([^\r\n]*)\r\n")


def parse_responses(data: bytes, complete: bool) -> list[int]:
    """Statuses of the responses in `data`; AssertionError if any is malformed. When the
    connection was reset (`complete` False) a cut-off last response is tolerated."""
    statuses = []
    pos = 0
    while pos < len(data):
        try:
            match = STATUS_LINE.match(data, pos)
            assert match, f"bad status line at {pos}: {data[pos : pos + 80]!r}"
            status = int(match.group(1))
            pos = match.end()
            length = None
            chunked = False
            while not data.startswith(b"\r\n", pos):
                header = HEADER_LINE.match(data, pos)
                assert header, f"bad header line at {pos}: {data[pos : pos + 80]!r}"
                name = header.group(1).lower()
                if name == b"content-length":
                    length = int(header.group(2))
                elif name == b"transfer-encoding":
                    chunked = header.group(2).strip().lower() == b"chunked"
                pos = header.end()
            pos += 2
            if 100 <= status < 200 or status in (204, 304):
                pass
            elif chunked:
                while True:
                    end = data.index(b"\r\n", pos)
                    size = int(data[pos:end], 16)
                    pos = end + 2 + size
                    assert data.startswith(b"\r\n", pos), "chunk without its CRLF"
                    pos += 2
                    if size == 0:
                        break
            elif length is not None:
                assert len(data) >= pos + length, "body shorter than its Content-Length"
                pos += length
            else:
                pos = len(data)  # close-delimited
        except (AssertionError, ValueError):
            if complete:
                raise
            break  # a reset cut the last response short
        statuses.append(status)
    return statuses


def exchange(port: int, data: bytes) -> tuple[bytes, bool]:
    """Send, half-close, read to the end: (bytes received, whether it ended in a clean EOF)."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed while we were sending
        received: list[bytes] = []
        while True:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                return b"".join(received), False
            except TimeoutError:
                raise AssertionError(
                    f"no close within {READ_TIMEOUT}s after the request {data[:200]!r}"
                ) from None
            if not piece:
                return b"".join(received), True
            received.append(piece)


@pytest.fixture(scope="module")
def echo_server() -> Iterator[Server]:
    with running(["-w", "2", "testapps:echo"], workers=2) as srv:
        yield srv


def run_fuzz(server: Server, examples: int, label: str) -> None:
    pids = sorted(server.worker_pids())
    tally: Counter[str] = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=mutated())
    def property_(data: bytes) -> None:
        tally["examples"] += 1
        received, clean = exchange(server.port, data)
        statuses = parse_responses(received, clean)
        for status in statuses:
            tally[f"{status // 100}xx" if status not in REFUSING_5XX else str(status)] += 1
            expected = status // 100 in (1, 2, 4) or status in REFUSING_5XX
            assert expected, (status, data, received[:300])
        if not statuses:
            tally["closed without an answer"] += 1
        if not clean:
            tally["reset"] += 1
        assert sorted(server.worker_pids()) == pids, f"a worker died on {data!r}"

    try:
        property_()
    finally:
        detail = ", ".join(f"{key} {n}" for key, n in sorted(tally.items()) if key != "examples")
        report(
            label,
            tally["examples"],
            "see assertion" if server.log.count("Traceback") else 0,
            "0: 1xx/2xx/4xx/501/505 or close; workers unchanged",
            f"responses: {detail}",
        )
    assert "Traceback" not in server.log, server.log[-3000:]
    assert sorted(server.worker_pids()) == pids


def test_fuzzed_requests(echo_server: Server) -> None:
    run_fuzz(echo_server, FAST_EXAMPLES, f"fuzz: {FAST_EXAMPLES} mutated requests [sync -w 2]")


@pytest.mark.soak
def test_fuzzed_requests_long_run(echo_server: Server) -> None:
    run_fuzz(echo_server, SOAK_EXAMPLES, f"fuzz soak: {SOAK_EXAMPLES} mutated requests")
