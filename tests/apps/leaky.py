"""An app that leaks: every request keeps 1 MB (written, so it is really resident)."""

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
