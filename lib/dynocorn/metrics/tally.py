"""Requests counted as histograms: in each worker per heartbeat, then summed in the master.

A worker appends each request's duration to a list kept per (method, status) and, once a
second, bins them into bucket counts and sends those up its pipe with the heartbeat (and a
last time as it exits). The master adds them to its running totals, so a recycled worker
takes nothing with it: no multiprocess directory, no clean-up at `child_exit`.

Binning waits for the heartbeat because on the request path it would cost a bisect and two
list updates (about 0.3 µs, 2% of a hello-world request); a list append costs a tenth of it,
and the heartbeat bins a second's worth with one sort each.

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
    durations.sort()
    counts = []
    below = 0
    for bound in BOUNDS:
        upto = bisect.bisect_right(durations, bound)
        counts.append(upto - below)
        below = upto
    counts.append(len(durations) - below)
    return counts


class RequestTally:
    """In a worker: what it served since its last heartbeat.

    The request path appends (workers/http_worker.py inlines it), from several threads under
    gthread, while the heartbeat takes. So a list is never swapped for a new one, which an
    append begun before the swap would miss: `take` copies the first n values and deletes
    those n, each one step under the GIL, and what was appended meanwhile waits for the next
    heartbeat."""

    def __init__(self) -> None:
        self.durations: dict[tuple[str, int], list[float]] = {}  # (method, status) -> seconds
        self.queued: list[float] = []  # queue times, seconds

    def take(self) -> dict[str, Any] | None:
        """The counts since the last take, for the heartbeat; None when nothing happened."""
        rows = []
        for (method, status), values in list(self.durations.items()):
            batch = _take_all(values)
            if batch:
                rows.append([method, status, bin_durations(batch), math.fsum(batch)])
            else:
                # Quiet for a heartbeat: forgotten, so made-up methods cannot pile up. (A
                # thread holding the list this instant would lose one count: rare enough.)
                del self.durations[(method, status)]
        queued = _take_all(self.queued)
        if not rows and not queued:
            return None
        figures: dict[str, Any] = {"requests": rows}
        if queued:
            figures["queue"] = [bin_durations(queued), math.fsum(queued)]
        return figures


def _take_all(values: list[float]) -> list[float]:
    count = len(values)
    batch = values[:count]
    del values[:count]
    return batch


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

    def add(self, figures: Any) -> None:
        """One heartbeat's counts (RequestTally.take()); malformed parts are skipped."""
        if not isinstance(figures, dict):
            return
        for row in figures.get("requests", ()):
            try:
                method, status, counts, total = row
                key = (method_label(str(method)), status_class(int(status)))
                self.durations.setdefault(key, Histogram()).add(list(counts), float(total))
                self.by_status[int(status)] += sum(counts)
            except (TypeError, ValueError):
                continue
        queue = figures.get("queue")
        if isinstance(queue, list) and len(queue) == 2:
            try:
                self.queue.add(list(queue[0]), float(queue[1]))
            except (TypeError, ValueError):
                pass

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
