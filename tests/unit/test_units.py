import pytest

from dynocorn.units import format_mb, parse_size

KB = 1024
MB = 1024**2
GB = 1024**3


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512", 512 * MB),
        ("512MB", 512 * MB),
        ("512M", 512 * MB),
        ("512MiB", 512 * MB),
        ("512mb", 512 * MB),
        ("512 MB", 512 * MB),
        (" 512 mib ", 512 * MB),
        ("1.5GB", 1536 * MB),
        ("0.5g", 512 * MB),
        ("1G", GB),
        ("1GiB", GB),
        ("2345M", 2345 * MB),
        ("1024KB", MB),
        ("1k", KB),
        ("1KiB", KB),
        ("536870912B", 536870912),
        ("536870912b", 536870912),
        ("2T", 2 * 1024**4),
        ("1.", MB),
        (".5G", 512 * MB),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    ("text", "unit", "expected"),
    [
        ("536870912", "B", 536870912),
        ("1", "GB", GB),
        ("64", "kb", 64 * KB),
        ("64MB", "B", 64 * MB),  # an explicit unit beats the default
    ],
)
def test_parse_size_default_unit(text: str, unit: str, expected: int) -> None:
    assert parse_size(text, unit) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not a size like 512MB"),
        ("   ", "not a size like 512MB"),
        ("lots", "not a size like 512MB"),
        ("MB", "not a size like 512MB"),
        ("1.2.3", "not a size like 512MB"),
        ("1 2", "not a size like 512MB"),
        ("1e9", "not a size like 512MB"),
        ("12XB", "unknown unit 'XB'"),
        ("512 MBs", "unknown unit 'MBs'"),
        ("0", "must be more than zero"),
        ("0MB", "must be more than zero"),
        ("-1", "must be more than zero"),
        ("-1G", "must be more than zero"),
        ("0.1B", "must be more than zero"),
    ],
)
def test_parse_size_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{reason}"):
        parse_size(text)


def test_parse_size_rejects_unknown_default_unit() -> None:
    with pytest.raises(ValueError, match="unknown unit 'pages'"):
        parse_size("12", "pages")


@pytest.mark.parametrize(
    ("nbytes", "expected"),
    [
        (536870912, "512 MB"),
        (1536 * MB, "1536 MB"),
        (15032385536, "14336 MB"),
        (MB + MB // 2, "1.5 MB"),
        (24684084 * KB, "24105.6 MB"),
        (0, "0 MB"),
    ],
)
def test_format_mb(nbytes: int, expected: str) -> None:
    assert format_mb(nbytes) == expected
