"""Apps for the gevent worker's tests: cooperative waits, code that holds the hub, patch state."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import gevent
from gevent import monkey

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

# The worker (or, with --preload, the master) must patch before it imports the app.
SOCKET_PATCHED_AT_IMPORT = monkey.is_module_patched("socket")


def _seconds(environ: Environ, default: float) -> float:
    query = dict(part.split("=", 1) for part in environ["QUERY_STRING"].split("&") if "=" in part)
    return float(query.get("seconds", default))


def _started(environ: Environ) -> None:
    """A log line a test can wait for instead of sleeping: the request reached the app."""
    print(f"gevent_apps: {environ['PATH_INFO']} started", file=sys.stderr, flush=True)


def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    path = environ["PATH_INFO"]
    if path == "/sleep":  # time.sleep: cooperative only because the worker patched it
        _started(environ)
        time.sleep(_seconds(environ, 1.0))
    elif path == "/gsleep":
        _started(environ)
        gevent.sleep(_seconds(environ, 1.0))
    elif path == "/busy":  # holds the hub: no other greenlet runs, no heartbeat goes out
        _started(environ)
        end = time.monotonic() + _seconds(environ, 60.0)
        while time.monotonic() < end:
            pass
    elif path == "/crash":
        raise RuntimeError("the app fell over")
    if path == "/state":
        data = json.dumps(
            {
                "pid": os.getpid(),
                "socket_patched_at_import": SOCKET_PATCHED_AT_IMPORT,
                "socket_patched": monkey.is_module_patched("socket"),
                "time_patched": monkey.is_module_patched("time"),
                "multithread": environ["wsgi.multithread"],
                "multiprocess": environ["wsgi.multiprocess"],
            }
        ).encode()
        content_type = "application/json"
    else:
        data = str(os.getpid()).encode()
        content_type = "text/plain"
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(data)))])
    return [data]
