"""What the master does about memory: the monitor's samples in, decisions out.

From each sample (metrics/monitor.py) the policy decides, and the arbiter acts:

- a worker over the hard limit is stopped (TERM, then SIGKILL after graceful_timeout);
- a worker over the soft limit is recycled gracefully, once it is old enough to recycle
  (workers/memory_guard.py: the worker checks itself after requests too; this catches one
  that is idle);
- past `memory_budget` of the quota, the largest worker is recycled, one at a time;
- a new worker is not started when its expected size would push the total over that same
  budget (workers started since the last sample, or still booting in it, count at that size
  too). One line for both: were new workers judged against the whole quota, a pool that
  lands between the budget and the quota would have its largest worker replaced at every
  sample, for ever, by a successor as big;
- with WEB_CONCURRENCY=auto, once the first worker has served REFINE_AFTER requests, the
  worker count is refined from its measured size.

If every fresh worker is already over a limit, that limit is below the app's footprint:
enforcing it would only restart workers in a loop, so that limit alone is suspended, with one
warning, until a HUP brings new settings. (The hard limit stays on unless it is below the
footprint too.)

Nothing here reads /proc or writes a log: what to say comes back in the Decisions.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dynocorn.units import format_mb
from dynocorn.workers.memory_guard import old_enough_to_recycle

if TYPE_CHECKING:
    from dynocorn.config import Config
    from dynocorn.logs import ErrorLog
    from dynocorn.metrics.memory import DynoMemory, ProcessMemory
    from dynocorn.worker_handle import WorkerHandle

REFINE_AFTER = 100  # requests the first worker serves before `auto` refines the count
NOT_AFFORDABLE = "Not starting a worker: it would take the dyno over its memory budget"


@dataclass
class Decisions:
    stop: list[tuple[WorkerHandle, str]] = field(default_factory=list)  # reason logged
    workers: int | None = None  # a new target worker count (auto refinement)
    warnings: list[str] = field(default_factory=list)  # for the error log
    notes: list[str] = field(default_factory=list)  # for the error log, at info

    def say(self, log: ErrorLog) -> None:
        for warning in self.warnings:
            log.warning(warning)
        for note in self.notes:
            log.info(note)


class MemoryPolicy:
    def __init__(self, cfg: Config) -> None:
        self.refined = False
        self.budget_victim: int | None = None  # the largest worker, recycled for the budget
        self.too_big_warned = False
        self.configure(cfg)

    def configure(self, cfg: Config) -> None:
        """(Re)read the settings: at start and on HUP."""
        self.quota: int | None = cfg.memory_quota
        self.soft: int | None = cfg.max_worker_memory
        self.hard: int | None = cfg.max_worker_memory_hard or (
            int(self.soft * 1.5) if self.soft else None
        )
        self.budget: float = cfg.memory_budget
        self.auto = cfg.workers_auto
        self.cpu_cap = 2 * cfg.platform.cpus.amount + 1
        # New limits get a new chance: they may be above the footprint.
        self.soft_suspended = False
        self.hard_suspended = False

    def decide(
        self,
        now: float,
        total: DynoMemory,
        master: ProcessMemory | None,
        workers: list[WorkerHandle],
    ) -> Decisions:
        decisions = Decisions()
        serving = [h for h in workers if not h.stopping and h.memory is not None]
        self.check_footprint(workers, decisions)
        for handle in serving:
            reason = self.over_a_limit(now, handle)
            if reason:
                decisions.stop.append((handle, reason))
        if self.quota and total.held > self.budget * self.quota:
            self.recycle_largest(total, serving, decisions)
        else:
            self.too_big_warned = False
        if self.auto and not self.refined:
            decisions.workers = self.refine(master, serving, decisions)
        return decisions

    def over_a_limit(self, now: float, handle: WorkerHandle) -> str | None:
        """Why this worker must go for its own size, or None."""
        assert handle.memory is not None
        uss = handle.memory.uss
        if self.hard and not self.hard_suspended and uss > self.hard:
            return f"uses {format_mb(uss)}, over the hard limit {format_mb(self.hard)}"
        if (
            self.soft
            and not self.soft_suspended
            and uss > self.soft
            and old_enough_to_recycle(handle.requests, now - handle.spawned_at)
        ):
            return f"uses {format_mb(uss)}, over max_worker_memory {format_mb(self.soft)}"
        return None

    def check_footprint(self, workers: list[WorkerHandle], decisions: Decisions) -> None:
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
            decisions.warnings.append(
                f"max_worker_memory {format_mb(self.soft)} is below the app's footprint: every "
                f"fresh worker already uses {format_mb(smallest)} or more of private memory. "
                f"Recycling at this limit is off, so that workers do not restart in a loop "
                f"(the hard limit {hard}); raise it and send HUP."
            )
        if self.hard and not self.hard_suspended and smallest > self.hard:
            self.hard_suspended = True
            if not self.soft_suspended or not self.soft:
                decisions.warnings.append(
                    f"The hard memory limit {format_mb(self.hard)} is below the app's footprint "
                    f"({format_mb(smallest)} per fresh worker): it is off; raise it and send HUP."
                )

    def recycle_largest(
        self, total: DynoMemory, serving: list[WorkerHandle], decisions: Decisions
    ) -> None:
        if self.budget_victim is not None and any(h.pid == self.budget_victim for h in serving):
            return  # one at a time: the last one is still on its way out
        assert self.quota is not None
        chosen = {handle.pid for handle, _ in decisions.stop}
        candidates = [h for h in serving if h.pid not in chosen]
        over = f"over {self.budget:.0%} of the quota {format_mb(self.quota)}"
        if len(candidates) < 1 or (len(serving) <= 1 and not chosen):
            # With a single worker, recycling it frees nothing for long: say so instead,
            # once until the dyno is back under its budget.
            if not self.too_big_warned:
                self.too_big_warned = True
                decisions.warnings.append(
                    f"Dyno memory {format_mb(total.held)} is {over} with one worker: "
                    "the app itself is too big for the dyno"
                )
            return
        largest = max(candidates, key=lambda h: h.memory.uss if h.memory else 0)
        self.budget_victim = largest.pid
        uss = largest.memory.uss if largest.memory else 0
        decisions.stop.append(
            (
                largest,
                f"is the largest worker ({format_mb(uss)}) and the dyno uses "
                f"{format_mb(total.held)}, {over}",
            )
        )

    def refine(
        self, master: ProcessMemory | None, serving: list[WorkerHandle], decisions: Decisions
    ) -> int | None:
        """WEB_CONCURRENCY=auto: size the pool from a worker that has done real work."""
        worked = [h for h in serving if h.requests >= REFINE_AFTER and h.memory is not None]
        if not worked or not self.quota:
            return None
        self.refined = True
        per_worker = max(h.memory.pss for h in worked if h.memory is not None)
        available = int(self.budget * self.quota - (master.pss if master else 0))
        count = max(1, min(self.cpu_cap, available // max(per_worker, 1)))
        decisions.notes.append(
            f"WEB_CONCURRENCY=auto: a worker measured {format_mb(per_worker)} (PSS) after "
            f"{REFINE_AFTER} requests; {format_mb(available)} of the quota is available, so "
            f"{count} workers (at most {self.cpu_cap} for the CPUs)"
        )
        return count

    def can_afford(
        self,
        latest: DynoMemory | None,
        sizes: Mapping[int, int],
        grown: Collection[int],
        workers: list[WorkerHandle],
    ) -> bool:
        """Whether one more worker fits in the budget (`memory_budget` of the quota).

        From the last sample (`latest`; `sizes`: pid -> PSS in it; `grown`: the pids that
        were full-grown then): what the processes held then, plus, for each worker the
        sample did not see full-grown (started since, or still booting then), the growth to
        the size of the largest that was, plus that size once more for the new worker.
        Several spawns between two samples (TTIN, HUP, replacements) so each see the ones
        before them.
        """
        if not self.quota or latest is None:
            return True
        full_grown = [sizes[pid] for pid in grown]
        if not full_grown:
            return True  # no worker measured yet: nothing to judge by
        size = max(full_grown)
        growth = sum(
            max(0, size - sizes.get(handle.pid, 0)) for handle in workers if handle.pid not in grown
        )
        return latest.held + growth + size <= self.budget * self.quota

    def no_room_line(self, quota_text: str, workers: Collection[WorkerHandle], wanted: int) -> str:
        """The warning, with how many workers serve of those wanted: when the pool stays
        short, as with a WEB_CONCURRENCY too high for the memory, the shortfall is what to
        act on."""
        running = sum(not handle.stopping for handle in workers)
        return (
            f"{NOT_AFFORDABLE}, {self.budget:.0%} of its quota ({quota_text}); "
            f"{running} of {wanted} workers running"
        )
