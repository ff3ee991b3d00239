"""The real `dynocorn` command, run as users run it (console script, bin/, python -m)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dynocorn import platform

REPO = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = Path(sys.executable).parent / "dynocorn"


def run(
    args: list[str], cwd: Path, command: list[str] | None = None, **environ: str
) -> subprocess.CompletedProcess[str]:
    # A clean environment: the test machine's own PORT or WEB_CONCURRENCY must not leak in.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **environ}
    return subprocess.run(
        [*(command or [str(CONSOLE_SCRIPT)]), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def printed(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """name -> 'value  # source' from --print-config output."""
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    return dict(line.split(" = ", 1) for line in lines)


def machine_has_memory_limit() -> bool:
    memory = platform.detect(dict(os.environ)).memory
    return memory is not None and memory.is_limit and memory.source.startswith("cgroup")


@pytest.mark.parametrize(
    "command",
    [
        [str(CONSOLE_SCRIPT)],
        [str(REPO / "bin" / "dynocorn")],
        [sys.executable, "-m", "dynocorn"],
    ],
    ids=["console-script", "bin", "python-m"],
)
def test_every_entry_point_prints_the_platform_config(tmp_path: Path, command: list[str]) -> None:
    result = run(["--print-config", "app:app"], tmp_path, command, PORT="7777", WEB_CONCURRENCY="3")
    settings = printed(result)
    assert settings["workers"] == "3  # platform (WEB_CONCURRENCY=3)"
    assert settings["bind"].split("  # ")[0] in ("['[::]:7777']", "['0.0.0.0:7777']")
    assert settings["bind"].endswith("# platform (PORT=7777)")


@pytest.mark.skipif(machine_has_memory_limit(), reason="a cgroup limit wins over DYNO_RAM here")
def test_auto_with_dyno_ram(tmp_path: Path) -> None:
    settings = printed(
        run(["--print-config", "app:app"], tmp_path, WEB_CONCURRENCY="auto", DYNO_RAM="512")
    )
    assert settings["workers"].startswith("2  # platform (WEB_CONCURRENCY=auto: 512 MB")


@pytest.mark.parametrize("value", ["0", "lots"])
def test_bad_web_concurrency_exits_1_naming_it(tmp_path: Path, value: str) -> None:
    result = run(["app:app"], tmp_path, WEB_CONCURRENCY=value)
    assert result.returncode == 1
    assert "WEB_CONCURRENCY" in result.stderr
    assert result.stderr.startswith(f"Error: workers = '{value}' from platform (WEB_CONCURRENCY)")
    assert len(result.stderr.strip().splitlines()) == 1


def test_gunicorn_cmd_args(tmp_path: Path) -> None:
    settings = printed(
        run(["--print-config", "app:app"], tmp_path, GUNICORN_CMD_ARGS="--workers 5")
    )
    assert settings["workers"] == "5  # GUNICORN_CMD_ARGS"


def test_gunicorn_conf_and_command_line_override(tmp_path: Path) -> None:
    (tmp_path / "gunicorn.conf.py").write_text("workers = 4\n")
    settings = printed(run(["--print-config", "app:app"], tmp_path))
    assert settings["workers"] == "4  # config file (gunicorn.conf.py)"
    settings = printed(run(["--print-config", "-w", "6", "app:app"], tmp_path))
    assert settings["workers"] == "6  # command line"


def test_typo_in_config_file_warns(tmp_path: Path) -> None:
    (tmp_path / "gunicorn.conf.py").write_text("worker = 4\n")
    result = run(["--print-config", "app:app"], tmp_path)
    assert result.returncode == 0
    assert "[WARNING]" in result.stderr
    assert "unknown setting worker (did you mean workers?)" in result.stderr


def test_env_file_is_read_by_the_command(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("WEB_CONCURRENCY=3\n")
    settings = printed(run(["--print-config", "app:app"], tmp_path))
    assert settings["workers"] == "3  # platform (WEB_CONCURRENCY=3)"
    settings = printed(run(["--print-config", "app:app"], tmp_path, WEB_CONCURRENCY="2"))
    assert settings["workers"] == "2  # platform (WEB_CONCURRENCY=2)"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    result = run(["--no-such-flag", "app:app"], tmp_path)
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in result.stderr
    assert run([], tmp_path).returncode == 2


def test_version(tmp_path: Path) -> None:
    result = run(["--version"], tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("dynocorn (version ")


def test_heroku_graceful_timeout_shown(tmp_path: Path) -> None:
    settings = printed(run(["--print-config", "app:app"], tmp_path, DYNO="web.1"))
    assert settings["graceful_timeout"] == "25  # platform (DYNO=web.1)"
    assert settings["keepalive"] == "95  # platform (DYNO=web.1)"
