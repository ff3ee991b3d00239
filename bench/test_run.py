"""Checks of the benchmark's own logic, run by `make test` (the benchmark is `make bench`)."""

import math
import os
from pathlib import Path

import pytest
import run

KEEPALIVE_OUTPUT = """\
Running 5s test @ http://127.0.0.1:40123/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.03ms    1.10ms  17.00ms   80.12%
    Req/Sec    12.10k   700.00    13.00k    70.00%
  Latency Distribution
     50%  820.00us
     75%    2.49ms
     90%    3.10ms
     99%    1.20s
  60500 requests in 5.00s, 8.77MB read
Requests/sec:  12099.87
Transfer/sec:      1.75MB
"""

ERRORS_OUTPUT = """\
Running 1s test @ http://127.0.0.1:40123/missing
  1 threads and 20 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    10.13ms    3.49ms  31.75ms   83.74%
    Req/Sec     1.99k   419.93     2.43k    63.64%
  Latency Distribution
     50%    8.68ms
     75%   10.71ms
     90%   15.02ms
     99%   23.93ms
  2177 requests in 1.10s, 782.36KB read
  Socket errors: connect 1, read 2, write 3, timeout 4
  Non-2xx or 3xx responses: 2177
Requests/sec:   1978.86
Transfer/sec:    711.15KB
"""


def test_parse_wrk_reads_rate_and_percentiles_in_any_unit() -> None:
    result = run.parse_wrk(KEEPALIVE_OUTPUT)
    assert result.requests_per_second == 12099.87
    assert result.requests == 60500
    assert result.p50_ms == pytest.approx(0.82)
    assert result.p99_ms == pytest.approx(1200.0)
    assert result.errors == 0


def test_parse_wrk_counts_socket_errors_and_non_2xx() -> None:
    result = run.parse_wrk(ERRORS_OUTPUT)
    assert (result.socket_errors, result.non_2xx, result.errors) == (10, 2177, 2187)


def test_parse_wrk_without_distribution_gives_nan_latency() -> None:
    output = "  0 requests in 1.00s, 0.00B read\nRequests/sec:      0.00\n"
    result = run.parse_wrk(output)
    assert result.requests_per_second == 0
    assert math.isnan(result.p99_ms)


def test_parse_wrk_rejects_other_output() -> None:
    with pytest.raises(run.WrkFailed):
        run.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_default_matrix_is_trimmed_and_quick_is_small() -> None:
    everything = run.plan_from_env({})
    assert (everything.rounds, everything.duration) == (3, 5)
    close = [c for c in everything.cells if c.mode == "close"]
    assert {(c.app, c.server) for c in close} <= run.DEFAULT_CLOSE
    assert everything.notes == (run.TRIM_NOTE,)
    assert run.estimate_seconds(everything) < 570  # 10 minutes, with a margin

    quick = run.plan_from_env({"QUICK": "1"})
    assert (quick.rounds, quick.duration) == (1, 2)
    assert {(c.app, c.mode) for c in quick.cells} <= {
        ("hello", "keepalive"),
        ("flask", "keepalive"),
    }
    assert run.estimate_seconds(quick) < 110


def test_explicit_modes_are_not_trimmed() -> None:
    plan = run.plan_from_env({"SERVERS": "dynocorn-sync,gunicorn-sync", "MODES": "close"})
    assert len(plan.cells) == 2 * len(run.APPS)
    assert plan.notes == ()


@pytest.mark.parametrize(
    ("variable", "value"), [("SERVERS", "dynocorn,uwsgi"), ("ROUNDS", "0"), ("DURATION", "2s")]
)
def test_bad_selection_is_one_clear_error(variable: str, value: str) -> None:
    with pytest.raises(run.ConfigError, match=variable):
        run.plan_from_env({variable: value})


def _result(rate: float) -> run.WrkResult:
    return run.WrkResult(rate, int(rate), 1.0, 2.0, 0, 0)


def test_ratio_is_the_median_of_same_round_ratios() -> None:
    plan = run.plan_from_env({"SERVERS": "dynocorn-sync,gunicorn-sync", "APPS": "hello",
                              "MODES": "keepalive", "ROUNDS": "3"})  # fmt: skip
    mine, base = (
        run.Cell("dynocorn-sync", "hello", "keepalive"),
        run.Cell("gunicorn-sync", "hello", "keepalive"),
    )
    runs = [
        run.Run(1, mine, _result(200)), run.Run(1, base, _result(100)),  # 2.0
        run.Run(2, mine, _result(90)), run.Run(2, base, _result(30)),  # 3.0
        run.Run(3, mine, _result(50)), run.Run(3, base, _result(100)),  # 0.5
    ]  # fmt: skip
    rows = {row.cell: row for row in run.summarize(plan, runs)}
    assert rows[mine].ratio == 2.0
    assert rows[mine].requests_per_second == 90
    assert rows[base].ratio == 1.0
    assert rows[mine].peer_ratio == 2.0  # gunicorn-sync is also dynocorn-sync's peer
    assert math.isnan(rows[base].peer_ratio)


def test_each_dynocorn_class_is_compared_with_gunicorns_same_class() -> None:
    plan = run.plan_from_env({"SERVERS": "dynocorn-gthread,gunicorn-sync,gunicorn-gthread",
                              "APPS": "hello", "MODES": "keepalive", "ROUNDS": "1"})  # fmt: skip
    mine = run.Cell("dynocorn-gthread", "hello", "keepalive")
    runs = [
        run.Run(1, mine, _result(300)),
        run.Run(1, mine._replace(server="gunicorn-sync"), _result(100)),
        run.Run(1, mine._replace(server="gunicorn-gthread"), _result(200)),
    ]
    row = {row.cell: row for row in run.summarize(plan, runs)}[mine]
    assert (row.ratio, row.peer_ratio) == (3.0, 1.5)
    assert run.peer_of("granian") is None


def test_a_server_that_never_started_is_a_failed_row() -> None:
    plan = run.plan_from_env({"SERVERS": "dynocorn-sync", "APPS": "hello", "MODES": "keepalive"})
    cell = plan.cells[0]
    rows = run.summarize(
        plan, [run.Run(n, cell, None, "exited with code 3\nlog") for n in (1, 2, 3)]
    )
    assert "failed: exited with code 3 |" in run.speed_table(plan, rows)


def test_serve_answers_then_stops_the_whole_process_group(tmp_path: Path) -> None:
    server = next(s for s in run.SERVERS if s.name == "dynocorn-sync")
    app = next(a for a in run.APPS if a.name == "hello")
    with run.serve(server, app, preload=False, log_path=tmp_path / "log") as running:
        memory = run.measure_memory(running.pid)
        assert len(memory.worker_uss) == run.WORKERS
        assert memory.pss_total > sum(memory.worker_uss)
    with pytest.raises(ProcessLookupError):
        os.killpg(running.pid, 0)
