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

from dynocorn.exit_cause import ExitCause
from dynocorn.handoff import HandoffQueue
from dynocorn.http import HTTPError, InternalServerError, Request, ServiceUnavailable
from dynocorn.slow_watch import OFFLOAD_AFTER, OFFLOAD_IDLE_TICK, OFFLOAD_TICK
from dynocorn.workers.connection import Connection
from dynocorn.workers.durations import LONG_REQUEST, SAMPLE_EVERY_MASK
from dynocorn.workers.policy import passable
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
    answered: bool = False  # by the loop, because no thread would ever run it


class ThreadWorker(SyncWorker):
    name = "gthread"

    def setup(self) -> None:
        self.multithread = self.cfg.threads > 1
        super().setup()
        self.pool = ThreadPoolExecutor(self.cfg.threads, thread_name_prefix="dynocorn-request")
        self.in_flight: dict[int, InFlight] = {}
        self.returned: deque[InFlight] = deque()  # done requests; the wake-up pipe says so
        # Connections whose next request arrived while every thread was busy, unread, in
        # arrival order: the first thread to free takes the oldest, unless a sibling took it
        # from the hand-off queue first (after OFFLOAD_TICK of waiting).
        self.parked: deque[Connection] = deque()
        self.next_heartbeat = 0.0
        self.threads = int(self.cfg.threads)
        self.patience = OFFLOAD_AFTER  # how long a parked connection waits before it moves
        self.parking = False  # the median request takes LONG_REQUEST or more (see tick())

    def threads_free(self) -> bool:
        return len(self.in_flight) < self.threads

    def start_offloading(self) -> None:
        """No thread of its own: the loop is never busy, it parks and passes on itself."""

    def offloads(self) -> bool:
        """With no sibling to take them, parked connections wait here for a thread."""
        return self.handoff is not None and self.has_siblings()

    # -- requests that arrive while every thread is busy

    def on_readable(self, connection: Connection) -> None:
        if self.threads_free() or not self.should_park(connection):
            super().on_readable(connection)
            return
        self.selector.discard(connection.fd)
        connection.parked_at = time.monotonic()
        self.parked.append(connection)
        if self.offloads():
            self.next_tick = min(self.next_tick, connection.parked_at + self.patience)

    def should_park(self, connection: Connection) -> bool:
        """Every thread is busy: park the connection (its request unread, so that it can
        move) where requests are long (the median takes LONG_REQUEST or more), or where a
        request has held its thread LONG_REQUEST already. Otherwise read it into the pool's
        queue: a thread takes it from there by itself, where a parked one costs the loop a
        wake-up per request (hello-world fell from 33-41k to 19-25k req/s)."""
        if not self.alive or not passable(connection):
            return False
        if self.parking:
            return True
        now = time.monotonic()
        return any(r.thread and now - r.started >= LONG_REQUEST for r in self.in_flight.values())

    def unpark(self) -> None:
        """A thread is free: serve the connection that has waited longest. Those in the
        hand-off queue have (they waited `patience` before they were passed on), and
        while this worker was full it did not watch the queue: look there first."""
        while self.parked and self.threads_free():
            if self.handoff is not None and self.alive and self.take_handed_off(self.handoff):
                continue
            connection = self.next_parked()
            if connection is None:
                return
            super().on_readable(connection)
            if self.connections.get(connection.fd) is connection and self.needs_watch(connection):
                self.selector.register(connection.sock, connection)

    def offload_parked(self, now: float) -> None:
        """Pass on what has waited for a thread as long as a slow request runs (slow_after():
        waiting behind requests of the usual length is not worth a move); a sibling with a
        free thread takes it."""
        if not self.offloads():
            return
        self.patience = max(self.durations.slow_after(), OFFLOAD_TICK)
        while self.parked and self.alive and now - self.parked[0].parked_at >= self.patience:
            if not self.pass_on_parked():
                return  # the queue is full: they wait here for a thread

    def pass_on_parked(self) -> bool:
        """The first parked connection to the hand-off queue; False (it stays first in the
        line) when the queue is full."""
        connection = self.parked[0]
        if self.connections.get(connection.fd) is connection and not self.pass_on(connection):
            return False
        self.parked.popleft()
        connection.parked_at = 0.0
        return True

    def next_parked(self) -> Connection | None:
        """The open connection that has waited longest for a thread, out of the line."""
        while self.parked:
            connection = self.parked.popleft()
            connection.parked_at = 0.0
            if self.connections.get(connection.fd) is connection:
                return connection
        return None

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
            if not self.nr & SAMPLE_EVERY_MASK:  # how long requests take, now and then
                self.durations.add(time.monotonic() - record.started)
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
        self.unpark()
        if self.threads_free() and self.accepting:
            self.watch_handoff(True)

    def needs_watch(self, connection: Connection) -> bool:
        # A thread's return registers it; a parked one is registered when it is unparked.
        return connection.fd not in self.in_flight and connection.parked_at == 0.0

    def in_use(self, connection: Connection) -> bool:
        return connection.queued or connection.parked_at > 0.0 or connection.fd in self.in_flight

    def blocks_exit(self, connection: Connection) -> bool:
        if connection.parked_at > 0.0:
            return True  # its request is waiting for a thread
        record = self.in_flight.get(connection.fd)
        return record is not None and not record.timed_out and not record.answered

    def finish_pass(self) -> bool:
        if not self.terminating and self.handoff is not None:
            self.hand_over_parked()
        if self.every_thread_stuck():
            self.answer_stranded()
        return super().finish_pass()

    def hand_over_parked(self) -> None:
        """Retiring (max-requests, lifetime, memory, a timeout): the requests still waiting
        for a thread go, unread, through the hand-off queue to a worker that stays, rather
        than wait here for threads that may be stuck. (On TERM every worker stops: they
        are served here.)"""
        while self.parked and self.pass_on_parked():
            pass

    def answer_stranded(self) -> None:
        """Every thread is stuck past the timeout and this worker is going: what waits for
        a thread would wait for ever. Answer it 503 now."""
        while (connection := self.next_parked()) is not None:
            self.refuse(connection, ServiceUnavailable("every thread is stuck"))
        for record in list(self.in_flight.values()):
            if not record.thread and not record.answered:
                record.answered = True
                self.answer_for(record, ServiceUnavailable("every thread is stuck"))

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
        """The heartbeat's work once a second; between, waiting connections and the fair
        share (the sync worker's offload thread does those; this loop is never busy)."""
        self.offload_parked(now)
        if now >= self.next_heartbeat:
            super().tick(now)
            self.next_heartbeat = self.next_tick
            self.time_out_requests(now)
        self.next_tick = self.next_heartbeat
        if not (self.offloads() and self.alive):
            return
        if self.board is not None and self.connections:
            self.weigh_share()
            self.next_tick = min(self.next_tick, now + OFFLOAD_IDLE_TICK)
        elif self.board is not None:
            self.under_share = True  # an empty worker is under any share
        # Parking costs the loop a wake-up per request (a thread cannot take the next one
        # by itself): worth it only when requests take LONG_REQUEST or more.
        self.parking = self.durations.long
        if self.parked:
            due = self.parked[0].parked_at + self.patience
            self.next_tick = min(self.next_tick, max(due, now + OFFLOAD_TICK))

    def take_handed_off_batch(self, queue: HandoffQueue, most: int) -> None:
        """Only what free threads can serve now; with none free, stop watching the queue
        (a free sibling takes it) until a thread returns. Spare connections are idle: they
        need no thread."""
        if queue is not self.handoff:
            super().take_handed_off_batch(queue, most)
            return
        while self.threads_free() and self.accepting and self.take_handed_off(queue):
            pass
        if not self.threads_free():
            self.watch_handoff(False)
            # The kernel woke this worker (EPOLLEXCLUSIVE), not the one with a free thread:
            # put the connection back, which wakes another waiting worker.
            received = queue.receive()
            if received is not None:
                sock, peer, listener_fd = received
                if not queue.send(sock, listener_fd):
                    self.adopt(sock, peer, listener_fd)  # the queue is full: serve it here
                    return
                sock.close()

    def time_out_requests(self, now: float) -> None:
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
        self.retire(ExitCause.TIMEOUT, "a request timed out; Python cannot stop its thread")

    # -- stopping

    def finish_and_close(self) -> None:
        super().finish_and_close()
        # Threads stuck in a timed-out request are not waited for: the process exits.
        self.pool.shutdown(wait=False, cancel_futures=True)
