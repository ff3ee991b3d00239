"""`dynocorn top [--socket PATH] [--interval S]`: a running server, live, in the terminal.

Each refresh asks the control socket for `stats` (ctl.py) and draws, with rich: req/s, p50
and p99 latency and queue time over the last interval (from the difference of two
snapshots' histograms, so the figures are of this interval, not since start), memory
against the quota as a bar, and a row per worker with what it runs now. `q` quits (or
Ctrl-C). `--once` prints one frame, of one interval, and exits (for scripts and the manual).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator
from typing import Any

from dynocorn.ctl import CtlError, ask, find_socket, others_running
from dynocorn.metrics.tally import Histogram
from dynocorn.units import format_mb

try:
    from rich.console import Console, Group, RenderableType
    from rich.live import Live
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text
except ImportError:  # the `top` extra is not installed
    Console = None  # type: ignore[assignment,misc]

EXIT_OK = 0
EXIT_FAILED = 1


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def interval_figures(current: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """req/s and latency percentiles between two stats snapshots (since start without one)."""
    now_all = Histogram.from_json(current["requests"]["all"])
    now_queue = Histogram.from_json(current["requests"]["queue"])
    elapsed = current["master"]["uptime"]
    if previous is not None:
        now_all = now_all.minus(Histogram.from_json(previous["requests"]["all"]))
        now_queue = now_queue.minus(Histogram.from_json(previous["requests"]["queue"]))
        elapsed = current["time"] - previous["time"]
    return {
        "rate": now_all.count / elapsed if elapsed > 0 else 0.0,
        "p50": now_all.quantile(0.5),
        "p99": now_all.quantile(0.99),
        "queue_p50": now_queue.quantile(0.5),
        "queue_p99": now_queue.quantile(0.99),
    }


def summary(current: dict[str, Any], figures: dict[str, Any]) -> Text:
    """Two lines: the server, then its requests over the last interval."""
    master = current["master"]
    backlog = current["backlog"]
    return Text.assemble(
        ("master ", "bold"),
        f"{master['pid']}  up {master['uptime']:.0f}s  ",
        ("workers ", "bold"),
        f"{len(current['workers'])}/{current['target_workers']}  ",
        ("backlog ", "bold"),
        "-" if backlog is None else str(backlog),
        "\n",
        ("req/s ", "bold"),
        f"{figures['rate']:.1f}  ",
        ("p50 ", "bold"),
        f"{_ms(figures['p50'])}  ",
        ("p99 ", "bold"),
        f"{_ms(figures['p99'])}  ",
        ("queue p50 ", "bold"),
        f"{_ms(figures['queue_p50'])}  ",
        ("queue p99 ", "bold"),
        _ms(figures["queue_p99"]),
    )


def memory_bar(current: dict[str, Any]) -> RenderableType:
    dyno = current["memory"]
    held, quota = dyno["held"] or 0, dyno["quota"]
    table = Table.grid(padding=(0, 1))
    if not quota:
        table.add_row(Text("memory", style="bold"), f"{format_mb(held)} (no quota known)")
        return table
    share = held / quota
    style = "red" if share >= 1 else "yellow" if dyno["budget"] and held > dyno["budget"] else ""
    bar = ProgressBar(
        total=quota, completed=min(held, quota), width=40, complete_style=style or "green"
    )
    table.add_row(
        Text("memory", style="bold"), bar, f"{format_mb(held)} of {format_mb(quota)} ({share:.0%})"
    )
    return table


def workers_table(current: dict[str, Any]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, justify in (
        ("SLOT", "right"), ("PID", "right"), ("STATE", "left"), ("REQS", "right"),
        ("RSS", "right"), ("USS", "right"), ("AGE", "right"), ("REQUEST", "left"),
    ):  # fmt: skip
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in current["workers"]:
        memory = row["memory"] or {}
        request = ""
        if row["running"]:
            request = f"{row['method']} {row['path']} {row['request_age']:.1f}s"
            request += others_running(row)
        state_style = {"busy": "yellow", "stopping": "red", "booting": "cyan"}.get(row["state"], "")
        table.add_row(
            "-" if row["slot"] is None else str(row["slot"]),
            str(row["pid"]),
            Text(row["state"], style=state_style),
            str(row["requests"]),
            format_mb(memory["rss"]) if "rss" in memory else "-",
            format_mb(memory["uss"]) if "uss" in memory else "-",
            f"{row['age']:.0f}s",
            Text(request, overflow="ellipsis", no_wrap=True),
        )
    return table


def frame(current: dict[str, Any], previous: dict[str, Any] | None) -> RenderableType:
    figures = interval_figures(current, previous)
    return Group(
        summary(current, figures), memory_bar(current), Text(""), workers_table(current),
        Text("q quits", style="dim"),
    )  # fmt: skip


@contextlib.contextmanager
def keys() -> Iterator[int | None]:
    """stdin in cbreak mode (a key arrives without Enter) when it is a terminal."""
    if not sys.stdin.isatty():
        yield None
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def quit_pressed(fd: int | None, wait: float) -> bool:
    """Wait up to `wait` seconds for a key; whether it was q."""
    if fd is None:
        time.sleep(wait)
        return False
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready and os.read(fd, 1).lower() == b"q":
            return True
    return False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="dynocorn top", description="A running server, live.")
    parser.add_argument("--socket", "-s", metavar="PATH", help="the server's control socket")
    parser.add_argument("--interval", "-n", type=float, default=1.0, help="seconds per refresh")
    parser.add_argument("--once", action="store_true", help="one frame, of one interval")
    options = parser.parse_args(argv)
    if Console is None:
        sys.stderr.write("dynocorn top: needs rich: pip install 'dynocorn[top]'\n")
        return EXIT_FAILED
    try:
        path = find_socket(options.socket)
        return _show(path, options.interval, options.once)
    except CtlError as error:
        sys.stderr.write(f"dynocorn top: {error}\n")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_OK


def _show(path: Any, interval: float, once: bool) -> int:
    console = Console()
    previous = None
    current = ask(path, "stats", [])
    if once:
        # One frame of the live view: the last interval, not everything since the start
        # (a rate since start blends a load with the idle time or warm-up before it).
        time.sleep(interval)
        console.print(frame(ask(path, "stats", []), current))
        return EXIT_OK
    with keys() as fd, Live(frame(current, None), console=console, auto_refresh=False) as live:
        while not quit_pressed(fd, interval):
            previous, current = current, ask(path, "stats", [])
            live.update(frame(current, previous), refresh=True)
    return EXIT_OK
