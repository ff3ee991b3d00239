"""The error log, in gunicorn's line format: `[2026-11-22 01:29:22 +0000] [13672] [INFO] msg`."""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from typing import TextIO

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}


class ErrorLog:
    """Writes whole lines, one write each, so lines from several processes do not interleave."""

    def __init__(self, stream: TextIO | None = None, level: str = "info") -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.threshold = LEVELS[level]
        self._lock = threading.Lock()

    def log(self, level: str, message: str) -> None:
        if LEVELS[level] < self.threshold:
            return
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
        line = f"[{stamp}] [{os.getpid()}] [{level.upper()}] {message}\n"
        with self._lock:
            try:
                self.stream.write(line)
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken log stream must not take the server down

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
