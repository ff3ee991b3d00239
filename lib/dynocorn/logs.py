"""Log sinks: the error log, in gunicorn's line format, and where the access log goes.

Error log line: `[2026-11-22 01:29:22 +0000] [13672] [INFO] message`. Every line is written
whole in one call, so lines from several processes sharing a stream do not interleave.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from dynocorn.access_log import AccessLog
    from dynocorn.config import Config

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class LogFile:
    """`-` is a standard stream; anything else a file opened for appending, reopened on USR1."""

    def __init__(self, target: str, standard: TextIO) -> None:
        self.target = target
        self._standard = standard
        self.stream: TextIO = standard
        self._lock = threading.Lock()
        self.reopen()

    def reopen(self) -> None:
        if self.target == "-":
            self.stream = self._standard
            return
        old = self.stream
        self.stream = open(self.target, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        if old is not self._standard:
            old.close()

    def write(self, line: str) -> None:
        with self._lock:
            try:
                self.stream.write(line)
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken log stream must not take the server down


class ErrorLog:
    def __init__(self, sink: LogFile | None = None, level: str = "info") -> None:
        self.sink = sink if sink is not None else LogFile("-", sys.stderr)
        self.threshold = LEVELS[level]

    def log(self, level: str, message: str) -> None:
        if LEVELS[level] < self.threshold:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
        self.sink.write(f"[{stamp}] [{os.getpid()}] [{level.upper()}] {message}\n")

    def debug(self, message: str) -> None:
        self.log("debug", message)

    def info(self, message: str) -> None:
        self.log("info", message)

    def warning(self, message: str) -> None:
        self.log("warning", message)

    def error(self, message: str) -> None:
        self.log("error", message)

    def critical(self, message: str) -> None:
        self.log("critical", message)

    def exception(self, message: str) -> None:
        """An error line followed by the current exception's traceback."""
        self.log("error", message + "\n" + traceback.format_exc().rstrip())


class Logs:
    """The error log and the access log (None when off), built from the configuration."""

    def __init__(self, error: ErrorLog, access: AccessLog | None, files: list[LogFile]) -> None:
        self.error = error
        self.access = access
        self.files = files

    @classmethod
    def from_config(cls, cfg: Config) -> Logs:
        from dynocorn.access_log import AccessLog

        error_file = LogFile(cfg.errorlog, sys.stderr)
        files = [error_file]
        access = None
        if cfg.accesslog:
            access_file = LogFile(cfg.accesslog, sys.stdout)
            files.append(access_file)
            # On Heroku with nothing configured, a line in the router's logfmt style.
            logfmt = cfg.source("accesslog").startswith("platform") and cfg.is_default(
                "access_log_format"
            )
            access = AccessLog(access_file.write, cfg.access_log_format, logfmt=logfmt)
        return cls(ErrorLog(error_file, cfg.loglevel), access, files)

    def reopen(self) -> None:
        for log_file in self.files:
            log_file.reopen()
