"""Every worker death explained, on the real server in a real memory cgroup: the kernel's OOM
killer is told apart from a SIGKILL sent by another process by the cgroup's OOM-kill count
(memory.oom_control on cgroup v1, memory.events on v2)."""

from __future__ import annotations

import os
import re
import signal

import pytest
import requests

import cgroups
from clients import get, poll
from server import Server, running

MB = 1 << 20
LIMIT = 200 * MB
# The master's last sample of the worker, as the monitor words it (monitor.last_seen).
LAST_SAMPLE = r"last sample: USS [\d.]+ MB, PSS [\d.]+ MB, RSS [\d.]+ MB"
SAMPLES = ["--metrics-interval", "1", "--access-logfile", "/dev/null"]

needs_cgroup = pytest.mark.skipif(
    not cgroups.can_create(),
    reason="cannot create a memory cgroup here (no writable cgroup v1 memory or v2 hierarchy)",
)


def oom_kills(cgroup: os.PathLike[str]) -> int:
    """The cgroup's own count, read by the test the way the kernel writes it."""
    for name in ("memory.oom_control", "memory.events"):
        path = os.path.join(cgroup, name)
        if os.path.exists(path):
            with open(path) as file:
                found = re.search(r"^oom_kill (\d+)$", file.read(), re.MULTILINE)
            assert found, path
            return int(found[1])
    raise AssertionError(f"no OOM-kill count in {cgroup}")


def sampled(srv: Server, pid: int) -> None:
    """Until the master has measured worker `pid` (its memory goes into the death line)."""
    srv.wait_for(rf"sample#worker\.\d+\.pid={pid} ", stdout=True)


def new_worker_answers(srv: Server, victim: int) -> None:
    poll(
        lambda: [p for p in srv.worker_pids() if p != victim],
        20,
        "a worker to replace the one that died",
    )
    answer = get(srv, "/", timeout=20)
    assert answer.status_code == 200 and int(answer.text) != victim


@needs_cgroup
def test_a_worker_the_oom_killer_kills_is_named_with_its_memory_and_replaced() -> None:
    # A dyno of 200 MB; one request makes the worker take 400 MB more, all written: the
    # kernel's OOM killer kills it (it is by far the largest process in the cgroup).
    with running(["-w", "1", *SAMPLES, "memory_apps:hog"], cgroup_limit=LIMIT) as srv:
        assert srv.cgroup is not None
        before = oom_kills(srv.cgroup)
        victim = srv.worker_pids()[0]
        sampled(srv, victim)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{srv.port}/", params={"mb": "400"}, timeout=30)
        srv.wait_for(
            rf"\[ERROR\] Worker \(pid:{victim}\) was sent SIGKILL! It was killed by the "
            rf"kernel's OOM killer \({LAST_SAMPLE}\)$"
        )
        assert oom_kills(srv.cgroup) == before + 1
        new_worker_answers(srv, victim)
    assert "another process" not in srv.log and "Perhaps out of memory" not in srv.log


@needs_cgroup
def test_a_sigkill_from_another_process_is_not_blamed_on_memory() -> None:
    with running(["-w", "2", *SAMPLES, "memory_apps:hog"], workers=2) as srv:
        assert srv.cgroup is not None
        victim = srv.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)  # the test is the other process
        srv.wait_for(
            rf"\[ERROR\] Worker \(pid:{victim}\) was sent SIGKILL! It was sent by another "
            r"process: not by the master, and not by the kernel's OOM killer"
        )
        assert oom_kills(srv.cgroup) == 0
        new_worker_answers(srv, victim)
    assert "It was killed by the kernel's OOM killer" not in srv.log
