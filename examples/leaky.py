"""A leaking app, to watch memory recycling: every request keeps 1 MB.

The megabyte is written (random bytes repeated), so its pages are really resident and
private to the worker: its USS grows by 1 MB a request until `--max-worker-memory` recycles
it. Try: `dynocorn -w 2 --max-worker-memory 64MB --metrics-interval 5 leaky:app` and send
requests; the log says when a worker is replaced, the metrics lines show its memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

KEPT: list[bytes] = []


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    KEPT.append(os.urandom(16) * 65536)  # 1 MiB of dirty pages
    body = f"{os.getpid()} {len(KEPT)}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
