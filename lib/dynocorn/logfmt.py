"""logfmt values (`key=value key="two words"`), as Heroku's router and runtime-metrics lines
write them: bare when safe, else quoted, with every character that could end the value or
forge another field escaped. The access log's logfmt lines and the metrics lines both use it.
"""

from __future__ import annotations

_NEEDS_QUOTES = frozenset(' "=\\')


def value(text: str) -> str:
    """`text` as a logfmt value: bare when it can be, else quoted()."""
    if text and text.isprintable() and _NEEDS_QUOTES.isdisjoint(text):
        return text
    return quoted(text)


def quoted(text: str) -> str:
    """`text` in double quotes: backslash and quote escaped, anything unprintable (a control
    character, a line separator) written as a hex escape (\\x0a, \\u2028)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    if not escaped.isprintable():
        escaped = "".join(char if char.isprintable() else _hex(char) for char in escaped)
    return f'"{escaped}"'


def _hex(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
