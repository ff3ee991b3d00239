"""systemd's readiness protocol (`Type=notify`): the master tells the service manager when it
serves, reloads and stops, over the datagram socket named by NOTIFY_SOCKET.

The master's loop looks at its own state on each pass and says what changed (ServiceState):
READY=1 once every worker of the pool it started with has loaded the app (a unit whose app
cannot load never becomes active, and `systemctl start` says so); RELOADING=1 when a HUP
begins replacing the workers, and READY=1 again when the last old one is gone; STOPPING=1
when it begins to stop. With no NOTIFY_SOCKET (not under systemd) nothing is sent.

NOTIFY_SOCKET is taken out of the environment, as sd_notify(3) offers: the workers and any
program the app runs must not speak for the service.
"""

from __future__ import annotations

import socket
import time
from collections.abc import MutableMapping


class Notifier:
    def __init__(self, address: str | None) -> None:
        self.address = address
        if address and address.startswith("@"):  # an abstract socket: a leading NUL byte
            self.address = "\0" + address[1:]

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str]) -> Notifier:
        return cls(environ.pop("NOTIFY_SOCKET", None) or None)

    def send(self, *fields: str) -> bool:
        """One datagram of `KEY=value` lines; False when there is nowhere to send it or it
        could not be sent (systemd gone: nothing else to do about it)."""
        if not self.address:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto("\n".join(fields).encode(), self.address)
        except OSError:
            return False
        return True


def monotonic_usec() -> str:
    """What RELOADING=1 carries for systemd 253's Type=notify-reload (older ones ignore it)."""
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


class ServiceState:
    """What was last told to the service manager, so that each change is said once."""

    def __init__(self, notifier: Notifier, pid: int) -> None:
        self.notifier = notifier
        self.pid = pid
        self.ready = False
        self.reloading = False
        self.stopping = False

    def look(self, *, serving: bool, replacing: bool, stopping: bool, workers: int) -> None:
        """The master as it is now: `serving`, every worker of the pool is ready;
        `replacing`, a HUP's replacement runs; `stopping`, the server is stopping."""
        if stopping:
            if not self.stopping:
                self.stopping = True
                self.notifier.send("STOPPING=1", "STATUS=Stopping")
            return
        if replacing and not self.reloading:
            self.reloading = True
            self.notifier.send("RELOADING=1", monotonic_usec(), "STATUS=Reloading")
        elif serving and (not self.ready or (self.reloading and not replacing)):
            self.ready, self.reloading = True, False
            self.notifier.send("READY=1", f"MAINPID={self.pid}", f"STATUS={workers} workers")
