"""Replay the request corpus (tests/corpus) against the parser, fed several ways."""

import random
from typing import Any

import pytest
from http_feed import run, splits

from corpus_cases import Case, decode_http_text, encode_http_text, load_cases

CASES = load_cases()
DEFAULTS: dict[str, Any] = {
    "content_length": None,
    "chunked": False,
    "expect_continue": False,
    "trailers": [],
    "complete": True,
}


def test_corpus_is_large_enough() -> None:
    assert sum(case.valid for case in CASES) >= 25
    assert sum(not case.valid for case in CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_case(case: Case) -> None:
    for how, pieces in splits(case.raw):
        outcome = run(pieces)
        if case.valid:
            assert outcome.status is None, f"fed {how}: refused with {outcome.status}"
            assert outcome.eof_status is None, f"fed {how}: unfinished at end of input"
            assert outcome.idle, f"fed {how}: bytes left over"
            assert len(outcome.requests) == len(case.requests), f"fed {how}"
            for got, expected in zip(outcome.requests, case.requests, strict=True):
                want = DEFAULTS | expected
                assert {key: got[key] for key in want} == want, f"fed {how}"
        else:
            assert outcome.status == case.status, f"fed {how}: {outcome}"


def test_http_text_round_trip() -> None:
    raw = bytes(range(256)) + b"\r\n\\r\\n"
    text = encode_http_text(raw)
    assert text.isascii()
    assert decode_http_text(text) == raw
    assert decode_http_text("GET / HTTP/1.1\\r\\n\n\\r\\n\n") == b"GET / HTTP/1.1\r\n\r\n"
    with pytest.raises(ValueError):
        decode_http_text("\\q")


def test_mutated_corpus_is_split_independent() -> None:
    """Corrupted requests: whether they are refused, and what parses before, must not
    depend on how the bytes arrive. (With several faults the status may differ: the
    first fault to arrive decides, and that depends on the split.)"""
    rng = random.Random(2026)
    small = [case.raw for case in CASES if len(case.raw) <= 600]
    alphabet = b"\r\n \t:;,0aZ_-\x00\x7f\xe9/?#chunked"
    for _ in range(300):
        raw = bytearray(rng.choice(small))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(raw))
            if rng.random() < 0.5:
                raw[at] = rng.choice(alphabet)
            else:
                raw[at:at] = bytes([rng.choice(alphabet)])
        outcomes = [run(pieces) for _how, pieces in splits(bytes(raw), seeds=2)]
        summaries = {
            (repr(o.requests), o.status is None, o.eof_status is None, o.idle) for o in outcomes
        }
        assert len(summaries) == 1, bytes(raw)
