"""`--access-log-style json` on a real server: hostile request bytes, one JSON object a line."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from typing import Any

import pytest

from rawhttp import exchange
from server import running
from worker_classes import WORKER_CLASSES

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
ROUTER_FIELDS = {"time", "method", "path", "status", "bytes", "duration_ms", "request_id", "fwd"}

# (target, header lines): what the parser lets through, with what the log must survive.
ACCEPTED: list[tuple[bytes, list[bytes]]] = [
    (
        b'/r1/a"b\\c?x="y"',
        [b'X-Request-Id: a"b\\c', b'X-Forwarded-For: ","status":500,"x":"'],
    ),
    (
        b"/r2/%0A%00%22%E2%80%A8",
        # U+2028 as UTF-8 bytes, and bytes that are not UTF-8 at all (obs-text).
        [b"X-Request-Id: a\xe2\x80\xa8b", b"X-Forwarded-For: \xff\xfe 1.2.3.4"],
    ),
    (b"/r3/{}|^`<>", [b"X-Request-Id: a\tb"]),
    (b"/r4", []),
]
# Refused with 400 before the app: no access log line, forged or otherwise.
REFUSED: list[tuple[bytes, list[bytes]]] = [
    (b"/n1", [b"X-Request-Id: a\x00b"]),
    (b"/n2", [b"X-Request-Id: a\rb"]),
    (b"/n3", [b'X-Request-Id: a\nX-Forwarded-For: {"forged": 1}']),
    (b"/n4", [b"X-Forwarded-For: \x1b[31m"]),
    (b"/n5\xff", []),
]


def request(target: bytes, headers: list[bytes]) -> bytes:
    head = [b"GET " + target + b" HTTP/1.1", b"Host: h", *headers, b"Connection: close"]
    return b"\r\n".join(head) + b"\r\n\r\n"


def header(headers: list[bytes], name: bytes) -> str | None:
    """A header's value as the server decodes it: latin-1, one character per byte."""
    for line in headers:
        key, _, value = line.partition(b": ")
        if key == name:
            return value.decode("latin-1")
    return None


def check(fields: dict[str, Any], target: bytes, headers: list[bytes], since: float) -> None:
    assert set(fields) == ROUTER_FIELDS
    assert ISO_UTC.fullmatch(fields["time"])
    assert since <= datetime.fromisoformat(fields["time"]).timestamp() <= time.time()
    assert fields["method"] == "GET"
    assert fields["path"] == target.decode("latin-1")
    assert (fields["status"], fields["bytes"]) == (200, 13)
    assert isinstance(fields["duration_ms"], float) and fields["duration_ms"] >= 0
    assert fields["request_id"] == header(headers, b"X-Request-Id")
    assert fields["fwd"] == (header(headers, b"X-Forwarded-For") or "127.0.0.1")


@pytest.mark.parametrize("worker_args", WORKER_CLASSES)
def test_every_line_is_one_json_object(worker_args: list[str]) -> None:
    since = time.time() - 0.001  # the log's milliseconds are truncated
    args = [*worker_args, "--access-logfile", "-", "--access-log-style", "json", "testapps:hello"]
    with running(args) as srv:
        for target, headers in REFUSED:
            responses, _ = exchange(srv.port, request(target, headers))
            assert [r.status for r in responses] == [400], target
        for target, headers in ACCEPTED:
            responses, _ = exchange(srv.port, request(target, headers))
            assert [r.status for r in responses] == [200], target
        srv.wait_for(r"^\{", stdout=True, count=len(ACCEPTED))
    # The server has stopped and its stdout is read to the end: nothing more can come.
    lines = srv.stdout_lines
    assert len(lines) == len(ACCEPTED), lines
    assert all(line.isascii() for line in lines)
    # By path, not by order: with threads, a line may be written after the next response.
    logged = {(fields := json.loads(line))["path"]: fields for line in lines}
    for target, headers in ACCEPTED:
        check(logged[target.decode("latin-1")], target, headers, since)


def test_queue_time_is_a_number() -> None:
    args = ["--access-logfile", "-", "--access-log-style", "json", "testapps:hello"]
    with running(args) as srv:
        start = int(time.time() * 1000) - 250
        exchange(srv.port, request(b"/", [f"X-Request-Start: {start}".encode()]))
        fields = json.loads(srv.wait_for(r"^\{", stdout=True)[0].string)
    assert isinstance(fields["queue_ms"], int) and fields["queue_ms"] >= 250
    assert set(fields) == {*ROUTER_FIELDS, "queue_ms"}
