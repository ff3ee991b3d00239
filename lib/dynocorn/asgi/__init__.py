"""The ASGI side of dynocorn (`-k asgi`): what an ASGI 3 app is called with, and the parts
the asyncio worker (workers/asgi.py) is made of: the `http` scope and request cycle
(scope.py, http.py), the lifespan protocol (lifespan.py) and WebSocket sessions
(websocket.py). The HTTP parsing, limits, proxy rules, access log and metrics are the WSGI
classes' own: only how a request reaches the app differs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
