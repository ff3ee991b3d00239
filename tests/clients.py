"""What the integration tests do as clients: one request, waiting for a condition, a steady
load. One of each, for every test file (the reliability harness too)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import requests

from server import Server


def get(server: Server | int, path: str = "/", timeout: float = 10.0) -> requests.Response:
    """One GET on 127.0.0.1, to a running server or a port."""
    port = server if isinstance(server, int) else server.port
    return requests.get(f"http://127.0.0.1:{port}{path}", timeout=timeout)


def poll(condition: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> float:
    """Wait until `condition()` holds; how long that took. Bounded: AssertionError after
    `timeout` seconds, naming `what`."""
    started = time.monotonic()
    deadline = started + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.01)
    return time.monotonic() - started


class SteadyLoad:
    """A client thread sending requests back to back, counting every outcome."""

    def __init__(self, server: Server, path: str = "/") -> None:
        self.server = server
        self.path = path
        self.ok = 0
        self.failed: list[str] = []
        self.pids: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = requests.Session()
        deadline = time.monotonic() + 60  # bounded, whatever happens
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                response = session.get(
                    f"http://127.0.0.1:{self.server.port}{self.path}", timeout=10
                )
                if response.status_code == 200:
                    self.ok += 1
                    self.pids.add(response.text)
                else:
                    self.failed.append(str(response.status_code))
            except requests.RequestException as error:
                self.failed.append(repr(error))

    def __enter__(self) -> SteadyLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(15)
