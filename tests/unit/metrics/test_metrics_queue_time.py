import random

import pytest

from dynocorn.metrics.queue_time import Percentiles, queue_ms

NOW = 1_700_000_000.5  # epoch seconds; half a second after the stamps below


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("1700000000000", 500.0),  # Heroku: epoch milliseconds
        ("1700000000250", 250.0),
        ("t=1700000000000000", 500.0),  # New Relic's convention: t=microseconds
        ("t=1700000000400000", 100.0),
        ("t=1700000000.250", 250.0),  # nginx t=${msec}: seconds with a fraction
        ("1700000000.25", 250.0),
        ("1700000000", 500.0),  # whole seconds
        ("1700000000000000000", 500.0),  # nanoseconds
        (" t=1700000000000 ", 500.0),
        ("t= 1700000000000", 500.0),
        ("1700000001000", 0.0),  # the router's clock ahead of ours: no negative waits
        ("t=1700000005000000", 0.0),
        ("1699999990000", 10_500.0),
    ],
)
def test_queue_ms(header: str, expected: float) -> None:
    assert queue_ms(header, NOW) == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize(
    "header",
    [None, "", "  ", "t=", "abc", "t=abc", "12ms", "0", "-1700000000000", "nan", "inf", "t=-inf"],
)
def test_no_queue_time(header: str | None) -> None:
    assert queue_ms(header, NOW) is None


# --- percentiles ----------------------------------------------------------------------------


def test_empty_has_no_percentile() -> None:
    assert Percentiles().p95() is None


@pytest.mark.parametrize(
    ("values", "p95"),
    [
        ([7.5], 7.5),
        ([1.0, 2.0], 2.0),
        (list(range(1, 21)), 19),  # nearest rank: ceil(0.95 * 20) = 19th
        (list(range(1, 101)), 95),
        (list(range(100, 0, -1)), 95),  # order of arrival does not matter
        (list(range(1, 102)), 96),  # ceil(95.95) = 96th
        ([3.0] * 50, 3.0),
    ],
)
def test_p95_nearest_rank(values: list[float], p95: float) -> None:
    percentiles = Percentiles()
    for value in values:
        percentiles.add(value)
    assert percentiles.p95() == p95


def test_other_percentiles() -> None:
    percentiles = Percentiles()
    for value in range(1, 11):
        percentiles.add(value)
    assert percentiles.percentile(50) == 5
    assert percentiles.percentile(100) == 10
    assert percentiles.percentile(1) == 1
    for q in (0, -1, 101):
        with pytest.raises(ValueError, match="q must be"):
            percentiles.percentile(q)


def test_reset_starts_a_new_interval() -> None:
    percentiles = Percentiles(size=4)
    for value in range(100):
        percentiles.add(value)
    assert (len(percentiles), percentiles.seen) == (4, 100)
    percentiles.reset()
    assert (len(percentiles), percentiles.seen) == (0, 0)
    assert percentiles.p95() is None
    percentiles.add(1.5)
    assert percentiles.p95() == 1.5


def test_the_reservoir_stays_small_and_fair() -> None:
    percentiles = Percentiles(size=500, rng=random.Random(1))
    for value in range(100_000):
        percentiles.add(value)
    assert len(percentiles) == 500
    assert percentiles.seen == 100_000
    # A uniform sample of 0..99999: its p95 lands near 95000, not near the first 500 values.
    p95 = percentiles.p95()
    assert p95 is not None
    assert 92_000 < p95 < 98_000


def test_a_late_spike_is_seen() -> None:
    # Queue times jump after the reservoir fills: the p95 must notice.
    percentiles = Percentiles(size=200, rng=random.Random(2))
    for _ in range(5_000):
        percentiles.add(1.0)
    for _ in range(5_000):
        percentiles.add(900.0)
    assert percentiles.p95() == 900.0


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="size"):
        Percentiles(size=0)
