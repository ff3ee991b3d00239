"""Feeding helpers shared by the HTTP parser tests: whole, byte by byte, random splits."""

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from dynocorn.http import DEFAULT_LIMITS, HTTPError, Limits, Request, RequestParser


def splits(raw: bytes, seeds: int = 5) -> Iterator[tuple[str, list[bytes]]]:
    """``raw`` as one piece, one byte per piece, and cut at random (seeded) places."""
    yield "whole", [raw]
    yield "bytewise", [raw[i : i + 1] for i in range(len(raw))]
    for seed in range(seeds):
        rng = random.Random(seed)
        count = min(len(raw) - 1, rng.randint(1, 12))
        cuts = sorted(rng.sample(range(1, len(raw)), count)) if count > 0 else []
        edges = [0, *cuts, len(raw)]
        yield f"random{seed}", [raw[a:b] for a, b in itertools.pairwise(edges)]


def snapshot(request: Request) -> dict[str, Any]:
    return {
        "method": request.method,
        "raw_target": request.raw_target,
        "path": request.path,
        "query": request.query,
        "version": request.version,
        "headers": [list(header) for header in request.headers],
        "body": bytes(request.body).decode("latin-1"),
        "keep_alive": request.keep_alive,
        "content_length": request.content_length,
        "chunked": request.chunked,
        "expect_continue": request.expect_continue,
        "trailers": [list(trailer) for trailer in request.trailers],
        "complete": request.complete,
    }


@dataclass
class Outcome:
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: int | None = None  # what feed() refused with
    eof_status: int | None = None  # what feed_eof() refused with
    idle: bool = False  # parser.idle after the last piece


def run(pieces: list[bytes], limits: Limits = DEFAULT_LIMITS, eof: bool = True) -> Outcome:
    """Feed ``pieces`` the way a worker would, taking requests as they appear."""
    parser = RequestParser(limits)
    taken: list[Request] = []
    outcome = Outcome()
    try:
        for piece in pieces:
            parser.feed(piece)
            while parser.requests:
                taken.append(parser.requests.popleft())
    except HTTPError as exc:
        outcome.status = exc.status
        taken += parser.requests  # heads that completed before the refusal
    else:
        outcome.idle = parser.idle
        if eof:
            try:
                parser.feed_eof()
            except HTTPError as exc:
                outcome.eof_status = exc.status
    outcome.requests = [snapshot(request) for request in taken]
    return outcome


def run_all_ways(raw: bytes, limits: Limits = DEFAULT_LIMITS) -> Outcome:
    """Feed ``raw`` every way of :func:`splits`; all must agree. Returns the outcome."""
    outcomes = {name: run(pieces, limits) for name, pieces in splits(raw)}
    whole = outcomes["whole"]
    for name, outcome in outcomes.items():
        assert outcome == whole, f"fed {name}: {outcome!r:.500} != whole: {whole!r:.500}"
    return whole
