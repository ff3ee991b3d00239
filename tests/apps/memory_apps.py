"""Apps of a known size, for the memory-management tests.

``ballast``: each worker holds ``BALLAST_MB`` MB of private memory from the moment it has
imported the app, so the tests know what a worker weighs before it serves anything.

``hog``: a request to ``/?mb=N`` keeps N MB more, all at once; ``&ignore_term=1`` makes the
worker ignore SIGTERM from then on, as an app stuck in C code would, so only SIGKILL ends it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

MB = 1 << 20


def dirty(megabytes: int) -> bytes:
    """``megabytes`` MB that are really resident and private (written, not just mapped)."""
    return os.urandom(16) * (megabytes * MB // 16)


BALLAST = dirty(int(os.environ.get("BALLAST_MB", "0")))
KEPT: list[bytes] = []


def _answer(start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def ballast(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    return _answer(start_response)


def hog(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    KEPT.append(dirty(int(query.get("mb", ["0"])[0])))
    if query.get("ignore_term") == ["1"]:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return _answer(start_response)
