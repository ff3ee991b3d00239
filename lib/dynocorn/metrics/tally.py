"""Requests counted as histograms: in each worker as they end, then summed in the master.

A worker counts each request in the bucket of its duration, in a row per (method, status),
and sends its rows, running totals since it started, up its pipe with every heartbeat (and
a last time as it exits). The master adds what grew since that worker's previous heartbeat
to its own totals, so a recycled worker takes nothing with it: no multiprocess directory,
no clean-up at `child_exit`. A worker never resets its rows, so no count can fall between
a reset and a request: there is nothing to race.

The buckets are finer than OpenTelemetry's advice for `http.server.request.duration` (5 ms to
10 s) and include every bound of it, so the Prometheus exposition gives exactly the advised
buckets while `dynocorn top` can tell a 1 ms p50 from a 4 ms one.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# OpenTelemetry's advised explicit buckets for HTTP durations, in seconds.
ADVISED_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# What is counted: the advised bounds and finer ones below them (upper bounds, inclusive).
BOUNDS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, *ADVISED_BOUNDS)
# HTTP methods kept as themselves in a label; any other is "_OTHER" (OpenTelemetry's rule),
# so that a client cannot make a series per made-up method.
KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)


def bin_durations(durations: list[float]) -> list[int]:
    """Counts per bucket of BOUNDS, plus one past the last bound (+Inf)."""
    counts = [0] * (len(BOUNDS) + 1)
    for duration in durations:
        counts[bisect.bisect_left(BOUNDS, duration)] += 1
    return counts


# A row: the count of each bucket of BOUNDS and +Inf, then the sum of the durations.
Row = list[float]
MAX_ROWS = 256  # lookups kept per worker: made-up methods past them share "_OTHER" unkept


class RequestTally:
    """In a worker: what it served since it started, as rows per (method, status).

    The request path counts into a row (workers/http_worker.py inlines it):
    `row[bisect_left(BOUNDS, seconds)] += 1` and `row[-1] += seconds`. Under gthread, pool
    threads do so at once; CPython's GIL lets a thread go only at the points where the
    interpreter checks for a switch (a call into Python code, a loop's jump back), never
    inside `x[i] += 1` on a list, so no increment is lost.
    """

    def __init__(self) -> None:
        # (method as sent, status) -> its row; a made-up method's key leads to the
        # "_OTHER" row of its status (OpenTelemetry's rule), so it shares that row.
        self.rows: dict[tuple[str, int], Row] = {}
        self.labelled: dict[tuple[str, int], Row] = {}  # (method label, status) -> row
        self.queue: Row = [0] * (len(BOUNDS) + 1) + [0.0]  # the router's queue times

    def row(self, method: str, status: int) -> Row:
        """The row of a (method, status) not counted before in this worker."""
        label = method_label(method)
        row = self.labelled.setdefault((label, status), [0] * (len(BOUNDS) + 1) + [0.0])
        if len(self.rows) < MAX_ROWS:
            self.rows[(method, status)] = row
        return row

    def totals(self) -> dict[str, Any]:
        """Every row as it stands, for the heartbeat."""
        return {
            "requests": [
                [method, status, list(row)] for (method, status), row in self.labelled.items()
            ],
            "queue": list(self.queue),
        }


@dataclass
class Histogram:
    """Counts per bucket of BOUNDS (the last is +Inf), and the sum of what was counted."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS) + 1))
    total: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def add(self, counts: list[int], total: float) -> None:
        if len(counts) != len(self.counts):
            return  # a worker of another version mid-upgrade: skip, do not misplace
        self.counts = [mine + theirs for mine, theirs in zip(self.counts, counts, strict=True)]
        self.total += total

    def cumulative(self, bounds: tuple[float, ...] = ADVISED_BOUNDS) -> list[tuple[float, int]]:
        """(upper bound, requests at or below it) for each of `bounds` (each one of BOUNDS),
        then (inf, all of them): a Prometheus histogram's buckets."""
        running, at, buckets = 0, 0, []
        for index, bound in enumerate(BOUNDS):
            running += self.counts[index]
            if at < len(bounds) and bound == bounds[at]:
                buckets.append((bound, running))
                at += 1
        buckets.append((math.inf, running + self.counts[-1]))
        return buckets

    def minus(self, earlier: Histogram) -> Histogram:
        """What was counted since `earlier` (for a rate over an interval)."""
        counts = [now - then for now, then in zip(self.counts, earlier.counts, strict=True)]
        return Histogram(counts, self.total - earlier.total)

    def quantile(self, q: float) -> float | None:
        """An estimate of the q-quantile (0 < q <= 1), seconds: linear within its bucket,
        as Prometheus's histogram_quantile does; None when nothing was counted."""
        count = self.count
        if not count:
            return None
        rank, below, lower = q * count, 0, 0.0
        for index, upper in enumerate(BOUNDS):
            here = self.counts[index]
            if below + here >= rank and here:
                return lower + (upper - lower) * (rank - below) / here
            below += here
            lower = upper
        return BOUNDS[-1]  # in the +Inf bucket: say the largest bound, as Prometheus does

    def as_json(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": self.total}

    @classmethod
    def from_json(cls, data: Any) -> Histogram:
        histogram = cls()
        if isinstance(data, dict):
            histogram.add(list(data.get("counts", [])), float(data.get("sum", 0.0)))
        return histogram


def _growth(row: list[Any], seen: dict[Any, Row], key: Any) -> tuple[list[int], float] | None:
    """`row` minus the worker's previous one under `key` (remembered now), as (counts,
    sum); None when the row is not of this version's shape (a worker of another version,
    mid-upgrade)."""
    if len(row) != len(BOUNDS) + 2 or not all(isinstance(x, int | float) for x in row):
        return None
    before = seen.get(key) or [0] * len(row)
    seen[key] = row
    counts = [int(now - then) for now, then in zip(row[:-1], before[:-1], strict=True)]
    return counts, row[-1] - before[-1]


def status_class(status: int) -> str:
    return f"{status // 100}xx"


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "_OTHER"


class ServerTally:
    """In the master: the running totals since start, every worker's heartbeats summed."""

    def __init__(self) -> None:
        # (method label, status class) -> durations
        self.durations: dict[tuple[str, str], Histogram] = {}
        self.queue = Histogram()
        self.by_status: Counter[int] = Counter()
        self.recycles: Counter[str] = Counter()  # worker exits by cause (ExitCause values)

    def add(self, figures: Any, seen: dict[Any, Row]) -> None:
        """One heartbeat's totals (RequestTally.totals()) from a worker whose previous ones
        are in `seen` (kept on its handle, and updated here): what grew is added.
        Malformed parts are skipped."""
        if not isinstance(figures, dict):
            return
        for entry in figures.get("requests", ()):
            try:
                method, status, row = str(entry[0]), int(entry[1]), list(entry[2])
            except (TypeError, ValueError, IndexError):
                continue
            grown = _growth(row, seen, (method, status))
            if grown is not None:
                counts, total = grown
                key = (method_label(method), status_class(status))
                self.durations.setdefault(key, Histogram()).add(counts, total)
                self.by_status[status] += sum(counts)
        queue = figures.get("queue")
        if isinstance(queue, list) and (grown := _growth(queue, seen, "queue")) is not None:
            self.queue.add(*grown)

    def all_requests(self) -> Histogram:
        """Every request's duration in one histogram, whatever its method and status."""
        merged = Histogram()
        for histogram in self.durations.values():
            merged.add(histogram.counts, histogram.total)
        return merged

    def as_json(self) -> dict[str, Any]:
        return {
            "bounds": list(BOUNDS),
            "durations": [
                {"method": method, "status_class": klass, **histogram.as_json()}
                for (method, klass), histogram in sorted(self.durations.items())
            ],
            "all": self.all_requests().as_json(),
            "queue": self.queue.as_json(),
            "by_status": {str(status): count for status, count in sorted(self.by_status.items())},
            "recycles": dict(sorted(self.recycles.items())),
        }
