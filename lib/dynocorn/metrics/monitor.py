"""The master's view of memory: samples, the runtime-metrics lines, and memory decisions.

How this works: every few seconds (`check_interval`) the master reads each worker's memory
from /proc (a few hundred microseconds each) and the dyno's total (the cgroup's own
accounting when the cgroup is ours, else the sum of PSS). Every `metrics_interval` it prints
Heroku's two lines, dynocorn's per-worker line and, over the quota, the R14 pair. From the
same sample it decides what the arbiter should do, and the arbiter does it:

- a worker over the hard limit is stopped (TERM, then SIGKILL after graceful_timeout);
- a worker over the soft limit is recycled gracefully (the worker checks itself after
  requests too; this catches one that is idle);
- past `memory_budget` of the quota, the largest worker is recycled, one at a time;
- a new worker is not started when its expected size would push the total over the quota;
- with WEB_CONCURRENCY=auto, once the first worker has served REFINE_AFTER requests, the
  worker count is refined from its measured size.

If fresh workers are already over a limit, the limit is below the app's footprint: memory
recycling would only flap, so it is switched off with one warning.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from dynocorn.metrics import lines
from dynocorn.metrics.memory import (
    DynoMemory,
    ProcessMemory,
    ancestors,
    cgroup_memory,
    owns_cgroup,
    pss_total,
    read_process_memory,
)
from dynocorn.metrics.queue import Percentiles
from dynocorn.metrics.statsd import StatsD, parse_statsd_host

if TYPE_CHECKING:
    from dynocorn.config import Config
    from dynocorn.logs import ErrorLog
    from dynocorn.worker_handle import WorkerHandle

MB = 2**20
CHECK_INTERVAL = 5.0  # seconds between memory checks when metrics lines are rarer
REFINE_AFTER = 100  # requests the first worker serves before `auto` refines the count
MIN_REQUESTS_FOR_RECYCLING = 10  # a worker is not recycled for memory before this


@dataclass
class Decisions:
    stop: list[tuple[WorkerHandle, str]] = field(default_factory=list)  # reason logged
    workers: int | None = None  # a new target worker count (auto refinement)


def mb(nbytes: float) -> str:
    return f"{nbytes / MB:.1f}MB"


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
        self.root = root
        self.master_pid = master_pid or os.getpid()
        self.source = lines.source_name(cfg.platform.process_name)
        self.dyno = lines.stable_dyno_id(environ, self.master_pid, str(uuid.uuid4()))
        self.own_ancestors = set(ancestors(self.master_pid, root / "proc"))
        self.statsd: StatsD | None = None
        if cfg.statsd_host:
            host, port = parse_statsd_host(cfg.statsd_host)
            self.statsd = StatsD(host, port, cfg.statsd_prefix, cfg.dogstatsd_tags)
        self.configure(cfg)
        self.begin(time.monotonic())
        self.last_lines_at: float | None = None
        self.requests_at_last_lines: dict[int, int] = {}
        self.queue_times = Percentiles(4096)  # reported by workers, per metrics interval
        self.latest: DynoMemory | None = None
        self.footprint_warned = False
        self.refined = False
        self.budget_victim: int | None = None
        self.too_big_warned = False

    def configure(self, cfg: Config) -> None:
        """(Re)read the settings: at start and on HUP."""
        self.cfg = cfg
        self.quota: int | None = cfg.memory_quota
        self.soft: int | None = cfg.max_worker_memory
        self.hard: int | None = cfg.max_worker_memory_hard or (
            int(self.soft * 1.5) if self.soft else None
        )
        self.budget = cfg.memory_budget
        self.metrics_interval = cfg.metrics_interval
        self.auto = cfg.source("workers").startswith("platform (WEB_CONCURRENCY=auto")
        self.cpu_cap = 2 * cfg.platform.cpus.amount + 1
        self.enabled = bool(self.metrics_interval or self.soft or self.quota or self.statsd)

    # -- when to sample

    def begin(self, now: float) -> None:
        """The first sample comes one interval after the server started, as Heroku's does,
        so that it has workers in it."""
        self.next_check = now + min(CHECK_INTERVAL, self.metrics_interval or CHECK_INTERVAL)
        self.next_lines = now + self.metrics_interval

    def due(self, now: float) -> bool:
        return self.enabled and now >= self.next_check

    def next_wakeup(self, now: float) -> float:
        return max(0.0, self.next_check - now) if self.enabled else float("inf")

    def sample(self, now: float, workers: list[WorkerHandle]) -> Decisions:
        interval = CHECK_INTERVAL
        if self.metrics_interval:
            interval = min(interval, self.metrics_interval)
        self.next_check = now + interval
        for handle in workers:
            handle.memory = read_process_memory(handle.pid) or handle.memory
        master = read_process_memory(self.master_pid)
        total = self.dyno_memory(master, workers)
        self.latest = total
        if self.metrics_interval and now >= self.next_lines:
            self.next_lines = now + self.metrics_interval
            self.print_lines(now, total, master, workers)
        if self.statsd is not None:
            self.send_gauges(total, workers)
        return self.decide(total, master, workers)

    def dyno_memory(self, master: ProcessMemory | None, workers: list[WorkerHandle]) -> DynoMemory:
        own = {self.master_pid, *self.own_ancestors, *(handle.pid for handle in workers)}
        if owns_cgroup(self.root, own):
            figures = cgroup_memory(self.root)
            if figures is not None:
                return figures
        memories = [handle.memory for handle in workers if handle.memory is not None]
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
            lines.load_line(self.source, self.dyno, load),
            lines.memory_line(self.source, self.dyno, total, self.quota),
        ]
        if self.quota:
            out += lines.over_quota_lines(total.total, self.quota)
        out.append(self.workers_line(now, master, workers))
        self.write_line("".join(line + "\n" for line in out))

    def workers_line(
        self, now: float, master: ProcessMemory | None, workers: list[WorkerHandle]
    ) -> str:
        figures = []
        served = 0
        for index, handle in enumerate(sorted(workers, key=lambda h: h.age), start=1):
            memory = handle.memory
            requests = int(handle.stats.get("requests", 0))
            served += requests - self.requests_at_last_lines.get(handle.pid, 0)
            self.requests_at_last_lines[handle.pid] = requests
            figures.append(
                lines.WorkerFigures(
                    index=index,
                    pid=handle.pid,
                    rss=memory.rss if memory else 0,
                    pss=memory.pss if memory else 0,
                    uss=memory.uss if memory else 0,
                    requests=requests,
                )
            )
        live = {handle.pid for handle in workers}
        self.requests_at_last_lines = {
            pid: count for pid, count in self.requests_at_last_lines.items() if pid in live
        }
        elapsed = now - self.last_lines_at if self.last_lines_at is not None else 0.0
        self.last_lines_at = now
        rate = served / elapsed if elapsed > 0 else 0.0
        p95 = self.queue_times.p95()
        self.queue_times.reset()
        return lines.workers_line(self.source, figures, master.pss if master else 0, rate, p95)

    def add_queue_samples(self, samples: list[float]) -> None:
        """Queue times a worker reported (from X-Request-Start)."""
        for sample in samples:
            if isinstance(sample, int | float):
                self.queue_times.add(float(sample))

    def forget(self, handle: WorkerHandle) -> None:
        """A worker exited: its memory leaves the last sample's total too."""
        if self.latest is not None and handle.memory is not None:
            freed = handle.memory.pss
            total = max(0, self.latest.total - freed)
            rss = max(0, self.latest.rss - freed)
            self.latest = replace(self.latest, total=total, rss=rss)

    def send_gauges(self, total: DynoMemory, workers: list[WorkerHandle]) -> None:
        assert self.statsd is not None
        self.statsd.gauge("gunicorn.workers", len(workers))
        self.statsd.gauge("memory.total_mb", round(total.total / MB, 2))
        if self.quota:
            self.statsd.gauge("memory.quota_mb", round(self.quota / MB, 2))
        for index, handle in enumerate(sorted(workers, key=lambda h: h.age), start=1):
            if handle.memory is not None:
                self.statsd.gauge(f"memory.worker.{index}.pss_mb", round(handle.memory.pss / MB, 2))
                self.statsd.gauge(f"memory.worker.{index}.uss_mb", round(handle.memory.uss / MB, 2))

    # -- decisions

    def decide(
        self, total: DynoMemory, master: ProcessMemory | None, workers: list[WorkerHandle]
    ) -> Decisions:
        decisions = Decisions()
        serving = [h for h in workers if not h.stopping and h.memory is not None]
        self.check_footprint(workers)
        if not self.footprint_warned:
            for handle in serving:
                assert handle.memory is not None
                uss = handle.memory.uss
                if self.hard and uss > self.hard:
                    decisions.stop.append(
                        (handle, f"uses {mb(uss)}, over the hard limit {mb(self.hard)}")
                    )
                elif (
                    self.soft and uss > self.soft and handle.requests >= MIN_REQUESTS_FOR_RECYCLING
                ):
                    decisions.stop.append(
                        (handle, f"uses {mb(uss)}, over max_worker_memory {mb(self.soft)}")
                    )
        if self.quota and total.held > self.budget * self.quota:
            self.recycle_largest(total, serving, decisions)
        else:
            self.too_big_warned = False
        if self.auto and not self.refined:
            decisions.workers = self.refine(master, serving)
        return decisions

    def check_footprint(self, workers: list[WorkerHandle]) -> None:
        """A worker that reported being over the limit at boot: the limit cannot work."""
        if self.footprint_warned:
            return
        for handle in workers:
            boot = handle.stats.get("boot_uss")
            if self.soft and isinstance(boot, int) and boot > self.soft:
                self.footprint_warned = True
                self.log.warning(
                    f"max_worker_memory {mb(self.soft)} is below the app's footprint: a fresh "
                    f"worker already uses {mb(boot)} of private memory. Memory recycling is "
                    "off, so that workers do not restart in a loop; raise the limit."
                )
                return

    def recycle_largest(
        self, total: DynoMemory, serving: list[WorkerHandle], decisions: Decisions
    ) -> None:
        if self.budget_victim is not None and any(h.pid == self.budget_victim for h in serving):
            return  # one at a time: the last one is still on its way out
        chosen = {handle.pid for handle, _ in decisions.stop}
        candidates = [h for h in serving if h.pid not in chosen]
        if len(candidates) < 1 or (len(serving) <= 1 and not chosen):
            # With a single worker, recycling it frees nothing for long: say so instead,
            # once until the dyno is back under its budget.
            if self.too_big_warned:
                return
            self.too_big_warned = True
            self.log.warning(
                f"Dyno memory {mb(total.held)} is over {self.budget:.0%} of the quota "
                f"{mb(self.quota or 0)} with one worker: the app itself is too big for the dyno"
            )
            return
        assert self.quota is not None
        largest = max(candidates, key=lambda h: h.memory.uss if h.memory else 0)
        self.budget_victim = largest.pid
        uss = largest.memory.uss if largest.memory else 0
        decisions.stop.append(
            (
                largest,
                f"is the largest worker ({mb(uss)}) and the dyno uses {mb(total.held)}, "
                f"over {self.budget:.0%} of the quota {mb(self.quota)}",
            )
        )

    def refine(self, master: ProcessMemory | None, serving: list[WorkerHandle]) -> int | None:
        """WEB_CONCURRENCY=auto: size the pool from a worker that has done real work."""
        worked = [h for h in serving if h.requests >= REFINE_AFTER and h.memory is not None]
        if not worked or not self.quota:
            return None
        self.refined = True
        per_worker = max(h.memory.pss for h in worked if h.memory is not None)
        available = self.budget * self.quota - (master.pss if master else 0)
        count = max(1, min(self.cpu_cap, int(available // max(per_worker, 1))))
        self.log.info(
            f"WEB_CONCURRENCY=auto: a worker measured {mb(per_worker)} (PSS) after "
            f"{REFINE_AFTER} requests; {mb(available)} of the quota is available, so "
            f"{count} workers (at most {self.cpu_cap} for the CPUs)"
        )
        return count

    def can_afford(self, workers: list[WorkerHandle]) -> bool:
        """Whether one more worker fits in the quota, judged from the last sample."""
        if not self.quota or self.latest is None:
            return True
        sizes = [h.memory.pss for h in workers if h.memory is not None]
        if not sizes:
            return True
        return self.latest.held + max(sizes) <= self.quota

    def quota_text(self) -> str:
        held = self.latest.held if self.latest else 0
        return f"using {mb(held)} of {mb(self.quota or 0)}"

    def last_seen(self, handle: WorkerHandle) -> str:
        memory = handle.memory
        if memory is None:
            return "no memory sample yet"
        return f"last sample: USS {mb(memory.uss)}, PSS {mb(memory.pss)}, RSS {mb(memory.rss)}"
