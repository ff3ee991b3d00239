"""The README's benchmark table is the committed run's, realistic workloads first."""

import json
from typing import Any

import pytest
import summary


def committed() -> dict[str, Any]:
    results: dict[str, Any] = json.loads(summary.RESULTS.read_text(encoding="utf-8"))
    return results


def test_the_readme_shows_the_committed_run() -> None:
    current = summary.README.read_text(encoding="utf-8")
    assert summary.render_readme(current, committed()) == current, (
        "README.md's benchmark table differs from bench/results/latest.json: "
        "run `python bench/summary.py` (UPDATE_RESULTS=1 make bench does it after a run)"
    )


def test_the_workloads_users_feel_come_before_hello_world() -> None:
    rows = [line for line in summary.table(committed()) if line.startswith("| ") and "(" in line]
    labels = [row.split(" | ")[0] for row in rows]
    first_plain = next(i for i, label in enumerate(labels) if "hello-world" in label)
    assert any("I/O" in label for label in labels[:first_plain])
    assert any("mixed" in label for label in labels[:first_plain])
    assert all("Flask" not in label for label in labels[:first_plain])


def made_up_run() -> dict[str, Any]:
    def row(server: str, app: str, rps: float, failure: str | None = None) -> dict[str, Any]:
        cell = {"server": server, "app": app, "mode": "keepalive"}
        return {"cell": cell, "requests_per_second": rps, "p50_ms": 1.25, "p99_ms": 9.0,
                "failure": failure}  # fmt: skip

    return {
        "about": {
            "date": "D",
            "commit": "abc1234",
            "cpus": 2,
            "cpu": "X",
            "python": "3.11",
            "versions": {"dynocorn": "0.1"},
            "wrk": "wrk 4",
        },
        "settings": {
            "rounds": 5,
            "duration_seconds": 5,
            "workers": 2,
            "connections": 50,
            "apps_settings": {"io20": {"workers": 4, "connections": 8}},
        },
        "summary": [
            row("dynocorn-sync", "io20", 195.4),
            row("gunicorn-sync", "io20", 1189.6),
            row("dynocorn-sync", "hello", 60000.0),
            row("gunicorn-sync", "hello", 0.0, failure="did not start"),
        ],
        "criteria": [
            {"cell": {"server": "dynocorn-sync", "app": "io20"}, "verdict": "FAIL"},
            {"cell": {"server": "dynocorn-gthread", "app": "io20"}, "verdict": "PASS"},
        ],
    }


def test_the_table_says_what_was_measured_and_what_failed() -> None:
    text = summary.summary_markdown(made_up_run())
    assert "| I/O: each request waits 20 ms (4 workers, 8 connections) | sync | 195 | " in text
    assert "| 1,190 | 1.2 / 9.0 | - | - |" in text  # granian absent: a dash, not a zero
    assert "| hello-world (2 workers, 50 connections) | sync | 60,000 | 1.2 / 9.0 | - | - |" in text
    assert "1 of 2 realistic cells pass their criteria; not io20 sync" in text
    assert "at commit `abc1234`" in text and "5 interleaved rounds" in text


def test_a_readme_without_the_markers_is_an_error() -> None:
    with pytest.raises(ValueError, match="bench markers"):
        summary.render_readme("# no table here\n", made_up_run())


def test_asgi_apps_have_their_own_table_against_uvicorn() -> None:
    results = made_up_run()
    results["summary"] += [
        {"cell": {"server": server, "app": "fastapi", "mode": "keepalive"},
         "requests_per_second": rps, "p50_ms": 2.0, "p99_ms": 8.0, "failure": None}
        for server, rps in (("dynocorn-asgi", 9000.0), ("uvicorn", 8000.0),
                            ("granian-asgi", 10000.0), ("granian", 1.0))
    ]  # fmt: skip
    lines = summary.table(results)
    intro = lines.index(summary.ASGI_TABLE.intro)
    assert "| gunicorn req/s |" in lines[0] and "| uvicorn req/s |" in lines[intro + 2]
    # WSGI rows first, then the ASGI table: dynocorn-asgi, uvicorn, granian's ASGI mode.
    assert lines[intro + 4] == (
        "| FastAPI, a JSON route (2 workers, 50 connections) | asgi | 9,000 | 2.0 / 8.0 "
        "| 8,000 | 2.0 / 8.0 | 10,000 | 2.0 / 8.0 |"
    )
    assert all("hello-world" not in line for line in lines[intro:])


def test_a_run_without_asgi_apps_has_no_asgi_table() -> None:
    assert summary.ASGI_TABLE.intro not in summary.table(made_up_run())
