"""Benchmark dynocorn against gunicorn, uvicorn and granian on this machine: `make bench`.

How this works: each selected server serves each selected app on a free loopback port, and
wrk (1 thread, 50 connections, sharing the machine) loads it for DURATION seconds per mode.
A round runs every server x app x mode once; the rounds repeat, so that drifts of the
machine (other processes, CPU frequency) hit every server alike, and the table reports the
median over the rounds, with each cell's ratio to gunicorn sync measured in the same round.
The realistic cells (io20, mixed, cpu5, heroku_gthread and the ASGI apps' io20_asgi,
mixed_asgi, cpu5_asgi) have their own workers, threads and connections, run keep-alive only,
show every round and are checked against criteria. An app's interface (WSGI or ASGI) decides
which servers run it; ASGI apps are compared with uvicorn where WSGI apps are with gunicorn.
A separate pass measures memory: the Flask app with --preload under load, then the PSS of
the whole process tree and the USS of each worker.

Results go to stdout and to bench/tmp/latest.md, latest.json and latest.png, or, with
UPDATE_RESULTS=1, to the committed bench/results/. Selection
comes from the environment (SERVERS, APPS, MODES, ROUNDS, DURATION, QUICK): bench/README.md.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import functools
import http.client
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import psutil
import summary

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"  # committed: written only with UPDATE_RESULTS=1
SCRATCH_DIR = BENCH_DIR / "tmp"  # git ignores it: where a run writes unless asked otherwise


def results_dir(env: Mapping[str, str]) -> Path:
    """Where this run writes latest.*: the committed results only when asked, so that a
    `make bench` to look leaves the checkout as it was."""
    asked = env.get("UPDATE_RESULTS", "").strip() not in ("", "0")
    return RESULTS_DIR if asked else SCRATCH_DIR


HOST = "127.0.0.1"
WORKERS = 2
CONNECTIONS = 50
WARMUP_SECONDS = 1
START_TIMEOUT = 30.0  # a cold gevent + Flask import on a slow disk takes a few seconds
STOP_TIMEOUT = 10.0
PAIR_OVERHEAD = 1.2  # seconds to start and stop a server, as measured; for the estimate
BASELINE = "gunicorn-sync"  # the WSGI apps' ratios are to it
ASGI_BASELINE = "uvicorn"  # the ASGI apps' ratios, and dynocorn-asgi's criteria, are to it
MEMORY_APP = "flask"
MIB = 1024 * 1024

# Settings the servers read from the environment: a shell exported for Heroku-style work
# (PORT, WEB_CONCURRENCY, DYNO, ...) must not change what is measured.
SCRUBBED_VARIABLES = (
    "PORT", "WEB_CONCURRENCY", "WEB_CONCURRENCY_SET_BY", "DYNO", "HONCHO_PROCESS_NAME",
    "CONTAINER", "RENDER_CPU_COUNT", "FORWARDED_ALLOW_IPS", "SENDFILE",
    "GUNICORN_CMD_ARGS", "DYNOCORN_CMD_ARGS",
)  # fmt: skip
SCRUBBED_PREFIXES = ("GRANIAN_", "UVICORN_")  # their settings by environment variable
WSGI, ASGI = "wsgi", "asgi"


@dataclass(frozen=True)
class Server:
    name: str
    program: str  # run as `python -m PROGRAM`, so every server uses this interpreter
    flags: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()  # modules it needs besides its own
    threads: int | None = None  # --threads, for the gthread worker class
    interface: str = WSGI  # the apps it serves: WSGI or ASGI

    @property
    def preloads(self) -> bool:
        # granian and uvicorn have no --preload: each worker imports the app itself.
        return self.program in ("dynocorn", "gunicorn")

    def missing(self) -> list[str]:
        return [m for m in (self.program, *self.needs) if importlib.util.find_spec(m) is None]

    def argv(
        self,
        port: int,
        target: str,
        preload: bool,
        workers: int = WORKERS,
        threads: int | None = None,
    ) -> list[str]:
        """`threads` overrides the gthread servers' --threads and sets granian's
        --blocking-threads; the other servers have no such setting."""
        python = [sys.executable, "-m", self.program]
        if self.program == "granian":
            blocking = ["--blocking-threads", str(threads)] if threads else []
            return [
                *python, "--interface", self.interface, "--workers", str(workers), *self.flags,
                *blocking, "--host", HOST, "--port", str(port), target,
            ]  # fmt: skip
        if self.program == "uvicorn":
            return [
                *python, "--workers", str(workers), *self.flags, "--host", HOST,
                "--port", str(port), target,
            ]  # fmt: skip
        pool = ["--threads", str(threads or self.threads)] if self.threads else []
        return [
            *python, "-w", str(workers), *self.flags, *pool, "-b", f"{HOST}:{port}",
            *(["--preload"] if preload else []), target,
        ]  # fmt: skip


@dataclass(frozen=True)
class App:
    """An app and how it is served: one column of the matrix, named in APPS."""

    name: str
    directory: Path  # the server's working directory, where the module is found
    target: str
    path: str = "/"
    workers: int = WORKERS
    connections: int = CONNECTIONS  # wrk -c
    threads: int | None = None  # overrides Server.argv's threads (gthread, granian)
    servers: tuple[str, ...] | None = None  # the only servers it runs on; None: all
    ideal_rps: float | None = None
    ideal_basis: str = ""  # where ideal_rps comes from, in words
    # A realistic cell: keep-alive only; every round shown; dynocorn checked (criteria()).
    realistic: bool = False
    about: str = ""
    wrk_script: Path | None = None  # a wrk Lua script that chooses each request
    interface: str = WSGI  # WSGI apps run on the WSGI servers, ASGI apps on the ASGI ones
    needs: tuple[str, ...] = ()  # modules it imports that a server does not bring

    def missing(self) -> list[str]:
        return [m for m in self.needs if importlib.util.find_spec(m) is None]


class Cell(NamedTuple):
    server: str
    app: str
    mode: str


# dynocorn runs as it would in production with its metrics on: the control socket is on by
# default, and /metrics is served (never scraped here), so what counting costs a request is
# in every figure.
METRICS = ("--metrics-bind", f"{HOST}:0")
SERVERS = (
    Server("dynocorn-sync", "dynocorn", METRICS),
    Server("dynocorn-gthread", "dynocorn", ("-k", "gthread", *METRICS), threads=4),
    Server("dynocorn-gevent", "dynocorn", ("-k", "gevent", *METRICS), ("gevent",)),
    Server("gunicorn-sync", "gunicorn"),
    Server("gunicorn-gthread", "gunicorn", ("-k", "gthread"), threads=4),
    Server("gunicorn-gevent", "gunicorn", ("-k", "gevent"), ("gevent",)),
    Server("granian", "granian"),
    Server("dynocorn-asgi", "dynocorn", ("-k", "asgi", *METRICS), interface=ASGI),
    # uvicorn as its docs advise for speed: httptools and uvloop (uvicorn[standard]).
    Server("uvicorn", "uvicorn", ("--http", "httptools", "--loop", "uvloop", "--no-access-log"),
           ("httptools", "uvloop"), interface=ASGI),
    Server("granian-asgi", "granian", interface=ASGI),
)  # fmt: skip
APPS = (
    App("hello", ROOT / "examples", "hello:app"),
    App("flask", ROOT / "examples", "flask_app:app", "/json"),
    App("sleep10", BENCH_DIR, "apps:sleep10"),
    # Where a pre-fork server that keeps connections alive can leave a request waiting on a
    # busy worker while a sibling idles (bench/README.md, "Realistic cells").
    App("io20", BENCH_DIR, "apps:io20", workers=4, connections=8, realistic=True,
        about="every request waits 20 ms, as on a database",
        ideal_rps=4 / 0.020, ideal_basis="4 sync workers x 1 request / 20 ms"),
    App("mixed", BENCH_DIR, "apps:mixed", workers=4, connections=16, realistic=True,
        about="90 % of requests wait 2 ms, 10 % wait 200 ms (every tenth)",
        wrk_script=BENCH_DIR / "mixed.lua"),
    App("cpu5", BENCH_DIR, "apps:cpu5", workers=2, connections=8, realistic=True,
        about="every request computes for 5 ms of CPU"),
    # Heroku's getting-started gunicorn.conf.py: gthread, 2 workers of 5 threads.
    App("heroku_gthread", BENCH_DIR, "apps:io20", workers=2, connections=20, threads=5,
        servers=("dynocorn-gthread", "gunicorn-gthread", "granian"), realistic=True,
        about="io20's app under Heroku's gthread settings",
        ideal_rps=2 * 5 / 0.020, ideal_basis="2 workers x 5 threads / 20 ms"),
    # The ASGI apps: hello-world, a FastAPI JSON route (flask's), and the realistic cells
    # with the same workers and connections, awaiting where the WSGI apps sleep.
    App("hello_asgi", BENCH_DIR, "apps:hello_asgi", interface=ASGI),
    App("fastapi", BENCH_DIR, "fastapi_app:app", "/json", interface=ASGI, needs=("fastapi",)),
    App("io20_asgi", BENCH_DIR, "apps:io20_asgi", workers=4, connections=8, realistic=True,
        about="every request awaits 20 ms (asyncio.sleep), as on a database",
        ideal_rps=8 / 0.020, ideal_basis="8 connections x 1 request / 20 ms, all awaiting at once",
        interface=ASGI),
    App("mixed_asgi", BENCH_DIR, "apps:mixed_asgi", workers=4, connections=16, realistic=True,
        about="90 % of requests await 2 ms, 10 % await 200 ms (every tenth)",
        wrk_script=BENCH_DIR / "mixed.lua", interface=ASGI),
    App("cpu5_asgi", BENCH_DIR, "apps:cpu5_asgi", workers=2, connections=8, realistic=True,
        about="every request computes for 5 ms of CPU, blocking the event loop",
        interface=ASGI),
)  # fmt: skip
MODES: dict[str, tuple[str, ...]] = {
    "keepalive": (),
    "close": ("-H", "Connection: close"),
}
# Without MODES the matrix is trimmed (bench/README.md has its time): `Connection: close`
# only for the WSGI hello app on each server's default worker, what a router that does not
# reuse connections meets. The app adds the same work in both modes, so hello shows the
# difference best. The ASGI apps run keep-alive only here, to keep the default run near
# 25 minutes; MODES=keepalive,close runs them in both.
DEFAULT_CLOSE = {("hello", "dynocorn-sync"), ("hello", "gunicorn-sync"), ("hello", "granian")}
TRIM_NOTE = (
    "Default matrix, trimmed: `close` only for the hello app on dynocorn-sync, gunicorn-sync "
    "and granian. Set MODES to run every combination (the realistic cells are keep-alive only)."
)
QUICK_APPS = ("hello", "flask", "hello_asgi", "fastapi")  # QUICK=1's: one of each kind
# The realistic cells' criteria (criteria(); bench/README.md).
CRITERIA_ROUNDS = 5  # what the criteria are meant to be read on: ROUNDS=5
IDEAL_SHARE = 0.95  # the worst round reaches this share of the cell's ideal req/s
SPREAD_LIMIT_PCT = 10.0  # every round's req/s within this % of the median
# Against the peer, a difference under this is level: where every server meets the same
# ceiling (a 20 ms wait, 5 ms of CPU), one server's own rounds differ by about as much
# (io20_asgi, ROUNDS=3: dynocorn-asgi 387-389 req/s, p50 20.49-20.61 ms), so a smaller
# difference says which server the noise favoured, not which is faster.
LEVEL_PCT = 1.0
PASS, FAIL, NOT_APPLICABLE, INCOMPLETE = "PASS", "FAIL", "n/a", "incomplete"


class ConfigError(Exception):
    pass


class ServerFailed(Exception):
    pass


class WrkFailed(Exception):
    pass


# --- selection -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    servers: tuple[Server, ...]
    apps: tuple[App, ...]
    cells: tuple[Cell, ...]
    rounds: int
    duration: int
    memory: bool
    skipped: dict[str, str]  # server or app name -> why it does not run
    notes: tuple[str, ...]


def _missing(part: Server | App) -> list[str]:
    return part.missing()


_Part = TypeVar("_Part", Server, App)


def _installed(
    parts: Sequence[_Part],
    names: Sequence[str],
    missing_of: Callable[[Server | App], list[str]],
    skipped: dict[str, str],
) -> list[_Part]:
    """The `parts` named, in their order, that have what they need here; the others go into
    `skipped` with what they lack."""
    chosen: list[_Part] = []
    for part in parts:
        if part.name not in names:
            continue
        missing = missing_of(part)
        if missing:
            skipped[part.name] = f"not installed ({', '.join(missing)})"
        else:
            chosen.append(part)
    return chosen


def plan_from_env(
    env: Mapping[str, str], missing_of: Callable[[Server | App], list[str]] = _missing
) -> Plan:
    """The run `env` asks for; `missing_of` says what a server or app lacks here (tests of
    the plan's logic pass one that finds everything installed: the peers are optional)."""
    quick = env.get("QUICK", "").strip() not in ("", "0")
    server_names = _names(env, "SERVERS", [s.name for s in SERVERS], None)
    app_names = _names(env, "APPS", [a.name for a in APPS], list(QUICK_APPS) if quick else None)
    modes = _names(env, "MODES", list(MODES), ["keepalive"] if quick else None)
    rounds = _positive_int(env, "ROUNDS", 1 if quick else 3)
    duration = _positive_int(env, "DURATION", 2 if quick else 5)

    skipped: dict[str, str] = {}
    servers = _installed(SERVERS, server_names, missing_of, skipped)
    apps = _installed(APPS, app_names, missing_of, skipped)

    trim = not env.get("MODES", "").strip()
    cells = tuple(
        Cell(server.name, app.name, mode)
        for app in apps
        for mode in modes
        for server in servers
        if server.interface == app.interface
        and (app.servers is None or server.name in app.servers)
        and not (app.realistic and mode != "keepalive")
        and not (trim and mode == "close" and (app.name, server.name) not in DEFAULT_CLOSE)
    )
    trimmed = trim and "close" in modes and any(not app.realistic for app in apps)
    notes = (TRIM_NOTE,) if trimmed else ()
    return Plan(
        servers=tuple(servers),
        apps=tuple(apps),
        cells=cells,
        rounds=rounds,
        duration=duration,
        memory=MEMORY_APP in app_names,
        skipped=skipped,
        notes=notes,
    )


def estimate_seconds(plan: Plan) -> float:
    pairs = len({(cell.server, cell.app) for cell in plan.cells})
    per_round = len(plan.cells) * plan.duration + pairs * (WARMUP_SECONDS + PAIR_OVERHEAD)
    memory = len(memory_servers(plan)) * (plan.duration + PAIR_OVERHEAD) if plan.memory else 0
    return plan.rounds * per_round + memory


def memory_servers(plan: Plan) -> list[Server]:
    """The servers the memory pass measures: those that serve its (WSGI) app."""
    app = next(a for a in APPS if a.name == MEMORY_APP)
    return [server for server in plan.servers if server.interface == app.interface]


def _names(
    env: Mapping[str, str], variable: str, known: list[str], default: list[str] | None
) -> list[str]:
    raw = env.get(variable, "").strip()
    if not raw:
        return known if default is None else default
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"{variable}={raw}: unknown {', '.join(unknown)} (known: {', '.join(known)})"
        )
    return names


def _positive_int(env: Mapping[str, str], variable: str, default: int) -> int:
    raw = env.get(variable, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"{variable}={raw}: not a positive whole number")
    return int(raw)


# --- one server ----------------------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on now. Racy in principle, but nothing else on a benchmark
    machine should be grabbing loopback ports in the instant before the server binds it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def server_environment() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SCRUBBED_VARIABLES and not k.startswith(SCRUBBED_PREFIXES)
    }
    env["PYTHONUNBUFFERED"] = "1"  # so a failure's log tail is complete
    return env


@dataclass(frozen=True)
class Running:
    pid: int
    url: str


@contextlib.contextmanager
def serve(server: Server, app: App, preload: bool, log_path: Path) -> Iterator[Running]:
    """The server running `app`, answering on `Running.url`; stopped on the way out.

    Raises ServerFailed when it exits or does not answer in time; its output is in log_path."""
    port = free_port()
    url = f"http://{HOST}:{port}{app.path}"
    env = server_environment()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(app.directory), env.get("PYTHONPATH")]))
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            server.argv(port, app.target, preload, app.workers, app.threads),
            cwd=app.directory,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so that stop() reaches workers
        )
        try:
            wait_until_answering(process, port, app.path)
            yield Running(process.pid, url)
        finally:
            if not stop(process):
                say(f"  {server.name}: no exit {STOP_TIMEOUT:.0f} s after SIGTERM, killed")


def wait_until_answering(process: subprocess.Popen[bytes], port: int, path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        code = process.poll()
        if code is not None:
            raise ServerFailed(f"exited with code {code} while starting")
        connection = http.client.HTTPConnection(HOST, port, timeout=2)
        try:
            connection.request("GET", path)
            connection.getresponse().read()
            return  # any status: errors show up in wrk's non-2xx count
        except (OSError, http.client.HTTPException):
            time.sleep(0.05)
        finally:
            connection.close()
    raise ServerFailed(f"not answering after {START_TIMEOUT:.0f} s")


def stop(process: subprocess.Popen[bytes]) -> bool:
    """SIGTERM to the master, which stops its workers as on a platform; SIGKILL to the whole
    process group if any of it is left after STOP_TIMEOUT. True when it went in time.

    Not SIGTERM to the group: a gunicorn gevent worker that gets it while still booting
    never exits."""
    group = process.pid  # start_new_session made the master a group leader
    deadline = time.monotonic() + STOP_TIMEOUT
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_TIMEOUT)
    # Workers can outlive their master by a moment; wait for the whole group.
    while _signal_group(group, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not _signal_group(group, 0):
        return True
    _signal_group(group, signal.SIGKILL)
    process.wait()
    return False


def _signal_group(group: int, signum: int) -> bool:
    """Signal (0: probe) every process in the group; False when none is left."""
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return False
    return True


def log_tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


# --- wrk -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests_per_second: float
    requests: int
    p50_ms: float  # of the requests wrk timed (bench/percentiles.lua)
    p99_ms: float
    socket_errors: int  # connect + read + write + timeout
    non_2xx: int  # wrk counts "Non-2xx or 3xx responses"
    # wrk's own --latency figures, with the samples of its coordinated-omission correction
    # (bench/percentiles.lua says what they are); NaN where wrk printed none.
    wrk_p50_ms: float = math.nan
    wrk_p99_ms: float = math.nan

    @property
    def errors(self) -> int:
        return self.socket_errors + self.non_2xx


def run_wrk(
    wrk: str,
    url: str,
    seconds: int,
    mode: str,
    connections: int = CONNECTIONS,
    script: Path | None = None,
) -> WrkResult:
    argv = [
        wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *MODES[mode],
        "-s", str(with_percentiles(script)), url,
    ]  # fmt: skip
    environment = {**os.environ, "WRK_CONNECTIONS": str(connections)}
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, env=environment
        )
    except subprocess.TimeoutExpired as error:
        raise WrkFailed(f"wrk did not finish in {seconds + 30} s") from error
    if done.returncode != 0:
        raise WrkFailed(f"wrk exited with {done.returncode}: {done.stderr.strip()[:200]}")
    return parse_wrk(done.stdout)


PERCENTILES_SCRIPT = Path(__file__).with_name("percentiles.lua")


@functools.cache
def with_percentiles(script: Path | None) -> Path:
    """A wrk script: `script` (which chooses the requests) followed by percentiles.lua
    (wrk takes one -s), written once into a directory removed when the run ends."""
    directory = tempfile.mkdtemp(prefix="dynocorn-bench-wrk-")
    atexit.register(shutil.rmtree, directory, True)
    combined = Path(directory, "timed.lua")
    parts = [script.read_text()] if script else []
    combined.write_text("\n".join([*parts, PERCENTILES_SCRIPT.read_text()]))
    return combined


_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_wrk(output: str) -> WrkResult:
    """wrk 4's report: Requests/sec, the --latency distribution, error counts."""

    def find(pattern: str) -> re.Match[str] | None:
        return re.search(pattern, output, re.MULTILINE)

    rate = find(r"^Requests/sec:\s+([\d.]+)")
    count = find(r"^\s*(\d+) requests in ")
    if rate is None or count is None:
        raise WrkFailed(f"unreadable wrk output: {output.strip()[:200]!r}")

    def percentile(label: str) -> float:
        match = find(rf"^\s+{label}%\s+([\d.]+)(us|ms|s|m|h)\s*$")
        if match is None:
            # wrk prints no distribution when no request completed at all.
            return math.nan
        return float(match[1]) * _TIME_UNITS_MS[match[2]]

    sockets = find(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
    non_2xx = find(r"Non-2xx or 3xx responses: (\d+)")
    wrk_p50, wrk_p99 = percentile("50"), percentile("99")
    # percentiles.lua's line; without it (wrk run by hand), wrk's own figures
    timed = find(r"^Timed requests: (\d+), p50 (\d+) us, p99 (\d+) us$")
    if timed is not None and int(timed[1]) > 0:
        p50, p99 = int(timed[2]) / 1000, int(timed[3]) / 1000
    else:
        p50, p99 = wrk_p50, wrk_p99
    return WrkResult(
        requests_per_second=float(rate[1]),
        requests=int(count[1]),
        p50_ms=p50,
        p99_ms=p99,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        wrk_p50_ms=wrk_p50,
        wrk_p99_ms=wrk_p99,
    )


# --- memory --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Memory:
    pss_total: int  # bytes, master and every descendant
    worker_uss: tuple[int, ...]  # bytes, one per worker (the master's children)

    @property
    def worker_uss_mean(self) -> float:
        return statistics.fmean(self.worker_uss) if self.worker_uss else math.nan


def measure_memory(pid: int) -> Memory:
    master = psutil.Process(pid)
    workers = master.children()
    pss = 0
    for process in [master, *master.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            pss += process.memory_full_info().pss
    uss: list[int] = []
    for worker in workers:
        with contextlib.suppress(psutil.NoSuchProcess):
            uss.append(worker.memory_full_info().uss)
    return Memory(pss, tuple(uss))


# --- the passes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    round: int
    cell: Cell
    result: WrkResult | None
    failure: str | None = None


@dataclass(frozen=True)
class MemoryRun:
    server: str
    preload: bool
    memory: Memory | None
    load: WrkResult | None
    failure: str | None = None


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_rounds(plan: Plan, wrk: str, logs: Path) -> list[Run]:
    """Every cell once per round. One server start serves all of a (server, app) pair's
    modes; the server order rotates from round to round, so no server always goes first."""
    by_name = {s.name: s for s in plan.servers}
    pairs: dict[tuple[str, str], list[str]] = {}
    for cell in plan.cells:
        pairs.setdefault((cell.server, cell.app), []).append(cell.mode)
    runs: list[Run] = []
    for number in range(1, plan.rounds + 1):
        say(f"round {number}/{plan.rounds}")
        names = [s.name for s in plan.servers]
        shift = (number - 1) % max(1, len(names))
        order = names[shift:] + names[:shift]
        for app in plan.apps:
            for name in order:
                modes = pairs.get((name, app.name))
                if modes:
                    log = logs / f"{name}-{app.name}-{number}.log"
                    runs += measure_pair(by_name[name], app, modes, number, plan, wrk, log)
    return runs


def measure_pair(
    server: Server, app: App, modes: list[str], number: int, plan: Plan, wrk: str, log: Path
) -> list[Run]:
    runs: list[Run] = []
    try:
        with serve(server, app, preload=False, log_path=log) as running:
            with contextlib.suppress(WrkFailed):
                run_wrk(wrk, running.url, WARMUP_SECONDS, modes[0], app.connections, app.wrk_script)
            for mode in modes:
                cell = Cell(server.name, app.name, mode)
                try:
                    result = run_wrk(
                        wrk, running.url, plan.duration, mode, app.connections, app.wrk_script
                    )
                except WrkFailed as error:
                    runs.append(Run(number, cell, None, str(error)))
                    say(f"  {server.name:17} {app.name:14} {mode:9} wrk failed: {error}")
                    continue
                runs.append(Run(number, cell, result))
                say(
                    f"  {server.name:17} {app.name:14} {mode:9} "
                    f"{result.requests_per_second:9,.0f} req/s  p99 {result.p99_ms:7.2f} ms"
                    + (f"  {result.errors} errors" if result.errors else "")
                )
    except ServerFailed as error:
        failure = f"{error}\n{log_tail(log)}".strip()
        say(f"  {server.name:17} {app.name:14} failed to start: {failure}")
        return [Run(number, Cell(server.name, app.name, m), None, failure) for m in modes]
    return runs


def run_memory_pass(plan: Plan, wrk: str, logs: Path) -> list[MemoryRun]:
    app = next(a for a in APPS if a.name == MEMORY_APP)
    say(f"memory: {app.name} app, --preload where supported, after {plan.duration} s of load")
    results: list[MemoryRun] = []
    for server in memory_servers(plan):
        log = logs / f"{server.name}-memory.log"
        try:
            with serve(server, app, preload=server.preloads, log_path=log) as running:
                try:
                    load: WrkResult | None = run_wrk(wrk, running.url, plan.duration, "keepalive")
                except WrkFailed:
                    load = None
                memory = measure_memory(running.pid)
        except (ServerFailed, psutil.NoSuchProcess) as error:
            failure = f"{error}\n{log_tail(log)}".strip()
            say(f"  {server.name:17} failed: {failure}")
            results.append(MemoryRun(server.name, server.preloads, None, None, failure))
            continue
        results.append(MemoryRun(server.name, server.preloads, memory, load))
        say(
            f"  {server.name:17} PSS {memory.pss_total / MIB:6.1f} MiB, "
            f"worker USS {memory.worker_uss_mean / MIB:5.1f} MiB ({len(memory.worker_uss)} workers)"
        )
    return results


# --- summary -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    cell: Cell
    rounds: int  # rounds with a result
    requests_per_second: float
    ratio: float  # to the app's baseline_of() in the same round; NaN without it
    peer_ratio: float  # dynocorn-X to its peer_of() (gunicorn-X, uvicorn) in the same round
    p50_ms: float
    p99_ms: float
    wrk_p99_ms: float  # median of wrk's own, corrected p99 (bench/percentiles.lua)
    errors: int  # summed over the rounds
    failure: str | None
    # Every round in order (NaN: no result that round), and the furthest round's req/s from
    # the median, in % of the median.
    rps_by_round: tuple[float, ...]
    p50_by_round: tuple[float, ...]
    p99_by_round: tuple[float, ...]
    spread_pct: float
    ideal_rps: float  # the app's, NaN when it has none
    ideal_pct: float  # median req/s in % of ideal_rps


def summarize(plan: Plan, runs: Sequence[Run]) -> list[Row]:
    results: dict[tuple[Cell, int], WrkResult] = {}
    failures: dict[Cell, str] = {}
    for run in runs:
        if run.result is not None:
            results[(run.cell, run.round)] = run.result
        elif run.failure:
            failures.setdefault(run.cell, run.failure)
    apps = {app.name: app for app in plan.apps}
    rows: list[Row] = []
    for cell in plan.cells:
        mine = [(n, results[(cell, n)]) for n in range(1, plan.rounds + 1) if (cell, n) in results]
        app = apps[cell.app]
        ratios = _same_round_ratios(results, cell, mine, baseline_of(app))
        peer = peer_of(cell.server)
        peer_ratios = _same_round_ratios(results, cell, mine, peer) if peer else []
        by_round = [results.get((cell, n)) for n in range(1, plan.rounds + 1)]
        rps = tuple(math.nan if r is None else r.requests_per_second for r in by_round)
        median = _median(rps)
        ideal = math.nan if app.ideal_rps is None else app.ideal_rps
        rows.append(
            Row(
                cell=cell,
                rounds=len(mine),
                requests_per_second=median,
                ratio=_median(ratios),
                peer_ratio=_median(peer_ratios),
                p50_ms=_median([r.p50_ms for _, r in mine]),
                p99_ms=_median([r.p99_ms for _, r in mine]),
                wrk_p99_ms=_median([r.wrk_p99_ms for _, r in mine]),
                errors=sum(r.errors for _, r in mine),
                failure=failures.get(cell) if not mine else None,
                rps_by_round=rps,
                p50_by_round=tuple(math.nan if r is None else r.p50_ms for r in by_round),
                p99_by_round=tuple(math.nan if r is None else r.p99_ms for r in by_round),
                spread_pct=spread_pct(rps),
                ideal_rps=ideal,
                ideal_pct=100 * median / ideal,
            )
        )
    return rows


def spread_pct(values: Sequence[float]) -> float:
    """How far the furthest value is from the median, in % of the median (missing values,
    NaN, are left out)."""
    usable = [v for v in values if not math.isnan(v)]
    median = _median(usable)
    if not usable or not median > 0:
        return math.nan
    return 100 * max(abs(v - median) for v in usable) / median


# --- the realistic cells' criteria ---------------------------------------------------------


@dataclass(frozen=True)
class Check:
    key: str  # rps, ideal, p50, p99, spread: the column of the criteria table
    verdict: str  # PASS, FAIL, or n/a when there is nothing to compare with
    detail: str


@dataclass(frozen=True)
class Verdict:
    cell: Cell
    peer: str  # peer_of(cell.server): gunicorn's server of the same class, or uvicorn
    checks: tuple[Check, ...]
    verdict: str  # FAIL if any check failed, else PASS if all passed, else incomplete


CRITERIA = {
    "rps": f"worst round req/s >= the peer's median (or within {LEVEL_PCT:g}%)",
    "ideal": f"worst round req/s >= {IDEAL_SHARE:.0%} of ideal",
    "p50": f"median p50 <= the peer's (or within {LEVEL_PCT:g}%)",
    "p99": f"median p99 <= the peer's (or within {LEVEL_PCT:g}%)",
    "spread": f"every round within ±{SPREAD_LIMIT_PCT:.0f}% of the median req/s",
}


def criteria(plan: Plan, rows: Sequence[Row]) -> list[Verdict]:
    """Each dynocorn class in each realistic cell, against its peer there (peer_of)."""
    realistic = {app.name for app in plan.apps if app.realistic}
    by_cell = {row.cell: row for row in rows}
    verdicts: list[Verdict] = []
    for row in rows:
        peer = peer_of(row.cell.server)
        if peer is None or row.cell.app not in realistic:
            continue
        checks = check_row(row, by_cell.get(row.cell._replace(server=peer)))
        verdicts.append(Verdict(row.cell, peer, checks, overall(checks)))
    return verdicts


def check_row(mine: Row, peer: Row | None) -> tuple[Check, ...]:
    """The criteria for one dynocorn row. A round without a result makes the worst round
    and the spread fail; a missing peer row makes its comparisons n/a; a cell without
    an ideal has no ideal check."""
    nan = math.nan
    complete = mine.rps_by_round and not any(math.isnan(v) for v in mine.rps_by_round)
    worst = min(mine.rps_by_round) if complete else nan
    level = LEVEL_PCT
    checks = [
        _check("rps", worst, peer.requests_per_second if peer else nan, False, level=level),
        _check("ideal", worst, IDEAL_SHARE * mine.ideal_rps, at_most=False),
        _check("p50", mine.p50_ms, peer.p50_ms if peer else nan, True, ".2f", level=level),
        _check("p99", mine.p99_ms, peer.p99_ms if peer else nan, True, ".2f", level=level),
        _check("spread", mine.spread_pct if complete else nan, SPREAD_LIMIT_PCT, True, ".1f", "%"),
    ]
    return tuple(c for c in checks if not (c.key == "ideal" and math.isnan(mine.ideal_rps)))


def _check(
    key: str,
    value: float,
    limit: float,
    at_most: bool,
    pattern: str = ",.0f",
    unit: str = "",
    level: float = 0.0,
) -> Check:
    """`value` against `limit`; within `level` % of it on the wrong side counts as level."""
    if math.isnan(limit):
        return Check(key, NOT_APPLICABLE, "nothing to compare with")
    if math.isnan(value):
        return Check(key, FAIL, "no result" if key != "spread" else "a round has no result")
    passed = value <= limit if at_most else value >= limit
    bound = limit * (1 + level / 100) if at_most else limit * (1 - level / 100)
    within = not passed and ((value <= bound) if at_most else (value >= bound))
    strict = ("<=" if passed else ">") if at_most else (">=" if passed else "<")
    relation = "≈" if within else strict
    detail = f"{value:{pattern}}{unit} {relation} {limit:{pattern}}{unit}"
    if within:
        detail += f" (level: within {level:g}%)"
    return Check(key, PASS if passed or within else FAIL, detail)


def overall(checks: Sequence[Check]) -> str:
    verdicts = {check.verdict for check in checks}
    if FAIL in verdicts:
        return FAIL
    return PASS if verdicts == {PASS} else INCOMPLETE


def peer_of(server: str) -> str | None:
    """What a dynocorn class is measured against: gunicorn's server with the same worker
    class (dynocorn-gthread -> gunicorn-gthread), and uvicorn for the ASGI class, since
    that is what FastAPI users run. None for the other servers."""
    kind, _, worker_class = server.partition("-")
    if kind != "dynocorn" or not worker_class:
        return None
    return ASGI_BASELINE if worker_class == ASGI else f"gunicorn-{worker_class}"


def baseline_of(app: App) -> str:
    """The server every other's req/s on `app` is a ratio to: gunicorn sync for the WSGI
    apps, uvicorn for the ASGI ones."""
    return ASGI_BASELINE if app.interface == ASGI else BASELINE


def _same_round_ratios(
    results: Mapping[tuple[Cell, int], WrkResult],
    cell: Cell,
    mine: Sequence[tuple[int, WrkResult]],
    other: str,
) -> list[float]:
    """Each round's req/s of `cell` over that of the `other` server on the same app and mode."""
    ratios = []
    for number, result in mine:
        base = results.get((cell._replace(server=other), number))
        if base is not None and base.requests_per_second > 0:
            ratios.append(result.requests_per_second / base.requests_per_second)
    return ratios


def _median(values: Iterable[float]) -> float:
    usable = [v for v in values if not math.isnan(v)]
    return statistics.median(usable) if usable else math.nan


def _number(value: float, pattern: str) -> str:
    return "-" if math.isnan(value) else format(value, pattern)


PEER_MEANING = (
    "vs peer: each dynocorn class's req/s over its peer's (gunicorn's same class, "
    f"{ASGI_BASELINE} for dynocorn-asgi), the median of the per-round ratios"
)


def speed_table(plan: Plan, rows: Sequence[Row]) -> str:
    lines = [
        "| server | app | mode | req/s | vs baseline | vs peer | p50 ms | p99 ms | errors |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for row in rows:
        server, app, mode = row.cell
        if row.failure is not None:
            reason = row.failure.splitlines()[0]
            lines.append(f"| {server} | {app} | {mode} | failed: {reason} | - | - | - | - | - |")
            continue
        partial = f" ({row.rounds}/{plan.rounds} rounds)" if row.rounds < plan.rounds else ""
        lines.append(
            f"| {server} | {app} | {mode} | {_number(row.requests_per_second, ',.0f')}{partial}"
            f" | {_number(row.ratio, '.2f')} | {_number(row.peer_ratio, '.2f')}"
            f" | {_number(row.p50_ms, '.2f')}"
            f" | {_number(row.p99_ms, '.2f')} | {row.errors} |"
        )
    return "\n".join(lines)


def _rounds(values: Sequence[float], pattern: str) -> str:
    return " / ".join(_number(v, pattern) for v in values)


def serving(app: App) -> str:
    """How the servers are set up for `app`, in words, for the realistic cells' headings."""
    gthread = next(s.threads for s in SERVERS if s.threads)
    threads = app.threads or gthread
    blocking = f"--blocking-threads {app.threads}" if app.threads else "its default threads"
    ideal = (
        f"; ideal {app.ideal_rps:,.0f} req/s ({app.ideal_basis})" if app.ideal_rps else "; no ideal"
    )
    how = (
        "an event loop each"
        if app.interface == ASGI
        else f"{threads} threads each for gthread; granian {blocking}"
    )
    return f"{app.workers} workers ({how}); wrk -t1 -c{app.connections}, keep-alive{ideal}"


def realistic_tables(plan: Plan, rows: Sequence[Row]) -> str:
    """One table per realistic cell: every round's figures, then medians and spread."""
    parts: list[str] = []
    for app in plan.apps:
        mine = [row for row in rows if row.cell.app == app.name]
        if not app.realistic or not mine:
            continue
        parts += [
            f"### {app.name}: {app.about}",
            "",
            serving(app),
            "",
            "| server | req/s by round | median req/s | spread | vs peer"
            " | % of ideal | p50 ms by round | median p50 | p99 ms by round | median p99"
            " | wrk's own p99 | errors |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for row in mine:
            if row.failure is not None:
                reason = row.failure.splitlines()[0]
                parts.append(f"| {row.cell.server} | failed: {reason} |" + " - |" * 10)
                continue
            parts.append(
                f"| {row.cell.server} | {_rounds(row.rps_by_round, ',.0f')}"
                f" | {_number(row.requests_per_second, ',.0f')}"
                f" | ±{_number(row.spread_pct, '.1f')}%"
                f" | {_number(row.peer_ratio, '.2f')} | {_number(row.ideal_pct, '.0f')}"
                f" | {_rounds(row.p50_by_round, '.2f')} | {_number(row.p50_ms, '.2f')}"
                f" | {_rounds(row.p99_by_round, '.2f')} | {_number(row.p99_ms, '.2f')}"
                f" | {_number(row.wrk_p99_ms, '.2f')} | {row.errors} |"
            )
        parts.append("")
    return "\n".join(parts).rstrip("\n")


def criteria_table(verdicts: Sequence[Verdict]) -> str:
    lines = [
        "| cell | server | against | " + " | ".join(CRITERIA.values()) + " | verdict |",
        "|---|---|---|" + "---|" * len(CRITERIA) + "---|",
    ]
    for verdict in verdicts:
        checks = {check.key: check for check in verdict.checks}
        cells = [
            "-" if key not in checks else f"{checks[key].verdict} ({checks[key].detail})"
            for key in CRITERIA
        ]
        lines.append(
            f"| {verdict.cell.app} | {verdict.cell.server} | {verdict.peer} | "
            + " | ".join(cells)
            + f" | **{verdict.verdict}** |"
        )
    return "\n".join(lines)


def memory_table(runs: Sequence[MemoryRun]) -> str:
    lines = [
        "| server | --preload | total PSS MiB (master + workers) | worker USS MiB (mean) |",
        "|---|---|--:|--:|",
    ]
    for run in runs:
        preload = "yes" if run.preload else "no (not supported)"
        if run.memory is None:
            reason = (run.failure or "?").splitlines()[0]
            lines.append(f"| {run.server} | {preload} | failed: {reason} | - |")
            continue
        lines.append(
            f"| {run.server} | {preload} | {run.memory.pss_total / MIB:.1f}"
            f" | {run.memory.worker_uss_mean / MIB:.1f} |"
        )
    return "\n".join(lines)


def report(
    plan: Plan,
    rows: Sequence[Row],
    memory: Sequence[MemoryRun],
    about: Mapping[str, Any],
    verdicts: Sequence[Verdict] = (),
) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in about["versions"].items())
    realistic = {app.name for app in plan.apps if app.realistic}
    classic = [row for row in rows if row.cell.app not in realistic]
    parts = [
        "# dynocorn benchmark",
        "",
        f"{about['date']} · {about['cpus']} CPUs ({about['cpu']}) · Python {about['python']}"
        f" · {versions} · {about['wrk']} · commit {about['commit']}"
        f" · wall time {about['wall_seconds']:.0f} s",
    ]
    if classic:
        parts += [
            "",
            f"wrk -t1 -c{CONNECTIONS} --latency on {HOST}, sharing the machine; {WORKERS} "
            f"workers per server; {plan.rounds} interleaved round(s) of {plan.duration} s per "
            f"cell after a {WARMUP_SECONDS} s warm-up; medians over the rounds; vs baseline: "
            f"the median of the per-round ratios to {BASELINE} ({ASGI_BASELINE} for the ASGI "
            f"apps); {PEER_MEANING}; errors are wrk's socket errors plus non-2xx responses, "
            "summed over the rounds.",
            "",
            speed_table(plan, classic),
        ]
    if len(classic) < len(rows):
        parts += [
            "",
            "## Realistic cells",
            "",
            f"wrk -t1 --latency on {HOST}, keep-alive, sharing the machine; workers, threads "
            f"and connections per cell as given; the same {plan.rounds} interleaved round(s) "
            f"of {plan.duration} s after a {WARMUP_SECONDS} s warm-up. Every round's figures, "
            "in round order, then the median; spread: the furthest round's req/s from the "
            f"median, in % of the median; {PEER_MEANING}; % of ideal: the median req/s in % "
            "of the cell's ideal.",
            "",
            realistic_tables(plan, rows),
        ]
    if verdicts:
        parts += [
            "",
            "### Criteria: each dynocorn class against its peer in the same cell (gunicorn's "
            f"same class; {ASGI_BASELINE} for dynocorn-asgi)",
            "",
            "Worst round: the lowest req/s of this server's rounds; medians as above. "
            f"The criteria are meant for ROUNDS={CRITERIA_ROUNDS}"
            + (
                f"; this run had {plan.rounds}, so read them as a preview."
                if plan.rounds < CRITERIA_ROUNDS
                else "."
            ),
            "",
            criteria_table(verdicts),
        ]
    if memory:
        parts += [
            "",
            f"## Memory: {MEMORY_APP} app, --preload, {WORKERS} workers, "
            f"after {plan.duration} s of load",
            "",
            memory_table(memory),
        ]
    notes = [*plan.notes, *(f"{name}: {why}, skipped." for name, why in plan.skipped.items())]
    if notes:
        parts += ["", *(f"- {note}" for note in notes)]
    return "\n".join(parts) + "\n"


def draw_chart(plan: Plan, rows: Sequence[Row], path: Path) -> None:
    """Each server's req/s ratio to the baseline, one bar per app x mode, grouped by server.
    Log scale, bars from 1: twice as fast and half as fast are the same length."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    ratios = {row.cell: row.ratio for row in rows}
    servers = [s.name for s in plan.servers]
    # Groups with no ratio at all (heroku_gthread, which has no gunicorn-sync) are left out.
    # The realistic cells first: they are what users feel; hello-world and Flask after.
    realistic = {app.name for app in plan.apps if app.realistic}
    groups = sorted(
        dict.fromkeys((row.cell.app, row.cell.mode) for row in rows if not math.isnan(row.ratio)),
        key=lambda group: group[0] not in realistic,
    )
    figure = Figure(figsize=(12, 6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    width = 0.8 / max(1, len(groups))
    for index, (app, mode) in enumerate(groups):
        offset = (index - (len(groups) - 1) / 2) * width
        heights = [ratios.get(Cell(s, app, mode), math.nan) for s in servers]
        bars = axes.bar(
            [x + offset for x in range(len(servers))],
            [h - 1 for h in heights],
            width,
            bottom=1,
            label=f"{app} {mode}",
        )
        labels = ["" if math.isnan(h) else f"{h:.2g}" for h in heights]
        axes.bar_label(bars, labels=labels, fontsize=6, padding=1)
    axes.set_yscale("log", base=2)
    axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_xticks(range(len(servers)), labels=servers, fontsize=8)
    axes.set_ylabel(f"req/s / {BASELINE}, or {ASGI_BASELINE} for ASGI apps (median of rounds)")
    axes.set_title(
        f"wrk -t1 on loopback, {plan.rounds} round(s) of {plan.duration} s; "
        f"-c{CONNECTIONS} and {WORKERS} workers per server except in the realistic cells "
        "(latest.md)",
        fontsize=10,
    )
    # At most 6 to a legend row: the WSGI and ASGI groups together do not fit on one.
    axes.legend(
        fontsize=8, ncols=min(6, len(groups)), loc="upper center", bbox_to_anchor=(0.5, -0.08)
    )
    figure.tight_layout()
    figure.savefig(path)


# --- main ----------------------------------------------------------------------------------


def about_this_machine(wrk: str) -> dict[str, Any]:
    versions: dict[str, str] = {}
    for package in (
        "dynocorn", "gunicorn", "granian", "gevent", "flask", "uvicorn", "httptools", "uvloop",
        "fastapi",
    ):  # fmt: skip
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "versions": versions,
        "wrk": _first_line([wrk, "--version"]).split(" [")[0] or "wrk",
        "commit": _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]) or "?",
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (done.stdout or done.stderr).strip().split("\n")[0]


def to_json(value: Any) -> Any:
    """Dataclasses and tuples as JSON; NaN as null, which strict parsers accept."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, Cell):
        return to_json(value._asdict())
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def write_results(
    plan: Plan,
    runs: Sequence[Run],
    rows: Sequence[Row],
    memory: Sequence[MemoryRun],
    about: Mapping[str, Any],
    markdown: str,
    verdicts: Sequence[Verdict] = (),
    directory: Path = RESULTS_DIR,
) -> None:
    directory.mkdir(exist_ok=True)
    (directory / "latest.md").write_text(markdown)
    raw = {
        "about": about,
        "settings": {
            "servers": [s.name for s in plan.servers],
            "apps": [a.name for a in plan.apps],
            "rounds": plan.rounds,
            "duration_seconds": plan.duration,
            "warmup_seconds": WARMUP_SECONDS,
            "connections": CONNECTIONS,
            "workers": WORKERS,
            "baseline": BASELINE,
            "asgi_baseline": ASGI_BASELINE,
            "skipped": plan.skipped,
            "notes": plan.notes,
            # Per app: the realistic cells have their own; connections and workers above
            # are the others'.
            "apps_settings": {
                app.name: {
                    "target": app.target,
                    "workers": app.workers,
                    "connections": app.connections,
                    "threads": app.threads,
                    "servers": app.servers,
                    "ideal_rps": app.ideal_rps,
                    "realistic": app.realistic,
                    "interface": app.interface,
                }
                for app in plan.apps
            },
            "criteria": {
                "meant_for_rounds": CRITERIA_ROUNDS,
                "ideal_share": IDEAL_SHARE,
                "spread_limit_pct": SPREAD_LIMIT_PCT,
                "level_pct": LEVEL_PCT,
                "checks": CRITERIA,
            },
        },
        "runs": [asdict(run) for run in runs],
        "summary": [asdict(row) for row in rows],
        "criteria": [asdict(verdict) for verdict in verdicts],
        "memory": [asdict(run) for run in memory],
    }
    (directory / "latest.json").write_text(json.dumps(to_json(raw), indent=1) + "\n")
    try:
        draw_chart(plan, rows, directory / "latest.png")
    except ImportError as error:
        say(f"no chart: {error} (pip install -e '.[bench]')")


def main(env: Mapping[str, str] = os.environ, clock: Callable[[], float] = time.monotonic) -> int:
    started = clock()
    # A SIGTERM (a CI timeout) unwinds like Ctrl-C, so that running servers are stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        plan = plan_from_env(env)
    except ConfigError as error:
        say(f"bench: {error}")
        return 2
    wrk = shutil.which("wrk")
    if wrk is None:
        say("bench: wrk not found; `make bench` installs it (apt-get install wrk)")
        return 2
    for name, why in plan.skipped.items():
        say(f"{name}: {why}, skipped")
    if not plan.cells:
        say("bench: nothing to run with this selection")
        return 2
    say(
        f"{len(plan.cells)} cells x {plan.rounds} round(s) x {plan.duration} s"
        + (", then the memory pass" if plan.memory else "")
        + f": about {estimate_seconds(plan) / 60:.0f} min"
    )
    with tempfile.TemporaryDirectory(prefix="dynocorn-bench-") as logs:
        runs = run_rounds(plan, wrk, Path(logs))
        memory = run_memory_pass(plan, wrk, Path(logs)) if plan.memory else []
    rows = summarize(plan, runs)
    verdicts = criteria(plan, rows)
    about = about_this_machine(wrk)
    about["wall_seconds"] = clock() - started
    markdown = report(plan, rows, memory, about, verdicts)
    print(markdown)
    directory = results_dir(os.environ)
    write_results(plan, runs, rows, memory, about, markdown, verdicts, directory)
    say(f"wrote {directory}/latest.md, latest.json, latest.png")
    if directory == RESULTS_DIR:  # the README's table shows the committed run
        summary.update_readme(json.loads((directory / "latest.json").read_text()))
        say("wrote README.md's benchmark table")
    else:
        say("(UPDATE_RESULTS=1 make bench writes the committed bench/results/ instead)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
