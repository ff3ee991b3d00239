"""logfmt values: what the access log's Heroku-style lines and the metrics lines write."""

from __future__ import annotations

import pytest

from dynocorn import logfmt


@pytest.mark.parametrize("text", ["web.1", "GET", "abc-123_x.y/z"])
def test_a_safe_value_is_bare(text: str) -> None:
    assert logfmt.value(text) == text


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ("", '""'),
        ("two words", '"two words"'),
        ("a=b", '"a=b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        # A value cannot end its line or start another field, whatever the client sent.
        ("x\ny=1", '"x\\x0ay=1"'),
        ("\x1b[31mred", '"\\x1b[31mred"'),
        ("\x85", '"\\x85"'),
        ("line\u2028sep", '"line\\u2028sep"'),
        ("\U000e0001", '"\\U000e0001"'),
    ],
)
def test_anything_else_is_quoted_and_escaped(text: str, written: str) -> None:
    assert logfmt.value(text) == written


def test_printable_non_ascii_stays_as_it_is() -> None:
    assert logfmt.value("café") == "café"
    assert logfmt.quoted("café") == '"café"'
