"""The runtime-metrics log lines, character for character as Heroku's log-runtime-metrics.

Users already parse these lines (log drains, Librato, Papertrail alerts), so the layout is
Heroku's: logfmt, ``sample#`` keys, MB = bytes / 2**20 with two decimals, pages as integers
with the suffix ``pages``, loads with two decimals, ``memory_quota`` last.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dynocorn import logfmt
from dynocorn.metrics.memory import DynoMemory

_MB = 2**20
DEFAULT_SOURCE = "web.1"


@dataclass(frozen=True)
class WorkerFigures:
    index: int  # the worker's slot, 1-based: its replacement takes the same one
    pid: int
    rss: int  # bytes
    pss: int  # bytes
    uss: int  # bytes
    requests: int  # served since the worker started


def source_name(process_name: str | None) -> str:
    """``source=``: the DYNO / HONCHO_PROCESS_NAME / CONTAINER value, else ``web.1``."""
    name = (process_name or "").strip()
    return name or DEFAULT_SOURCE


def stable_dyno_id(environ: Mapping[str, str], master_pid: int, run_id: str) -> str:
    """``dyno=``: HEROKU_DYNO_ID when the platform gives one, else one shaped like Heroku's
    ``heroku.2808254.d97d0ea7-...``: ``dynocorn.<master pid>.<run_id>``.

    ``run_id`` is a uuid4 the caller makes once per run, so a restart (same DYNO name, often
    the same pid 1 or 2 in a container) still starts a new series.
    """
    dyno_id = environ.get("HEROKU_DYNO_ID", "").strip()
    return dyno_id or f"dynocorn.{master_pid}.{run_id}"


def load_line(source: str, dyno: str, load: tuple[float, float, float]) -> str:
    one, five, fifteen = load
    return (
        f"source={logfmt.value(source)} dyno={logfmt.value(dyno)} sample#load_avg_1m={one:.2f}"
        f" sample#load_avg_5m={five:.2f} sample#load_avg_15m={fifteen:.2f}"
    )


def memory_line(source: str, dyno: str, memory: DynoMemory, quota: int | None) -> str:
    """Heroku's memory line. ``quota`` is the memory limit in bytes.

    With no limit, pass the physical memory (platform.detect_memory already falls back to
    /proc/meminfo): that is the most the dyno can use, and tools expect the field. Only when
    even that is unknown (None) is ``memory_quota`` left out rather than invented.
    """
    line = (
        f"source={logfmt.value(source)} dyno={logfmt.value(dyno)}"
        f" sample#memory_total={_mb(memory.total)} sample#memory_rss={_mb(memory.rss)}"
        f" sample#memory_cache={_mb(memory.cache)} sample#memory_swap={_mb(memory.swap)}"
        f" sample#memory_pgpgin={memory.pgpgin}pages sample#memory_pgpgout={memory.pgpgout}pages"
    )
    if quota is None:
        return line
    return f"{line} sample#memory_quota={_mb(quota)}"


def over_quota_lines(held: int, quota: int) -> list[str]:
    """The R14 pair the platform logs beside a sample over quota; empty within the quota.

    ``held`` is rss + swap (``DynoMemory.held``), not ``memory_total``: "The R14 error is
    calculated by total memory swap and rss; cache is not included" (Heroku's R14 article).

    Heroku's example, 590M at 115.2% of 512 MB, is 589.8 MB: whole MB are rounded, not
    truncated. Integer arithmetic rounds halves up, where float formatting would round some
    halves down (to even, or by binary representation).
    """
    if quota <= 0 or held <= quota:
        return []
    mb = (2 * held + _MB) // (2 * _MB)
    tenths = (2000 * held + quota) // (2 * quota)  # percent * 10, rounded half up
    return [
        f"Process running mem={mb}M({tenths // 10}.{tenths % 10}%)",
        "Error R14 (Memory quota exceeded)",
    ]


def workers_line(
    source: str,
    workers: list[WorkerFigures],
    master_pss: int,
    requests_per_sec: float,
    queue_ms_p95: float | None,
) -> str:
    """dynocorn's own line: per-worker memory and requests, in the same logfmt style.

    Workers are listed by index so that consecutive lines line up; ``queue_ms_p95`` is left
    out when no request carried X-Request-Start in the interval.
    """
    parts = [f"source={logfmt.value(source)}", f"sample#workers={len(workers)}"]
    for worker in sorted(workers, key=lambda figures: figures.index):
        key = f"sample#worker.{worker.index}"
        parts += [
            f"{key}.pid={worker.pid}",
            f"{key}.rss={_mb(worker.rss)}",
            f"{key}.pss={_mb(worker.pss)}",
            f"{key}.uss={_mb(worker.uss)}",
            f"{key}.requests={worker.requests}",
        ]
    parts += [
        f"sample#master.pss={_mb(master_pss)}",
        f"sample#requests_per_sec={requests_per_sec:.2f}",
    ]
    if queue_ms_p95 is not None:
        parts.append(f"sample#queue_ms_p95={queue_ms_p95:.2f}")
    return " ".join(parts)


def _mb(nbytes: int) -> str:
    """Heroku's figure: megabytes with two decimals and no space (the log messages use
    units.format_mb, for people)."""
    return f"{nbytes / _MB:.2f}MB"
