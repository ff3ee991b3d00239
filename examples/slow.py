"""An app that misbehaves on request, for the troubleshooting page (docs/troubleshooting.md).

`/sleep?s=N` waits N seconds, as a view stuck on a slow database or API does; `/hog?mb=N`
keeps N MB more for the worker's life, as a leak or a big query result does. `slow:heavy(N)`
is the same app in workers that hold N MB from the start, the weight of a large framework.
Try: `dynocorn --chdir examples --timeout 2 slow:app`, then `curl localhost:8000/sleep?s=5`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

MB = 1 << 20


def dirty(megabytes: int) -> bytes:
    """`megabytes` MB that are really resident and private (written, not just mapped)."""
    return os.urandom(16) * (megabytes * MB // 16)


KEPT: list[bytes] = []


def slow_query(seconds: float) -> None:
    time.sleep(seconds)  # the database (or API) that does not answer


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    path = environ.get("PATH_INFO", "/")
    if path == "/sleep":
        slow_query(float(query.get("s", ["1"])[0]))
    elif path == "/hog":
        KEPT.append(dirty(int(query.get("mb", ["1"])[0])))
    body = f"{os.getpid()} {path} done\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def heavy(megabytes: int) -> Callable[..., Iterable[bytes]]:
    """The app, once `megabytes` MB are kept: called as each worker loads it (in the master
    with --preload, whose workers then share those pages)."""
    KEPT.append(dirty(megabytes))
    return app
