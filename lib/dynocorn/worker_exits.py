"""A worker's life as the master sees it begin and end: what runs in the forked child, the
exit codes a worker uses to say why it stopped, and what the master makes of a worker's wait
status (why it ended, as an ExitCause and in words for the log, which deaths stop the server,
which count towards the crash-loop backoff). Deciding is kept apart from doing, so each rule
is a function a test can call.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from dynocorn import apploader
from dynocorn.exit_cause import ExitCause as ExitCause  # re-exported: the metrics import it
from dynocorn.metrics.memory import read_oom_kills

if TYPE_CHECKING:
    from dynocorn.config import Config
    from dynocorn.logs import ErrorLog
    from dynocorn.worker_handle import WorkerHandle
    from dynocorn.workers.base import Worker

# Exit codes a worker uses to stop the whole server (gunicorn's): the app cannot be imported,
# or imports but is not a usable WSGI callable. Restarting the worker could not help.
WORKER_BOOT_ERROR = 3
APP_LOAD_ERROR = 4
# dynocorn's own: the app is ASGI and the class WSGI, or the reverse. The server stops with
# exit code 1, a configuration error, as --check-config and --preload say it.
APP_KIND_MISMATCH = 5
# A worker that dies this soon after it was spawned counts towards the crash-loop backoff.
CRASH_WINDOW = 5.0
MAX_SPAWN_DELAY = 5.0


def run_in_child(
    server: Any, worker: Worker, cfg: Config, log: ErrorLog, become_worker: Callable[[], None]
) -> NoReturn:
    """In the forked child: leave the master behind, run the worker, exit with its status.
    `server` is what the hooks get as their first argument (the arbiter)."""
    status = 0
    try:
        become_worker()
        worker.pid = os.getpid()
        log.info(f"Booting worker with pid: {worker.pid}")
        cfg.post_fork(server, worker)
        worker.init_process()
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
        if status and (not worker.booted or not isinstance(exit_.code, int)):
            # Python would print sys.exit("message"), which os._exit below drops; and a
            # worker that exits as it boots (an app checking its settings at import)
            # crash-loops with nothing else to go on. With the stack: where it was called.
            log.exception(f"Worker exiting by sys.exit({exit_.code!r})")
    except apploader.AppImportError:
        log.exception("Exception in worker process")
        status = WORKER_BOOT_ERROR
    except apploader.AppInterfaceError as error:
        log.error(str(error))
        status = APP_KIND_MISMATCH
    except apploader.AppLoadError as error:
        log.error(str(error))
        status = APP_LOAD_ERROR
    except BaseException:
        log.exception("Exception in worker process")
        status = 1
    finally:
        log.info(f"Worker exiting (pid: {worker.pid})")
        try:
            cfg.worker_exit(server, worker)
        except Exception:
            log.exception("worker_exit hook failed")
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status)


class HaltServer(Exception):
    """The server must stop: the arbiter's loop ends, and the process exits `exit_status`."""

    def __init__(self, reason: str, exit_status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_status = exit_status


# After SIGABRT on timeout, how long the worker gets to answer its client before SIGKILL.
ABORT_GRACE = 2.0
# Signals a process gets from its own faults (or from abort()): a crash, whoever is to blame.
FAULT_SIGNALS = frozenset(
    {
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGFPE,
        signal.SIGILL,
        signal.SIGABRT,
        signal.SIGSYS,
        signal.SIGTRAP,
    }
)


@dataclass
class ExitVerdict:
    """What a worker's end means for the server."""

    cause: ExitCause  # why it ended, for the metrics (recycles by cause)
    halt: tuple[str, int] | None = None  # stop the server: (reason, exit status)
    errors: list[str] = field(default_factory=list)  # lines for the error log
    warnings: list[str] = field(default_factory=list)  # and lines to log as warnings
    crashed: bool = False  # an unplanned death (not asked for, not a clean exit)
    crashed_early: bool = False  # and within CRASH_WINDOW of its start: a crash loop, maybe


def killed_by_another(handle: WorkerHandle, status: int) -> bool:
    """Whether a SIGKILL the master did not send ended the worker."""
    return os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL and not handle.killed


def judge_exit(
    handle: WorkerHandle,
    status: int,
    stopping: bool,
    lived: float,
    reloading: bool = False,
    *,
    oom_killed: bool | None = None,
    memory: str = "no memory sample yet",
) -> ExitVerdict:
    """From a worker's wait status: why it ended, whether the server must stop, what to
    log, whether the worker crashed. `stopping`: the whole server is stopping (nothing is a
    crash then); `lived`: seconds since it was spawned; `reloading`: --reload is on, where
    code that does not load is a mistake being fixed, not a reason to stop (the worker
    crashed: the old ones serve on, and the next save reloads). For a SIGKILL the master
    did not send: `oom_killed`, whether the cgroup's OOM-kill count rose (None: no count to
    read), and `memory`, the worker's last memory sample, to log with it."""
    # What the master asked for or the worker said; the server's stop covers the rest.
    planned = handle.stop_cause or (ExitCause.STOPPED if handle.stopping or stopping else None)
    pid = handle.pid
    if os.WIFEXITED(status):
        verdict = judge_code(
            pid, os.WEXITSTATUS(status), planned, halts=not (stopping or reloading)
        )
    elif killed_by_another(handle, status):
        verdict = judge_foreign_kill(pid, oom_killed, memory)
    else:
        verdict = judge_signal(handle, os.WTERMSIG(status), planned, stopping)
    clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    # Whatever the master asked for (a stop, a recycle, the SIGABRT of a timeout) is no crash.
    verdict.crashed = planned is None and not clean
    verdict.crashed_early = verdict.crashed and lived < CRASH_WINDOW
    return verdict


def judge_code(pid: int, code: int, planned: ExitCause | None, halts: bool) -> ExitVerdict:
    """An exit with a code. Unasked, a clean one (0) was a signal from another process,
    most likely (Heroku's TERM to every process, a Ctrl-C's INT, an operator's `kill`):
    that is what ends a worker cleanly; any other code is a crash."""
    if planned is None and code == 0:
        line = (
            f"Worker (pid:{pid}) exited cleanly, unasked by the master: "
            "a signal from another process?"
        )
        return ExitVerdict(ExitCause.KILLED, warnings=[line])
    verdict = ExitVerdict(planned or ExitCause.CRASH)
    if code == WORKER_BOOT_ERROR and halts:
        verdict.halt = ("Worker failed to boot.", WORKER_BOOT_ERROR)
    elif code == APP_LOAD_ERROR and halts:
        verdict.halt = ("App failed to load.", APP_LOAD_ERROR)
    elif code == APP_KIND_MISMATCH and halts:
        verdict.halt = ("The app and the worker class do not match.", 1)
    elif code != 0:
        verdict.errors.append(f"Worker (pid:{pid}) exited with code {code}")
    return verdict


def judge_foreign_kill(pid: int, oom_killed: bool | None, memory: str) -> ExitVerdict:
    """A SIGKILL the master did not send. gunicorn's words lead every such line (`was sent
    SIGKILL!` is what its users grep for); what follows says who sent it."""
    said = f"Worker (pid:{pid}) was sent SIGKILL!"
    if oom_killed:
        line = f"{said} It was killed by the kernel's OOM killer ({memory})"
        return ExitVerdict(ExitCause.OOM, errors=[line])
    if oom_killed is None:
        line = (
            f"{said} Perhaps out of memory? The cause is unknown: the master did not send "
            f"it, and no cgroup OOM-kill count can be read ({memory})"
        )
    else:
        line = (
            f"{said} It was sent by another process: not by the master, and not by the "
            f"kernel's OOM killer (the cgroup's OOM-kill count did not rise; {memory})"
        )
    return ExitVerdict(ExitCause.KILLED, errors=[line])


def judge_signal(
    handle: WorkerHandle, sig: int, planned: ExitCause | None, stopping: bool
) -> ExitVerdict:
    """Death by a signal, other than a SIGKILL from another process."""
    pid = handle.pid
    if handle.killed:  # our SIGKILL: say which limit ran out
        verdict = ExitVerdict(planned or ExitCause.STOPPED)
        said = f"Worker (pid:{pid}) was sent SIGKILL by the master:"
        if handle.aborted_at is not None:
            why = f"still running {ABORT_GRACE:g}s after the SIGABRT of its WORKER TIMEOUT"
        elif handle.overstayed:
            cause = verdict.cause.value
            why = f"still running graceful_timeout after it began to leave ({cause})"
        elif stopping:
            why = (
                "still running at the end of the server's stop "
                "(graceful_timeout, or sooner on INT, QUIT or a halt)"
            )
        else:
            why = "the master was exiting"
        verdict.errors.append(f"{said} {why}")
        return verdict
    if sig in FAULT_SIGNALS:
        verdict = ExitVerdict(planned or ExitCause.CRASH)
    else:
        verdict = ExitVerdict(planned or ExitCause.KILLED)
    if not (planned is not None and sig == signal.SIGTERM):  # a TERM we asked for is quiet
        verdict.errors.append(f"Worker (pid:{pid}) was sent {signal.Signals(sig).name}!")
    return verdict


class DeathReporter:
    """Logs why each worker ended, with the cgroup's OOM-kill count kept between deaths.

    The count is read at start, then only when a worker dies of a SIGKILL the master did
    not send: had it been read at every exit, a clean exit reaped between an OOM kill and
    its victim's reaping would take the rise in, and the victim would be blamed on another
    process. A rise is taken one kill at a time, so two workers killed together are both
    explained. The count is the whole cgroup's: a process other than a worker killed by
    the OOM killer (a program a worker ran) leaves a rise the next SIGKILL takes.
    """

    def __init__(
        self,
        log: ErrorLog,
        cgroup: tuple[Path, str] | None,
        last_memory: Callable[[WorkerHandle], str],
    ) -> None:
        self.log = log
        self.cgroup = cgroup
        self.last_memory = last_memory
        self.oom_kills = read_oom_kills(cgroup)
        self.counts: Counter[str] = Counter()  # exits by cause (ExitCause values)

    def report(
        self, handle: WorkerHandle, status: int, stopping: bool, reloading: bool
    ) -> ExitVerdict:
        """Judge the exit (see judge_exit) and log what it says."""
        oom_killed = self.oom_killed() if killed_by_another(handle, status) else None
        lived = time.monotonic() - handle.spawned_at
        verdict = judge_exit(
            handle,
            status,
            stopping,
            lived,
            reloading,
            oom_killed=oom_killed,
            memory=self.last_memory(handle),
        )
        self.counts[verdict.cause.value] += 1
        for line in verdict.errors:
            self.log.error(line)
        for line in verdict.warnings:
            self.log.warning(line)
        return verdict

    def oom_killed(self) -> bool | None:
        """Whether the OOM killer has killed one more process since the last reading
        (None: no count to read)."""
        count = read_oom_kills(self.cgroup)
        if count is None or self.oom_kills is None:
            self.oom_kills = count
            return None
        if count > self.oom_kills:
            self.oom_kills += 1
            return True
        self.oom_kills = count
        return False


def next_spawn_delay(verdict: ExitVerdict, delay: float) -> float:
    """The crash-loop backoff after this exit: doubled (from 0.1 s, up to MAX_SPAWN_DELAY)
    for a crash soon after start, kept after a crash later on, reset by any other exit."""
    if verdict.crashed_early:
        return min(MAX_SPAWN_DELAY, max(0.1, delay * 2))
    return delay if verdict.crashed else 0.0
