"""The error log: gunicorn's line format, logging's call conventions, StatsD counters; the
access log's style chosen from the configuration."""

from __future__ import annotations

import io
import logging
import re
import socket
import sys
from pathlib import Path

import pytest

from dynocorn import config
from dynocorn.logs import ErrorLog, LogFile, access_log_style, level_name, render
from dynocorn.metrics.statsd import StatsD

LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[([A-Z]+)\] (.*)$", re.S)


def make_log(level: str = "info") -> tuple[ErrorLog, io.StringIO]:
    stream = io.StringIO()
    return ErrorLog(LogFile("-", stream), level), stream


def messages(stream: io.StringIO) -> list[tuple[str, str]]:
    """(LEVEL, message) per entry; an entry may span lines (a traceback)."""
    entries = re.split(r"\n(?=\[\d{4}-)", stream.getvalue().rstrip("\n"))
    found = []
    for entry in entries:
        match = LINE.match(entry)
        assert match, entry
        found.append((match.group(1), match.group(2)))
    return found


def test_printf_style_arguments_as_gunicorn_hooks_use_them() -> None:
    log, stream = make_log()
    log.info("Worker spawned (pid: %s)", 1234)
    log.warning("%d of %d workers", 3, 4)
    log.error("%(name)s failed", {"name": "the app"})
    log.info("100% sure")  # no arguments: no formatting, as in logging
    assert messages(stream) == [
        ("INFO", "Worker spawned (pid: 1234)"),
        ("WARNING", "3 of 4 workers"),
        ("ERROR", "the app failed"),
        ("INFO", "100% sure"),
    ]


def test_arguments_that_do_not_fit_never_raise() -> None:
    log, stream = make_log()
    log.info("two %s %s", "one")
    log.info("a number: %d", "not a number")
    ((_, text), (_, other)) = messages(stream)
    assert text.startswith("two %s %s ('one',)")
    assert other.startswith("a number: %d ('not a number',)")


def test_the_message_may_be_any_object() -> None:
    log, stream = make_log()
    log.info(ValueError("boom"))
    assert messages(stream) == [("INFO", "boom")]


def test_exception_logs_the_current_traceback() -> None:
    log, stream = make_log()
    try:
        raise RuntimeError("the app fell over")
    except RuntimeError:
        log.exception("Error handling request %s", "/path")
    [(level, text)] = messages(stream)
    assert level == "ERROR"
    assert text.startswith("Error handling request /path\nTraceback (most recent call last):")
    assert text.endswith("RuntimeError: the app fell over")


def test_exc_info_as_logging_takes_it() -> None:
    log, stream = make_log()
    error = KeyError("missing")
    try:
        raise error
    except KeyError:
        log.warning("handled", exc_info=True)
        info = sys.exc_info()
    log.warning("by exception", exc_info=error)
    log.warning("by tuple", exc_info=info)
    log.warning("not asked", exc_info=False)
    log.exception("no exception now")  # outside an except block: no traceback
    texts = [text for _, text in messages(stream)]
    for text in texts[:3]:
        assert text.endswith("KeyError: 'missing'"), text
    assert texts[3:] == ["not asked", "no exception now"]


def test_stack_info_and_the_other_logging_keywords_are_accepted() -> None:
    log, stream = make_log()
    log.info("here", stack_info=True, stacklevel=2, extra={"key": "value"})
    [(_, text)] = messages(stream)
    assert text.startswith("here\nStack (most recent call last):\n")


def test_log_takes_a_level_name_or_number() -> None:
    log, stream = make_log()
    log.log("warning", "by name %s", 1)
    log.log(logging.ERROR, "by number %s", 2)
    log.log(logging.DEBUG, "below the threshold")
    assert messages(stream) == [("WARNING", "by name 1"), ("ERROR", "by number 2")]


@pytest.mark.parametrize(
    ("level", "name"),
    [("INFO", "info"), ("critical", "critical"), (0, "debug"), (25, "info"), (99, "critical")],
)
def test_level_names(level: str | int, name: str) -> None:
    assert level_name(level) == name


def test_a_lone_empty_mapping_is_a_value_not_names() -> None:
    assert render("%s", ({},)) == "{}"


def test_statsd_counts_warnings_errors_and_exceptions(statsd_server: socket.socket) -> None:
    log, _ = make_log("critical")  # counted whatever the level shown, as gunicorn does
    with StatsD("127.0.0.1", statsd_server.getsockname()[1], prefix="app") as statsd:
        log.statsd = statsd
        log.debug("not counted")
        log.info("not counted")
        log.warning("w")
        log.error("e %s", 1)
        log.critical("c")
        try:
            raise ValueError("x")
        except ValueError:
            log.exception("x")
        log.log("error", "through log()")
        received = [statsd_server.recv(65536).decode() for _ in range(5)]
    assert received == [
        "app.gunicorn.log.warning:1|c",
        "app.gunicorn.log.error:1|c",
        "app.gunicorn.log.critical:1|c",
        "app.gunicorn.log.exception:1|c",
        "app.gunicorn.log.error:1|c",
    ]


@pytest.mark.parametrize(
    ("argv", "environ", "style"),
    [
        ([], {}, "gunicorn"),
        (["--access-logfile", "-"], {}, "gunicorn"),
        ([], {"DYNO": "web.1"}, "logfmt"),  # on only because of DYNO: the router's style
        (["--access-logfile", "-"], {"DYNO": "web.1"}, "gunicorn"),
        (["--access-logformat", "%(s)s"], {"DYNO": "web.1"}, "gunicorn"),
        (["--access-log-style", "json"], {"DYNO": "web.1"}, "json"),
        (["--access-log-style", "json", "--access-logfile", "-"], {}, "json"),
        (["--access-log-style", "LOGFMT"], {}, "logfmt"),
        (["--access-log-style", "gunicorn"], {"DYNO": "web.1"}, "gunicorn"),
    ],
)
def test_access_log_style(
    tmp_path: Path, argv: list[str], environ: dict[str, str], style: str
) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "meminfo").write_text("MemTotal:       1048576 kB\n")
    cfg = config.load([*argv, "app:app"], environ, tmp_path, root=tmp_path, ipv6=True)
    assert access_log_style(cfg) == style
