"""Bounded client load that counts the outcome of every request, and the report line.

`Load` runs a few client threads, each with its own `requests.Session` (kept-alive
connections, no retries: what a real client does), for as long as the `with` block lasts
(and never longer than its own bound). Every request is counted once: ok (the expected
status), or failed with its kind: `refused` (ECONNREFUSED: the connection was never
accepted), `reset` (the connection was established, then closed or reset without an
answer), `timeout`, `status NNN`, or `other`.

`report()` prints one line per case, and appends it to the file named by
RELIABILITY_REPORT when that is set: `case | sent | failed | expected | notes`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import requests

from clients import poll

REPORT_VARIABLE = "RELIABILITY_REPORT"


def report(case: str, sent: int | str, failed: int | str, expected: str, notes: str = "") -> str:
    line = f"{case} | {sent} | {failed} | {expected} | {notes}"
    print(f"\nRELIABILITY {line}")
    path = os.environ.get(REPORT_VARIABLE)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    return line


def failure_kind(error: BaseException) -> str:
    """What a `requests` exception means at the socket level."""
    if isinstance(error, requests.Timeout):
        return "timeout"
    seen: set[int] = set()
    stack: list[object] = [error]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return "refused"
        if isinstance(current, BaseException):
            stack.extend([current.__cause__, current.__context__, *current.args])
            stack.append(getattr(current, "reason", None))
    if "Connection refused" in repr(error):
        return "refused"
    if isinstance(error, requests.ConnectionError):
        return "reset"
    return "other"


@dataclass
class Failure:
    at: float  # time.monotonic() when the request was sent
    kind: str
    detail: str
    done: float = field(default_factory=time.monotonic)  # when it failed


@dataclass
class Outcomes:
    ok: int = 0
    failures: list[Failure] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    bodies: Counter[str] = field(default_factory=Counter)  # e.g. the pid that answered
    latencies: list[float] = field(default_factory=list)
    answered: list[tuple[float, float]] = field(default_factory=list)  # (sent, answered at)

    @property
    def sent(self) -> int:
        return self.ok + len(self.failures)

    def kinds(self) -> Counter[str]:
        return Counter(failure.kind for failure in self.failures)

    def in_flight_at(self, moment: float) -> tuple[int, int]:
        """Requests sent before `moment` and not finished then: (how many, how many of
        them were answered)."""
        answered = sum(1 for sent, done in self.answered if sent < moment < done)
        failed = sum(1 for f in self.failures if f.at < moment < f.done)
        return answered + failed, answered


class Load:
    """Client threads sending requests back to back on kept-alive sessions."""

    def __init__(
        self,
        port: int,
        path: str = "/",
        *,
        threads: int = 4,
        expect: int = 200,
        timeout: float = 10.0,
        bound: float = 60.0,
        keep_bodies: bool = True,
        pause: float = 0.0,
    ) -> None:
        self.url = f"http://127.0.0.1:{port}{path}"
        self.expect = expect
        self.timeout = timeout
        self.bound = bound  # seconds: whatever happens, the threads stop by then
        self.keep_bodies = keep_bodies
        self.pause = pause  # seconds each thread waits between requests: sets a rate
        self.outcomes = Outcomes()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, name=f"load-{n}", daemon=True)
            for n in range(threads)
        ]

    # The counters, read from the test's thread.
    @property
    def ok(self) -> int:
        return self.outcomes.ok

    @property
    def failed(self) -> int:
        return len(self.outcomes.failures)

    @property
    def sent(self) -> int:
        return self.outcomes.sent

    def _run(self) -> None:
        deadline = time.monotonic() + self.bound
        with requests.Session() as session:
            while not self._stop.is_set() and time.monotonic() < deadline:
                if self.pause:
                    self._stop.wait(self.pause)
                started = time.monotonic()
                try:
                    response = session.get(self.url, timeout=self.timeout)
                except requests.RequestException as error:
                    self._record_failure(started, failure_kind(error), repr(error))
                    continue
                now = time.monotonic()
                with self._lock:
                    self.outcomes.statuses[response.status_code] += 1
                    self.outcomes.latencies.append(now - started)
                    self.outcomes.answered.append((started, now))
                    if response.status_code == self.expect:
                        self.outcomes.ok += 1
                        if self.keep_bodies:
                            self.outcomes.bodies[response.text] += 1
                        continue
                self._record_failure(started, f"status {response.status_code}", response.text[:200])

    def _record_failure(self, at: float, kind: str, detail: str) -> None:
        with self._lock:
            self.outcomes.failures.append(Failure(at, kind, detail))

    def wait_ok(self, count: int, timeout: float = 20.0) -> None:
        """Until `count` more requests have succeeded."""
        target = self.ok + count
        poll(lambda: self.ok >= target, timeout, f"{count} more successful requests")

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout + 5)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def summary(self) -> str:
        kinds = self.outcomes.kinds()
        text = f"ok {self.ok}, failed {self.failed}"
        if kinds:
            text += " (" + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())) + ")"
        return text


def connection_refused(port: int) -> bool:
    """True if a new connection to the port is refused (nothing listens)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
