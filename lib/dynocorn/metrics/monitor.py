"""The master's view of memory: samples, the runtime-metrics lines, and memory decisions.

How this works: every few seconds (`check_interval`) the master reads each worker's memory
from /proc (a few hundred microseconds each) and the dyno's total (the cgroup's own
accounting when the cgroup is ours, else the sum of PSS). Every `metrics_interval` it prints
Heroku's two lines, dynocorn's per-worker line and, when the processes' rss + swap is over
the quota, the R14 pair (page cache counts in memory_total, not in R14). From the
same sample it decides what the arbiter should do, and the arbiter does it:

- a worker over the hard limit is stopped (TERM, then SIGKILL after graceful_timeout);
- a worker over the soft limit is recycled gracefully, once it has served
  MIN_REQUESTS_FOR_RECYCLING requests or lived MIN_SECONDS_FOR_RECYCLING (the worker checks
  itself after requests too; this catches one that is idle);
- past `memory_budget` of the quota, the largest worker is recycled, one at a time;
- a new worker is not started when its expected size would push the total over the quota
  (workers started since the last sample, or still booting in it, count at that size too);
- with WEB_CONCURRENCY=auto, once the first worker has served REFINE_AFTER requests, the
  worker count is refined from its measured size.

If every fresh worker is already over a limit, that limit is below the app's footprint:
enforcing it would only restart workers in a loop, so that limit alone is suspended, with one
warning, until a HUP brings new settings. (The hard limit stays on unless it is below the
footprint too.)

Workers are numbered by slot, not by age: a worker takes the slot of the one it replaces, so
`worker.2.*` in the lines and gauges follows one place in the pool across replacements.
"""

from __future__ import annotations

import itertools
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
    holds_only,
    memory_cgroup,
    pss_total,
    read_cgroup_memory,
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
# A worker is recycled for memory only once it has served this many requests or lived this
# long: fewer would restart workers in a storm, and an idle worker that grew past the limit
# in a few requests must still be recycled.
MIN_REQUESTS_FOR_RECYCLING = 10
MIN_SECONDS_FOR_RECYCLING = 30.0


@dataclass
class Decisions:
    stop: list[tuple[WorkerHandle, str]] = field(default_factory=list)  # reason logged
    workers: int | None = None  # a new target worker count (auto refinement)


def mb(nbytes: float) -> str:
    return f"{nbytes / MB:.1f}MB"


def old_enough_to_recycle(requests: int, lived: float) -> bool:
    """The minimum lifetime before memory recycling: N requests or T seconds."""
    return requests >= MIN_REQUESTS_FOR_RECYCLING or lived >= MIN_SECONDS_FOR_RECYCLING


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
        self.source = lines.source_name(cfg.platform.process_name)
        self.dyno = lines.stable_dyno_id(environ, self.master_pid, str(uuid.uuid4()))
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
        self.refined = False
        self.budget_victim: int | None = None
        self.too_big_warned = False

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
        self.soft: int | None = cfg.max_worker_memory
        self.hard: int | None = cfg.max_worker_memory_hard or (
            int(self.soft * 1.5) if self.soft else None
        )
        self.budget = cfg.memory_budget
        self.metrics_interval = cfg.metrics_interval
        self.auto = cfg.workers_auto
        self.cpu_cap = 2 * cfg.platform.cpus.amount + 1
        self.enabled = bool(
            self.metrics_interval or self.soft or self.hard or self.quota or self.statsd
        )
        # New limits get a new chance: they may be above the footprint.
        self.soft_suspended = False
        self.hard_suspended = False
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

    def sample(self, now: float, workers: list[WorkerHandle]) -> Decisions:
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
        return self.decide(now, total, master, workers)

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
            lines.load_line(self.source, self.dyno, load),
            lines.memory_line(self.source, self.dyno, total, self.quota),
        ]
        if self.quota:
            out += lines.over_quota_lines(total.held, self.quota)
        out.append(self.workers_line(now, master, workers))
        self.write_line("".join(line + "\n" for line in out))

    def workers_line(
        self, now: float, master: ProcessMemory | None, workers: list[WorkerHandle]
    ) -> str:
        figures = []
        for slot, handle in self.slots.holders(workers):
            memory = handle.memory
            figures.append(
                lines.WorkerFigures(
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
        return lines.workers_line(self.source, figures, master.pss if master else 0, rate, p95)

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
        self.statsd.gauge("gunicorn.workers", len(workers))
        self.statsd.gauge("memory.total_mb", round(total.total / MB, 2))
        if self.quota:
            self.statsd.gauge("memory.quota_mb", round(self.quota / MB, 2))
        for slot, handle in self.slots.holders(workers):
            if handle.memory is not None:
                self.statsd.gauge(f"memory.worker.{slot}.pss_mb", round(handle.memory.pss / MB, 2))
                self.statsd.gauge(f"memory.worker.{slot}.uss_mb", round(handle.memory.uss / MB, 2))

    # -- decisions

    def decide(
        self,
        now: float,
        total: DynoMemory,
        master: ProcessMemory | None,
        workers: list[WorkerHandle],
    ) -> Decisions:
        decisions = Decisions()
        serving = [h for h in workers if not h.stopping and h.memory is not None]
        self.check_footprint(workers)
        for handle in serving:
            reason = self.over_a_limit(now, handle)
            if reason:
                decisions.stop.append((handle, reason))
        if self.quota and total.held > self.budget * self.quota:
            self.recycle_largest(total, serving, decisions)
        else:
            self.too_big_warned = False
        if self.auto and not self.refined:
            decisions.workers = self.refine(master, serving)
        return decisions

    def over_a_limit(self, now: float, handle: WorkerHandle) -> str | None:
        """Why this worker must go for its own size, or None."""
        assert handle.memory is not None
        uss = handle.memory.uss
        if self.hard and not self.hard_suspended and uss > self.hard:
            return f"uses {mb(uss)}, over the hard limit {mb(self.hard)}"
        if (
            self.soft
            and not self.soft_suspended
            and uss > self.soft
            and old_enough_to_recycle(handle.requests, now - handle.spawned_at)
        ):
            return f"uses {mb(uss)}, over max_worker_memory {mb(self.soft)}"
        return None

    def check_footprint(self, workers: list[WorkerHandle]) -> None:
        """When every fresh worker was over a limit at boot, that limit cannot work: suspend
        it (with one warning) rather than restart workers in a loop. Judged once every
        serving worker has reported its boot size; a HUP (configure) judges anew."""
        boots = [h.stats.get("boot_uss") for h in workers if not h.stopping]
        if not boots or not all(isinstance(boot, int) for boot in boots):
            return
        smallest = min(int(boot) for boot in boots if boot is not None)
        if self.soft and not self.soft_suspended and smallest > self.soft:
            self.soft_suspended = True
            hard = "is suspended too" if self.hard and smallest > self.hard else "still applies"
            self.log.warning(
                f"max_worker_memory {mb(self.soft)} is below the app's footprint: every fresh "
                f"worker already uses {mb(smallest)} or more of private memory. Recycling at "
                f"this limit is off, so that workers do not restart in a loop (the hard limit "
                f"{hard}); raise it and send HUP."
            )
        if self.hard and not self.hard_suspended and smallest > self.hard:
            self.hard_suspended = True
            if not self.soft_suspended or not self.soft:
                self.log.warning(
                    f"The hard memory limit {mb(self.hard)} is below the app's footprint "
                    f"({mb(smallest)} per fresh worker): it is off; raise it and send HUP."
                )

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
        """Whether one more worker fits in the quota.

        From the last sample: what the processes held then, plus, for each worker the sample
        did not see full-grown (started since, or still booting then), the growth to the size
        of the largest that was, plus that size once more for the new worker. Several spawns
        between two samples (TTIN, HUP, replacements) so each see the ones before them.
        """
        self.slots.assign(workers)
        if not self.quota or self.latest is None:
            return True
        sizes = [self.counted[pid] for pid in self.grown]
        if not sizes:
            return True  # no worker measured yet: nothing to judge by
        size = max(sizes)
        growth = sum(
            max(0, size - self.counted.get(handle.pid, 0))
            for handle in workers
            if handle.pid not in self.grown
        )
        return self.latest.held + growth + size <= self.quota

    def quota_text(self) -> str:
        held = self.latest.held if self.latest else 0
        return f"using {mb(held)} of {mb(self.quota or 0)}"

    def last_seen(self, handle: WorkerHandle) -> str:
        memory = handle.memory
        if memory is None:
            return "no memory sample yet"
        return f"last sample: USS {mb(memory.uss)}, PSS {mb(memory.pss)}, RSS {mb(memory.rss)}"


class Slots:
    """Stable worker numbers: a worker takes the slot of the one it replaces, like puma's
    worker index, so a slot's series in a dashboard follows one place in the pool.

    A new worker takes, in order: the lowest free slot, one whose worker exited (crashed,
    recycled, stopped) or is on its way out (retiring, told to stop); else, during a HUP,
    the slot of the oldest worker of the previous generation that has no successor yet
    (HUP replaces the oldest first, and stops it once its successor is ready); else the
    lowest slot no worker holds. Slots are assigned whenever the monitor is shown the
    workers (before each spawn and at each sample), oldest first: before anything reports
    them.
    """

    def __init__(self) -> None:
        self.slot: dict[int, int] = {}  # pid -> slot
        self.generation_of: dict[int, int] = {}  # pid -> configuration generation
        self.generation = 0
        self.vacated: set[int] = set()  # slots whose worker exited, not yet taken again

    def new_generation(self) -> None:
        """A HUP: the workers there are now will each be replaced, slot by slot."""
        self.generation += 1
        self.vacated.clear()  # numbers left by a TTOU stay unused until a TTIN

    def release(self, pid: int) -> None:
        slot = self.slot.pop(pid, None)
        self.generation_of.pop(pid, None)
        if slot is not None and slot not in self.slot.values():
            self.vacated.add(slot)

    def assign(self, workers: list[WorkerHandle]) -> None:
        for handle in sorted(workers, key=lambda h: h.age):
            if handle.pid not in self.slot:
                slot = self.choose(handle, workers)
                self.slot[handle.pid] = slot
                self.generation_of[handle.pid] = self.generation
                self.vacated.discard(slot)

    def choose(self, new: WorkerHandle, workers: list[WorkerHandle]) -> int:
        slotted = [h for h in workers if h.pid in self.slot and h is not new]
        serving = {self.slot[h.pid] for h in slotted if not h.stopping}
        leaving = {self.slot[h.pid] for h in slotted if h.stopping}
        free = (self.vacated | leaving) - serving
        if free:
            return min(free)
        current = {self.slot[h.pid] for h in slotted if self.is_current(h)}
        previous = sorted(
            (h for h in slotted if not self.is_current(h) and self.slot[h.pid] not in current),
            key=lambda h: h.age,
        )
        if previous:
            return self.slot[previous[0].pid]
        held = {self.slot[h.pid] for h in slotted}
        return next(slot for slot in itertools.count(1) if slot not in held)

    def is_current(self, handle: WorkerHandle) -> bool:
        return self.generation_of.get(handle.pid) == self.generation

    def holders(self, workers: list[WorkerHandle]) -> list[tuple[int, WorkerHandle]]:
        """(slot, worker) by slot; where a worker on its way out and its successor share a
        slot, the successor (the newer) shows."""
        newest: dict[int, WorkerHandle] = {}
        for handle in workers:
            slot = self.slot.get(handle.pid)
            if slot is not None and (slot not in newest or handle.age > newest[slot].age):
                newest[slot] = handle
        return sorted(newest.items())
