"""A memory cgroup of its own for each server the tests start, where the machine allows it.

On a platform the dyno's cgroup holds the server and nothing else. On a CI runner the test
process's cgroup holds the server's ancestors too (the CI script, make, pytest) and the page
cache of the dependency install: the server rightly counts its ancestors as part of the
dyno, so its dyno total would be the runner's, hundreds of MB that no test controls. A fresh
child cgroup per server gives every test the same dyno whatever ran before it.

Creating one needs a writable cgroup hierarchy (root in a VM or container, as on CI here).
Where that fails (a laptop's user session) the server simply runs in the test's cgroup,
which holds other processes, so the server measures its own processes (PSS) instead: also
independent of the machine.
"""

from __future__ import annotations

import atexit
import itertools
import os
import time
from pathlib import Path

from dynocorn.metrics.memory import memory_cgroup

_counter = itertools.count(1)
_created: set[Path] = set()


def create(limit: int | None = None) -> Path | None:
    """A new empty memory cgroup under ours, with ``limit`` bytes if given; None if we can't.

    With v2 the child has memory accounting only if our cgroup delegates the controller;
    without it the child is still a cgroup of the server's own, measured by PSS.
    """
    own = memory_cgroup()
    if own is None:
        return None
    parent, source = own
    limit_file = "memory.max" if source == "cgroup v2" else "memory.limit_in_bytes"
    child = parent / f"dynocorn-test-{os.getpid()}-{next(_counter)}"
    try:
        child.mkdir()
    except OSError:
        return None
    _created.add(child)
    if limit is not None:
        try:
            (child / limit_file).write_text(str(limit))
            # No swap beyond the limit, or a machine with swap would swap where the dyno
            # is meant to run out: v1's memory plus swap gets the same limit (set after the
            # memory one, which it may not be below); v2 counts swap apart.
            memsw = child / "memory.memsw.limit_in_bytes"
            swap_max = child / "memory.swap.max"
            if source == "cgroup v1" and memsw.exists():
                memsw.write_text(str(limit))
            elif source == "cgroup v2" and swap_max.exists():
                swap_max.write_text("0")
        except OSError:
            remove(child)
            return None
    return child


def can_create() -> bool:
    """Whether this machine lets the tests make memory cgroups (see ``create``)."""
    probe = create()
    if probe is None:
        return False
    remove(probe)
    return True


def command_in(cgroup: Path, command: list[str]) -> list[str]:
    """``command``, run by a shell that first moves itself into ``cgroup``, then execs.

    The move happens before the server starts, so every worker it forks is born inside;
    ``exec`` keeps the PID, so the test still holds the server's own process.
    """
    script = 'echo $$ > "$0" && exec "$@"'
    return ["/bin/sh", "-c", script, str(cgroup / "cgroup.procs"), *command]


def remove(cgroup: Path, timeout: float = 5.0) -> None:
    """Remove ``cgroup`` once its processes have gone (killed ones take a moment to leave)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            cgroup.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            return  # left for the atexit sweep
        _created.discard(cgroup)
        return


@atexit.register
def _sweep() -> None:
    for cgroup in list(_created):
        remove(cgroup, timeout=1.0)
