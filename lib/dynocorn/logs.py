"""Log sinks: the error log, in gunicorn's line format, and where the access log goes.

Error log line: `[2026-11-22 01:29:22 +0000] [13672] [INFO] message`. Every line is written
whole in one call, so lines from several processes sharing a stream do not interleave.

The error log's methods take what `logging` and gunicorn's logger take (`msg, *args`,
`exc_info=...`), since gunicorn config hooks call `server.log.info("... %s", pid)`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, TextIO, TypeAlias, TypedDict, Unpack

from dynocorn.metrics.statsd import LOG, StatsD
from dynocorn.sources import Kind

if TYPE_CHECKING:
    from dynocorn.access_log import AccessLog
    from dynocorn.config import Config

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
# Levels gunicorn counts in StatsD, as `gunicorn.log.<level>` (exception is its own).
COUNTED_LEVELS = frozenset(("warning", "error", "critical"))

ExcInfo: TypeAlias = (
    bool
    | BaseException
    | tuple[type[BaseException], BaseException, TracebackType | None]
    | tuple[None, None, None]
    | None
)


class LogOptions(TypedDict, total=False):
    """The keyword arguments `logging` takes: stacklevel and extra are accepted, not used."""

    exc_info: ExcInfo
    stack_info: bool
    stacklevel: int
    extra: Mapping[str, object]


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
        # Set by the master's monitor when StatsD is on: warnings and errors are counted,
        # whatever the log level, as gunicorn does.
        self.statsd: StatsD | None = None

    def log(
        self, level: str | int, msg: object, *args: object, **options: Unpack[LogOptions]
    ) -> None:
        """``level`` is a name ("info") or a `logging` number (20)."""
        self._emit(level_name(level), msg, args, options)

    def debug(self, msg: object, *args: object, **options: Unpack[LogOptions]) -> None:
        self._emit("debug", msg, args, options)

    def info(self, msg: object, *args: object, **options: Unpack[LogOptions]) -> None:
        self._emit("info", msg, args, options)

    def warning(self, msg: object, *args: object, **options: Unpack[LogOptions]) -> None:
        self._emit("warning", msg, args, options)

    def error(self, msg: object, *args: object, **options: Unpack[LogOptions]) -> None:
        self._emit("error", msg, args, options)

    def critical(self, msg: object, *args: object, **options: Unpack[LogOptions]) -> None:
        self._emit("critical", msg, args, options)

    def exception(self, msg: object, *args: object, **options: Unpack[LogOptions]) -> None:
        """An error line followed by the current exception's traceback."""
        options.setdefault("exc_info", True)
        self._emit("error", msg, args, options, counter="exception")

    def _emit(
        self,
        level: str,
        msg: object,
        args: tuple[object, ...],
        options: LogOptions,
        counter: str | None = None,
    ) -> None:
        counter = counter or (level if level in COUNTED_LEVELS else None)
        if counter is not None and self.statsd is not None:
            self.statsd.increment(LOG.format(counter))
        if LEVELS[level] < self.threshold:
            return
        text = render(msg, args)
        trace = traceback_text(options.get("exc_info"))
        if trace:
            text += "\n" + trace
        if options.get("stack_info"):
            text += "\nStack (most recent call last):\n" + "".join(traceback.format_stack())
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
        self.sink.write(f"[{stamp}] [{os.getpid()}] [{level.upper()}] {text.rstrip()}\n")


def level_name(level: str | int) -> str:
    """ "info", "INFO" or logging.INFO (20) -> "info"; a number between levels rounds down."""
    if isinstance(level, str):
        name = level.lower()
        return name if name in LEVELS else "info"
    below = [name for name, number in LEVELS.items() if number <= level]
    return below[-1] if below else "debug"


def render(msg: object, args: tuple[object, ...]) -> str:
    """``msg % args`` as `logging` does: not at all without args, a lone mapping by name.

    Arguments that do not fit the message are shown beside it rather than raised: a log
    call must not take down the code that made it (logging prints an error instead).
    """
    text = str(msg)
    if not args:
        return text
    values: object = args
    if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
        values = args[0]
    try:
        return text % values
    except (TypeError, ValueError, KeyError) as error:
        return f"{text} {args!r} (the arguments did not fit the message: {error})"


def traceback_text(exc_info: ExcInfo) -> str | None:
    """The traceback ``exc_info`` names (True: the exception being handled), or None."""
    if not exc_info:
        return None
    error: BaseException | None
    if isinstance(exc_info, BaseException):
        error = exc_info
    elif isinstance(exc_info, tuple):
        error = exc_info[1]
    else:
        error = sys.exc_info()[1]
    if error is None:
        return None
    lines = traceback.format_exception(type(error), error, error.__traceback__)
    return "".join(lines).rstrip()


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
            style = access_log_style(cfg)
            access = AccessLog(access_file.write, cfg.access_log_format, style=style)
        return cls(ErrorLog(error_file, cfg.loglevel), access, files)

    def reopen(self) -> None:
        for log_file in self.files:
            log_file.reopen()


def access_log_style(cfg: Config) -> str:
    """The style `access_log_style` names; unset, the router's logfmt on Heroku when nothing
    about the access log is configured (it is on because `DYNO` is set), else gunicorn's."""
    if cfg.access_log_style is not None:
        return cfg.access_log_style
    on_heroku_unconfigured = cfg.source("accesslog").kind is Kind.PLATFORM and cfg.is_default(
        "access_log_format"
    )
    return "logfmt" if on_heroku_unconfigured else "gunicorn"
