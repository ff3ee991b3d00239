"""The worker's soft memory limit (lib/dynocorn/workers/memory_guard.py), on this process's
real memory: the tests allocate and keep memory as a leaking app would, and the guard reads
/proc as it does in a worker."""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dynocorn.metrics.memory import ProcessMemory, RssReader, read_process_memory
from dynocorn.workers.memory_guard import MAX_STRIDE, MemoryGuard

MB = 2**20

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/smaps_rollup").exists(), reason="needs /proc's smaps_rollup"
)


def dirty(megabytes: int) -> mmap.mmap:
    """Memory really resident and private, as a leak keeps it: fresh pages of its own, so
    that RSS grows by exactly that much (bytes from the heap could reuse pages that the
    allocator kept from earlier frees, and RSS would not move)."""
    pages = mmap.mmap(-1, megabytes * MB)
    chunk = os.urandom(64 * 1024)  # written piece by piece: no heap copy as large as it
    for offset in range(0, megabytes * MB, len(chunk)):
        pages[offset : offset + len(chunk)] = chunk
    return pages


def now() -> ProcessMemory:
    memory = read_process_memory(os.getpid())
    assert memory is not None
    return memory


@pytest.fixture
def reader() -> Iterator[RssReader]:
    reader = RssReader()
    yield reader
    reader.close()


def test_a_leak_is_caught_within_a_request_of_the_limit(reader: RssReader) -> None:
    uss = now().uss
    limit = uss + 48 * MB
    guard = MemoryGuard(limit, os.getpid(), uss, reader)
    kept: list[mmap.mmap] = []
    checks, over = 0, None
    for served in range(1, 200):
        kept.append(dirty(1))  # one request of a leaking app
        if served >= guard.next_check:
            checks += 1
            over = guard.check(served)
            if over is not None:
                break
    assert over is not None
    # Past the limit by the last request's megabyte, give or take the allocator.
    assert limit < over < limit + 2 * MB, (over - limit) / MB
    assert over == pytest.approx(now().uss, abs=MB)
    assert checks < served / 2  # far from the limit, statm is not read every request


def test_without_growth_statm_is_read_every_max_stride_requests(reader: RssReader) -> None:
    uss = now().uss
    guard = MemoryGuard(uss + 512 * MB, os.getpid(), uss, reader)
    assert guard.next_check == MAX_STRIDE
    for _ in range(3):
        served = guard.next_check
        assert guard.check(served) is None
        assert guard.next_check == served + MAX_STRIDE


def test_nearing_the_limit_the_checks_come_closer(reader: RssReader) -> None:
    # Megabytes, not less: the test process's own allocations (pytest, xdist's channel)
    # move its memory by a fraction of one between two reads.
    uss = now().uss
    guard = MemoryGuard(uss + 22 * MB, os.getpid(), uss, reader)
    kept = [dirty(16)]  # 16 MB over the first 16 requests: 1 MB a request
    assert guard.check(MAX_STRIDE) is None
    stride = guard.next_check - MAX_STRIDE
    assert 1 < stride < MAX_STRIDE  # 6 MB of headroom: half of it at 1 MB a request
    kept.append(dirty(4))
    assert guard.check(guard.next_check) is None
    # 2 MB left, at over 1 MB a request: every request is checked from here.
    assert guard.next_check == MAX_STRIDE + stride + 1, len(kept)


@pytest.fixture
def shared() -> tuple[ProcessMemory, int]:
    """This process's memory, and a limit between its USS and its RSS: RSS counts the pages
    of libraries it shares with others, USS does not."""
    memory = now()
    if memory.rss - memory.uss < 2 * MB:
        pytest.skip("too few shared pages in this process")
    return memory, (memory.rss + memory.uss) // 2


def test_shared_pages_over_the_limit_do_not_make_it_read_uss_each_time(
    reader: RssReader, shared: tuple[ProcessMemory, int]
) -> None:
    # RSS alone would say "over" after every request.
    memory, limit = shared
    guard = MemoryGuard(limit, os.getpid(), memory.uss, reader)
    booted_with = guard.base_rss
    for served in range(1, 50):
        assert guard.check(served) is None
    assert guard.base_rss == booted_with  # the USS read at boot still serves


def test_an_estimate_over_the_limit_is_confirmed_by_uss_before_anything(
    reader: RssReader, shared: tuple[ProcessMemory, int]
) -> None:
    # A base far above the truth, and a limit under RSS: the estimate passes the limit, so
    # USS is read; it is under the limit and becomes the base. Nothing is reported.
    memory, limit = shared
    guard = MemoryGuard(limit, os.getpid(), memory.uss + 128 * MB, reader)
    assert guard.check(1) is None
    assert guard.base_uss == pytest.approx(memory.uss, abs=MB)
    assert guard.check(2) is None
