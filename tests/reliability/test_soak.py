"""Soak: ten minutes of steady load on a leaking app, within a dyno's memory quota.

`make soak` runs this (SOAK=1). The app keeps 1 MB per request; `--max-worker-memory 64MB`
recycles its workers over and over. Every request must succeed, every memory sample of the
runtime-metrics lines must stay under the 256 MB quota, and those lines must show the
workers being replaced (their pids change). SOAK_SECONDS shortens or lengthens the run.
"""

from __future__ import annotations

import os
import re
import time

import pytest

from reliability.harness import Load, report
from server import REPO, running

QUOTA_MB = 256
INTERVAL = 5


@pytest.mark.soak
def test_leaking_app_for_ten_minutes_within_the_quota() -> None:
    seconds = float(os.environ.get("SOAK_SECONDS", "600"))
    args = [
        "-w",
        "2",
        "--memory-quota",
        f"{QUOTA_MB}MB",
        "--max-worker-memory",
        "64MB",
        "--metrics-interval",
        str(INTERVAL),
        "--access-logfile",
        "/dev/null",
        "leaky:app",
    ]
    with running(args, workers=2, env={"DYNO": "web.1"}, cwd=REPO / "examples") as srv:
        # Two clients, each at most ~40 requests a second: steady, and bounded on a shared box.
        with Load(
            srv.port, "/", threads=2, pause=0.025, bound=seconds + 60, keep_bodies=False
        ) as load:
            started = time.monotonic()
            next_progress = started + 60
            while time.monotonic() - started < seconds:
                time.sleep(1)  # the soak's duration: time passing is the point
                if time.monotonic() >= next_progress:
                    next_progress += 60
                    print(f"soak {time.monotonic() - started:.0f}s: {load.summary()}", flush=True)
        lines = list(srv.stdout_lines)
        log = srv.log
    totals = [
        float(m.group(1))
        for line in lines
        if (m := re.search(r"sample#memory_total=(\S+)MB", line))
    ]
    worker_pids = {
        int(pid) for line in lines for pid in re.findall(r"sample#worker\.\d+\.pid=(\d+)", line)
    }
    recycles = log.count("over max_worker_memory")
    r14 = sum("Error R14" in line for line in lines)
    report(
        f"soak: leaky app {seconds:.0f}s, quota {QUOTA_MB}MB, max-worker-memory 64MB",
        load.sent,
        load.failed,
        "0; memory_total < quota; pids change",
        f"{load.summary()}; {len(totals)} memory samples, max {max(totals, default=0):.1f} MB; "
        f"{len(worker_pids)} worker pids in the metrics lines; {recycles} memory recycles; "
        f"R14 lines {r14}",
    )
    assert load.failed == 0, load.outcomes.failures[:5]
    assert load.ok > 0
    assert len(totals) >= seconds / INTERVAL * 0.8
    assert max(totals) < QUOTA_MB, totals
    assert r14 == 0
    assert len(worker_pids) > 2 and recycles > 0
