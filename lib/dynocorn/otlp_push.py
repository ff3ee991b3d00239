"""OTLP metrics pushed by the master (`otlp_endpoint`), with no thread and no wait in its loop.

Every `otlp_interval` seconds, on a pass of its loop, the master takes the snapshot /metrics
serves (status.stats, from what it holds) and forks a child that converts it, posts it with
the SDK's OTLP/HTTP exporter (metrics/otlp.py) and exits. Not the SDK's periodic reader: it
is a thread, and a thread holding a lock (logging's, the SDK's) when the master forks a
worker leaves that lock held forever in the worker. Not a POST from the loop either: it
blocks for up to the exporter's timeout (10 s), and meanwhile no worker would be reaped,
replaced or timed out.

The child says how it went in one line on a pipe, then exits; the master reads the line on a
later pass (the child's SIGCHLD wakes the loop) and never waits for it. While a push runs the
next one is skipped. The arbiter reaps the child with the workers: reap_workers passes over
a pid that is no worker's.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from dynocorn import __version__, process
from dynocorn.workers.base import FORK_SIGNALS

if TYPE_CHECKING:
    from dynocorn.config import Config
    from dynocorn.logs import ErrorLog
    from dynocorn.sockets import Listener

# A push that has not ended after this long is ended by its own alarm: the exporter bounds
# its retries by its timeout (10 s), but not a hung DNS lookup. (OpenTelemetry's
# OTEL_METRIC_EXPORT_TIMEOUT is 30 s by default too.)
PUSH_DEADLINE = 30
# One line, written at once: a pipe passes this much atomically.
MOST_SAID = select.PIPE_BUF
PUSHED, FAILED = b"+", b"-"  # the line's first byte: the master branches on it, not on words


class Master(Protocol):
    pid: int
    listeners: list[Listener]
    log: ErrorLog

    def become_worker(self) -> None: ...


def resource_attributes(cfg: Config, pid: int, environ: Mapping[str, str]) -> dict[str, str]:
    """Who is pushing: the service (`--name`, else OTEL_SERVICE_NAME, else the app), this
    instance of it (the dyno, else host:pid) and dynocorn's version."""
    name = cfg.proc_name or environ.get("OTEL_SERVICE_NAME") or cfg.wsgi_app or "dynocorn"
    instance = environ.get("DYNO") or f"{socket.gethostname()}:{pid}"
    return {"service.name": name, "service.instance.id": instance, "dynocorn.version": __version__}


@dataclass
class Push:
    """A child that pushes, as the master sees it."""

    pid: int
    fd: int  # the pipe's reading end, non-blocking
    started_at: float
    said: bytes = b""


class OtlpPush:
    def __init__(
        self,
        master: Master,
        url: str,
        interval: float,
        resource: dict[str, str],
        now: float,
    ) -> None:
        self.master = master
        self.url = url
        self.interval = interval
        self.resource = resource
        # The start of every cumulative series: the server's, as wall-clock time.
        self.start_ns = time.time_ns() - int((time.monotonic() - now) * 1e9)
        self.next_at = now + interval
        self.running: Push | None = None
        self.failing = 0  # failed (or skipped) pushes in a row

    def tick(self, now: float, take_snapshot: Callable[[], dict[str, Any]]) -> None:
        """On a pass of the master's loop: hear how the last push went; push when due."""
        if self.running is not None:
            self.hear(self.running)
        if now < self.next_at:
            return
        # From now, not from when it was due: a loop that was busy does not push twice.
        self.next_at = now + self.interval
        if self.running is not None:
            ran = now - self.running.started_at
            self.failed(f"the previous push still runs after {ran:.0f} s: this one is skipped")
            return
        self.start(take_snapshot())

    def start(self, snapshot: dict[str, Any]) -> None:
        read_fd, write_fd = os.pipe()
        # As for a worker: a signal arriving before the child has dropped the master's
        # handlers waits, instead of running them in the child.
        signal.pthread_sigmask(signal.SIG_BLOCK, FORK_SIGNALS)
        try:
            pid = os.fork()
        except OSError as error:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_SIGNALS)
            os.close(read_fd)
            os.close(write_fd)
            self.failed(f"cannot fork: {error}")
            return
        if pid == 0:
            os.close(read_fd)
            self.run_child(snapshot, write_fd)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_SIGNALS)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self.running = Push(pid, read_fd, time.monotonic())

    def run_child(self, snapshot: dict[str, Any], write_fd: int) -> NoReturn:
        """In the child: leave the master behind (its signal handlers, its pipes, sockets
        and listeners, never touching a worker), push, say how it went, exit."""
        said = FAILED + b"the push process ended early"
        try:
            self.master.become_worker()
            for listener in self.master.listeners:
                listener.sock.close()  # not unlinked: the master still serves on it
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORK_SIGNALS)
            signal.alarm(PUSH_DEADLINE)  # SIGALRM's default action ends the process
            process.set_title(f"dynocorn: otlp push [{self.resource['service.name']}]")
            from dynocorn.metrics import otlp  # the SDK, in this process only

            error = otlp.push(snapshot, self.url, self.resource, self.start_ns)
            said = PUSHED if error is None else FAILED + error.encode("utf-8", "replace")
        except BaseException as error:  # whatever it is, the master hears of it
            said = FAILED + f"{type(error).__name__}: {error}".encode("utf-8", "replace")
        finally:
            try:
                os.write(write_fd, said[: MOST_SAID - 1] + b"\n")
            finally:
                os._exit(0)  # no atexit, no flush of what the master had buffered

    def hear(self, push: Push) -> None:
        """Read what the running push said; at the end of the pipe, it has ended."""
        try:
            while chunk := os.read(push.fd, MOST_SAID):
                push.said += chunk
        except BlockingIOError:
            return  # still running
        os.close(push.fd)
        self.running = None
        line = push.said.strip()
        if line[:1] == PUSHED:
            self.pushed()
        elif line[:1] == FAILED:
            self.failed(line[1:].decode("utf-8", "replace"))
        else:
            self.failed("the push process ended without a word (killed, or past its deadline)")

    def pushed(self) -> None:
        if self.failing:
            self.master.log.info(
                f"OTLP metrics pushed to {self.url} again, after {self.failing} failed"
            )
        self.failing = 0

    def failed(self, reason: str) -> None:
        """Said once until a push succeeds: a collector that is down for an hour is one
        warning, not sixty."""
        self.failing += 1
        if self.failing == 1:
            self.master.log.warning(f"OTLP push to {self.url} failed: {reason}")

    def close(self, take_snapshot: Callable[[], dict[str, Any]]) -> None:
        """The master is stopping: one last push, of the final counts (unless one still
        runs), which the master does not wait for."""
        if self.running is None:
            self.start(take_snapshot())
        self.close_in_worker()

    def close_in_worker(self) -> None:
        if self.running is not None:
            os.close(self.running.fd)
            self.running = None
