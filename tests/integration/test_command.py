"""The real `dynocorn` command, run as users run it (console script, bin/, python -m)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dynocorn import platform
from dynocorn.settings import SETTINGS

REPO = Path(__file__).resolve().parents[2]
CONSOLE_SCRIPT = Path(sys.executable).parent / "dynocorn"


def run(
    args: list[str], cwd: Path, command: list[str] | None = None, **environ: str
) -> subprocess.CompletedProcess[str]:
    # A clean environment: the test machine's own PORT or WEB_CONCURRENCY must not leak in.
    # The code under test is this checkout's lib/, whichever checkout is installed.
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONPATH": str(REPO / "lib"),
        **environ,
    }
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
    return dict(line.split(" = ", 1) for line in lines if " = " in line)


def machine_has_memory_limit() -> bool:
    memory = platform.detect(dict(os.environ)).memory
    return memory is not None and memory.imposed and memory.source.startswith("cgroup")


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


def test_auto_with_dyno_ram(tmp_path: Path) -> None:
    settings = printed(
        run(["--print-config", "app:app"], tmp_path, WEB_CONCURRENCY="auto", DYNO_RAM="512")
    )
    cpus = len(os.sched_getaffinity(0))
    if not machine_has_memory_limit():
        # The example: 512 MB / 256 MB = 2 workers, below 2 x CPUs + 1 on any machine.
        assert settings["workers"].startswith(
            "2  # platform (WEB_CONCURRENCY=auto: 512 MB (DYNO_RAM) / 256 MB per worker, "
        )
        return
    # In a container a cgroup limit comes first (PLATFORM.md's order): the same rule, applied
    # to the limit the kernel enforces, and the source says so.
    memory = platform.detect(dict(os.environ)).memory
    assert memory is not None
    workers = min(2 * cpus + 1, max(1, memory.amount // (256 * 1024 * 1024)))
    assert settings["workers"].startswith(f"{workers}  # platform (WEB_CONCURRENCY=auto: ")
    assert "(cgroup" in settings["workers"]


def test_bin_dynocorn_runs_from_a_checkout_without_installing(tmp_path: Path) -> None:
    """bin/dynocorn must use the lib/ beside it, not an installed dynocorn."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "bin", checkout / "bin")
    shutil.copytree(REPO / "lib" / "dynocorn", checkout / "lib" / "dynocorn")
    init = checkout / "lib" / "dynocorn" / "__init__.py"
    init.write_text(
        re.sub(r'__version__ = "[^"]*"', '__version__ = "0.0.0-checkout"', init.read_text())
    )
    result = run(["--version"], tmp_path, [sys.executable, str(checkout / "bin" / "dynocorn")])
    assert result.stdout.strip() == "dynocorn (version 0.0.0-checkout)", result.stderr


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


def test_print_config_names_the_config_file_it_found(tmp_path: Path) -> None:
    assert printed(run(["--print-config", "app:app"], tmp_path))["config"] == "None  # default"
    (tmp_path / "gunicorn.conf.py").write_text("workers = 4\n")
    settings = printed(run(["--print-config", "app:app"], tmp_path))
    assert settings["config"] == "'./gunicorn.conf.py'  # found in the working directory"
    (tmp_path / "dynocorn.conf.py").write_text("workers = 5\n")
    settings = printed(run(["--print-config", "app:app"], tmp_path))
    assert settings["config"] == "'./dynocorn.conf.py'  # found in the working directory"
    assert settings["workers"] == "5  # config file (dynocorn.conf.py)"
    settings = printed(run(["--print-config", "-c", "gunicorn.conf.py", "app:app"], tmp_path))
    assert settings["config"] == "'gunicorn.conf.py'  # command line"


def test_typo_in_config_file_warns(tmp_path: Path) -> None:
    (tmp_path / "gunicorn.conf.py").write_text("worker = 4\n")
    result = run(["--print-config", "app:app"], tmp_path)
    assert result.returncode == 0
    assert "[WARNING]" in result.stderr
    assert "unknown setting worker (did you mean workers?)" in result.stderr


def test_env_file_is_read_by_the_command_only_when_named(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("WEB_CONCURRENCY=3\n")
    settings = printed(run(["--print-config", "app:app"], tmp_path))
    assert settings["workers"].startswith("1  # default")
    assert "env WEB_CONCURRENCY" not in run(["--print-config", "app:app"], tmp_path).stdout
    result = run(["--print-config", "--env-file", ".env", "app:app"], tmp_path)
    assert "env WEB_CONCURRENCY  # env file (.env)" in result.stdout.splitlines()
    settings = printed(run(["--print-config", "--env-file", ".env", "app:app"], tmp_path))
    assert settings["workers"] == "3  # platform (WEB_CONCURRENCY=3)"
    settings = printed(
        run(["--print-config", "--env-file", ".env", "app:app"], tmp_path, WEB_CONCURRENCY="2")
    )
    assert settings["workers"] == "2  # platform (WEB_CONCURRENCY=2)"


def test_no_env_file_is_accepted_with_a_deprecation_warning(tmp_path: Path) -> None:
    result = run(["--check-config", "--no-env-file", "app:app"], tmp_path)
    assert "no_env_file (from command line) is deprecated" in result.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    result = run(["--no-such-flag", "app:app"], tmp_path)
    assert result.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in result.stderr
    assert run([], tmp_path).returncode == 2


def described_flags(help_text: str) -> set[str]:
    """The flags --help has an entry for: `  -w INT, --workers INT   Number of...`."""
    flags: set[str] = set()
    for line in help_text.splitlines():
        if line.startswith("  -"):
            invocation = line[2:].split("  ")[0]
            flags.update(part.split()[0] for part in invocation.split(", "))
    return flags


def test_help_describes_what_is_implemented_and_names_the_rest(tmp_path: Path) -> None:
    short, full = run(["--help"], tmp_path), run(["--help-all"], tmp_path)
    assert (short.returncode, full.returncode) == (0, 0), short.stderr + full.stderr
    with_flags = [setting for setting in SETTINGS.values() if setting.flags]
    implemented = {flag for s in with_flags if s.implemented for flag in s.flags}
    not_implemented = {flag for s in with_flags if not s.implemented for flag in s.flags}
    assert {"--spew", "--certfile", "--http-protocols"} <= not_implemented
    assert "--reload" in implemented
    own = {"-h", "--help", "-v", "--version", "--help-all"}
    assert described_flags(short.stdout) == implemented | own
    assert described_flags(full.stdout) == described_flags(short.stdout) | not_implemented
    # The last paragraph names each of the others once, and where they are described.
    last = " ".join(short.stdout.strip().split("\n\n")[-1].split())
    assert "--help-all" in last
    named = set(re.findall(r"(--[\w-]+)[,.]", last))
    assert named == {
        next(f for f in s.flags if f.startswith("--")) for s in with_flags if not s.implemented
    }
    text = " ".join(short.stdout.split())
    assert "before it is killed; 0 = never. (default: 30)" in text
    assert "Number of worker processes. (default: 1; from `WEB_CONCURRENCY`" in text
    assert (
        "--log-level LEVEL Error log level: debug, info, warning, error, critical. "
        "(default: info)" in text
    )
    full_text = " ".join(full.stdout.split())
    assert "--spew Trace every line executed. Accepted, not implemented yet" in full_text


def test_version(tmp_path: Path) -> None:
    result = run(["--version"], tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("dynocorn (version ")


def test_heroku_graceful_timeout_shown(tmp_path: Path) -> None:
    settings = printed(run(["--print-config", "app:app"], tmp_path, DYNO="web.1"))
    assert settings["graceful_timeout"] == "25  # platform (DYNO=web.1)"
    assert settings["keepalive"] == "95  # platform (DYNO=web.1)"


def test_check_config_shows_the_warnings(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("def app(environ, start_response):\n    return []\n")
    (tmp_path / "gunicorn.conf.py").write_text("worker = 4\n")
    result = run(["--check-config", "--certfile", "x.pem", "app:app"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "unknown setting worker (did you mean workers?)" in result.stderr
    assert "certfile (from command line) is accepted for gunicorn compatibility" in result.stderr


def test_an_app_that_cannot_load_is_one_line_with_its_source(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("application = None\n")
    result = run(["--check-config", "app:nope"], tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: wsgi_app = 'app:nope' from command line: ")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("variable", ["GUNICORN_CMD_ARGS", "DYNOCORN_CMD_ARGS"])
def test_an_unbalanced_quote_in_cmd_args_is_a_usage_error(tmp_path: Path, variable: str) -> None:
    result = run(["--print-config", "app:app"], tmp_path, None, **{variable: "--name 'web"})
    assert result.returncode == 2
    assert f"dynocorn: error: {variable}: No closing quotation" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["-u", "no-such-user-here"], "user = 'no-such-user-here' from command line: no such user"),
        (["-g", "no-such-group-here"], "group = 'no-such-group-here' from command line: no such"),
        (["--statsd-host", "bad host:x"], "statsd_host = 'bad host:x' from command line: no valid"),
        (["--proxy-protocol", "v3"], "proxy_protocol = 'v3' from command line: expected off, v1"),
    ],
)
def test_bad_values_found_when_reading(tmp_path: Path, args: list[str], line: str) -> None:
    result = run(["--check-config", *args, "app:app"], tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: {line}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_config_dev_null_skips_the_gunicorn_conf(tmp_path: Path) -> None:
    (tmp_path / "gunicorn.conf.py").write_text("workers = 4\n")
    settings = printed(run(["-c", "/dev/null", "--print-config", "app:app"], tmp_path))
    assert not any("config file" in value for value in settings.values())
    assert settings["config"] == "'/dev/null'  # command line"


def test_a_gunicorn_27_setting_is_accepted_with_a_warning(tmp_path: Path) -> None:
    result = run(["--print-config", "--permit-obsolete-folding", "app:app"], tmp_path)
    assert printed(result)["permit_obsolete_folding"] == "True  # command line"
    assert "permit_obsolete_folding (from command line) is accepted" in result.stderr
