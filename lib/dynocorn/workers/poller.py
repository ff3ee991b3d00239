"""Readiness for the worker loops: epoll used directly, each file with its own target.

It exists for EPOLLEXCLUSIVE (register(shared=True)), which selectors cannot ask for: the
kernel then wakes one waiting worker per new connection, not all of them (the balance
across workers, docs/balance.md). Returning each file's target from one dict also skips
the key object and tuple selectors builds per ready file, but that gain is within the noise
of the hello benchmark (under 2 us). Where epoll is missing (not Linux), selectors does
the job, without exclusive wake-ups.
"""

from __future__ import annotations

import select
import selectors
from typing import Any, Protocol


class HasFileno(Protocol):
    def fileno(self) -> int: ...


_UNWATCHED = object()
_EXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 0)


def _fd(file: HasFileno | int) -> int:
    return file if isinstance(file, int) else file.fileno()


class Poller:
    def __init__(self) -> None:
        self._targets: dict[int, Any] = {}
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._selector = None if self._epoll is not None else selectors.DefaultSelector()

    def register(self, file: HasFileno | int, target: Any, *, shared: bool = False) -> None:
        """Watch `file` for reading; poll() then returns `target` when it is readable.

        `shared`: a file every worker watches (a listening socket, the hand-off queue).
        With EPOLLEXCLUSIVE the kernel wakes one worker that is waiting in poll() for each
        new item, and skips workers that are busy, instead of waking them all."""
        fd = _fd(file)
        if self._epoll is not None:
            self._epoll.register(fd, select.EPOLLIN | (_EXCLUSIVE if shared else 0))
        else:
            assert self._selector is not None
            self._selector.register(fd, selectors.EVENT_READ)
        self._targets[fd] = target

    def unregister(self, file: HasFileno | int) -> None:
        """Stop watching; KeyError if it was not watched."""
        fd = _fd(file)
        del self._targets[fd]
        if self._epoll is not None:
            self._epoll.unregister(fd)
        else:
            assert self._selector is not None
            self._selector.unregister(fd)

    def discard(self, file: HasFileno | int) -> None:
        """Stop watching, if watched: a connection answered at once never was."""
        fd = _fd(file)
        if self._targets.pop(fd, _UNWATCHED) is _UNWATCHED:
            return
        if self._epoll is not None:
            self._epoll.unregister(fd)
        else:
            assert self._selector is not None
            self._selector.unregister(fd)

    def poll(self, timeout: float) -> list[Any]:
        """The targets of the files readable now, waiting at most `timeout` seconds."""
        targets = self._targets
        if self._epoll is not None:
            ready = self._epoll.poll(timeout)
            return [targets[fd] for fd, _ in ready if fd in targets]
        assert self._selector is not None
        return [targets[key.fd] for key, _ in self._selector.select(timeout) if key.fd in targets]

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
        elif self._selector is not None:
            self._selector.close()
