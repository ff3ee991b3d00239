"""Heroku's Fir generation (Cloud Native Buildpacks) as dynocorn meets it: no
WEB_CONCURRENCY, DYNO like `web-12a34b56d-e78f9`, PORT to be bound on [::], cgroup v2, and a
restart at 100% of the quota. A fake /proc and /sys tree of that shape, that environment."""

from __future__ import annotations

from pathlib import Path

from test_platform import MB, cgroup_v2, meminfo, write_tree

from dynocorn import config
from dynocorn.metrics import heroku_lines
from dynocorn.metrics.memory import memory_cgroup, read_cgroup_memory

FIR_DYNO = "web-12a34b56d-e78f9"
FIR = {"DYNO": FIR_DYNO, "PORT": "5006"}  # what a Fir dyno sets; no WEB_CONCURRENCY


def fir_tree(tmp_path: Path, memory: int = 512 * MB) -> Path:
    files = cgroup_v2(
        "/",
        {
            "memory.max": f"{memory}\n",
            "memory.swap.max": "0\n",  # no swap: past the quota is a restart
            "cpu.max": "200000 100000\n",  # two CPUs
            "memory.stat": "anon 104857600\nfile 52428800\nshmem 0\n",
        },
    ) | meminfo(64_000_000)
    return write_tree(tmp_path / "root", files)


def test_a_fir_dyno_binds_ipv6_and_sizes_workers_from_cgroup_v2(tmp_path: Path) -> None:
    root = fir_tree(tmp_path)
    cfg = config.load(["app:app"], dict(FIR), tmp_path, root=root, ipv6=True)
    assert cfg.bind == ["[::]:5006"]
    assert cfg.workers == 2  # 512 MB / 256 MB per worker, with 2 CPUs to spare
    assert cfg.memory_quota == 512 * MB
    assert "cgroup v2 memory.max" in str(cfg.source("workers"))
    # The budget stays under the quota: Fir restarts the dyno at 100%, with no swap grace.
    assert 0 < cfg.memory_budget < 1
    assert cfg.accesslog == "-"  # DYNO set: a Heroku dyno's logs, as on classic dynos
    assert cfg.platform.process_name == FIR_DYNO


def test_the_metrics_lines_of_a_fir_dyno(tmp_path: Path) -> None:
    root = fir_tree(tmp_path)
    cfg = config.load(["app:app"], dict(FIR), tmp_path, root=root, ipv6=True)
    found = memory_cgroup(root)
    assert found is not None and found[1] == "cgroup v2"
    figures = read_cgroup_memory(found)
    assert figures is not None
    source = heroku_lines.source_name(cfg.platform.process_name)
    line = heroku_lines.memory_line(source, "dyno-id", figures, cfg.memory_quota)
    assert line.startswith(f"source={FIR_DYNO} dyno=dyno-id ")
    assert "sample#memory_total=150.00MB sample#memory_rss=100.00MB" in line
    assert "sample#memory_cache=50.00MB sample#memory_swap=0.00MB" in line
    assert line.endswith("sample#memory_quota=512.00MB")


def test_web_concurrency_still_wins_on_fir(tmp_path: Path) -> None:
    root = fir_tree(tmp_path, memory=2048 * MB)
    cfg = config.load(["app:app"], {**FIR, "WEB_CONCURRENCY": "3"}, tmp_path, root=root, ipv6=True)
    assert cfg.workers == 3
