"""Apps that only the benchmark serves (`make bench`; bench/README.md)."""

import time
from collections.abc import Callable, Iterable
from typing import Any

BODY = b"ok"


def sleep10(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Waits 10 ms, as if on a database, then answers two bytes.

    `time.sleep` is looked up at call time, so under gevent's monkey patching it yields to
    the other connections instead of blocking the worker."""
    time.sleep(0.010)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]
