"""Memory figures for the runtime-metrics lines: per process, and for the whole dyno.

Summing each process's RSS counts every page shared after fork once per worker, so the dyno
figure comes from the cgroup's own accounting when the cgroup holds only our processes, and
otherwise from the sum of each process's PSS (shared pages split between their sharers).
Filesystem roots are injected so tests build fake ``/proc`` and cgroup trees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil

from dynocorn.platform import find_cgroup1, find_cgroup2

_KB = 1024
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_READ_SIZE = 8192

# smaps_rollup keys we keep; the file has about twenty lines, values in kB.
_ROLLUP_KEYS = frozenset((b"Rss", b"Pss", b"Private_Clean", b"Private_Dirty", b"Swap"))


@dataclass(frozen=True)
class ProcessMemory:
    """One process, in bytes. USS is what the kernel would free if the process exited."""

    pid: int
    rss: int
    pss: int
    uss: int
    swap: int


@dataclass(frozen=True)
class DynoMemory:
    """The figures of Heroku's memory line."""

    total: int  # bytes: rss + cache + swap
    rss: int  # bytes
    cache: int  # bytes
    swap: int  # bytes
    pgpgin: int  # pages
    pgpgout: int  # pages
    source: str  # "cgroup v2", "cgroup v1" or "pss"

    @property
    def held(self) -> int:
        """Bytes the processes hold, resident or swapped: rss + swap, without page cache.

        The R14 lines and the budget are judged on this, not on ``total``. Heroku's R14 "is
        calculated by total memory swap and rss; cache is not included": the kernel reclaims
        page cache by itself before a cgroup runs out, so cache never gets a dyno killed,
        and restarting a worker would not free it. A dyno whose files were read (an
        install, a big upload) can show a cache of hundreds of MB while its processes are
        small. Swap is the dyno's, from the same source as ``rss``: the cgroup's swap
        counter (v1 ``total_swap``, v2 ``memory.swap.current``), else each process's.
        """
        return self.rss + self.swap


# --- one process -------------------------------------------------------------------------


def read_process_memory(pid: int, proc: Path = Path("/proc")) -> ProcessMemory | None:
    """RSS, PSS, USS and swap of ``pid``; None when the process is gone or unreadable.

    ``smaps_rollup`` (Linux 4.14+) sums the mappings in the kernel. Its cost is the kernel's
    walk of the page tables, roughly 5-9 µs per MB resident (0.3-0.5 ms for a 50 MB worker), so
    it belongs in the metrics interval, not after each request. psutil's fallback walks the
    same pages and then parses every mapping of ``smaps`` in Python.
    """
    try:
        data = _read_bytes(proc / str(pid) / "smaps_rollup")
    except FileNotFoundError:
        # No /proc at all (macOS), or a kernel without smaps_rollup: psutil knows other ways.
        # A /proc without this pid means the process is gone.
        if proc.is_dir() and not (proc / str(pid)).is_dir():
            return None
        return _psutil_memory(pid)
    except OSError:
        # ESRCH for a process exiting as we read, EACCES for another user's process.
        return None
    return _parse_rollup(pid, data)


def _parse_rollup(pid: int, data: bytes) -> ProcessMemory | None:
    values: dict[bytes, int] = {}
    for line in data.splitlines():
        key, _, rest = line.partition(b":")
        if key in _ROLLUP_KEYS:
            values[key] = int(rest.split()[0]) * _KB
    # A zombie or a kernel thread has no memory map: the file is empty.
    if b"Rss" not in values:
        return None
    return ProcessMemory(
        pid=pid,
        rss=values[b"Rss"],
        pss=values.get(b"Pss", 0),
        uss=values.get(b"Private_Clean", 0) + values.get(b"Private_Dirty", 0),
        swap=values.get(b"Swap", 0),
    )


def _psutil_memory(pid: int) -> ProcessMemory | None:
    try:
        info = psutil.Process(pid).memory_full_info()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    # macOS has neither PSS nor swap per process. RSS stands in for PSS: the dyno total then
    # over-counts shared pages, which errs towards warning early rather than late.
    return ProcessMemory(
        pid=pid,
        rss=info.rss,
        pss=getattr(info, "pss", info.rss),
        uss=info.uss,
        swap=getattr(info, "swap", 0),
    )


class RssReader:
    """This process's resident bytes, from ``/proc/self/statm`` held open: one ``pread`` and
    a split, about 0.8 µs, where opening the file each time doubles that.

    Make it in the process it measures: ``self`` is resolved when the file is opened, so a
    reader made before a fork goes on reading the parent. Without /proc (macOS), psutil.
    """

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.fd: int | None = None
        self.process: psutil.Process | None = None
        try:
            self.fd = os.open(f"{proc}/self/statm", os.O_RDONLY)
        except FileNotFoundError:
            self.process = psutil.Process()

    def read(self) -> int:
        if self.fd is None:
            assert self.process is not None
            return int(self.process.memory_info().rss)
        # statm: "size resident shared text lib data dt", in pages.
        return int(os.pread(self.fd, 64, 0).split(b" ", 2)[1]) * _PAGE_SIZE

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _read_bytes(path: str | Path) -> bytes:
    """A short /proc file in one read: os.open/os.read skip open()'s buffered layers, which
    cost more than the read itself, and procfs hands over a file this small in one go."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, _READ_SIZE)
        if len(data) == _READ_SIZE:  # never for statm or smaps_rollup; cheap insurance
            chunks = [data]
            while chunk := os.read(fd, _READ_SIZE):
                chunks.append(chunk)
            data = b"".join(chunks)
        return data
    finally:
        os.close(fd)


def ancestors(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """The parent of ``pid``, its parent, and so on up to (not including) pid 0.

    For ``owns_cgroup``: a dyno's first process is often ``sh -c`` with us as its child.
    """
    chain: list[int] = []
    while pid > 0 and len(chain) < 64:  # a bound, in case a fake tree loops
        try:
            stat = _read_bytes(proc / str(pid) / "stat")
        except OSError:
            break
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        pid = int(stat.rpartition(b")")[2].split()[1])
        if pid > 0:
            chain.append(pid)
    return chain


# --- the whole dyno ----------------------------------------------------------------------


def memory_cgroup(root: Path = Path("/")) -> tuple[Path, str] | None:
    """The process's own memory cgroup directory, and "cgroup v2" or "cgroup v1".

    v2 comes first, as in platform.py; a hybrid host mounts an empty v2 hierarchy beside the
    v1 controllers, and its directory has no memory.stat, so the v1 one is used.
    """
    v2 = find_cgroup2(root)
    if v2 is not None:
        directory = next(v2.directories())
        if (directory / "memory.stat").is_file():
            return directory, "cgroup v2"
    v1 = find_cgroup1(root, "memory")
    if v1 is not None:
        directory = next(v1.directories())
        if (directory / "memory.stat").is_file():
            return directory, "cgroup v1"
    return None


def read_cgroup_memory(found: tuple[Path, str] | None) -> DynoMemory | None:
    """The memory of a cgroup that ``memory_cgroup`` found, from ``memory.stat``; None
    without one. The figures are the whole cgroup's: they are the dyno's only if
    ``holds_only`` says so. The sampler finds its cgroup once, since parsing mountinfo on
    every sample cost more than reading it.

    memory.current and memory.usage_in_bytes are not read: they add kernel memory (slab,
    sockets) that Heroku's memory_total, rss + cache + swap, leaves out.
    """
    if found is None:
        return None
    directory, source = found
    stat = _read_stat(directory / "memory.stat")
    if source == "cgroup v2":
        rss, cache = stat.get("anon", 0), stat.get("file", 0)
        # memory.swap.current is absent when swap accounting is off: no swap to report.
        swap = _read_int(directory / "memory.swap.current")
        # v2's memory.stat has no pgpgin/pgpgout (its pgfault counts faults, not pages in
        # and out), so the line reports 0 pages rather than a different quantity.
        pgpgin = pgpgout = 0
    else:
        # total_* include child cgroups (a container runtime may nest one under the dyno's).
        def key(name: str) -> int:
            return stat.get(f"total_{name}", stat.get(name, 0))

        rss, cache, swap = key("rss"), key("cache"), key("swap")
        pgpgin, pgpgout = key("pgpgin"), key("pgpgout")
    return DynoMemory(
        total=rss + cache + swap,
        rss=rss,
        cache=cache,
        swap=swap,
        pgpgin=pgpgin,
        pgpgout=pgpgout,
        source=source,
    )


def read_oom_kills(found: tuple[Path, str] | None) -> int | None:
    """How many processes of the cgroup ``memory_cgroup`` found the kernel's OOM killer has
    killed: ``oom_kill`` in v2's ``memory.events`` or v1's ``memory.oom_control`` (both
    "name value" lines). None without a cgroup, or on kernels before 4.13, whose v1 file
    has no such line.

    The kernel counts a kill before its victim is dead, so a worker reaped after an OOM
    kill always finds the count risen. It counts the kill in the victim's cgroup, the
    server's (workers are born in it); v2's count takes in the cgroups below it too.
    """
    if found is None:
        return None
    directory, source = found
    name = "memory.events" if source == "cgroup v2" else "memory.oom_control"
    return _read_stat(directory / name).get("oom_kill")


def holds_only(found: tuple[Path, str] | None, own_pids: set[int]) -> bool:
    """Whether every process in the cgroup ``memory_cgroup`` found is one of ``own_pids``.

    ``own_pids``: the master, its workers and its ancestors inside the cgroup (see
    ``ancestors``). On a laptop or a shared host the cgroup is a whole login session or
    service, and its totals are not ours. Unreadable or empty means no.
    """
    if found is None:
        return False
    try:
        text = (found[0] / "cgroup.procs").read_text()
    except OSError:
        return False
    pids = {int(field) for field in text.split() if field.isdigit()}
    return bool(pids) and pids <= own_pids


def pss_total(memories: list[ProcessMemory]) -> DynoMemory:
    """The fallback when the cgroup is not ours: the sum of PSS, plus swap.

    Swap is in the total too, as in the cgroup figures (total = rss + cache + swap), so an
    R14 warning means the same thing whichever source won.
    """
    pss = sum(memory.pss for memory in memories)
    swap = sum(memory.swap for memory in memories)
    return DynoMemory(
        total=pss + swap, rss=pss, cache=0, swap=swap, pgpgin=0, pgpgout=0, source="pss"
    )


def _read_stat(path: Path) -> dict[str, int]:
    stat: dict[str, int] = {}
    try:
        text = path.read_text()
    except OSError:
        return stat
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].isdigit():
            stat[fields[0]] = int(fields[1])
    return stat


def _read_int(path: Path) -> int:
    try:
        text = path.read_text().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0
