"""An app that fills the page cache: it writes ``FILLER_MB`` MB to ``FILLER_PATH`` once.

The file stays (the test removes it), so its pages stay cached and charged to the dyno's
cgroup while the processes themselves stay small.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any

CHUNK = b"\0" * (1 << 20)


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    megabytes = int(os.environ["FILLER_MB"])
    with open(os.environ["FILLER_PATH"], "wb") as file:
        for _ in range(megabytes):
            file.write(CHUNK)
    body = f"wrote {megabytes} MB".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
