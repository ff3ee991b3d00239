"""What the soft memory limit's check costs a request: `python bench/memory_check_cost.py`.

A real Worker in this process, with and without `--max-worker-memory`, its request_done()
called back to back (what HttpWorker.handle() runs after each request), against the same
without a limit; then the parts: one read of statm, and one check when every request is
checked (the last requests before the limit). Prints nanoseconds per request, best of 5.
"""

from __future__ import annotations

import os
import sys
import tempfile
import timeit
from pathlib import Path

from dynocorn import config
from dynocorn.logs import Logs
from dynocorn.metrics.memory import RssReader
from dynocorn.workers.base import Worker
from dynocorn.workers.memory_guard import MemoryGuard

REQUESTS = 1_000_000


def worker(*args: str) -> Worker:
    """A booted worker of this process, as init_process() leaves it, without serving."""
    cwd = Path(tempfile.gettempdir())
    cfg = config.load([*args, "app:app"], {}, cwd)
    read_fd, write_fd = os.pipe()
    built = Worker(1, os.getppid(), [], None, cfg, Logs.from_config(cfg), write_fd)
    os.close(read_fd)
    built.pid = os.getpid()
    built.check_footprint()
    return built


def per_request(statement: str, names: dict[str, object], number: int = REQUESTS) -> float:
    """Nanoseconds per run of ``statement``, best of 5."""
    best = min(timeit.repeat(statement, globals=names, number=number, repeat=5))
    return best / number * 1e9


def main() -> None:
    without = worker()
    within = worker("--max-worker-memory", "1GB")
    assert within.memory_guard is not None
    # HttpWorker.handle()'s own lines after each request.
    after_request = "if w.nr + 1 >= w.checks_due:\n    w.request_done()\nelse:\n    w.nr += 1"
    base = per_request(after_request, {"w": without})
    guarded = per_request(after_request, {"w": within})
    reader = RssReader()
    statm = per_request("read()", {"read": reader.read}, 200_000)
    guard = MemoryGuard(2**40, os.getpid(), 0, reader)
    guard.growth = 2**30  # as close to the limit as a stride of one request
    checks = iter(range(1, 10**8))
    every = per_request("check(next(served))", {"check": guard.check, "served": checks}, 200_000)
    print(f"Python {sys.version.split()[0]}, ns per request (best of 5):")
    print(f"  after a request, no limit:            {base:7.1f}")
    print(f"  after a request, --max-worker-memory: {guarded:7.1f}  (+{guarded - base:.1f})")
    print(f"  one read of /proc/self/statm:         {statm:7.1f}")
    print(f"  one check (every request, near limit):{every:7.1f}")


if __name__ == "__main__":
    main()
