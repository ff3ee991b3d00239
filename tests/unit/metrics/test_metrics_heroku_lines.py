import re

import pytest

from dynocorn.metrics.heroku_lines import (
    WorkerFigures,
    load_line,
    memory_line,
    over_quota_lines,
    source_name,
    stable_dyno_id,
    workers_line,
)
from dynocorn.metrics.memory import DynoMemory

MB = 2**20

# PLATFORM.md, "Runtime metrics lines", verbatim.
DYNO = "heroku.2808254.d97d0ea7-cf3d-411b-b453-d2943a50b456"
LOAD_EXAMPLE = (
    "source=web.1 dyno=heroku.2808254.d97d0ea7-cf3d-411b-b453-d2943a50b456"
    " sample#load_avg_1m=2.46 sample#load_avg_5m=1.06 sample#load_avg_15m=0.99"
)
MEMORY_EXAMPLE = (
    "source=web.1 dyno=heroku.2808254.d97d0ea7-cf3d-411b-b453-d2943a50b456"
    " sample#memory_total=21.00MB sample#memory_rss=21.22MB sample#memory_cache=0.00MB"
    " sample#memory_swap=0.00MB sample#memory_pgpgin=348836pages"
    " sample#memory_pgpgout=343403pages sample#memory_quota=512.00MB"
)
R14_EXAMPLE = ["Process running mem=590M(115.2%)", "Error R14 (Memory quota exceeded)"]


def generalise(example: str) -> re.Pattern[str]:
    """The example line with its values made patterns: the layout stays literal.

    A decimal keeps its two places (and MB), a page count its suffix, source and dyno any
    logfmt-safe word.
    """
    pattern = re.escape(example)
    pattern = re.sub(r"(?<=source=).+?(?=\\ )", r"[^\\s\"=]+", pattern)
    pattern = re.sub(r"(?<=dyno=).+?(?=\\ )", r"[^\\s\"=]+", pattern)
    pattern = re.sub(r"(?<==)\d+\\\.\d\d", r"\\d+\\.\\d{2}", pattern)
    pattern = re.sub(r"(?<==)\d+(?=pages)", r"\\d+", pattern)
    return re.compile(pattern)


LOAD_LINE = generalise(LOAD_EXAMPLE)
MEMORY_LINE = generalise(MEMORY_EXAMPLE)


def test_the_patterns_are_general_and_match_the_examples() -> None:
    assert LOAD_LINE.pattern == (
        r"source=[^\s\"=]+\ dyno=[^\s\"=]+\ sample\#load_avg_1m=\d+\.\d{2}"
        r"\ sample\#load_avg_5m=\d+\.\d{2}\ sample\#load_avg_15m=\d+\.\d{2}"
    )
    assert LOAD_LINE.fullmatch(LOAD_EXAMPLE)
    assert MEMORY_LINE.fullmatch(MEMORY_EXAMPLE)
    assert MEMORY_LINE.pattern.count(r"\d+\.\d{2}MB") == 5
    assert MEMORY_LINE.pattern.count(r"\d+pages") == 2


def test_load_line_reproduces_the_example() -> None:
    assert load_line("web.1", DYNO, (2.46, 1.06, 0.99)) == LOAD_EXAMPLE


def test_memory_line_reproduces_the_example() -> None:
    memory = DynoMemory(
        total=21 * MB,
        rss=round(21.22 * MB),
        cache=0,
        swap=0,
        pgpgin=348836,
        pgpgout=343403,
        source="cgroup v1",
    )
    assert memory_line("web.1", DYNO, memory, 536870912) == MEMORY_EXAMPLE


@pytest.mark.parametrize(
    "load",
    [(0.0, 0.0, 0.0), (0.004, 0.005, 0.006), (12.345, 100.0, 7.999), (63.5, 8.0, 1e-9)],
)
def test_load_lines_keep_the_layout(load: tuple[float, float, float]) -> None:
    line = load_line("worker.2", "dynocorn.123.abc", load)
    assert LOAD_LINE.fullmatch(line), line


@pytest.mark.parametrize(
    "memory",
    [
        DynoMemory(0, 0, 0, 0, 0, 0, "pss"),
        DynoMemory(1, 1, 0, 0, 1, 1, "pss"),
        DynoMemory(15 * 2**30, 14 * 2**30, 2**30 - 1, 1, 10**12, 0, "cgroup v1"),
        DynoMemory(MB * 1023 + MB // 2, 5, 6, 7, 8, 9, "cgroup v2"),
    ],
)
def test_memory_lines_keep_the_layout(memory: DynoMemory) -> None:
    line = memory_line("web-12a34b56d-e78f9", "dynocorn.1.x", memory, 15032385536)
    assert MEMORY_LINE.fullmatch(line), line
    assert line.endswith(" sample#memory_quota=14336.00MB")  # performance-l


def test_mb_are_binary_with_two_decimals() -> None:
    memory = DynoMemory(MB // 100, 3 * MB // 2, 999 * MB // 1000, 2**30, 0, 0, "pss")
    line = memory_line("web.1", "d", memory, None)
    assert "sample#memory_total=0.01MB sample#memory_rss=1.50MB" in line
    assert "sample#memory_cache=1.00MB sample#memory_swap=1024.00MB" in line


def test_memory_line_without_a_quota_leaves_it_out() -> None:
    line = memory_line("web.1", DYNO, DynoMemory(0, 0, 0, 0, 0, 0, "pss"), None)
    assert "memory_quota" not in line
    assert line.endswith("sample#memory_pgpgout=0pages")
    assert MEMORY_LINE.fullmatch(line + " sample#memory_quota=0.00MB")


def test_unsafe_names_are_quoted_not_spliced() -> None:
    line = load_line('web 1" dyno=forged', "a\nb", (1.0, 2.0, 3.0))
    assert line.startswith('source="web 1\\" dyno=forged" dyno="a\\x0ab" ')
    assert "\n" not in line


# --- R14 ------------------------------------------------------------------------------------


def test_r14_reproduces_the_example() -> None:
    # 589.8 MB of a 512 MB dyno: 115.19...%.
    assert over_quota_lines(round(589.8 * MB), 512 * MB) == R14_EXAMPLE


@pytest.mark.parametrize(
    ("total", "quota", "mem", "percent"),
    [
        (512 * MB + 1, 512 * MB, "512M", "100.0%"),
        (1024 * MB, 512 * MB, "1024M", "200.0%"),  # R15 territory, still reported
        (589 * MB + MB // 2, 512 * MB, "590M", "115.1%"),  # half a MB rounds up
        (589 * MB + MB // 2 - 1, 512 * MB, "589M", "115.1%"),
        (590 * MB + MB // 2, 512 * MB, "591M", "115.3%"),  # up, not to even
        # Float formatting would print 100.0 here: 100.05 is 100.0499... in binary.
        (10005 * MB, 10000 * MB, "10005M", "100.1%"),
        (10004 * MB, 10000 * MB, "10004M", "100.0%"),
        (20003 * MB, 20000 * MB, "20003M", "100.0%"),  # 100.015
        (2 * 10**12, 10**12, "1907349M", "200.0%"),
    ],
)
def test_r14_rounding(total: int, quota: int, mem: str, percent: str) -> None:
    assert over_quota_lines(total, quota) == [
        f"Process running mem={mem}({percent})",
        "Error R14 (Memory quota exceeded)",
    ]


@pytest.mark.parametrize(
    ("total", "quota"), [(512 * MB, 512 * MB), (0, 512 * MB), (1, 2), (5, 0), (5, -1)]
)
def test_no_r14_within_the_quota(total: int, quota: int) -> None:
    assert over_quota_lines(total, quota) == []


# --- dynocorn's workers line ----------------------------------------------------------------


def test_workers_line() -> None:
    workers = [
        WorkerFigures(index=2, pid=124, rss=round(40.5 * MB), pss=21 * MB, uss=9 * MB, requests=7),
        WorkerFigures(
            index=1,
            pid=123,
            rss=round(41.2 * MB),
            pss=round(22.1 * MB),
            uss=round(9.8 * MB),
            requests=1042,
        ),
    ]
    assert workers_line("web.1", workers, 30 * MB, 12.5, 3.2) == (
        "source=web.1 sample#workers=2"
        " sample#worker.1.pid=123 sample#worker.1.rss=41.20MB sample#worker.1.pss=22.10MB"
        " sample#worker.1.uss=9.80MB sample#worker.1.requests=1042"
        " sample#worker.2.pid=124 sample#worker.2.rss=40.50MB sample#worker.2.pss=21.00MB"
        " sample#worker.2.uss=9.00MB sample#worker.2.requests=7"
        " sample#master.pss=30.00MB sample#requests_per_sec=12.50 sample#queue_ms_p95=3.20"
    )


def test_workers_line_without_queue_times_or_workers() -> None:
    assert workers_line("web.1", [], 0, 0.0, None) == (
        "source=web.1 sample#workers=0 sample#master.pss=0.00MB sample#requests_per_sec=0.00"
    )


# --- names ----------------------------------------------------------------------------------


def test_dyno_id_from_heroku() -> None:
    environ = {"HEROKU_DYNO_ID": "1vac4117-c29f-4312-521e-ba4d8638c1ac"}
    assert stable_dyno_id(environ, 4, "x") == "1vac4117-c29f-4312-521e-ba4d8638c1ac"


@pytest.mark.parametrize("environ", [{}, {"HEROKU_DYNO_ID": ""}, {"HEROKU_DYNO_ID": "  "}])
def test_dyno_id_made_up_like_herokus(environ: dict[str, str]) -> None:
    run_id = "d97d0ea7-cf3d-411b-b453-d2943a50b456"
    dyno = stable_dyno_id(environ, 2808254, run_id)
    assert dyno == f"dynocorn.2808254.{run_id}"
    assert re.fullmatch(r"[a-z]+\.\d+\.[0-9a-f-]{36}", dyno)
    assert re.fullmatch(r"[a-z]+\.\d+\.[0-9a-f-]{36}", DYNO)  # the same shape


@pytest.mark.parametrize(
    ("name", "source"),
    [
        ("web.1", "web.1"),
        ("worker.2", "worker.2"),
        ("web-12a34b56d-e78f9", "web-12a34b56d-e78f9"),
        (" web.3 ", "web.3"),
        ("", "web.1"),
        (None, "web.1"),
    ],
)
def test_source_name(name: str | None, source: str) -> None:
    assert source_name(name) == source
