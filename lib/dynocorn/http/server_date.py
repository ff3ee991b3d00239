"""What both the error pages and the responses need: the server name and the date."""

import time

SERVER_NAME = "dynocorn"

_DAYS = (b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun")
_MONTHS = (
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun",
    b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
)  # fmt: skip

_clock = time.time  # replaced in tests
_second = -1
_date = b""
_server_date = b""  # b"Server: dynocorn\r\nDate: ...\r\n", the lines almost every response needs


def _refresh(second: int) -> None:
    global _second, _date, _server_date
    t = time.gmtime(second)
    # Formatted by hand: strftime would follow the process locale.
    _date = b"%s, %02d %s %04d %02d:%02d:%02d GMT" % (
        _DAYS[t.tm_wday], t.tm_mday, _MONTHS[t.tm_mon - 1], t.tm_year,
        t.tm_hour, t.tm_min, t.tm_sec,
    )  # fmt: skip
    _server_date = b"Server: %s\r\nDate: %s\r\n" % (SERVER_NAME.encode(), _date)
    _second = second


def server_date_lines(now: float | None = None) -> bytes:
    """``Server`` and ``Date`` header lines for ``now`` (default: the wall clock),
    recomputed once a second. Almost every response calls it: the check is inline."""
    second = int(_clock() if now is None else now)
    if second != _second:
        _refresh(second)
    return _server_date


def http_date(now: float | None = None) -> bytes:
    """The IMF-fixdate for ``now`` (default: the wall clock), cached with the lines."""
    server_date_lines(now)
    return _date
