"""The settings of the `asgi` worker, gunicorn 27's names, flags and defaults (uvicorn's
`--lifespan` as well). Rows only: settings.py makes them Settings in its table, in the "ASGI"
section, as it does gunicorn27.py's (kept apart so that the table stays one readable module).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from dynocorn import validators as v

ASGI_SECTION = "ASGI"
LIFESPAN_MODES = ("auto", "on", "off")
ASGI_LOOPS = ("auto", "asyncio", "uvloop")


class AsgiRow(NamedTuple):
    name: str
    help: str
    default: Any
    flags: tuple[str, ...]
    parse: v.Parser
    metavar: str


ASGI_ROWS: list[AsgiRow] = [
    AsgiRow(
        "asgi_loop",
        "Event loop of the `asgi` worker: `uvloop` when installed (`auto`), `asyncio`, or "
        "`uvloop` (an error when it is not installed).",
        "auto",
        ("--asgi-loop",),
        v.choice(*ASGI_LOOPS),
        "LOOP",
    ),
    AsgiRow(
        "asgi_lifespan",
        "The ASGI lifespan protocol (the app's startup and shutdown): `auto` runs it and goes "
        "on without it when the app raises on it; `on` stops the server then; `off` never "
        "runs it. An app that reports `lifespan.startup.failed` stops the server in `auto` "
        "and `on`.",
        "auto",
        ("--asgi-lifespan", "--lifespan"),
        v.choice(*LIFESPAN_MODES),
        "MODE",
    ),
    AsgiRow(
        "asgi_disconnect_grace_period",
        "Seconds an ASGI request task may run on after its client has gone (it has been sent "
        "`http.disconnect`) before it is cancelled; 0 cancels it at once.",
        3,
        ("--asgi-disconnect-grace-period",),
        v.non_negative_int,
        "SECONDS",
    ),
    AsgiRow(
        "websocket_max_message_size",
        "Largest WebSocket message in bytes (a bigger one closes the connection with 1009); "
        "0 = no limit.",
        16 * 2**20,
        ("--websocket-max-message-size",),
        v.non_negative_int,
        "BYTES",
    ),
    AsgiRow(
        "root_path",
        "The path the ASGI app is mounted at behind a proxy (`/api`): the scope's `root_path`.",
        "",
        ("--root-path",),
        v.root_path,
        "PATH",
    ),
]
