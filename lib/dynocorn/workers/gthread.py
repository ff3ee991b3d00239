"""The threaded worker (`-k gthread`, or `--threads N` with the sync class).

How this works: the sync worker's loop (accepting, reading, parsing, keep-alive and head
timeouts) runs in the main thread; `dispatch()` hands each ready request to a pool of
`threads` threads instead of running it inline. While a thread has a connection, the
connection is out of the selector; when the thread is done it puts the connection on a
queue and writes a byte to a pipe the loop watches, and the loop takes it back. Idle
connections cost no thread.

The loop keeps beating the heartbeat whatever the threads do, so the master's timeout no
longer sees a hung request. The loop does: a request running longer than `timeout` is
reported with its thread's stack (`WORKER TIMEOUT`), its client gets a 500 if nothing was
sent yet, and the worker retires once its other requests are done, because Python cannot
kill a thread. gunicorn's gthread worker has no request timeout at all.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from dynocorn.http import HTTPError, InternalServerError, Request, ServiceUnavailable
from dynocorn.workers.connection import Connection
from dynocorn.workers.sync import SyncWorker


@dataclass(eq=False)
class InFlight:
    connection: Connection
    request: Request
    # When a pool thread began running it (monotonic). The time it waited for a free
    # thread is not the request's: `timeout` counts from here.
    started: float = 0.0
    thread: int = 0  # the running thread's ident, once it has started
    keep: bool = False
    timed_out: bool = False


class ThreadWorker(SyncWorker):
    name = "gthread"

    def setup(self) -> None:
        self.multithread = self.cfg.threads > 1
        super().setup()
        self.pool = ThreadPoolExecutor(self.cfg.threads, thread_name_prefix="dynocorn-request")
        self.in_flight: dict[int, InFlight] = {}
        self.returned: deque[InFlight] = deque()  # done requests; the wake-up pipe says so

    # -- handing requests to threads and taking connections back

    def dispatch(self, connection: Connection, request: Request) -> None:
        self.selector.discard(connection.fd)
        if connection.lock is None:
            connection.lock = threading.Lock()
        connection.sent = 0
        record = InFlight(connection, request)
        self.in_flight[connection.fd] = record
        self.pool.submit(self.run_request, record)

    def run_request(self, record: InFlight) -> None:
        """In a pool thread."""
        record.started = time.monotonic()
        record.thread = threading.get_ident()  # after `started`: tick() reads it as "running"
        try:
            record.keep = self.handle(record.connection, record.request)
        except BaseException:
            self.log.exception("Unexpected error in a request thread")
            record.keep = False
        finally:
            self.returned.append(record)
            try:
                os.write(self.wake_write, b"x")
            except (BlockingIOError, OSError):
                pass  # the pipe is full: the loop is already due to wake up

    def on_wakeup(self) -> None:
        super().on_wakeup()
        while self.returned:
            record = self.returned.popleft()
            connection = record.connection
            self.in_flight.pop(connection.fd, None)
            if connection.fd not in self.connections:
                continue
            if record.timed_out:
                self.close(connection)
                continue
            self.selector.register(connection.sock, connection)
            self.after_request(connection, record.keep)

    def needs_watch(self, connection: Connection) -> bool:
        return connection.fd not in self.in_flight  # the thread's return registers it

    def in_use(self, connection: Connection) -> bool:
        return connection.queued or connection.fd in self.in_flight

    def blocks_exit(self, connection: Connection) -> bool:
        record = self.in_flight.get(connection.fd)
        if record is None or record.timed_out:
            return False
        if not record.thread and self.every_thread_stuck():
            # It would wait for a thread that never frees: answer it now, do not wait.
            self.answer_for(record, ServiceUnavailable("every thread is stuck"))
            return False
        return True

    def every_thread_stuck(self) -> bool:
        stuck = sum(1 for record in self.in_flight.values() if record.timed_out)
        return stuck >= int(self.cfg.threads)

    def answer_for(self, record: InFlight, error: HTTPError) -> None:
        """Answer in place of the request's thread, if nothing was sent yet; the thread's
        own sends fail from now on."""
        connection = record.connection
        assert connection.lock is not None
        with connection.lock:
            if connection.aborted:
                return
            connection.aborted = True
            if connection.sent == 0:
                try:
                    connection.sock.send(error.render())
                except OSError:
                    pass

    # -- request timeouts

    def tick(self, now: float) -> None:
        super().tick(now)
        timeout = self.cfg.timeout
        if not timeout:
            return
        for record in list(self.in_flight.values()):
            if not record.timed_out and record.thread and now - record.started > timeout:
                self.time_out(record, now)

    def time_out(self, record: InFlight, now: float) -> None:
        record.timed_out = True
        request = record.request
        frame = sys._current_frames().get(record.thread)
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "(no stack)"
        self.log.critical(
            f"WORKER TIMEOUT (pid:{self.pid}) request {request.method} {request.raw_target} "
            f"from {record.connection.peer} running {now - record.started:.1f}s; "
            f"its thread's stack:\n{stack.rstrip()}"
        )
        connection = record.connection
        self.answer_for(record, InternalServerError("request timeout"))
        try:
            # Not close(): the thread may still be inside recv() on this file descriptor.
            connection.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        # The moment the other classes run it on the master's SIGABRT: a timeout.
        try:
            self.cfg.worker_abort(self)
        except Exception:
            self.log.exception("worker_abort hook failed")
        self.retire("a request timed out; Python cannot stop its thread")

    # -- stopping

    def finish_and_close(self) -> None:
        super().finish_and_close()
        # Threads stuck in a timed-out request are not waited for: the process exits.
        self.pool.shutdown(wait=False, cancel_futures=True)
