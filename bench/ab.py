"""What a change costs one cell: this checkout against another revision, in one run.

`make ab BASE=<rev>` (or `python bench/ab.py --base REV`): the base revision's `lib/` is
exported (git archive) to a temporary directory, and the two run turn about, round after
round (each round in the other order than the last, so that a machine that speeds up or
slows down during the run favours neither): the same app, worker class and wrk load,
dynocorn run from one `lib/` then the other. It prints each round's req/s and the workers'
CPU per request (their user and system time over the measured seconds, from /proc: it does
not depend on how fast the machine was at that moment as much as req/s does), then the
medians and their ratios. `make bench` compares servers; this compares two versions of one.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import APPS, free_port, parse_wrk, stop, wait_until_answering  # noqa: E402


def export_lib(revision: str, into: Path) -> Path:
    archive = into / "lib.tar"
    with archive.open("wb") as out:
        subprocess.run(["git", "archive", revision, "lib"], cwd=ROOT, stdout=out, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "lib"


def workers_cpu(master: int) -> float:
    """Seconds of CPU the master's children have used so far."""
    total = 0.0
    for child in psutil.Process(master).children():
        try:
            times = child.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def one_run(lib: Path, flags: list[str], args: argparse.Namespace) -> tuple[float, float]:
    """(req/s, workers' CPU µs per request) of one measured run."""
    app = next(app for app in APPS if app.name == args.app)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(app.directory), str(lib)])}
    for variable in ("PORT", "WEB_CONCURRENCY", "DYNO", "GUNICORN_CMD_ARGS", "DYNOCORN_CMD_ARGS"):
        env.pop(variable, None)
    command = [
        sys.executable, "-m", "dynocorn", "-w", str(args.workers), "-b", f"127.0.0.1:{port}",
        *flags, app.target,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=app.directory, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_until_answering(process, port, app.path)
        url = f"http://127.0.0.1:{port}{app.path}"
        wrk = ["wrk", "-t1", f"-c{args.connections}"]
        subprocess.run([*wrk, "-d1s", url], capture_output=True, check=True)  # warm-up
        before = workers_cpu(process.pid)
        done = subprocess.run(
            [*wrk, f"-d{args.duration}s", url], capture_output=True, text=True, check=True
        )
        used = workers_cpu(process.pid) - before
    finally:
        stop(process)
    result = parse_wrk(done.stdout)
    requests = max(1, result.requests)
    return result.requests_per_second, used / requests * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the revision to compare against")
    parser.add_argument("--app", default="hello", choices=[app.name for app in APPS])
    parser.add_argument("--flags", default="", help="dynocorn flags for both, e.g. '-k gthread'")
    parser.add_argument(
        "--this-flags",
        default="--metrics-bind 127.0.0.1:0",
        help="flags for this checkout only (a base from before --metrics-bind lacks it)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dynocorn-ab-") as scratch:
        sides = {"base": export_lib(args.base, Path(scratch)), "this": ROOT / "lib"}
        flags = {
            "base": args.flags.split(),
            "this": [*args.flags.split(), *args.this_flags.split()],
        }
        results: dict[str, list[tuple[float, float]]] = {"base": [], "this": []}
        for number in range(args.rounds):
            order = ["base", "this"] if number % 2 == 0 else ["this", "base"]
            for side in order:
                results[side].append(one_run(sides[side], flags[side], args))
            base, this = results["base"][-1], results["this"][-1]
            print(
                f"round {number + 1}: base {base[0]:9.0f} req/s {base[1]:6.2f} µs/req | "
                f"this {this[0]:9.0f} req/s {this[1]:6.2f} µs/req",
                flush=True,
            )
    rate = {side: statistics.median(r for r, _ in runs) for side, runs in results.items()}
    cpu = {side: statistics.median(c for _, c in runs) for side, runs in results.items()}
    print(
        f"median: base {rate['base']:.0f} req/s, this {rate['this']:.0f} req/s "
        f"({rate['this'] / rate['base'] - 1:+.1%}); CPU per request base {cpu['base']:.2f} µs, "
        f"this {cpu['this']:.2f} µs ({cpu['this'] / cpu['base'] - 1:+.1%})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
