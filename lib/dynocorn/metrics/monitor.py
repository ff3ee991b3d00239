"""The master's view of memory: samples, the runtime-metrics lines and StatsD gauges.

How this works: every few seconds (`check_interval`) the master reads each worker's memory
from /proc (a few hundred microseconds each) and the dyno's total (the cgroup's own
accounting when the cgroup is ours, else the sum of PSS). Every `metrics_interval` it prints
Heroku's two lines, dynocorn's per-worker line and, when the processes' rss + swap is over
the quota, the R14 pair (page cache counts in memory_total, not in R14). The same sample
goes to the memory policy (memory_policy.py), whose decisions the arbiter carries out.

Workers are numbered by slot, not by age (worker_handle.Slots), so `worker.2.*` in the lines
and gauges follows one place in the pool across replacements.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from dynocorn.metrics import heroku_lines
from dynocorn.metrics.memory import (
    DynoMemory,
    ProcessMemory,
    ancestors,
    holds_only,
    memory_cgroup,
    pss_total,
    read_cgroup_memory,
    read_process_memory,
)
from dynocorn.metrics.queue_time import Percentiles
from dynocorn.metrics.statsd import WORKERS, StatsD, parse_statsd_host
from dynocorn.units import format_mb
from dynocorn.worker_handle import Slots

if TYPE_CHECKING:
    from dynocorn.config import Config
    from dynocorn.logs import ErrorLog
    from dynocorn.worker_handle import WorkerHandle

MB = 2**20
CHECK_INTERVAL = 5.0  # seconds between memory checks when metrics lines are rarer


@dataclass(frozen=True)
class Sample:
    total: DynoMemory  # the dyno's (or the sum of our processes')
    master: ProcessMemory | None  # None when it could not be read


def limits_memory(cfg: Config) -> bool:
    """Whether a memory limit is set, whose enforcement needs samples even without lines."""
    return bool(cfg.max_worker_memory or cfg.max_worker_memory_hard or cfg.memory_quota)


class MemoryMonitor:
    def __init__(
        self,
        cfg: Config,
        log: ErrorLog,
        write_line: Callable[[str], None],
        environ: Mapping[str, str],
        *,
        root: Path = Path("/"),
        master_pid: int | None = None,
    ) -> None:
        self.log = log
        self.write_line = write_line
        self.master_pid = master_pid or os.getpid()
        self.source = heroku_lines.source_name(cfg.platform.process_name)
        self.dyno = heroku_lines.stable_dyno_id(environ, self.master_pid, str(uuid.uuid4()))
        self.proc = root / "proc"
        self.own_ancestors = set(ancestors(self.master_pid, self.proc))
        # Found once: a process does not change cgroups, and parsing mountinfo on every
        # sample cost more than reading the figures.
        self.cgroup = memory_cgroup(root)
        self.statsd = self.start_statsd(cfg)
        self.slots = Slots()
        self.configure(cfg)
        self.requests_at_last_lines: dict[int, int] = {}  # pid -> requests at the last lines
        self.served_by_exited = 0  # since the last lines, by workers that exited meanwhile
        self.last_lines_at = 0.0
        self.begin(time.monotonic())
        self.queue_times = Percentiles(4096)  # reported by workers, per metrics interval
        self.latest: DynoMemory | None = None
        # pid -> PSS in `latest`, and the pids that were ready (full-grown) when sampled.
        self.counted: dict[int, int] = {}
        self.grown: set[int] = set()

    def start_statsd(self, cfg: Config) -> StatsD | None:
        """The master's client. The error log counts its warnings and errors through it,
        in the master and, inherited across fork, in every worker."""
        if not cfg.statsd_host:
            return None
        host, port = parse_statsd_host(cfg.statsd_host)
        statsd = StatsD(host, port, cfg.statsd_prefix, cfg.dogstatsd_tags)
        error = statsd.error_to_log()
        if error:
            self.log.warning(error)
        if statsd.error is None:
            self.log.statsd = statsd
        return statsd

    def configure(self, cfg: Config) -> None:
        """(Re)read the settings: at start and on HUP."""
        self.cfg = cfg
        self.quota: int | None = cfg.memory_quota
        self.metrics_interval = cfg.metrics_interval
        self.enabled = bool(self.metrics_interval or limits_memory(cfg) or self.statsd)
        self.slots.new_generation()

    # -- when to sample

    def begin(self, now: float) -> None:
        """The first sample comes one interval after the server started, as Heroku's does,
        so that it has workers in it."""
        self.next_check = now + min(CHECK_INTERVAL, self.metrics_interval or CHECK_INTERVAL)
        self.next_lines = now + self.metrics_interval
        # requests_per_sec of the first line counts from here.
        self.last_lines_at = now
        self.requests_at_last_lines = {}
        self.served_by_exited = 0

    def due(self, now: float) -> bool:
        return self.enabled and now >= self.next_check

    def next_wakeup(self, now: float) -> float:
        return max(0.0, self.next_check - now) if self.enabled else float("inf")

    def sample(self, now: float, workers: list[WorkerHandle]) -> Sample:
        interval = CHECK_INTERVAL
        if self.metrics_interval:
            interval = min(interval, self.metrics_interval)
        self.next_check = now + interval
        self.slots.assign(workers)
        self.counted = {}
        self.grown = set()
        fresh = []
        for handle in workers:
            memory = read_process_memory(handle.pid, self.proc)
            if memory is None:
                continue  # exiting: keep its last figures for the log, out of the total
            handle.memory = memory
            fresh.append(memory)
            self.counted[handle.pid] = memory.pss
            if handle.ready:
                self.grown.add(handle.pid)
        master = read_process_memory(self.master_pid, self.proc)
        total = self.dyno_memory(master, fresh, workers)
        self.latest = total
        if self.metrics_interval and now >= self.next_lines:
            self.next_lines = now + self.metrics_interval
            self.print_lines(now, total, master, workers)
        if self.statsd is not None:
            self.send_gauges(total, workers)
        return Sample(total, master)

    def dyno_memory(
        self,
        master: ProcessMemory | None,
        memories: list[ProcessMemory],
        workers: list[WorkerHandle],
    ) -> DynoMemory:
        """The cgroup's figures when it holds only our processes, else the sum of PSS."""
        own = {self.master_pid, *self.own_ancestors, *(handle.pid for handle in workers)}
        if holds_only(self.cgroup, own):
            figures = read_cgroup_memory(self.cgroup)
            if figures is not None:
                return figures
        return pss_total([*memories, *([master] if master else [])])

    # -- the lines

    def print_lines(
        self,
        now: float,
        total: DynoMemory,
        master: ProcessMemory | None,
        workers: list[WorkerHandle],
    ) -> None:
        load = os.getloadavg()
        out = [
            heroku_lines.load_line(self.source, self.dyno, load),
            heroku_lines.memory_line(self.source, self.dyno, total, self.quota),
        ]
        if self.quota:
            out += heroku_lines.over_quota_lines(total.held, self.quota)
        out.append(self.workers_line(now, master, workers))
        self.write_line("".join(line + "\n" for line in out))

    def workers_line(
        self, now: float, master: ProcessMemory | None, workers: list[WorkerHandle]
    ) -> str:
        figures = []
        for slot, handle in self.slots.holders(workers):
            memory = handle.memory
            figures.append(
                heroku_lines.WorkerFigures(
                    index=slot,
                    pid=handle.pid,
                    rss=memory.rss if memory else 0,
                    pss=memory.pss if memory else 0,
                    uss=memory.uss if memory else 0,
                    requests=handle.requests,
                )
            )
        rate = self.requests_per_sec(now, workers)
        p95 = self.queue_times.p95()
        self.queue_times.reset()
        master_pss = master.pss if master else 0
        return heroku_lines.workers_line(self.source, figures, master_pss, rate, p95)

    def requests_per_sec(self, now: float, workers: list[WorkerHandle]) -> float:
        """Requests served since the last lines (by every worker, gone ones too), per second."""
        served = self.served_by_exited
        self.served_by_exited = 0
        for handle in workers:
            served += handle.requests - self.requests_at_last_lines.get(handle.pid, 0)
            self.requests_at_last_lines[handle.pid] = handle.requests
        elapsed = now - self.last_lines_at
        self.last_lines_at = now
        return served / elapsed if elapsed > 0 else 0.0

    def add_queue_samples(self, samples: list[float]) -> None:
        """Queue times a worker reported (from X-Request-Start)."""
        for sample in samples:
            if isinstance(sample, int | float):
                self.queue_times.add(float(sample))

    def forget(self, handle: WorkerHandle) -> None:
        """A worker exited: its memory leaves the last sample's total (if it was in it), its
        last requests stay in the next requests_per_sec, and its slot is free."""
        freed = self.counted.pop(handle.pid, None)
        self.grown.discard(handle.pid)
        if self.latest is not None and freed is not None:
            total = max(0, self.latest.total - freed)
            rss = max(0, self.latest.rss - freed)
            self.latest = replace(self.latest, total=total, rss=rss)
        before = self.requests_at_last_lines.pop(handle.pid, 0)
        self.served_by_exited += max(0, handle.requests - before)
        self.slots.release(handle.pid)

    def send_gauges(self, total: DynoMemory, workers: list[WorkerHandle]) -> None:
        assert self.statsd is not None
        self.statsd.gauge(WORKERS, len(workers))
        self.statsd.gauge("memory.total_mb", round(total.total / MB, 2))
        if self.quota:
            self.statsd.gauge("memory.quota_mb", round(self.quota / MB, 2))
        for slot, handle in self.slots.holders(workers):
            if handle.memory is not None:
                self.statsd.gauge(f"memory.worker.{slot}.pss_mb", round(handle.memory.pss / MB, 2))
                self.statsd.gauge(f"memory.worker.{slot}.uss_mb", round(handle.memory.uss / MB, 2))

    def see(self, workers: list[WorkerHandle]) -> None:
        """The workers there are now: each gets its slot, oldest first (the arbiter shows
        them before each spawn, so that the newcomer's is chosen knowing all the others)."""
        self.slots.assign(workers)

    def quota_text(self) -> str:
        held = self.latest.held if self.latest else 0
        return f"using {format_mb(held)} of {format_mb(self.quota or 0)}"

    def last_seen(self, handle: WorkerHandle) -> str:
        memory = handle.memory
        if memory is None:
            return "no memory sample yet"
        return (
            f"last sample: USS {format_mb(memory.uss)}, PSS {format_mb(memory.pss)}, "
            f"RSS {format_mb(memory.rss)}"
        )
