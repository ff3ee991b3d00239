"""What the master makes of a worker's end: the decisions of worker_exits.py, from real wait
statuses (a child that exits with a code, or dies of a signal)."""

from __future__ import annotations

import faulthandler
import os
import signal
from collections.abc import Iterator
from io import StringIO
from pathlib import Path

import pytest

from dynocorn.channel import MasterChannel
from dynocorn.logs import ErrorLog, LogFile
from dynocorn.worker_exits import (
    APP_LOAD_ERROR,
    CRASH_WINDOW,
    MAX_SPAWN_DELAY,
    WORKER_BOOT_ERROR,
    DeathReporter,
    ExitCause,
    judge_exit,
    next_spawn_delay,
)
from dynocorn.worker_handle import WorkerHandle


def status_of(exit_code: int | None = None, sig: int | None = None) -> int:
    """A real child's wait status: it exits with `exit_code`, or dies of `sig`."""
    pid = os.fork()
    if pid == 0:
        try:
            if sig is not None:
                faulthandler.disable()  # pytest's, which would report a SIGSEGV and go on
                if sig != signal.SIGKILL:
                    signal.signal(sig, signal.SIG_DFL)
                os.kill(os.getpid(), sig)
        finally:
            os._exit(exit_code or 0)  # never back into pytest
    _, status = os.waitpid(pid, 0)
    return status


@pytest.fixture
def handle() -> Iterator[WorkerHandle]:
    read_fd, write_fd = os.pipe()
    yield WorkerHandle(4242, 1, MasterChannel(read_fd), spawned_at=0.0)
    os.close(read_fd)
    os.close(write_fd)


@pytest.mark.parametrize(
    ("code", "reason"),
    [(WORKER_BOOT_ERROR, "Worker failed to boot."), (APP_LOAD_ERROR, "App failed to load.")],
)
def test_a_boot_or_app_error_stops_the_server_unless_it_is_stopping(
    handle: WorkerHandle, code: int, reason: str
) -> None:
    status = status_of(code)
    assert judge_exit(handle, status, stopping=False, lived=1.0).halt == (reason, code)
    for verdict in (
        judge_exit(handle, status, stopping=True, lived=1.0),
        judge_exit(handle, status, stopping=False, lived=1.0, reloading=True),  # a mistake
    ):
        assert verdict.halt is None
        assert verdict.errors == [f"Worker (pid:4242) exited with code {code}"]


def test_a_clean_exit_is_no_crash_and_resets_the_backoff(handle: WorkerHandle) -> None:
    verdict = judge_exit(handle, status_of(0), stopping=False, lived=0.1)
    assert (verdict.errors, verdict.crashed) == ([], False)
    assert next_spawn_delay(verdict, 3.2) == 0.0


def test_an_early_crash_doubles_the_delay_up_to_its_most(handle: WorkerHandle) -> None:
    verdict = judge_exit(handle, status_of(1), stopping=False, lived=CRASH_WINDOW / 2)
    assert verdict.errors == ["Worker (pid:4242) exited with code 1"]
    assert (verdict.crashed, verdict.crashed_early) == (True, True)
    assert next_spawn_delay(verdict, 0.0) == 0.1
    assert next_spawn_delay(verdict, 0.4) == 0.8
    assert next_spawn_delay(verdict, MAX_SPAWN_DELAY) == MAX_SPAWN_DELAY


def test_a_late_crash_keeps_the_delay(handle: WorkerHandle) -> None:
    verdict = judge_exit(handle, status_of(1), stopping=False, lived=CRASH_WINDOW * 2)
    assert (verdict.crashed, verdict.crashed_early) == (True, False)
    assert next_spawn_delay(verdict, 0.8) == 0.8


def test_a_worker_ended_by_its_timeout_is_no_crash(handle: WorkerHandle) -> None:
    """The master's SIGABRT ends it (exit 1): asked for, so no crash-loop backoff, however
    young the worker (a --timeout 2 kills one within the crash window)."""
    handle.aborted_at, handle.stop_cause = 10.0, ExitCause.TIMEOUT
    verdict = judge_exit(handle, status_of(1), stopping=False, lived=CRASH_WINDOW / 2)
    assert verdict.errors == ["Worker (pid:4242) exited with code 1"]
    assert (verdict.cause, verdict.crashed, verdict.crashed_early) == (
        ExitCause.TIMEOUT,
        False,
        False,
    )
    assert next_spawn_delay(verdict, 0.8) == 0.0


def test_a_sigkill_from_the_oom_killer_says_so_with_the_last_memory(
    handle: WorkerHandle,
) -> None:
    status = status_of(sig=signal.SIGKILL)
    verdict = judge_exit(
        handle, status, stopping=False, lived=60.0, oom_killed=True, memory="last sample: X"
    )
    assert verdict.errors == [
        "Worker (pid:4242) was sent SIGKILL! It was killed by the kernel's OOM killer "
        "(last sample: X)"
    ]
    assert (verdict.cause, verdict.crashed) == (ExitCause.OOM, True)


def test_a_sigkill_from_another_process_says_so(handle: WorkerHandle) -> None:
    status = status_of(sig=signal.SIGKILL)
    verdict = judge_exit(handle, status, stopping=False, lived=60.0, oom_killed=False)
    assert len(verdict.errors) == 1
    assert verdict.errors[0].startswith(
        "Worker (pid:4242) was sent SIGKILL! It was sent by another process"
    )
    assert (verdict.cause, verdict.crashed) == (ExitCause.KILLED, True)


def test_a_sigkill_with_no_count_to_read_is_unknown_with_the_memory(
    handle: WorkerHandle,
) -> None:
    status = status_of(sig=signal.SIGKILL)
    verdict = judge_exit(handle, status, stopping=False, lived=60.0, memory="last sample: X")
    assert verdict.errors == [
        "Worker (pid:4242) was sent SIGKILL! Perhaps out of memory? The cause is unknown: "
        "the master did not send it, and no cgroup OOM-kill count can be read "
        "(last sample: X)"
    ]
    assert verdict.cause is ExitCause.KILLED


def test_our_sigkill_after_a_timeout_names_the_timeout(handle: WorkerHandle) -> None:
    handle.aborted_at, handle.stop_cause, handle.killed = 10.0, ExitCause.TIMEOUT, True
    verdict = judge_exit(
        handle, status_of(sig=signal.SIGKILL), stopping=False, lived=60.0, oom_killed=True
    )
    assert verdict.errors == [
        "Worker (pid:4242) was sent SIGKILL by the master: still running 2s after the "
        "SIGABRT of its WORKER TIMEOUT"
    ]
    assert verdict.cause is ExitCause.TIMEOUT


def test_our_sigkill_after_graceful_timeout_keeps_the_cause_it_left_for(
    handle: WorkerHandle,
) -> None:
    handle.leaving(ExitCause.MEMORY, now=5.0)  # over the memory limit: TERM, then overdue
    handle.killed = handle.overstayed = True
    # Reaped once the server has begun to stop, it is still the limit it overstayed.
    for stopping in (False, True):
        verdict = judge_exit(handle, status_of(sig=signal.SIGKILL), stopping, lived=60.0)
        assert verdict.errors == [
            "Worker (pid:4242) was sent SIGKILL by the master: still running graceful_timeout "
            "after it began to leave (memory)"
        ]
        assert (verdict.cause, verdict.crashed) == (ExitCause.MEMORY, False)


def test_our_sigkill_at_the_end_of_a_stop_is_a_stop(handle: WorkerHandle) -> None:
    handle.stopping = handle.killed = True  # TERM to all, then the deadline
    verdict = judge_exit(handle, status_of(sig=signal.SIGKILL), stopping=True, lived=60.0)
    assert verdict.errors == [
        "Worker (pid:4242) was sent SIGKILL by the master: still running at the end of the "
        "server's stop (graceful_timeout, or sooner on INT, QUIT or a halt)"
    ]
    assert verdict.cause is ExitCause.STOPPED


def test_a_term_we_asked_for_is_quiet_and_no_crash(handle: WorkerHandle) -> None:
    handle.leaving(ExitCause.STOPPED, now=5.0)
    verdict = judge_exit(handle, status_of(sig=signal.SIGTERM), stopping=False, lived=60.0)
    assert (verdict.errors, verdict.crashed, verdict.cause) == ([], False, ExitCause.STOPPED)


def test_a_term_from_another_process_is_named(handle: WorkerHandle) -> None:
    verdict = judge_exit(handle, status_of(sig=signal.SIGTERM), stopping=False, lived=60.0)
    assert verdict.errors == ["Worker (pid:4242) was sent SIGTERM!"]
    assert verdict.cause is ExitCause.KILLED


def test_a_fault_signal_is_named_and_a_crash(handle: WorkerHandle) -> None:
    verdict = judge_exit(handle, status_of(sig=signal.SIGSEGV), stopping=False, lived=60.0)
    assert verdict.errors == ["Worker (pid:4242) was sent SIGSEGV!"]
    assert verdict.crashed and verdict.cause is ExitCause.CRASH


@pytest.mark.parametrize(
    "cause", [ExitCause.MAX_REQUESTS, ExitCause.LIFETIME, ExitCause.MEMORY, ExitCause.TIMEOUT]
)
def test_a_retired_worker_exits_with_the_cause_it_gave(
    handle: WorkerHandle, cause: ExitCause
) -> None:
    handle.leaving(ExitCause.of_retirement(cause.value), now=5.0)
    verdict = judge_exit(handle, status_of(0), stopping=False, lived=60.0)
    assert (verdict.cause, verdict.errors, verdict.warnings) == (cause, [], [])


def test_exits_during_a_stop_are_stops_and_codes_are_logged(handle: WorkerHandle) -> None:
    for status in (status_of(0), status_of(1)):
        verdict = judge_exit(handle, status, stopping=True, lived=60.0)
        assert (verdict.cause, verdict.crashed) == (ExitCause.STOPPED, False)
    assert verdict.errors == ["Worker (pid:4242) exited with code 1"]


def test_an_unasked_clean_exit_is_a_warning_and_counted_as_killed(
    handle: WorkerHandle,
) -> None:
    verdict = judge_exit(handle, status_of(0), stopping=False, lived=60.0)
    assert verdict.warnings == [
        "Worker (pid:4242) exited cleanly, unasked by the master: a signal from another process?"
    ]
    assert (verdict.cause, verdict.errors, verdict.crashed) == (ExitCause.KILLED, [], False)


def test_a_crash_is_a_crash(handle: WorkerHandle) -> None:
    assert judge_exit(handle, status_of(1), stopping=False, lived=60.0).cause is ExitCause.CRASH
    boot = judge_exit(handle, status_of(WORKER_BOOT_ERROR), stopping=False, lived=1.0)
    assert boot.cause is ExitCause.CRASH


def test_the_values_are_the_metrics_names() -> None:
    assert {cause.name: cause.value for cause in ExitCause} == {
        "MAX_REQUESTS": "max_requests",
        "LIFETIME": "lifetime",
        "MEMORY": "memory",
        "TIMEOUT": "timeout",
        "CRASH": "crash",
        "OOM": "oom",
        "KILLED": "killed",
        "STOPPED": "stopped",
    }


# --- DeathReporter: the OOM-kill count of a cgroup (a fake tree) ------------------------


def write_oom_kills(directory: Path, count: int) -> None:
    (directory / "memory.oom_control").write_text(
        f"oom_kill_disable 0\nunder_oom 0\noom_kill {count}\n"
    )


def reporter(tmp_path: Path, cgroup: tuple[Path, str] | None) -> tuple[DeathReporter, StringIO]:
    stream = StringIO()
    log = ErrorLog(LogFile("-", stream))
    return DeathReporter(log, cgroup, lambda handle: f"last sample of {handle.pid}"), stream


def foreign_kill(pid: int) -> tuple[WorkerHandle, int]:
    read_fd, write_fd = os.pipe()
    channel = MasterChannel(read_fd)  # never read: the reporter looks at the status alone
    os.close(read_fd)
    os.close(write_fd)
    return WorkerHandle(pid, 1, channel, 0.0), status_of(sig=signal.SIGKILL)


def test_a_rise_of_the_count_is_the_oom_killer_one_kill_per_worker(tmp_path: Path) -> None:
    write_oom_kills(tmp_path, 3)  # before the server started: not ours to explain
    deaths, stream = reporter(tmp_path, (tmp_path, "cgroup v1"))
    write_oom_kills(tmp_path, 5)  # two workers killed together, reaped one after the other
    causes = [deaths.report(*foreign_kill(pid), False, False).cause for pid in (1, 2, 3)]
    assert causes == [ExitCause.OOM, ExitCause.OOM, ExitCause.KILLED]
    lines = stream.getvalue().splitlines()
    assert "Worker (pid:1) was sent SIGKILL! It was killed by the kernel's OOM killer" in lines[0]
    assert lines[1].endswith("OOM killer (last sample of 2)")
    assert "(pid:3) was sent SIGKILL! It was sent by another process" in lines[2]


def test_no_cgroup_leaves_the_cause_unknown(tmp_path: Path) -> None:
    deaths, stream = reporter(tmp_path, None)
    assert deaths.report(*foreign_kill(7), False, False).cause is ExitCause.KILLED
    assert "Perhaps out of memory? The cause is unknown" in stream.getvalue()
    assert "(last sample of 7)" in stream.getvalue()


def test_only_a_foreign_sigkill_reads_the_count(tmp_path: Path) -> None:
    """A clean exit reaped between an OOM kill and its victim does not take the rise in."""
    write_oom_kills(tmp_path, 0)
    deaths, _ = reporter(tmp_path, (tmp_path, "cgroup v1"))
    write_oom_kills(tmp_path, 1)
    handle, _ = foreign_kill(8)
    handle.leaving(ExitCause.MAX_REQUESTS, now=1.0)
    assert deaths.report(handle, status_of(0), False, False).cause is ExitCause.MAX_REQUESTS
    assert deaths.report(*foreign_kill(9), False, False).cause is ExitCause.OOM
