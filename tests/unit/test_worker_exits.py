"""What the master makes of a worker's end: the decisions of worker_exits.py, from real wait
statuses (a child that exits with a code, or dies of a signal)."""

from __future__ import annotations

import faulthandler
import os
import signal
from collections.abc import Iterator

import pytest

from dynocorn.channel import MasterChannel
from dynocorn.worker_exits import (
    APP_LOAD_ERROR,
    CRASH_WINDOW,
    MAX_SPAWN_DELAY,
    WORKER_BOOT_ERROR,
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


def test_a_sigkill_we_did_not_send_is_blamed_on_memory(handle: WorkerHandle) -> None:
    verdict = judge_exit(handle, status_of(sig=signal.SIGKILL), stopping=False, lived=60.0)
    assert verdict.errors == ["Worker (pid:4242) was sent SIGKILL! Perhaps out of memory?"]
    assert verdict.killed_from_outside and verdict.crashed
    handle.killed = True  # ours (a timeout, or the end of graceful_timeout): nothing to say
    ours = judge_exit(handle, status_of(sig=signal.SIGKILL), stopping=False, lived=60.0)
    assert (ours.errors, ours.killed_from_outside) == ([], False)


def test_a_term_we_asked_for_is_quiet_and_no_crash(handle: WorkerHandle) -> None:
    handle.stopping = True
    verdict = judge_exit(handle, status_of(sig=signal.SIGTERM), stopping=False, lived=60.0)
    assert (verdict.errors, verdict.crashed) == ([], False)


def test_another_signal_is_named(handle: WorkerHandle) -> None:
    verdict = judge_exit(handle, status_of(sig=signal.SIGSEGV), stopping=False, lived=60.0)
    assert verdict.errors == ["Worker (pid:4242) was sent SIGSEGV!"]
    assert verdict.crashed
