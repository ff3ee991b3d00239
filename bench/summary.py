"""The README's benchmark table, written from the committed run (bench/results/latest.json).

`UPDATE_RESULTS=1 make bench` rewrites the table between the README's markers after a run;
`python bench/summary.py` rewrites it from the committed JSON alone, and `--check` exits 1
when the README and the JSON disagree (bench/test_summary.py does the same in `make test`).
The workloads where users feel the difference come first, hello-world and Flask after;
the ASGI apps follow in a table of their own, dynocorn's ASGI class against uvicorn.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

BENCH_DIR = Path(__file__).resolve().parent
README = BENCH_DIR.parent / "README.md"
RESULTS = BENCH_DIR / "results" / "latest.json"
BEGIN = "<!-- bench:begin (written by `make bench` from bench/results/latest.json) -->"
END = "<!-- bench:end -->"


class Table(NamedTuple):
    """One table of the README: each dynocorn class against its peer, and granian."""

    intro: str  # the line before the table ("" for none)
    peer: str  # whom the peers' columns are of, in the heading
    granian: str  # granian's server for these apps
    peers: dict[str, str]  # dynocorn class -> the server it is compared with
    workloads: dict[str, str]  # app -> what it stands for, in the order a reader should see


WSGI_TABLE = Table(
    intro="",
    peer="gunicorn",
    granian="granian",
    peers={name: f"gunicorn-{name}" for name in ("sync", "gthread", "gevent")},
    workloads={
        "io20": "I/O: each request waits 20 ms",
        "mixed": "mixed: 9 in 10 wait 2 ms, 1 in 10 waits 200 ms",
        "cpu5": "CPU: each request computes 5 ms",
        "heroku_gthread": "Heroku's gthread: io20 with 5 threads",
        "hello": "hello-world",
        "flask": "Flask, a JSON route",
    },
)
ASGI_TABLE = Table(
    intro="ASGI apps: `-k asgi` against uvicorn (httptools, uvloop) and granian's ASGI mode.",
    peer="uvicorn",
    granian="granian-asgi",
    peers={"asgi": "uvicorn"},
    workloads={
        "io20_asgi": "I/O: each request awaits 20 ms",
        "mixed_asgi": "mixed: 9 in 10 await 2 ms, 1 in 10 awaits 200 ms",
        "cpu5_asgi": "CPU: each request computes 5 ms, blocking the loop",
        "hello_asgi": "hello-world",
        "fastapi": "FastAPI, a JSON route",
    },
)
TABLES = (WSGI_TABLE, ASGI_TABLE)
CLASSES = tuple(name for each in TABLES for name in each.peers)
WORKLOADS = {app: about for each in TABLES for app, about in each.workloads.items()}


def _rows_by_cell(results: Mapping[str, Any]) -> dict[tuple[str, str], Mapping[str, Any]]:
    """The keep-alive summary rows, by (server, app)."""
    return {
        (row["cell"]["server"], row["cell"]["app"]): row
        for row in results["summary"]
        if row["cell"]["mode"] == "keepalive" and row["requests_per_second"] is not None
    }


def _figures(row: Mapping[str, Any] | None) -> str:
    if row is None or row.get("failure"):
        return "- | -"
    return f"{row['requests_per_second']:,.0f} | {row['p50_ms']:.1f} / {row['p99_ms']:.1f}"


def _shape(results: Mapping[str, Any], app: str) -> str:
    """How the workload was served: workers, threads and connections."""
    settings = results["settings"]
    own = settings.get("apps_settings", {}).get(app, {})
    workers = own.get("workers") or settings["workers"]
    connections = own.get("connections") or settings["connections"]
    threads = f" x {own['threads']} threads" if own.get("threads") else ""
    return f"{workers} workers{threads}, {connections} connections"


def table(results: Mapping[str, Any]) -> list[str]:
    """The tables with a dynocorn row in this run, one after the other."""
    rows = _rows_by_cell(results)
    lines: list[str] = []
    for each in TABLES:
        body = _table_rows(results, rows, each)
        if not body:
            continue
        if lines:
            lines.append("")
        if each.intro:
            lines += [each.intro, ""]
        lines += [
            f"| workload | class | dynocorn req/s | p50 / p99 ms | {each.peer} req/s "
            "| p50 / p99 ms | granian req/s | p50 / p99 ms |",
            "|---|---|--:|--:|--:|--:|--:|--:|",
            *body,
        ]
    return lines


def _table_rows(
    results: Mapping[str, Any], rows: Mapping[tuple[str, str], Mapping[str, Any]], spec: Table
) -> list[str]:
    lines = []
    for app, about in spec.workloads.items():
        classes = [name for name in spec.peers if (f"dynocorn-{name}", app) in rows]
        for index, name in enumerate(classes):
            label = f"{about} ({_shape(results, app)})" if index == 0 else ""
            granian = _figures(rows.get((spec.granian, app))) if index == 0 else "|"
            lines.append(
                f"| {label} | {name} | {_figures(rows[(f'dynocorn-{name}', app)])} "
                f"| {_figures(rows.get((spec.peers[name], app)))} | {granian} |"
            )
    return lines


def verdicts(results: Mapping[str, Any]) -> str:
    """The criteria (each dynocorn class against its peer), failures by name."""
    checked = results.get("criteria", [])
    failed = [
        f"{v['cell']['app']} {v['cell']['server'].removeprefix('dynocorn-')}"
        for v in checked
        if v["verdict"] != "PASS"
    ]
    text = f"{len(checked) - len(failed)} of {len(checked)} realistic cells pass their criteria"
    return text + (f"; not {', '.join(failed)}" if failed else "")


def memory(results: Mapping[str, Any]) -> str:
    figures = [
        f"{run['server']} {run['memory']['pss_total'] / 2**20:.1f} MiB"
        for run in results.get("memory", [])
        if run.get("memory") and run["server"] in ("dynocorn-sync", "gunicorn-sync", "granian")
    ]
    return ", ".join(figures)


def summary_markdown(results: Mapping[str, Any]) -> str:
    about, settings = results["about"], results["settings"]
    versions = ", ".join(f"{name} {version}" for name, version in about["versions"].items())
    lines = [
        f"Run of {about['date']} at commit `{about['commit']}`: {about['cpus']} shared CPUs "
        f"({about['cpu']}), Python {about['python']}, {versions}; {about['wrk']} on loopback, "
        f"keep-alive, {settings['rounds']} interleaved rounds of {settings['duration_seconds']} s,"
        " medians of the rounds.",
        "",
        *table(results),
        "",
        f"{verdicts(results)} (`bench/results/latest.md` has every round and check).",
    ]
    if text := memory(results):
        lines += ["", f"Memory, the Flask app with `--preload` and 2 workers (total PSS): {text}."]
    return "\n".join(lines)


def render_readme(readme: str, results: Mapping[str, Any]) -> str:
    head, begin, rest = readme.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError("README.md lacks the bench markers")
    return f"{head}{BEGIN}\n{summary_markdown(results)}\n{END}{tail}"


def update_readme(results: Mapping[str, Any], readme: Path = README) -> None:
    readme.write_text(render_readme(readme.read_text(encoding="utf-8"), results), "utf-8")


def main(argv: Sequence[str]) -> int:
    results = json.loads(RESULTS.read_text(encoding="utf-8"))
    if "--check" in argv:
        current = README.read_text(encoding="utf-8")
        if render_readme(current, results) != current:
            print("README.md's benchmark table is not the committed run's: python bench/summary.py")
            return 1
        return 0
    update_readme(results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
