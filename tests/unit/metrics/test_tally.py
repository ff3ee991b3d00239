"""Request histograms: binned in the worker, summed in the master, read as Prometheus
buckets and as percentiles."""

from __future__ import annotations

import bisect
import math
import threading

import pytest

from dynocorn.metrics.tally import (
    ADVISED_BOUNDS,
    BOUNDS,
    MAX_ROWS,
    Histogram,
    RequestTally,
    ServerTally,
    bin_durations,
)


def test_every_advised_bound_is_counted_exactly() -> None:
    assert set(ADVISED_BOUNDS) <= set(BOUNDS)
    assert list(BOUNDS) == sorted(BOUNDS)


def test_binning_puts_a_value_on_a_bound_in_that_bound_bucket() -> None:
    counts = bin_durations([0.005, 0.0050001, 0.00001, 11.0, 10.0])
    assert counts[BOUNDS.index(0.0001)] == 1  # 0.00001
    assert counts[BOUNDS.index(0.005)] == 1  # le="0.005" includes 0.005 itself
    assert counts[BOUNDS.index(0.01)] == 1  # 0.0050001
    assert counts[BOUNDS.index(10.0)] == 1
    assert counts[-1] == 1  # 11 s: +Inf only
    assert sum(counts) == 5


def count(tally: RequestTally, method: str, status: int, seconds: float) -> None:
    """What the request path does (workers/http_worker.py inlines it)."""
    row = tally.rows.get((method, status)) or tally.row(method, status)
    row[bisect.bisect_left(BOUNDS, seconds)] += 1
    row[-1] += seconds


def test_a_worker_sends_running_totals_and_made_up_methods_share_a_row() -> None:
    tally = RequestTally()
    for seconds in (0.001, 0.002):
        count(tally, "GET", 200, seconds)
    count(tally, "BREW", 418, 0.5)
    count(tally, "PROPFIND", 418, 0.5)
    totals = tally.totals()
    rows = {(method, status): row for method, status, row in totals["requests"]}
    assert set(rows) == {("GET", 200), ("_OTHER", 418)}
    assert sum(rows[("GET", 200)][:-1]) == 2 and math.isclose(rows[("GET", 200)][-1], 0.003)
    assert sum(rows[("_OTHER", 418)][:-1]) == 2
    count(tally, "GET", 200, 0.1)
    again = {(m, s): row for m, s, row in tally.totals()["requests"]}
    assert sum(again[("GET", 200)][:-1]) == 3  # running totals: never reset


def test_made_up_methods_cannot_grow_the_lookup_without_bound() -> None:
    tally = RequestTally()
    for number in range(MAX_ROWS * 3):
        count(tally, f"M{number}", 200, 0.001)
    assert len(tally.rows) == MAX_ROWS
    assert [row[:2] for row in tally.totals()["requests"]] == [["_OTHER", 200]]
    assert sum(tally.totals()["requests"][0][2][:-1]) == MAX_ROWS * 3


def test_threads_counting_at_once_lose_nothing() -> None:
    """gthread's pool threads count into the same rows while the heartbeat reads them."""
    tally = RequestTally()
    per_thread, threads = 20_000, 4
    server, seen = ServerTally(), {}  # type: ignore[var-annotated]
    stop = threading.Event()

    def serve() -> None:
        for _ in range(per_thread):
            count(tally, "GET", 200, 0.001)

    def heartbeat() -> None:
        while not stop.is_set():
            server.add(tally.totals(), seen)

    beating = threading.Thread(target=heartbeat)
    beating.start()
    servers = [threading.Thread(target=serve) for _ in range(threads)]
    for thread in servers:
        thread.start()
    for thread in servers:
        thread.join()
    stop.set()
    beating.join()
    server.add(tally.totals(), seen)  # the last heartbeat, as the worker exits
    assert server.durations[("GET", "2xx")].count == per_thread * threads
    assert server.by_status[200] == per_thread * threads


def test_the_master_adds_what_grew_by_method_label_and_status_class() -> None:
    server = ServerTally()
    first: dict = {}  # type: ignore[type-arg]
    second: dict = {}  # type: ignore[type-arg]
    one = [0] * (len(BOUNDS) + 1) + [0.0001]
    one[0] = 1
    two = [0] * (len(BOUNDS) + 1) + [0.0002]
    two[0] = 2
    server.add({"requests": [["GET", 200, one], ["GET", 204, one]]}, first)
    server.add({"requests": [["GET", 200, two]]}, first)  # one more since: adds 1, not 2
    server.add({"requests": [["_OTHER", 500, one]], "queue": one}, second)
    assert server.durations[("GET", "2xx")].count == 3
    assert server.durations[("_OTHER", "5xx")].count == 1
    assert server.by_status == {200: 2, 204: 1, 500: 1}
    assert server.queue.count == 1
    server.add({"requests": [["GET", "x", one], ["GET"], "nonsense", ["GET", 200, [1]]]}, first)
    server.add({"queue": 3}, first)
    server.add(None, first)
    assert server.all_requests().count == 4  # the malformed parts skipped, nothing else


def test_cumulative_buckets_and_percentiles() -> None:
    histogram = Histogram()
    histogram.add(bin_durations([0.001] * 90 + [0.2] * 9 + [20.0]), 0.09 + 1.8 + 20)
    buckets = histogram.cumulative()
    assert [bound for bound, _ in buckets] == [*ADVISED_BOUNDS, math.inf]
    assert dict(buckets)[0.005] == 90 and dict(buckets)[0.25] == 99 and buckets[-1][1] == 100
    p50 = histogram.quantile(0.5)
    assert p50 is not None and 0.0005 < p50 <= 0.001
    p99 = histogram.quantile(0.99)
    assert p99 is not None and 0.1 < p99 <= 0.25
    assert histogram.quantile(1.0) == 10.0  # in +Inf: the largest bound, as Prometheus says
    assert Histogram().quantile(0.5) is None
    later = Histogram(list(histogram.counts), histogram.total)
    later.add(bin_durations([0.001]), 0.001)
    assert later.minus(histogram).count == 1


@pytest.mark.parametrize("counts", [[1, 2], "x", None])
def test_a_histogram_of_another_shape_is_skipped(counts: object) -> None:
    histogram = Histogram()
    histogram.add(counts if isinstance(counts, list) else [], 1.0)
    assert histogram.count == 0 and histogram.total == 0.0
