"""Parked connections of an ASGI worker whose loop gets held (docs/balance.md, the ASGI worker).

An app that computes in an async handler holds its worker's whole loop: a request arriving
meanwhile on another kept-alive connection of that worker would wait, though a sibling
idles. Moving it needs a thread, and the loop's transport reads its socket whenever the
loop turns: the two must never both read. So, in a worker whose loop has been seen held
(asgi_balance.py decides when), an idle connection just answered is *parked*: its transport
stops reading (`pause_reading()`, from the loop) and the socket goes into this lot's own
epoll, which a thread watches. When the next request arrives, under the lot's one lock:

- the thread hands the connection back: `call_soon_threadsafe(claim)`, and the loop, when
  it turns, resumes reading it (nothing was read meanwhile: the request is all there);
- unless the loop has not turned for the slow limit (its heartbeat, written by its timer,
  is that old) or does not take it back within the slow limit: then the thread sends the
  socket to the `waiting` queue, for an idle sibling, and marks it passed. The loop's claim
  then sees "passed" and aborts its transport without reading (only this process's
  descriptor closes: the queue holds its own reference).

A paused transport reads nothing, and every loop-side use of a parked connection takes it
back under the lock first (`take_back()`), skipping one already passed: so exactly one
process reads each request. The thread touches only its epoll, the lock, the spots (plain
records), the queue and `loop.call_soon_threadsafe`; never a transport or the loop's state.
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dynocorn.handoff import HandoffQueue
from dynocorn.slow_watch import OFFLOAD_AFTER, OFFLOAD_IDLE_TICK

PARKED, HANDED, PASSED, TAKEN = range(4)  # a spot's state, changed under the lot's lock
STOP_JOIN = 1.0  # seconds to wait for the thread to end as the worker stops


@dataclass(slots=True, eq=False)
class Spot:
    """One parked connection, as the thread knows it: its descriptor, nothing of Python's
    socket or transport (the loop owns those)."""

    connection: Any  # asgi.py's AsgiConnection: only carried back to the loop
    fd: int
    listener_fd: int
    state: int = PARKED
    handed_at: float = 0.0  # when the thread saw its request arrive


class ParkingLot:
    """The thread, its epoll and the lock; `on_back(connection)` and `on_passed(connection)`
    run in the loop when the loop takes a connection back, or learns it was passed."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        queue: HandoffQueue,
        on_back: Callable[[Any], None],
        on_passed: Callable[[Any], None],
    ) -> None:
        self.loop, self.queue = loop, queue
        self.on_back, self.on_passed = on_back, on_passed
        self.lock = threading.Lock()
        self.epoll = select.epoll()
        self.by_fd: dict[int, Spot] = {}  # the thread's view; changed under the lock
        self.spots: dict[Any, Spot] = {}  # the loop's view, by connection; the loop's alone
        # Written by the loop (plain floats), read by the thread.
        self.limit = OFFLOAD_AFTER  # how long the loop may keep a request waiting
        self.heartbeat = time.monotonic()  # the loop's last turn, as its timer saw it
        self.stopping = False  # set by the loop as the worker stops
        self.watching = True  # the thread runs: False (under the lock) as it ends
        self.wake_read, self.wake_write = os.pipe()
        self.epoll.register(self.wake_read, select.EPOLLIN)
        self.thread = threading.Thread(target=self.watch, name="dynocorn-parking", daemon=True)
        self.thread.start()

    # -- the loop's side

    def park(self, connection: Any, fd: int, listener_fd: int) -> bool:
        """The transport has stopped reading: the thread watches the socket now. False
        when the thread has ended (the caller resumes reading)."""
        spot = Spot(connection, fd, listener_fd)
        with self.lock:
            if not self.watching:
                return False
            self.by_fd[fd] = spot
            self.epoll.register(fd, select.EPOLLIN | select.EPOLLONESHOT)
        self.spots[connection] = spot
        return True

    def take_back(self, connection: Any) -> bool | None:
        """The loop's again: True (resume its transport), False (passed: the claim queued
        for it aborts it), None (not parked)."""
        spot = self.spots.pop(connection, None)
        if spot is None:
            return None
        with self.lock:
            if spot.state == PASSED:
                return False
            if spot.state == PARKED and self.watching:  # else no one reads the epoll
                self.epoll.unregister(spot.fd)
            if spot.state != TAKEN:
                del self.by_fd[spot.fd]
            spot.state = TAKEN
        return True

    def claim(self, spot: Spot) -> None:
        """In the loop, called by the thread: the request arrived (or the socket moved)."""
        with self.lock:
            state = spot.state
            if state == HANDED:
                del self.by_fd[spot.fd]
            spot.state = TAKEN
        if state == TAKEN:
            return  # taken back already, by the loop's own take_back()
        self.spots.pop(spot.connection, None)
        if state == PASSED:
            self.on_passed(spot.connection)
        else:
            self.on_back(spot.connection)

    def stop(self) -> None:
        """End the thread; the spots left are the loop's to take back, then close()."""
        self.stopping = True
        os.write(self.wake_write, b"x")
        self.thread.join(STOP_JOIN)

    def close(self) -> None:
        if not self.thread.is_alive():
            self.epoll.close()
            os.close(self.wake_read)
            os.close(self.wake_write)

    # -- the thread

    def watch(self) -> None:
        try:
            self.watch_until_stopped()
        finally:
            # Stopped, or failed (its error is logged as a thread's): park no more; on a
            # failure, what waits here goes back to the loop rather than wait forever.
            with self.lock:
                self.watching = False
                handed = [spot for spot in self.by_fd.values() if spot.state == PARKED]
                for spot in handed:
                    spot.state = HANDED
            if handed and not self.stopping:
                for spot in handed:
                    self.loop.call_soon_threadsafe(self.claim, spot)

    def watch_until_stopped(self) -> None:
        timeout = -1.0
        while True:
            events = self.epoll.poll(timeout)
            now = time.monotonic()
            with self.lock:
                for fd, _ in events:
                    if fd == self.wake_read:
                        return
                    self.arrived(fd, now)
                timeout = self.pass_overdue(now)

    def arrived(self, fd: int, now: float) -> None:
        """A parked connection's request has come (under the lock)."""
        spot = self.by_fd.get(fd)
        if spot is None or spot.state != PARKED:
            return
        self.epoll.unregister(fd)
        spot.state, spot.handed_at = HANDED, now
        # The heartbeat is written every OFFLOAD_IDLE_TICK: a free loop's is that old.
        if now - self.heartbeat > self.limit + OFFLOAD_IDLE_TICK:
            self.pass_on(spot)  # held already: no need to wait to learn it
        self.loop.call_soon_threadsafe(self.claim, spot)

    def pass_overdue(self, now: float) -> float:
        """Pass what the loop has not taken back within the limit; the seconds until the
        next one is due (-1: none waits)."""
        limit, timeout = self.limit, -1.0
        for spot in [spot for spot in self.by_fd.values() if spot.state == HANDED]:
            due = spot.handed_at + limit
            if now >= due and self.pass_on(spot):
                continue
            if now >= due:  # the queue is full: try again a limit later
                spot.handed_at, due = now, now + limit
            wait = due - now
            timeout = wait if timeout < 0 else min(timeout, wait)
        return timeout

    def pass_on(self, spot: Spot) -> bool:
        """To an idle sibling (under the lock; the transport has read nothing of it)."""
        if not self.queue.send_fd(spot.fd, spot.listener_fd):
            return False
        spot.state = PASSED
        del self.by_fd[spot.fd]
        return True
