"""The master anew: HUP reloads the configuration, USR2 runs a new master.

HUP: the configuration is loaded again and its worker class resolved before anything
changes, so a config file that no longer loads, or names a worker class that cannot be
imported, leaves the server as it was; the arbiter then replaces its workers one at a time.

USR2: a new master, the same program run again, on the same listening sockets. The old
master forks; the child runs the `pre_exec` hook and then this, which replaces it
with `python -m dynocorn` and the same arguments, in the same directory. The listening
sockets stay open across exec and their numbers travel in the environment
(sockets.export_for_reexec), so no connection is refused while the new master starts; the
new one reads REEXEC_COMMAND_VARIABLE to know that an old master still runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from dynocorn import sockets
from dynocorn.workers import WorkerClassError, worker_class_for

if TYPE_CHECKING:
    from dynocorn.config import Config
    from dynocorn.logs import ErrorLog
    from dynocorn.workers.base import Worker

REEXEC_COMMAND_VARIABLE = "DYNOCORN_REEXEC"  # the old master's pid, in the new one


def is_reexec_child() -> bool:
    """Whether this master was started by USR2, its old master still running."""
    return os.environ.get(REEXEC_COMMAND_VARIABLE) == str(os.getppid())


def fork_new_master(
    server: Any, cfg: Config, listeners: list[sockets.Listener], log: ErrorLog
) -> int:
    """Fork the new master: in the parent, its pid; the child runs the `pre_exec` hook
    (given `server`, the arbiter) and execs, or exits 1."""
    old_master_pid = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    try:
        cfg.pre_exec(server)
    except BaseException:
        log.exception("Re-exec failed")
        os._exit(1)
    exec_new_master(cfg, listeners, old_master_pid, log)


def exec_new_master(
    cfg: Config, listeners: list[sockets.Listener], old_master_pid: int, log: ErrorLog
) -> NoReturn:
    """In the forked child: become the new master, or exit 1 saying why not."""
    try:
        # The new master reads the env files itself: what they added must not pose as the
        # real environment there, which would win over an edited file.
        added = cfg.env_files.added
        environ = {k: v for k, v in os.environ.items() if added.get(k) != v}
        sockets.export_for_reexec(listeners, environ)
        environ[REEXEC_COMMAND_VARIABLE] = str(old_master_pid)
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        environ["PYTHONPATH"] = os.pathsep.join(
            filter(None, [package_root, environ.get("PYTHONPATH", "")])
        )
        os.chdir(cfg.cwd)
        argv = [sys.executable, "-m", "dynocorn", *cfg.argv]
        os.execve(sys.executable, argv, environ)
    except BaseException:
        log.exception("Re-exec failed")
    finally:
        os._exit(1)


def load_for_hup(
    reload_config: Callable[[], Config], log: ErrorLog
) -> tuple[Config, type[Worker]] | None:
    """The new configuration and its worker class, or None (logged) to keep the old."""
    keeping = "Reload failed, keeping the running configuration"
    try:
        new_cfg = reload_config()
    except Exception as error:
        log.error(f"{keeping}: {error}")
        return None
    try:
        return new_cfg, worker_class_for(new_cfg)
    except WorkerClassError as error:
        log.error(f"{keeping}: worker_class = {new_cfg.worker_class!r}: {error}")
        return None
