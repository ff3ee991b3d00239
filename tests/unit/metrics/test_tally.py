"""Request histograms: binned in the worker, summed in the master, read as Prometheus
buckets and as percentiles."""

from __future__ import annotations

import math
import threading

import pytest

from dynocorn.metrics.tally import (
    ADVISED_BOUNDS,
    BOUNDS,
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


def test_a_worker_tally_is_taken_once_and_forgets_quiet_keys() -> None:
    tally = RequestTally()
    tally.durations[("GET", 200)] = [0.001, 0.002]
    tally.durations[("BREW", 418)] = [0.5]
    tally.queued.append(0.02)
    taken = tally.take()
    assert taken is not None
    rows = {
        (method, status): (counts, total) for method, status, counts, total in taken["requests"]
    }
    assert sum(rows[("GET", 200)][0]) == 2 and math.isclose(rows[("GET", 200)][1], 0.003)
    assert sum(taken["queue"][0]) == 1
    tally.durations[("GET", 200)].append(0.1)
    second = tally.take()
    assert second is not None and [row[:2] for row in second["requests"]] == [["GET", 200]]
    assert ("BREW", 418) not in tally.durations  # quiet for a heartbeat: gone
    assert tally.take() is None
    assert tally.durations == {}


def test_appends_while_taking_are_never_lost() -> None:
    """Threads append (gthread) while the heartbeat takes: every value is counted once."""
    tally = RequestTally()
    per_thread, threads = 20_000, 4
    counted = 0
    stop = threading.Event()

    def serve() -> None:
        for _ in range(per_thread):
            durations = tally.durations.get(("GET", 200))
            if durations is None:
                tally.durations.setdefault(("GET", 200), []).append(0.001)
            else:
                durations.append(0.001)

    def heartbeat() -> None:
        nonlocal counted
        while not stop.is_set():
            taken = tally.take()
            if taken:
                counted += sum(sum(row[2]) for row in taken["requests"])

    beating = threading.Thread(target=heartbeat)
    beating.start()
    servers = [threading.Thread(target=serve) for _ in range(threads)]
    for thread in servers:
        thread.start()
    for thread in servers:
        thread.join()
    stop.set()
    beating.join()
    taken = tally.take()
    if taken:
        counted += sum(sum(row[2]) for row in taken["requests"])
    # The only loss allowed is a key forgotten between a thread's get and its append, when
    # the key was quiet for a whole heartbeat: never, with threads appending all along.
    assert counted == per_thread * threads


def test_the_master_sums_heartbeats_by_method_label_and_status_class() -> None:
    server = ServerTally()
    one = [0] * (len(BOUNDS) + 1)
    one[0] = 1
    server.add({"requests": [["GET", 200, one, 0.0001], ["GET", 204, one, 0.0001]]})
    server.add({"requests": [["FOO", 500, one, 0.5]], "queue": [one, 0.0001]})
    assert server.durations[("GET", "2xx")].count == 2
    assert server.durations[("_OTHER", "5xx")].count == 1  # made-up methods share a label
    assert server.by_status == {200: 1, 204: 1, 500: 1}
    assert server.queue.count == 1
    server.add({"requests": [["GET", "x", one, 0.1], ["GET"], "nonsense"], "queue": 3})
    server.add(None)
    assert server.all_requests().count == 3  # the malformed parts skipped, nothing else


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
