"""Memory sizes as people and platforms write them: ``512``, ``512MB``, ``1.5G``, ``2345M``.

Units are binary because the platforms mean them that way: Heroku's "512 MB" dyno has a
``memory.limit_in_bytes`` of 536870912, and Cloud Foundry's ``MEMORY_LIMIT=1G`` is 1024 MiB.
"""

from __future__ import annotations

import re
from decimal import Decimal

_MB = 1024**2

# K, KB and KiB all mean 1024: nobody sizing a dyno means 1000.
_MULTIPLIERS: dict[str, int] = {
    "b": 1,
    **{
        spelling: 1024**power
        for power, letter in enumerate("kmgt", start=1)
        for spelling in (letter, f"{letter}b", f"{letter}ib")
    },
}

_SIZE = re.compile(r"\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*([a-z]*)\s*", re.IGNORECASE)


def parse_size(text: str, default_unit: str = "MB") -> int:
    """Return the number of bytes in ``text``; a bare number is in ``default_unit``.

    Raises ValueError with a reason short enough to follow "PORT='x': " in a message.
    """
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError("not a size like 512MB")
    number, unit = match.groups()
    multiplier = _MULTIPLIERS.get((unit or default_unit).lower())
    if multiplier is None:
        raise ValueError(f"unknown unit {unit or default_unit!r}: use B, KB, MB, GB or TB")
    # Decimal keeps "1.5GB" exact; a fraction of a byte is dropped.
    nbytes = int(Decimal(number) * multiplier)
    if nbytes <= 0:
        raise ValueError("must be more than zero")
    return nbytes


def format_mb(nbytes: int) -> str:
    """``536870912`` -> ``"512 MB"``; one decimal when the size is not whole megabytes."""
    if nbytes % _MB == 0:
        return f"{nbytes // _MB} MB"
    return f"{nbytes / _MB:.1f} MB"
