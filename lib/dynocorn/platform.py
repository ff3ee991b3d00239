"""What the platform tells a web process: port, process name, memory and CPU limits.

Everything is read from an ``environ`` mapping and a filesystem ``root`` passed in, so tests
build fake ``/proc`` and ``/sys/fs/cgroup`` trees and nothing here touches the real machine
unless asked to. The lookup order and the worker-count rule follow PLATFORM.md.
"""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from dynocorn.units import format_mb, parse_size

# cgroup v1 reports "no limit" as a page-rounded LONG_MAX; anything this large is no limit.
_V1_UNLIMITED = 1024**4

# Variables that state the memory limit, in the order they are trusted, with their unit when
# the value is a bare number.
# Variables that state the CPUs a process may use (cgroups and affinity are read as files).
CPU_VARIABLES = ("RENDER_CPU_COUNT",)
MEMORY_VARIABLES = (
    ("DYNO_RAM", "MB"),  # Heroku's Python buildpack
    ("MEMORY_AVAILABLE", "MB"),
    ("FLY_VM_MEMORY_MB", "MB"),  # Fly.io
    ("MEMORY_LIMIT", "MB"),  # Cloud Foundry, always with a unit ("2345M")
    ("CONTAINER_MEMORY", "B"),  # Scalingo
)


class PlatformError(ValueError):
    """A platform variable with a value we cannot use."""

    def __init__(self, variable: str, value: str, reason: str) -> None:
        super().__init__(f"{variable}={value!r}: {reason}")
        self.variable = variable
        self.value = value
        self.reason = reason


@dataclass(frozen=True)
class Capacity:
    amount: int  # bytes for memory, whole CPUs for cpu
    source: str  # where it came from, e.g. "cgroup v2 memory.max", "DYNO_RAM"
    # Set on this process (a cgroup, a platform variable); False for what the machine has
    # (physical memory, the CPUs it may run on): a fact, not a limit to size the pool by.
    imposed: bool


@dataclass(frozen=True)
class Platform:
    port: int | None
    process_name: str | None
    process_name_source: str | None
    on_heroku: bool
    memory: Capacity | None  # None only when nothing at all is readable
    cpus: Capacity
    ipv6: bool
    web_concurrency: int | Literal["auto"] | None
    web_concurrency_set_by: str | None
    # WEB_CONCURRENCY as written, so explanations can quote "011" rather than 11.
    web_concurrency_raw: str | None = None


@dataclass(frozen=True)
class WorkerCount:
    workers: int
    explanation: str  # one line, e.g. "WEB_CONCURRENCY=auto: 512 MB / 256 MB per worker, ..."
    from_platform: bool  # False only for the fallback to gunicorn's default of 1
    auto: bool = False  # WEB_CONCURRENCY=auto (in any case) asked for it


def detect(
    environ: Mapping[str, str],
    root: Path = Path("/"),
    *,
    affinity: Callable[[], int] | None = None,
    ipv6: bool | None = None,
) -> Platform:
    """Read everything the platform says. Raises PlatformError for an unusable variable."""
    port_text = environ.get("PORT", "").strip()
    name_source = next(
        (name for name in ("DYNO", "HONCHO_PROCESS_NAME", "CONTAINER") if environ.get(name)),
        None,
    )
    concurrency_text = environ.get("WEB_CONCURRENCY", "").strip()
    return Platform(
        port=parse_port(port_text) if port_text else None,
        process_name=environ[name_source] if name_source else None,
        process_name_source=name_source,
        on_heroku=bool(environ.get("DYNO")),
        memory=detect_memory(environ, root),
        cpus=detect_cpus(environ, root, affinity),
        ipv6=ipv6_available() if ipv6 is None else ipv6,
        web_concurrency=parse_web_concurrency(concurrency_text),
        web_concurrency_set_by=environ.get("WEB_CONCURRENCY_SET_BY", "").strip() or None,
        web_concurrency_raw=concurrency_text or None,
    )


def parse_port(value: str) -> int:
    text = value.strip()
    if not (text.isascii() and text.isdigit()):
        raise PlatformError("PORT", value, "not a port number")
    port = int(text)
    # Port 0 would bind a random port the router cannot know: never a real platform port.
    if not 1 <= port <= 65535:
        raise PlatformError("PORT", value, "must be between 1 and 65535")
    return port


def parse_web_concurrency(value: str) -> int | Literal["auto"] | None:
    text = value.strip()
    if not text:
        return None
    if text.lower() == "auto":
        return "auto"
    digits = text.removeprefix("-")
    if text.startswith("-") and digits.isascii() and digits.isdigit():
        raise PlatformError("WEB_CONCURRENCY", value, "must be at least 1")
    if not (text.isascii() and text.isdigit()):
        raise PlatformError("WEB_CONCURRENCY", value, "not a whole number of workers or 'auto'")
    workers = int(text)  # int() reads old buildpacks' zero-padded "011" as 11
    if workers < 1:
        raise PlatformError("WEB_CONCURRENCY", value, "must be at least 1")
    return workers


def ipv6_available() -> bool:
    """Whether ``[::]`` can be bound: false on hosts and containers with IPv6 disabled."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::", 0))
    except OSError:
        return False
    return True


# --- memory ------------------------------------------------------------------------------


def detect_memory(environ: Mapping[str, str], root: Path) -> Capacity | None:
    # Every variable is parsed, used or not, so a typo fails on a laptop as on the platform.
    from_environ = [
        limit for name, unit in MEMORY_VARIABLES if (limit := _env_size(environ, name, unit))
    ]
    return (
        _cgroup2_memory(root)
        or _cgroup1_memory(root)
        or next(iter(from_environ), None)
        or _meminfo(root)
    )


def _env_size(environ: Mapping[str, str], name: str, unit: str) -> Capacity | None:
    value = environ.get(name, "")
    if not value.strip():
        return None
    try:
        return Capacity(parse_size(value, unit), name, imposed=True)
    except ValueError as error:
        raise PlatformError(name, value, str(error)) from None


def _cgroup2_memory(root: Path) -> Capacity | None:
    hierarchy = find_cgroup2(root)
    if hierarchy is None:
        return None
    candidates = [
        Capacity(amount, f"cgroup v2 {name}", imposed=True)
        for directory in hierarchy.directories()
        for name in ("memory.max", "memory.high")
        if (amount := _read_limit(directory / name)) is not None
    ]
    # min() keeps the first of equals: memory.max over memory.high, the leaf over a parent.
    return min(candidates, key=lambda limit: limit.amount, default=None)


def _cgroup1_memory(root: Path) -> Capacity | None:
    hierarchy = find_cgroup1(root, "memory")
    if hierarchy is None:
        return None
    amounts = [
        amount
        for directory in hierarchy.directories()
        if (amount := _read_limit(directory / "memory.limit_in_bytes")) is not None
        and amount < _V1_UNLIMITED
    ]
    if not amounts:
        return None
    return Capacity(min(amounts), "cgroup v1 memory.limit_in_bytes", imposed=True)


def _meminfo(root: Path) -> Capacity | None:
    match = re.search(r"^MemTotal:\s+(\d+) kB", _read(root / "proc/meminfo") or "", re.MULTILINE)
    if match is None:
        return None
    return Capacity(int(match[1]) * 1024, "/proc/meminfo", imposed=False)


# --- CPU ---------------------------------------------------------------------------------


def detect_cpus(
    environ: Mapping[str, str], root: Path, affinity: Callable[[], int] | None = None
) -> Capacity:
    count = max(1, (affinity or _affinity_count)())
    # A quota equal to the CPU count still counts as a limit: the platform did set one.
    caps = [
        limit
        for limit in (_cgroup2_cpus(root), _cgroup1_cpus(root), _render_cpus(environ))
        if limit is not None and limit.amount <= count
    ]
    if not caps:
        return Capacity(count, "sched_getaffinity", imposed=False)
    return min(caps, key=lambda limit: limit.amount)


def _affinity_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no sched_getaffinity
        return os.cpu_count() or 1


def _cgroup2_cpus(root: Path) -> Capacity | None:
    hierarchy = find_cgroup2(root)
    if hierarchy is None:
        return None
    counts = []
    for directory in hierarchy.directories():
        fields = (_read(directory / "cpu.max") or "").split()
        if len(fields) == 2 and fields[0] != "max":
            counts.append(_quota_cpus(fields[0], fields[1]))
    return _smallest(counts, "cgroup v2 cpu.max")


def _cgroup1_cpus(root: Path) -> Capacity | None:
    hierarchy = find_cgroup1(root, "cpu")
    if hierarchy is None:
        return None
    counts = [
        _quota_cpus(_read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us"))
        for directory in hierarchy.directories()
    ]
    return _smallest(counts, "cgroup v1 cpu.cfs_quota_us")


def _quota_cpus(quota: str | None, period: str | None) -> int | None:
    """CPUs a CFS quota allows, rounded up: a quota of 1.5 CPUs still keeps 2 busy. -1 = none."""
    try:
        quota_us, period_us = int(quota or ""), int(period or "")
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return max(1, math.ceil(quota_us / period_us))


def _smallest(counts: list[int | None], source: str) -> Capacity | None:
    found = [count for count in counts if count is not None]
    return Capacity(min(found), source, imposed=True) if found else None


def _render_cpus(environ: Mapping[str, str]) -> Capacity | None:
    value = environ.get("RENDER_CPU_COUNT", "")
    text = value.strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise PlatformError("RENDER_CPU_COUNT", value, "not a whole number of CPUs")
    return Capacity(int(text), "RENDER_CPU_COUNT", imposed=True)


# --- finding the process's cgroup ---------------------------------------------------------


@dataclass(frozen=True)
class CgroupHierarchy:
    mount: Path  # where the hierarchy is mounted, under root
    mount_root: str  # the cgroup shown at the top of that mount ("/" unless in a container)
    path: str  # this process's cgroup, from /proc/self/cgroup

    def directories(self) -> Iterator[Path]:
        """The process's cgroup directory, then each parent up to the mount.

        A parent's limit binds the children too (systemd slices, Kubernetes pods), and a
        child often says "max". When the directory is not visible, as inside a container
        without its own cgroup namespace, the mount itself is the process's cgroup.
        """
        path = PurePosixPath(self.path)
        mount_root = PurePosixPath(self.mount_root)
        if path.is_relative_to(mount_root):
            path = path.relative_to(mount_root)
        parts = path.relative_to("/").parts if path.is_absolute() else path.parts
        if ".." in parts or not self.mount.joinpath(*parts).is_dir():
            parts = ()
        for depth in range(len(parts), -1, -1):
            yield self.mount.joinpath(*parts[:depth])


@dataclass(frozen=True)
class _Mount:
    root: str
    point: str
    fstype: str
    options: frozenset[str]


def find_cgroup2(root: Path) -> CgroupHierarchy | None:
    path = _cgroup_paths(root).get("", "/")
    mounts = _mounts(root)
    if mounts is None:
        # No mountinfo: the conventional place, if it is a cgroup2 mount.
        mount = root / "sys/fs/cgroup"
        return (
            CgroupHierarchy(mount, "/", path) if (mount / "cgroup.controllers").exists() else None
        )
    for mount_entry in mounts:
        if mount_entry.fstype == "cgroup2":
            return CgroupHierarchy(_under(root, mount_entry.point), mount_entry.root, path)
    return None


def find_cgroup1(root: Path, controller: str) -> CgroupHierarchy | None:
    path = _cgroup_paths(root).get(controller, "/")
    mounts = _mounts(root)
    if mounts is None:
        mount = root / "sys/fs/cgroup" / controller  # often a symlink to "cpu,cpuacct"
        return CgroupHierarchy(mount, "/", path) if mount.is_dir() else None
    for mount_entry in mounts:
        # Compare whole options: "cpu" must not match a "cpuset" or "cpuacct" mount.
        if mount_entry.fstype == "cgroup" and controller in mount_entry.options:
            return CgroupHierarchy(_under(root, mount_entry.point), mount_entry.root, path)
    return None


def _cgroup_paths(root: Path) -> dict[str, str]:
    """/proc/self/cgroup as {controller: path}; the cgroup v2 line is under "".

    Lines are "12:memory:/user.slice" (v1, one or several controllers) or "0::/user.slice".
    """
    paths: dict[str, str] = {}
    for line in (_read(root / "proc/self/cgroup") or "").splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        _, controllers, path = fields
        if not controllers and fields[0] == "0":
            paths[""] = path
        for controller in filter(None, controllers.split(",")):
            paths[controller] = path
    return paths


def _mounts(root: Path) -> list[_Mount] | None:
    """/proc/self/mountinfo, or None when it cannot be read.

    A line: "35 25 0:30 / /sys/fs/cgroup/memory rw,relatime shared:14 - cgroup cgroup rw,memory";
    the optional fields before " - " vary in number, so split there.
    """
    text = _read(root / "proc/self/mountinfo")
    if text is None:
        return None
    mounts = []
    for line in text.splitlines():
        before, separator, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if separator and len(fields) >= 5 and len(tail) >= 3:
            mounts.append(
                _Mount(
                    root=_unescape(fields[3]),
                    point=_unescape(fields[4]),
                    fstype=tail[0],
                    options=frozenset(tail[2].split(",")),
                )
            )
    return mounts


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in paths as octal: "\040".
    return re.sub(r"\\([0-7]{3})", lambda match: chr(int(match[1], 8)), field)


def _under(root: Path, absolute: str) -> Path:
    return root.joinpath(*PurePosixPath(absolute).parts[1:])


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _read_limit(path: Path) -> int | None:
    """A cgroup limit file: bytes, or None for "max", a missing file or a nonsense value."""
    text = (_read(path) or "").strip()
    if not text.isdigit():
        return None
    return int(text) or None


# --- workers -----------------------------------------------------------------------------


def worker_count(
    platform: Platform, worker_memory_mb: int, memory_quota: int | None = None
) -> WorkerCount:
    """How many workers to run, by the Heroku Python buildpack's rule, and why.

    ``memory_quota`` (bytes) is the user's own figure; it replaces the detected memory.
    """
    if worker_memory_mb < 1:
        raise ValueError("worker_memory_mb must be at least 1")
    concurrency = platform.web_concurrency
    written = f"WEB_CONCURRENCY={platform.web_concurrency_raw or concurrency}"
    if isinstance(concurrency, int) and platform.web_concurrency_set_by is None:
        return WorkerCount(concurrency, written, from_platform=True)
    if concurrency == "auto":
        workers, reason = _compute(platform, worker_memory_mb, memory_quota)
        return WorkerCount(workers, f"{written}: {reason}", from_platform=True, auto=True)
    if concurrency is not None:
        # A buildpack's figure was computed for its own worker size; ours may differ.
        workers, reason = _compute(platform, worker_memory_mb, memory_quota)
        explanation = f"{written} set by {platform.web_concurrency_set_by}, recomputed: {reason}"
        return WorkerCount(workers, explanation, from_platform=True)
    memory_imposed = platform.memory is not None and platform.memory.imposed
    if memory_quota is not None or memory_imposed or platform.cpus.imposed:
        return WorkerCount(*_compute(platform, worker_memory_mb, memory_quota), from_platform=True)
    return WorkerCount(
        1,
        "no memory or CPU limit found: gunicorn's default of 1 worker; set WEB_CONCURRENCY",
        from_platform=False,
    )


def _compute(
    platform: Platform, worker_memory_mb: int, memory_quota: int | None
) -> tuple[int, str]:
    cpus = platform.cpus.amount
    cpu_text = f"{cpus} CPU{'s' if cpus != 1 else ''} ({platform.cpus.source})"
    by_cpu = 2 * cpus + 1
    if memory_quota is not None:
        memory: Capacity | None = Capacity(memory_quota, "memory quota", imposed=True)
    else:
        memory = platform.memory
    if memory is None:
        # Only where /proc/meminfo is missing (macOS): the CPU half of the rule alone.
        return by_cpu, f"memory unknown, {cpu_text}"
    by_memory = max(1, memory.amount // 2**20 // worker_memory_mb)
    reason = (
        f"{format_mb(memory.amount)} ({memory.source}) / {worker_memory_mb} MB per worker,"
        f" {cpu_text}"
    )
    return min(by_cpu, by_memory), reason
