"""MemoryMonitor's decisions, from a fake /proc: what the master does about memory.

Each test builds the monitor from a real configuration, gives it workers (the master's
handles, with the pipe they would have) and a /proc whose smaps_rollup files say how much
memory each process holds, then asks what it would do.
"""

from __future__ import annotations

import io
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dynocorn import config
from dynocorn.channel import MasterChannel
from dynocorn.logs import ErrorLog, LogFile
from dynocorn.memory_policy import Decisions, MemoryPolicy
from dynocorn.metrics.monitor import MemoryMonitor
from dynocorn.worker_handle import WorkerHandle
from dynocorn.workers.memory_guard import (
    MIN_REQUESTS_FOR_RECYCLING,
    MIN_SECONDS_FOR_RECYCLING,
    old_enough_to_recycle,
)

MB = 2**20
MASTER = 1000
NOW = 1000.0  # the monitor's clock in these tests; workers are spawned before it


@dataclass
class Dyno:
    """A monitor and the memory policy, as the arbiter uses them; the fake /proc the
    monitor reads, and what the two logged and printed."""

    monitor: MemoryMonitor
    policy: MemoryPolicy
    proc: Path
    channel: MasterChannel
    log: io.StringIO
    lines: list[str] = field(default_factory=list)
    ages: Iterator[int] = field(default_factory=lambda: iter(range(1, 1000)))

    def memory(self, pid: int, uss_mb: float, pss_mb: float | None = None) -> None:
        """What /proc/PID/smaps_rollup says: USS, and PSS (USS unless given), in MB."""
        pss = uss_mb if pss_mb is None else pss_mb
        directory = self.proc / str(pid)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "smaps_rollup").write_text(
            f"Rss:  {int(max(pss, uss_mb) * 1024 + 1024)} kB\n"
            f"Pss:  {int(pss * 1024)} kB\n"
            "Private_Clean:  0 kB\n"
            f"Private_Dirty:  {int(uss_mb * 1024)} kB\n"
            "Swap:  0 kB\n"
        )

    def exited(self, pid: int) -> None:
        (self.proc / str(pid) / "smaps_rollup").unlink()
        (self.proc / str(pid)).rmdir()

    def worker(
        self,
        pid: int,
        uss_mb: float | None = None,
        *,
        pss_mb: float | None = None,
        ready: bool = True,
        requests: int = 0,
        boot_uss_mb: float | None = None,
        lived: float = 1.0,
    ) -> WorkerHandle:
        """A worker spawned `lived` seconds before NOW; no memory file if uss_mb is None."""
        handle = WorkerHandle(pid, next(self.ages), self.channel, spawned_at=NOW - lived)
        handle.ready = ready
        handle.stats = {"requests": requests}
        if boot_uss_mb is not None:
            handle.stats["boot_uss"] = int(boot_uss_mb * MB)
        if uss_mb is not None:
            self.memory(pid, uss_mb, pss_mb)
        return handle

    def sample(self, workers: list[WorkerHandle], now: float = NOW) -> Decisions:
        """A sample and what the policy decides from it (its messages go to the log)."""
        sample = self.monitor.sample(now, workers)
        decisions = self.policy.decide(now, sample.total, sample.master, workers)
        decisions.say(self.monitor.log)
        return decisions

    def can_afford(self, workers: list[WorkerHandle]) -> bool:
        self.monitor.see(workers)
        monitor = self.monitor
        return self.policy.can_afford(monitor.latest, monitor.counted, monitor.grown, workers)

    def configure(self, cfg: config.Config) -> None:
        """A HUP's new settings."""
        self.monitor.configure(cfg)
        self.policy.configure(cfg)

    @property
    def held(self) -> int:
        """What the last sample says the processes hold, less the exits since."""
        assert self.monitor.latest is not None
        return self.monitor.latest.held

    @property
    def logged(self) -> str:
        return self.log.getvalue()


@pytest.fixture
def channel() -> Iterator[MasterChannel]:
    read_fd, write_fd = os.pipe()
    yield MasterChannel(read_fd)
    os.close(read_fd)
    os.close(write_fd)


Maker = Callable[..., Dyno]


@pytest.fixture
def make(tmp_path: Path, channel: MasterChannel) -> Iterator[Maker]:
    built: list[Dyno] = []

    def build(
        *args: str, environ: dict[str, str] | None = None, files: dict[str, str] | None = None
    ) -> Dyno:
        """``files``: more of the fake root (a cgroup tree), relative to it."""
        root = tmp_path / f"root{len(built)}"
        (root / "proc").mkdir(parents=True)
        for relative, text in (files or {}).items():
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            (root / relative).write_text(text)
        cfg = config.load(
            ["--metrics-interval", "0", *args, "app:app"], environ or {}, tmp_path, root=root
        )
        log = io.StringIO()
        lines: list[str] = []
        monitor = MemoryMonitor(
            cfg,
            ErrorLog(LogFile("-", log), "debug"),
            lambda text: lines.extend(text.splitlines()),
            {},
            root=root,
            master_pid=MASTER,
        )
        dyno = Dyno(monitor, MemoryPolicy(cfg), root / "proc", channel, log, lines)
        built.append(dyno)
        return dyno

    yield build
    for dyno in built:
        if dyno.monitor.statsd is not None:
            dyno.monitor.statsd.close()


def stopped(decisions: Decisions) -> dict[int, str]:
    return {handle.pid: reason for handle, reason in decisions.stop}


# --- the spawn guard ------------------------------------------------------------------------


def test_spawns_between_two_samples_count_the_ones_before(make: Maker) -> None:
    # 400 MB held by four workers of 100 MB: one more fits in the budget, 90% of 640 MB
    # (576 MB), two do not.
    dyno = make("--memory-quota", "640MB")
    workers = [dyno.worker(pid, 100) for pid in (11, 12, 13, 14)]
    dyno.sample(workers)
    assert dyno.held == 400 * MB
    spawned = 0
    for _ in range(3):  # three TTINs handled in one pass of the master's loop
        if not dyno.can_afford(workers):
            break
        workers.append(dyno.worker(100 + spawned))  # started: not sampled yet
        spawned += 1
    assert spawned == 1


# 500 MB needed (below): the budget, 90% of the quota, is 500.4 MB of 556 MB, 499.5 of 555.
@pytest.mark.parametrize(("quota", "affordable"), [("556MB", True), ("555MB", False)])
def test_a_worker_still_booting_when_sampled_counts_at_full_size(
    make: Maker,
    quota: str,
    affordable: bool,
) -> None:
    # 310 MB held, but the booting worker will grow from 10 MB to the 100 MB the others
    # weigh: 310 + 90 + 100 for one more.
    dyno = make("--memory-quota", quota)
    workers = [dyno.worker(pid, 100) for pid in (11, 12, 13)]
    workers.append(dyno.worker(14, 10, ready=False))
    dyno.sample(workers)
    assert dyno.held == 310 * MB
    assert dyno.can_afford(workers) is affordable


def test_a_pool_between_the_budget_and_the_quota_shrinks_once_and_stays(make: Maker) -> None:
    """Fresh workers that land over the budget but under the quota: the largest is replaced
    for the budget, and its successor, as big, is not started. Judged against the whole
    quota, it would be, and the next sample would replace the next largest, for ever."""
    dyno = make("--memory-quota", "512MB")  # budget: 460.8 MB
    dyno.memory(MASTER, 20)
    workers = [dyno.worker(11, 112), dyno.worker(12, 113), dyno.worker(13, 112)]
    workers.append(dyno.worker(14, 111))
    assert set(stopped(dyno.sample(workers))) == {12}  # 469 MB held
    largest = workers.pop(1)
    dyno.exited(largest.pid)
    dyno.monitor.forget(largest)
    assert not dyno.can_afford(workers)  # 356 MB + 113 MB > 460.8 MB
    assert stopped(dyno.sample(workers)) == {}  # 355 MB: under the budget, and stays
    assert not dyno.can_afford(workers)


def test_before_any_measured_worker_anything_is_affordable(make: Maker) -> None:
    dyno = make("--memory-quota", "1MB")
    assert dyno.can_afford([])  # no sample yet: the configured count starts
    workers = [dyno.worker(11, 100, ready=False)]
    dyno.sample(workers)
    assert dyno.can_afford(workers)  # nothing full-grown to judge by


def test_an_exit_frees_only_what_the_last_sample_counted(make: Maker) -> None:
    dyno = make("--memory-quota", "512MB")
    workers = [dyno.worker(pid, 100) for pid in (11, 12, 13, 14)]
    dyno.sample(workers)
    dyno.exited(14)  # on its way out: the next sample no longer sees it
    dyno.sample(workers)
    assert dyno.held == 300 * MB
    dyno.monitor.forget(workers.pop())  # worker 14: not in the last sample
    assert dyno.held == 300 * MB
    dyno.monitor.forget(workers.pop(0))  # worker 11: in it
    assert dyno.held == 200 * MB
    late = dyno.worker(15)  # started after the sample, exits before the next
    dyno.monitor.forget(late)
    assert dyno.held == 200 * MB


# --- per-worker limits ----------------------------------------------------------------------


def test_over_the_hard_limit_a_worker_is_stopped_at_once(make: Maker) -> None:
    dyno = make("--max-worker-memory", "100MB")  # hard: 1.5 x, 150 MB
    workers = [dyno.worker(11, 151, lived=0.5), dyno.worker(12, 149, lived=0.5)]
    assert stopped(dyno.sample(workers)) == {11: "uses 151 MB, over the hard limit 150 MB"}


def test_the_hard_limit_can_be_set_alone(make: Maker) -> None:
    dyno = make("--max-worker-memory-hard", "200MB")
    assert dyno.monitor.enabled
    workers = [dyno.worker(11, 201), dyno.worker(12, 199, requests=1000)]
    assert stopped(dyno.sample(workers)) == {11: "uses 201 MB, over the hard limit 200 MB"}


@pytest.mark.parametrize(
    ("requests", "lived", "recycled"),
    [
        (0, 1.0, False),
        (MIN_REQUESTS_FOR_RECYCLING - 1, MIN_SECONDS_FOR_RECYCLING - 1, False),
        (MIN_REQUESTS_FOR_RECYCLING, 1.0, True),
        (2, MIN_SECONDS_FOR_RECYCLING, True),  # grew in a few requests, then sat idle
    ],
)
def test_over_the_soft_limit_after_the_minimum_lifetime(
    make: Maker,
    requests: int,
    lived: float,
    recycled: bool,
) -> None:
    dyno = make("--max-worker-memory", "100MB")
    workers = [dyno.worker(11, 120, requests=requests, lived=lived)]
    expected = {11: "uses 120 MB, over max_worker_memory 100 MB"} if recycled else {}
    assert stopped(dyno.sample(workers)) == expected


def test_the_minimum_lifetime_is_requests_or_seconds() -> None:
    assert (MIN_REQUESTS_FOR_RECYCLING, MIN_SECONDS_FOR_RECYCLING) == (10, 30.0)
    assert not old_enough_to_recycle(9, 29.9)
    assert old_enough_to_recycle(10, 0.0)
    assert old_enough_to_recycle(0, 30.0)


def test_stopping_workers_are_not_stopped_again(make: Maker) -> None:
    dyno = make("--max-worker-memory", "100MB")
    worker = dyno.worker(11, 500)
    worker.stopping = True
    assert stopped(dyno.sample([worker])) == {}


# --- a limit below the app's footprint ------------------------------------------------------


def test_one_worker_over_the_limit_at_boot_turns_nothing_off(make: Maker) -> None:
    dyno = make("--max-worker-memory", "64MB", "--max-worker-memory-hard", "400MB")
    workers = [
        dyno.worker(11, 20, boot_uss_mb=70, requests=50),
        dyno.worker(12, 500, boot_uss_mb=30, requests=50),
        dyno.worker(13, 100, boot_uss_mb=30, requests=50),
    ]
    assert stopped(dyno.sample(workers)) == {
        12: "uses 500 MB, over the hard limit 400 MB",
        13: "uses 100 MB, over max_worker_memory 64 MB",
    }
    assert "footprint" not in dyno.logged


def test_every_fresh_worker_over_the_soft_limit_suspends_it_alone(make: Maker) -> None:
    dyno = make("--max-worker-memory", "64MB", "--max-worker-memory-hard", "400MB")
    workers = [
        dyno.worker(11, 100, boot_uss_mb=70, requests=50),
        dyno.worker(12, 500, boot_uss_mb=80, requests=50),
    ]
    assert stopped(dyno.sample(workers)) == {12: "uses 500 MB, over the hard limit 400 MB"}
    dyno.sample(workers)
    warnings = re.findall(r"\[WARNING\] (.*)", dyno.logged)
    assert warnings == [
        "max_worker_memory 64 MB is below the app's footprint: every fresh worker already "
        "uses 70 MB or more of private memory. Recycling at this limit is off, so that "
        "workers do not restart in a loop (the hard limit still applies); raise it and send HUP."
    ]


def test_a_hard_limit_below_the_footprint_is_suspended_too(make: Maker) -> None:
    dyno = make("--max-worker-memory", "1MB")  # hard: 1.5 MB
    workers = [dyno.worker(pid, 6, boot_uss_mb=5, requests=50) for pid in (11, 12)]
    assert stopped(dyno.sample(workers)) == {}
    assert "(the hard limit is suspended too)" in dyno.logged


def test_the_footprint_is_judged_once_every_worker_has_reported(make: Maker) -> None:
    dyno = make("--max-worker-memory", "64MB")
    workers = [
        dyno.worker(11, 90, boot_uss_mb=70, requests=50),
        dyno.worker(12, 30, ready=False),  # still booting: no boot size yet
    ]
    assert stopped(dyno.sample(workers)) == {11: "uses 90 MB, over max_worker_memory 64 MB"}
    assert "footprint" not in dyno.logged


def test_a_hup_with_new_limits_judges_them_anew(make: Maker, tmp_path: Path) -> None:
    dyno = make("--max-worker-memory", "64MB")
    workers = [dyno.worker(pid, 95, boot_uss_mb=70, requests=50) for pid in (11, 12)]
    assert stopped(dyno.sample(workers)) == {}
    assert "below the app's footprint" in dyno.logged
    raised = config.load(
        ["--metrics-interval", "0", "--max-worker-memory", "90MB", "app:app"], {}, tmp_path
    )
    dyno.configure(raised)
    assert set(stopped(dyno.sample(workers))) == {11, 12}


# --- the dyno's budget ----------------------------------------------------------------------


def test_over_the_budget_the_largest_worker_goes_first_one_at_a_time(make: Maker) -> None:
    dyno = make("--memory-quota", "512MB")  # budget: 90%, 460.8 MB
    dyno.memory(MASTER, 50)
    workers = [dyno.worker(11, 100), dyno.worker(12, 200), dyno.worker(13, 150)]
    assert stopped(dyno.sample(workers)) == {
        12: "is the largest worker (200 MB) and the dyno uses 500 MB, over 90% of the quota 512 MB"
    }
    assert stopped(dyno.sample(workers)) == {}  # the arbiter has not stopped it yet
    workers[1].stopping = True
    assert set(stopped(dyno.sample(workers))) == {13}


def test_one_worker_over_the_budget_is_reported_not_recycled(make: Maker) -> None:
    dyno = make("--memory-quota", "100MB")
    workers = [dyno.worker(11, 95)]
    for _ in range(3):
        assert stopped(dyno.sample(workers)) == {}
    assert dyno.logged.count("the app itself is too big for the dyno") == 1


# --- WEB_CONCURRENCY=auto -------------------------------------------------------------------


@pytest.mark.parametrize("auto", ["auto", "AUTO", "Auto"])
def test_auto_refines_the_count_once_from_a_worker_that_has_worked(make: Maker, auto: str) -> None:
    dyno = make("--memory-quota", "512MB", environ={"WEB_CONCURRENCY": auto})
    dyno.memory(MASTER, 20.8)
    workers = [dyno.worker(11, 50, requests=99), dyno.worker(12, 50, requests=10)]
    assert dyno.sample(workers).workers is None
    workers[0].stats["requests"] = 100
    # (0.9 x 512 - 20.8) // 50 = 8, capped at 2 x CPUs + 1
    expected = min(8, dyno.policy.cpu_cap)
    assert dyno.sample(workers).workers == expected
    assert "a worker measured 50 MB (PSS) after 100 requests" in dyno.logged
    assert dyno.sample(workers).workers is None  # once


# --- slots ----------------------------------------------------------------------------------


def slots(dyno: Dyno, workers: list[WorkerHandle]) -> dict[int, int]:
    """pid -> slot as the per-worker line shows them."""
    dyno.can_afford(workers)  # the arbiter asks before each spawn
    return {handle.pid: slot for slot, handle in dyno.monitor.slots.holders(workers)}


def test_a_replacement_takes_the_slot_of_the_worker_it_replaces(make: Maker) -> None:
    dyno = make()
    workers = [dyno.worker(pid) for pid in (11, 12, 13)]
    assert slots(dyno, workers) == {11: 1, 12: 2, 13: 3}
    crashed = workers.pop(1)
    dyno.monitor.forget(crashed)
    workers.append(dyno.worker(14))
    assert slots(dyno, workers) == {11: 1, 14: 2, 13: 3}
    workers[1].stopping = True  # 13 retires (max requests, memory): its successor starts now
    workers.append(dyno.worker(15))
    assert slots(dyno, workers) == {11: 1, 14: 2, 15: 3}  # 13 is still exiting


def test_hup_replaces_workers_slot_by_slot(make: Maker) -> None:
    dyno = make()
    old = [dyno.worker(pid) for pid in (11, 12, 13)]
    workers = list(old)
    assert slots(dyno, workers) == {11: 1, 12: 2, 13: 3}
    dyno.configure(dyno.monitor.cfg)  # HUP
    # Each successor starts while its old worker still serves; then the old one stops.
    for old_worker, new_pid in zip(old[:2], (21, 22), strict=True):
        workers.append(dyno.worker(new_pid))
        slots(dyno, workers)
        old_worker.stopping = True
    assert slots(dyno, workers) == {21: 1, 22: 2, 13: 3}


def test_hup_without_room_for_one_more_keeps_the_slots(make: Maker) -> None:
    dyno = make()
    old = [dyno.worker(pid) for pid in (11, 12, 13)]
    workers = list(old)
    slots(dyno, workers)
    dyno.configure(dyno.monitor.cfg)  # HUP
    # No room for one more: each old worker exits before its successor starts.
    for old_worker, new_pid in zip(old, (21, 22, 23), strict=True):
        old_worker.stopping = True
        dyno.monitor.forget(old_worker)
        workers.remove(old_worker)
        workers.append(dyno.worker(new_pid))
        slots(dyno, workers)
    assert slots(dyno, workers) == {21: 1, 22: 2, 23: 3}


def test_hup_slots_when_the_monitor_sees_successors_late(make: Maker) -> None:
    # Slots are given when the monitor is next shown the workers: by then the old worker
    # a successor replaced may have exited already. Slot 2's worker is the youngest, so
    # HUP replaces slot 1, then 3, then 2.
    dyno = make()
    workers = [dyno.worker(pid) for pid in (11, 12, 13)]
    slots(dyno, workers)
    dyno.monitor.forget(workers.pop(1))
    workers.append(dyno.worker(14))
    assert slots(dyno, workers) == {11: 1, 14: 2, 13: 3}
    dyno.configure(dyno.monitor.cfg)  # HUP
    for old_pid, new_pid in ((11, 21), (13, 22), (14, 23)):
        dyno.can_afford(workers)  # the arbiter asks before each spawn
        workers.append(dyno.worker(new_pid))
        old = next(h for h in workers if h.pid == old_pid)
        dyno.monitor.forget(old)
        workers.remove(old)
    assert slots(dyno, workers) == {21: 1, 22: 3, 23: 2}


def test_a_hup_after_a_ttou_does_not_reuse_the_freed_number(make: Maker) -> None:
    dyno = make()
    workers = [dyno.worker(pid) for pid in (11, 12, 13)]
    slots(dyno, workers)
    dyno.monitor.forget(workers.pop())  # TTOU: slot 3 is gone
    dyno.configure(dyno.monitor.cfg)  # HUP
    workers.append(dyno.worker(21))  # starts while worker 11 still serves
    assert slots(dyno, workers)[21] == 1


def test_ttin_adds_a_slot_and_ttou_frees_one(make: Maker) -> None:
    dyno = make()
    workers = [dyno.worker(pid) for pid in (11, 12)]
    workers.append(dyno.worker(13))  # TTIN
    assert slots(dyno, workers) == {11: 1, 12: 2, 13: 3}
    workers[0].stopping = True  # TTOU stops the oldest
    dyno.monitor.forget(workers.pop(0))
    assert slots(dyno, workers) == {12: 2, 13: 3}
    workers.append(dyno.worker(14))  # TTIN again
    assert slots(dyno, workers) == {14: 1, 12: 2, 13: 3}


def test_the_workers_line_numbers_workers_by_slot(make: Maker) -> None:
    dyno = make("--metrics-interval", "5")
    workers = [dyno.worker(11, 10), dyno.worker(12, 20)]
    dyno.monitor.begin(NOW - 5)
    dyno.sample(workers)
    dyno.monitor.forget(workers.pop(0))
    workers.insert(0, dyno.worker(13, 30))
    dyno.sample(workers, NOW + 5)
    first, second = [line for line in dyno.lines if "sample#workers=" in line]
    assert "sample#worker.1.pid=11 " in first and "sample#worker.2.pid=12 " in first
    assert "sample#worker.1.pid=13 sample#worker.1.rss=31.00MB" in second
    assert "sample#worker.2.pid=12 " in second


# --- R14 ------------------------------------------------------------------------------------


def dyno_cgroup(rss_mb: int, cache_mb: int, swap_mb: int, pids: list[int]) -> dict[str, str]:
    """A cgroup v1 memory cgroup holding only ``pids``, with these figures in memory.stat."""
    return {
        "proc/self/cgroup": "4:memory:/dyno\n0::/\n",
        "proc/self/mountinfo": (
            "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
            "35 22 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
        ),
        "sys/fs/cgroup/memory/dyno/memory.stat": (
            f"total_rss {rss_mb * MB}\ntotal_cache {cache_mb * MB}\ntotal_swap {swap_mb * MB}\n"
        ),
        "sys/fs/cgroup/memory/dyno/cgroup.procs": "".join(f"{pid}\n" for pid in pids),
    }


def test_page_cache_is_in_memory_total_but_not_in_r14(make: Maker) -> None:
    # Small processes in a dyno whose files filled the page cache: Heroku counts rss + swap
    # for R14, "cache is not included".
    files = dyno_cgroup(rss_mb=21, cache_mb=332, swap_mb=0, pids=[MASTER, 11])
    dyno = make("--metrics-interval", "5", "--memory-quota", "24MB", files=files)
    dyno.monitor.begin(NOW - 5)
    dyno.sample([dyno.worker(11, 10)])
    memory = next(line for line in dyno.lines if "sample#memory_total=" in line)
    assert "sample#memory_total=353.00MB sample#memory_rss=21.00MB" in memory
    assert "sample#memory_cache=332.00MB" in memory
    assert not any("R14" in line or "Process running" in line for line in dyno.lines)


def test_r14_counts_rss_and_swap(make: Maker) -> None:
    files = dyno_cgroup(rss_mb=500, cache_mb=300, swap_mb=90, pids=[MASTER, 11])
    dyno = make("--metrics-interval", "5", "--memory-quota", "512MB", files=files)
    dyno.monitor.begin(NOW - 5)
    dyno.sample([dyno.worker(11, 10)])
    index = next(i for i, line in enumerate(dyno.lines) if "sample#memory_total=" in line)
    # 590 MB of 512: Heroku's own example figures.
    assert dyno.lines[index + 1 : index + 3] == [
        "Process running mem=590M(115.2%)",
        "Error R14 (Memory quota exceeded)",
    ]


# --- requests per second --------------------------------------------------------------------


def test_the_first_line_counts_requests_from_the_start(make: Maker) -> None:
    dyno = make("--metrics-interval", "5")
    dyno.monitor.begin(NOW - 5)
    workers = [dyno.worker(11, 10, requests=30), dyno.worker(12, 10, requests=20)]
    dyno.sample(workers)
    assert "sample#requests_per_sec=10.00" in dyno.lines[-1]


def test_requests_of_a_worker_that_exited_still_count(make: Maker) -> None:
    dyno = make("--metrics-interval", "5")
    dyno.monitor.begin(NOW - 5)
    workers = [dyno.worker(11, 10, requests=30), dyno.worker(12, 10, requests=20)]
    dyno.sample(workers)
    workers[0].stats["requests"] = 45  # its last report: 15 more, then it exits
    dyno.monitor.forget(workers.pop(0))
    workers[0].stats["requests"] = 30  # 10 more
    workers.append(dyno.worker(13, 10, requests=25))  # its successor: 25
    dyno.sample(workers, NOW + 5)
    assert "sample#requests_per_sec=10.00" in dyno.lines[-1]  # (15 + 10 + 25) / 5 s


# --- StatsD ---------------------------------------------------------------------------------


def test_gauges_by_slot_and_log_counters(make: Maker, statsd_server: socket.socket) -> None:
    dyno = make("--statsd-host", f"127.0.0.1:{statsd_server.getsockname()[1]}")
    workers = [dyno.worker(11, 10), dyno.worker(12, 20)]
    dyno.sample(workers)
    dyno.monitor.log.error("a worker fell over")
    received = [statsd_server.recv(65536).decode() for _ in range(7)]
    assert received == [
        "gunicorn.workers:2|g",
        "memory.total_mb:30|g",
        "memory.worker.1.pss_mb:10|g",
        "memory.worker.1.uss_mb:10|g",
        "memory.worker.2.pss_mb:20|g",
        "memory.worker.2.uss_mb:20|g",
        "gunicorn.log.error:1|c",
    ]


def test_a_statsd_that_cannot_start_is_logged_once(make: Maker, tmp_path: Path) -> None:
    missing = tmp_path / "no-agent-here.sock"
    first = make("--statsd-host", f"unix:{missing}")
    assert re.findall(r"\[WARNING\] (.*)", first.logged) == [
        f"StatsD at {missing} unavailable, metrics off: [Errno 2] No such file or directory"
    ]
    assert first.monitor.log.statsd is None
    again = make("--statsd-host", f"unix:{missing}")  # as a worker does after the fork
    assert "StatsD" not in again.logged
