"""Request queue time, from the router's ``X-Request-Start``, and its 95th percentile.

Queue time is how long a request waited between the router and a free worker: the figure
that says "add workers" when response times look fine from inside the app.
"""

from __future__ import annotations

import math
import random


def queue_ms(header: str | None, now: float) -> float | None:
    """Milliseconds from the router stamping the request to ``now`` (epoch seconds).

    Routers disagree on the unit: Heroku sends epoch milliseconds, New Relic's convention is
    ``t=<microseconds>``, nginx's ``t=${msec}`` is seconds with a fraction, and a few send
    nanoseconds. Today these are about 1e12, 1e15, 1e9 and 1e18, so the magnitude tells them
    apart for the next three thousand years. Never negative: the router's clock and ours
    differ by a little, and a negative wait is that skew, not a measurement.
    """
    if not header:
        return None
    text = header.strip().removeprefix("t=").strip()
    try:
        stamp = float(text)
    except ValueError:
        return None
    if not math.isfinite(stamp) or stamp <= 0:
        return None
    if stamp > 1e17:
        stamp_ms = stamp / 1e6
    elif stamp > 1e14:
        stamp_ms = stamp / 1e3
    elif stamp > 1e11:
        stamp_ms = stamp
    else:
        stamp_ms = stamp * 1e3
    return max(0.0, now * 1e3 - stamp_ms)


class Percentiles:
    """A uniform sample of at most ``size`` values per interval (reservoir sampling).

    ``add`` is an append, or one random draw once full, so it can run on every request;
    sorting waits for ``percentile``, once per metrics interval. Under threads a lost update
    only skews the sample slightly, which a metric can bear, so there is no lock.
    """

    def __init__(self, size: int = 1024, rng: random.Random | None = None) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._size = size
        self._rng = rng or random.Random()
        self._samples: list[float] = []
        self._seen = 0

    def __len__(self) -> int:
        return len(self._samples)

    @property
    def seen(self) -> int:
        """Values added since the last reset, kept or not."""
        return self._seen

    def add(self, value: float) -> None:
        self._seen += 1
        if len(self._samples) < self._size:
            self._samples.append(value)
            return
        # Algorithm R: the n-th value replaces a random slot with probability size / n, which
        # keeps every value seen equally likely to be in the sample.
        slot = self._rng.randrange(self._seen)
        if slot < self._size:
            self._samples[slot] = value

    def percentile(self, q: float) -> float | None:
        """The nearest-rank ``q``-th percentile (0 < q <= 100); None with no samples."""
        if not 0 < q <= 100:
            raise ValueError("q must be in (0, 100]")
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        # q * n first: exact for a whole q, so the rank is never off by one float ulp.
        return ordered[max(0, math.ceil(q * len(ordered) / 100) - 1)]

    def samples(self) -> list[float]:
        """The kept values, in no particular order."""
        return list(self._samples)

    def p95(self) -> float | None:
        return self.percentile(95)

    def reset(self) -> None:
        self._samples = []
        self._seen = 0
