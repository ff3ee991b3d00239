"""The signals the master handles, and how they reach its loop.

A handler only queues the signal; `signal.set_wakeup_fd` writes a byte to a pipe the loop
watches, so a signal wakes the loop at once, and the loop then handles the queued signals
in order (`Arbiter.handle_<name>`), outside any handler, where anything may be done.
"""

from __future__ import annotations

import os
import selectors
import signal
from collections import deque
from typing import Any

from dynocorn import process

SIGNAL_NAMES: dict[int, str] = {
    signal.SIGHUP: "hup",
    signal.SIGQUIT: "quit",
    signal.SIGINT: "int",
    signal.SIGTERM: "term",
    signal.SIGTTIN: "ttin",
    signal.SIGTTOU: "ttou",
    signal.SIGUSR1: "usr1",
    signal.SIGUSR2: "usr2",
    signal.SIGWINCH: "winch",
    signal.SIGCHLD: "chld",
}


class SignalQueue:
    def __init__(self) -> None:
        self.queued: deque[int] = deque()
        self.wakeup_read = self.wakeup_write = -1

    def install(self, selector: selectors.BaseSelector) -> None:
        """Handle the master's signals from now on; the pipe's reading end joins `selector`
        with None as its data (the loop's worker pipes carry their handle)."""
        self.wakeup_read, self.wakeup_write = os.pipe()
        os.set_blocking(self.wakeup_read, False)
        os.set_blocking(self.wakeup_write, False)
        signal.set_wakeup_fd(self.wakeup_write, warn_on_full_buffer=False)
        selector.register(self.wakeup_read, selectors.EVENT_READ, None)
        for sig in SIGNAL_NAMES:
            signal.signal(sig, self.queue)

    def queue(self, signum: int, frame: Any) -> None:
        self.queued.append(signum)

    def __bool__(self) -> bool:
        return bool(self.queued)

    def next_name(self) -> str:
        """The oldest queued signal's name ("hup"); call only while the queue is not empty."""
        return SIGNAL_NAMES[self.queued.popleft()]

    def wake(self) -> None:
        """Wake the loop from another thread (the reloader's), as a signal would."""
        try:
            os.write(self.wakeup_write, b"w")
        except OSError:
            pass  # full: the loop wakes anyway

    def woken(self) -> None:
        """The pipe was readable: empty it (the signals are in the queue already)."""
        process.drain_pipe(self.wakeup_read)

    def uninstall(self) -> None:
        """In a forked worker: the default handlers back, the pipe closed."""
        signal.set_wakeup_fd(-1)
        for sig in SIGNAL_NAMES:
            signal.signal(sig, signal.SIG_DFL)
        for fd in (self.wakeup_read, self.wakeup_write):
            if fd >= 0:
                os.close(fd)
