"""A worker's life as the master sees it begin and end: what runs in the forked child, the
exit codes a worker uses to say why it stopped, and what the master makes of a worker's wait
status (which deaths it logs, which stop the server, which count towards the crash-loop
backoff). Deciding is kept apart from doing, so each rule is a function a test can call.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from dynocorn import apploader

if TYPE_CHECKING:
    from dynocorn.config import Config
    from dynocorn.logs import ErrorLog
    from dynocorn.worker_handle import WorkerHandle
    from dynocorn.workers.base import Worker

# Exit codes a worker uses to stop the whole server (gunicorn's): the app cannot be imported,
# or imports but is not a usable WSGI callable. Restarting the worker could not help.
WORKER_BOOT_ERROR = 3
APP_LOAD_ERROR = 4
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
    except apploader.AppImportError:
        log.exception("Exception in worker process")
        status = WORKER_BOOT_ERROR
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


@dataclass
class ExitVerdict:
    """What a worker's end means for the server."""

    halt: tuple[str, int] | None = None  # stop the server: (reason, exit status)
    errors: list[str] = field(default_factory=list)  # lines for the error log
    crashed: bool = False  # an unplanned death (not asked for, not a clean exit)
    crashed_early: bool = False  # and within CRASH_WINDOW of its start: a crash loop, maybe
    # SIGKILL from someone else (the kernel's OOM killer, most likely): the master adds the
    # worker's last memory sample to the log.
    killed_from_outside: bool = False


def judge_exit(
    handle: WorkerHandle, status: int, stopping: bool, lived: float, reloading: bool = False
) -> ExitVerdict:
    """From a worker's wait status: whether the server must stop, what to log, whether the
    worker crashed. `stopping`: the whole server is stopping (nothing is a crash then);
    `lived`: seconds since it was spawned; `reloading`: --reload is on, where code that
    does not load is a mistake being fixed, not a reason to stop (the worker crashed: the
    old ones serve on, and the next save reloads)."""
    verdict = ExitVerdict()
    pid = handle.pid
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        halts = not stopping and not reloading
        if code == WORKER_BOOT_ERROR and halts:
            verdict.halt = ("Worker failed to boot.", WORKER_BOOT_ERROR)
        elif code == APP_LOAD_ERROR and halts:
            verdict.halt = ("App failed to load.", APP_LOAD_ERROR)
        elif code != 0:
            verdict.errors.append(f"Worker (pid:{pid}) exited with code {code}")
    elif os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGKILL and not handle.killed:
            verdict.errors.append(f"Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?")
            verdict.killed_from_outside = True
        elif not (handle.killed or (handle.stopping and sig == signal.SIGTERM)):
            verdict.errors.append(f"Worker (pid:{pid}) was sent {signal.Signals(sig).name}!")
    clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    verdict.crashed = not handle.stopping and not stopping and not clean
    verdict.crashed_early = verdict.crashed and lived < CRASH_WINDOW
    return verdict


def next_spawn_delay(verdict: ExitVerdict, delay: float) -> float:
    """The crash-loop backoff after this exit: doubled (from 0.1 s, up to MAX_SPAWN_DELAY)
    for a crash soon after start, kept after a crash later on, reset by any other exit."""
    if verdict.crashed_early:
        return min(MAX_SPAWN_DELAY, max(0.1, delay * 2))
    return delay if verdict.crashed else 0.0
