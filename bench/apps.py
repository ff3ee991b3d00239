"""Apps that only the benchmark serves (`make bench`; bench/README.md)."""

import time
from collections.abc import Callable, Iterable
from typing import Any

BODY = b"ok"
CPU_SECONDS = 0.005


def _answer(start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]


def sleep10(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Waits 10 ms, as if on a database, then answers two bytes.

    `time.sleep` is looked up at call time, so under gevent's monkey patching it yields to
    the other connections instead of blocking the worker."""
    time.sleep(0.010)
    return _answer(start_response)


def io20(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Waits 20 ms, as if on a database, then answers two bytes (cooperative under gevent,
    as sleep10)."""
    time.sleep(0.020)
    return _answer(start_response)


def mixed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """`/slow` waits 200 ms, anything else 2 ms: fast pages and the odd slow report on the
    same connections (cooperative under gevent, as sleep10). bench/mixed.lua makes every
    tenth request slow, the same sequence for every server and round."""
    time.sleep(0.200 if environ.get("PATH_INFO") == "/slow" else 0.002)
    return _answer(start_response)


def cpu5(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Computes for 5 ms of this thread's CPU time, then answers two bytes.

    Pure Python and never sleeps, so it holds the GIL and, under gevent, the whole worker.
    The deadline is on `time.thread_time`, so each request costs 5 ms of CPU however many
    threads share the process or cores share the machine."""
    deadline = time.thread_time() + CPU_SECONDS
    x = 1
    while time.thread_time() < deadline:
        for _ in range(100):
            x = x * 31 % 1_000_003
    return _answer(start_response)
