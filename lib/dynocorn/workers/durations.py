"""How long a worker's requests take: a small sample, and what the loop classes (sync,
gthread) decide from its median.

Long requests (a median of LONG_REQUEST or more) are served oldest first, one per look at
the poller (sync), and wait for a thread parked where a sibling can take them (gthread);
below that, the bookkeeping would cost more than a wait could. A request is slow, and the
connections waiting behind it move to a free sibling, once it has run `slow_after()`.
"""

from __future__ import annotations

from collections import deque

from dynocorn.slow_watch import OFFLOAD_AFTER

# One request in SAMPLE_EVERY_MASK + 1 is timed: reading the clock for every one would cost
# more than the sample is worth.
SAMPLE_EVERY_MASK = 7
DURATION_SAMPLES = 16
SLOW_FACTOR = 4.0  # how many times the median a request runs before it is slow
LONG_REQUEST = 0.001
_INT32_MAX = 2**31 - 1


class RequestDurations:
    __slots__ = ("long", "samples")

    def __init__(self) -> None:
        self.samples: deque[float] = deque(maxlen=DURATION_SAMPLES)
        self.long = False  # the median request takes LONG_REQUEST or more

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)
        self.long = self.typical() >= LONG_REQUEST

    def typical(self) -> float:
        """The median of the sampled request durations (0 before any)."""
        samples = sorted(self.samples)
        return samples[len(samples) // 2] if samples else 0.0

    def slow_after(self) -> float:
        """How long a request runs before it counts as slow: OFFLOAD_AFTER, or SLOW_FACTOR
        times the typical (median) request, when that is longer. An app whose requests all
        take 20 ms makes no request slow: moving its connections would only churn them (the
        fair share keeps them even); one slow among fast ones does."""
        return max(OFFLOAD_AFTER, SLOW_FACTOR * self.typical())

    def slow_after_us(self) -> int:
        """slow_after() in µs, as the int32 the scoreboard holds: a median of minutes (a
        streaming app's) must not overflow it."""
        return min(int(self.slow_after() * 1_000_000), _INT32_MAX)
