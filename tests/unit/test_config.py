"""Configuration resolution: sources, precedence, platform defaults, errors."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from dynocorn import config
from dynocorn.arguments import UsageError
from dynocorn.settings import SETTINGS
from dynocorn.sources import Kind


def write_meminfo(root: Path, total_kb: int = 8 * 1024 * 1024) -> Path:
    """A machine with physical memory only: no cgroup limit."""
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc" / "meminfo").write_text(f"MemTotal:       {total_kb} kB\n")
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_meminfo(tmp_path / "root")


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    path = tmp_path / "app"
    path.mkdir()
    return path


def load(argv: list[str], cwd: Path, root: Path, **environ: str) -> config.Config:
    return config.load(argv, environ, cwd, root=root, ipv6=True)


def test_defaults_match_gunicorn(cwd: Path, root: Path) -> None:
    cfg = load(["app:app"], cwd, root)
    assert cfg.bind == ["127.0.0.1:8000"]
    assert cfg.workers == 1
    assert cfg.timeout == 30
    assert cfg.graceful_timeout == 30
    assert cfg.keepalive == 2
    assert cfg.backlog == 2048
    assert cfg.limit_request_line == 4094
    assert cfg.limit_request_fields == 100
    assert cfg.limit_request_field_size == 8190
    assert cfg.forwarded_allow_ips == ["127.0.0.1", "::1"]
    assert cfg.accesslog is None
    assert cfg.errorlog == "-"
    assert str(cfg.source("timeout")) == "default"
    assert str(cfg.source("wsgi_app")) == "command line"
    assert str(cfg.source("workers")).startswith("default (no memory or CPU limit found")
    assert cfg.is_default("workers")  # gunicorn's 1, explained: still the default
    assert not cfg.workers_auto


def test_port_gives_dual_stack_bind(cwd: Path, root: Path) -> None:
    cfg = load(["app:app"], cwd, root, PORT="7777")
    assert cfg.bind == ["[::]:7777"]
    assert str(cfg.source("bind")) == "platform (PORT=7777)"


def test_port_without_ipv6_binds_ipv4(cwd: Path, root: Path) -> None:
    cfg = config.load(["app:app"], {"PORT": "5000"}, cwd, root=root, ipv6=False)
    assert cfg.bind == ["0.0.0.0:5000"]


def test_explicit_bind_beats_port(cwd: Path, root: Path) -> None:
    cfg = load(["-b", "127.0.0.1:9000", "app:app"], cwd, root, PORT="7777")
    assert cfg.bind == ["127.0.0.1:9000"]
    assert str(cfg.source("bind")) == "command line"


def test_bad_port_is_an_error_naming_it(cwd: Path, root: Path) -> None:
    with pytest.raises(config.ConfigError, match=r"bind = 'http' from platform \(PORT\)"):
        load(["app:app"], cwd, root, PORT="http")


def test_bad_port_is_ignored_when_bind_is_given(cwd: Path, root: Path) -> None:
    cfg = load(["-b", "127.0.0.1:9000", "app:app"], cwd, root, PORT="http")
    assert cfg.bind == ["127.0.0.1:9000"]


@pytest.mark.parametrize(("value", "workers"), [("3", 3), ("011", 11), ("1", 1)])
def test_web_concurrency_number(cwd: Path, root: Path, value: str, workers: int) -> None:
    cfg = load(["app:app"], cwd, root, WEB_CONCURRENCY=value)
    assert cfg.workers == workers
    assert str(cfg.source("workers")) == f"platform (WEB_CONCURRENCY={value})"


@pytest.mark.parametrize("value", ["0", "-2", "lots", "3.5"])
def test_web_concurrency_garbage_names_the_variable(cwd: Path, root: Path, value: str) -> None:
    with pytest.raises(config.ConfigError) as error:
        load(["app:app"], cwd, root, WEB_CONCURRENCY=value)
    assert "WEB_CONCURRENCY" in str(error.value)
    assert str(error.value).startswith(f"Error: workers = {value!r} from platform")


def test_web_concurrency_empty_is_unset(cwd: Path, root: Path) -> None:
    assert load(["app:app"], cwd, root, WEB_CONCURRENCY="").workers == 1


def test_auto_uses_memory_and_cpus(cwd: Path, root: Path) -> None:
    cfg = load(["app:app"], cwd, root, WEB_CONCURRENCY="auto", DYNO_RAM="512")
    assert cfg.workers == 2
    assert str(cfg.source("workers")).startswith("platform (WEB_CONCURRENCY=auto: 512 MB")
    assert "256 MB per worker" in str(cfg.source("workers"))


@pytest.mark.parametrize("spelling", ["AUTO", "Auto", " auto "])
def test_auto_in_any_case_is_auto(cwd: Path, root: Path, spelling: str) -> None:
    auto = load(["app:app"], cwd, root, WEB_CONCURRENCY="auto", DYNO_RAM="512")
    other = load(["app:app"], cwd, root, WEB_CONCURRENCY=spelling, DYNO_RAM="512")
    assert (other.workers, other.workers_auto) == (auto.workers, True)
    assert other.source("workers").kind is Kind.PLATFORM


def test_a_number_or_an_explicit_count_is_not_auto(cwd: Path, root: Path) -> None:
    assert not load(["app:app"], cwd, root, WEB_CONCURRENCY="3").workers_auto
    assert not load(["-w", "2", "app:app"], cwd, root, WEB_CONCURRENCY="auto").workers_auto


def test_a_bad_cpu_count_names_the_setting_it_sizes(cwd: Path, root: Path) -> None:
    with pytest.raises(config.ConfigError) as error:
        load(["app:app"], cwd, root, RENDER_CPU_COUNT="two")
    assert str(error.value) == (
        "Error: workers = 'two' from platform (RENDER_CPU_COUNT): not a whole number of CPUs"
    )


def test_a_bad_cpu_count_is_irrelevant_to_an_explicit_worker_count(cwd: Path, root: Path) -> None:
    cfg = load(["-w", "3", "app:app"], cwd, root, RENDER_CPU_COUNT="two")
    assert (cfg.workers, str(cfg.source("workers"))) == (3, "command line")


def test_auto_follows_worker_memory_and_memory_quota(cwd: Path, root: Path) -> None:
    cfg = load(
        ["--worker-memory", "512", "--memory-quota", "1GB", "app:app"],
        cwd,
        root,
        WEB_CONCURRENCY="auto",
        DYNO_RAM="512",
        RENDER_CPU_COUNT="1",  # at most 1 whatever this machine has: a cap of 3 workers
    )
    assert cfg.workers == 2  # 1024 MB (the quota, not DYNO_RAM's 512) / 512 MB per worker
    assert cfg.memory_quota == 2**30


def test_unset_with_a_memory_limit_is_computed(cwd: Path, root: Path) -> None:
    cfg = load(["app:app"], cwd, root, DYNO_RAM="1024", RENDER_CPU_COUNT="1")
    assert cfg.workers == 3  # 1024 MB / 256 MB = 4, capped at 2 x 1 CPU + 1
    assert str(cfg.source("workers")).startswith("platform (")


def test_buildpack_value_is_recomputed(cwd: Path, root: Path) -> None:
    cfg = load(
        ["app:app"],
        cwd,
        root,
        WEB_CONCURRENCY="9",
        WEB_CONCURRENCY_SET_BY="heroku/python",
        DYNO_RAM="512",
    )
    assert cfg.workers == 2


def test_memory_quota_defaults_to_detected_memory(cwd: Path, root: Path) -> None:
    cfg = load(["app:app"], cwd, root, DYNO_RAM="512")
    assert cfg.memory_quota == 512 * 2**20
    assert str(cfg.source("memory_quota")) == "platform (DYNO_RAM)"


def test_heroku_defaults(cwd: Path, root: Path) -> None:
    cfg = load(["app:app"], cwd, root, DYNO="web.1", PORT="5000")
    assert cfg.graceful_timeout == 25
    assert cfg.keepalive == 95
    assert cfg.forwarded_allow_ips == ["*"]
    assert cfg.accesslog == "-"
    assert str(cfg.source("graceful_timeout")) == "platform (DYNO=web.1)"
    assert cfg.platform.process_name == "web.1"


def test_a_keepalive_the_heroku_router_outlasts_is_warned_about(cwd: Path, root: Path) -> None:
    """A gunicorn.conf.py's keepalive = 5, kept on Heroku: the router reuses a connection for
    90 s, so a request can arrive as dynocorn closes it (H13/H18), with nothing in its log."""
    (cwd / "gunicorn.conf.py").write_text("keepalive = 5\n")
    cfg = load(["app:app"], cwd, root, DYNO="web.1", PORT="5000")
    assert cfg.warnings == [
        "keepalive = 5 from config file (gunicorn.conf.py) closes idle connections before "
        "the Heroku router's 90 s: a request the router sends on one as it closes fails with "
        "H13 or H18; set it above 90 (unset, it is 95 on Heroku)"
    ]
    (cwd / "gunicorn.conf.py").unlink()
    for quiet in (["--keep-alive", "0"], ["--keep-alive", "91"], []):  # none, longer, 95
        assert load([*quiet, "app:app"], cwd, root, DYNO="web.1", PORT="5000").warnings == []
    assert load(["app:app"], cwd, root).warnings == []  # off Heroku, 5 s is the user's call


def test_forwarded_allow_ips_and_sendfile_from_environment(cwd: Path, root: Path) -> None:
    cfg = load(["app:app"], cwd, root, FORWARDED_ALLOW_IPS="10.0.0.0/8, 1.2.3.4", SENDFILE="0")
    assert cfg.forwarded_allow_ips == ["10.0.0.0/8", "1.2.3.4"]
    assert cfg.sendfile is False
    assert str(cfg.source("sendfile")) == "platform (SENDFILE=0)"


def test_precedence_file_then_env_args_then_command_line(cwd: Path, root: Path) -> None:
    (cwd / "gunicorn.conf.py").write_text(
        "workers = 4\ntimeout = 11\nbacklog = 100\nkeepalive = 7\n"
    )
    cfg = load(
        ["-w", "6", "app:app"],
        cwd,
        root,
        GUNICORN_CMD_ARGS="--timeout 12 --backlog 200 --keep-alive 8",
        DYNOCORN_CMD_ARGS="--backlog 300",
        WEB_CONCURRENCY="3",
    )
    assert (cfg.workers, str(cfg.source("workers"))) == (6, "command line")
    assert (cfg.timeout, str(cfg.source("timeout"))) == (12, "GUNICORN_CMD_ARGS")
    assert (cfg.backlog, str(cfg.source("backlog"))) == (300, "DYNOCORN_CMD_ARGS")
    assert (cfg.keepalive, str(cfg.source("keepalive"))) == (8, "GUNICORN_CMD_ARGS")
    assert str(cfg.source("graceful_timeout")) == "default"


def test_config_file_beats_platform_default(cwd: Path, root: Path) -> None:
    (cwd / "gunicorn.conf.py").write_text("workers = 4\n")
    cfg = load(["app:app"], cwd, root, WEB_CONCURRENCY="3")
    assert cfg.workers == 4
    assert str(cfg.source("workers")) == "config file (gunicorn.conf.py)"


def test_dynocorn_conf_is_preferred_over_gunicorn_conf(cwd: Path, root: Path) -> None:
    (cwd / "gunicorn.conf.py").write_text("workers = 4\n")
    (cwd / "dynocorn.conf.py").write_text("workers = 5\n")
    assert load(["app:app"], cwd, root).workers == 5


def test_explicit_config_file(cwd: Path, root: Path) -> None:
    (cwd / "gunicorn.conf.py").write_text("workers = 4\n")
    (cwd / "other.py").write_text("workers = 7\n")
    cfg = load(["-c", "other.py", "app:app"], cwd, root)
    assert cfg.workers == 7
    assert str(cfg.source("workers")) == "config file (other.py)"


def test_missing_explicit_config_file(cwd: Path, root: Path) -> None:
    with pytest.raises(
        config.ConfigError, match=re.escape("config = 'nope.py' from command line: no such")
    ):
        load(["-c", "nope.py", "app:app"], cwd, root)


def test_config_file_that_raises_names_the_line(cwd: Path, root: Path) -> None:
    (cwd / "gunicorn.conf.py").write_text("workers = 2\nbind = undefined_name\n")
    with pytest.raises(config.ConfigError, match=r"NameError.*\(line 2\)"):
        load(["app:app"], cwd, root)


def test_unknown_names_in_config_file_warn_with_a_suggestion(cwd: Path, root: Path) -> None:
    (cwd / "gunicorn.conf.py").write_text(
        "import multiprocessing\n"
        "from os import getpid\n"
        "_private = 1\n"
        "worker = 4\n"
        "def post_forks(server, worker):\n"
        "    pass\n"
        "def post_fork(server, worker):\n"
        "    pass\n"
    )
    cfg = load(["app:app"], cwd, root)
    joined = "\n".join(cfg.warnings)
    assert "unknown setting worker (did you mean workers?)" in joined
    assert "unknown setting post_forks (did you mean post_fork?)" in joined
    assert "multiprocessing" not in joined
    assert "getpid" not in joined
    assert "_private" not in joined
    assert cfg.post_fork.__name__ == "post_fork"
    assert str(cfg.source("post_fork")) == "config file (gunicorn.conf.py)"


def test_config_file_hook_that_is_not_callable(cwd: Path, root: Path) -> None:
    (cwd / "gunicorn.conf.py").write_text("on_starting = 3\n")
    with pytest.raises(config.ConfigError, match="on_starting = 3 from config file"):
        load(["app:app"], cwd, root)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-w", "0"], "workers = '0' from command line: must be 1 or more"),
        (["-t", "soon"], "timeout = 'soon' from command line: not a whole number"),
        (["-b", "[::1:80"], "bind = '[::1:80' from command line"),
        (["--limit-request-line", "9000"], "limit_request_line = '9000' from command line"),
        (["--forwarded-allow-ips", "1.2.3.x"], "forwarded_allow_ips = '1.2.3.x'"),
        (["--log-level", "loud"], "loglevel = 'loud' from command line: must be one of"),
        (["--access-log-style", "xml"], "access_log_style = 'xml' from command line: must"),
        (["--memory-quota", "lots"], "memory_quota = 'lots' from command line"),
        (["-e", "NOEQUALS"], "raw_env = 'NOEQUALS' from command line"),
        (["--lifespan", "maybe"], "asgi_lifespan = 'maybe' from command line: must be one of"),
        (["--asgi-loop", "trio"], "asgi_loop = 'trio' from command line: must be one of"),
        (["--root-path", "api"], "root_path = 'api' from command line: must be empty or"),
        (["--websocket-max-message-size", "-1"], "websocket_max_message_size = '-1' from"),
        (["--asgi-disconnect-grace-period", "soon"], "asgi_disconnect_grace_period = 'soon'"),
    ],
)
def test_bad_values_name_setting_value_and_source(
    cwd: Path, root: Path, argv: list[str], message: str
) -> None:
    with pytest.raises(config.ConfigError) as error:
        load([*argv, "app:app"], cwd, root)
    assert str(error.value).startswith("Error: " + message)


def test_bad_value_in_cmd_args_names_the_variable(cwd: Path, root: Path) -> None:
    with pytest.raises(config.ConfigError, match="from DYNOCORN_CMD_ARGS"):
        load(["app:app"], cwd, root, DYNOCORN_CMD_ARGS="--workers none")


def test_unknown_flag_is_a_usage_error(cwd: Path, root: Path) -> None:
    with pytest.raises(UsageError):
        load(["--wrokers", "3", "app:app"], cwd, root)
    with pytest.raises(UsageError, match="GUNICORN_CMD_ARGS"):
        load(["app:app"], cwd, root, GUNICORN_CMD_ARGS="--nope")


def test_field_size_flag_has_both_spellings(cwd: Path, root: Path) -> None:
    underscore = load(["--limit-request-field_size", "100", "x:y"], cwd, root)
    dash = load(["--limit-request-field-size", "200", "x:y"], cwd, root)
    assert (underscore.limit_request_field_size, dash.limit_request_field_size) == (100, 200)


def test_asgi_settings_are_settings_not_warnings(cwd: Path, root: Path) -> None:
    defaults = load(["app:app"], cwd, root)
    assert (defaults.asgi_lifespan, defaults.asgi_loop, defaults.root_path) == ("auto", "auto", "")
    assert (defaults.websocket_max_message_size, defaults.asgi_disconnect_grace_period) == (
        16 * 2**20,
        3,
    )
    argv = ["--lifespan", "ON", "--asgi-loop", "asyncio", "--root-path", "/api/"]
    argv += ["--websocket-max-message-size", "0", "--asgi-disconnect-grace-period", "0"]
    cfg = load([*argv, "app:app"], cwd, root)
    assert (cfg.asgi_lifespan, cfg.asgi_loop, cfg.root_path) == ("on", "asyncio", "/api")
    assert (cfg.websocket_max_message_size, cfg.asgi_disconnect_grace_period) == (0, 0)
    assert load(["--asgi-lifespan", "off", "app:app"], cwd, root).asgi_lifespan == "off"
    assert not cfg.warnings  # implemented: no "accepted, not implemented" warning


def test_repeatable_and_switch_flags(cwd: Path, root: Path) -> None:
    cfg = load(
        [
            "-b",
            "127.0.0.1:1",
            "-b",
            "unix:/tmp/s",
            "--preload",
            "--no-sendfile",
            "-e",
            "A=1",
            "app:app",
        ],
        cwd,
        root,
    )
    assert cfg.bind == ["127.0.0.1:1", "unix:/tmp/s"]
    assert cfg.preload_app is True
    assert cfg.sendfile is False
    assert cfg.raw_env == ["A=1"]


def test_a_dot_env_in_the_app_is_never_read_unless_named(cwd: Path, root: Path) -> None:
    # Heroku's getting-started app commits ENVIRONMENT=development for `heroku local`; it
    # ships in the slug, and production must not see it.
    (cwd / ".env").write_text("WEB_CONCURRENCY=3\nDYNOCORN_CMD_ARGS=--timeout 9\n")
    (cwd / "gunicorn.conf.py").write_text(
        "import os\nworkers = 4 if os.environ.get('WEB_CONCURRENCY') else 2\n"
    )
    cfg = load(["app:app"], cwd, root)
    assert cfg.workers == 2
    assert cfg.timeout == 30
    assert cfg.env_files.added == {}
    assert not any(line.startswith("env ") for line in cfg.print_lines())


def test_env_file_is_loaded_when_named_and_real_environment_wins(cwd: Path, root: Path) -> None:
    (cwd / ".env").write_text("WEB_CONCURRENCY=3\nDATABASE_URL=postgres://x\nPORT=6000\n")
    cfg = load(["--env-file", ".env", "app:app"], cwd, root, PORT="7000")
    assert cfg.workers == 3
    assert cfg.bind == ["[::]:7000"]
    assert cfg.env_files.added == {"WEB_CONCURRENCY": "3", "DATABASE_URL": "postgres://x"}


def test_env_files_repeat_and_the_later_wins(cwd: Path, root: Path) -> None:
    (cwd / "base.env").write_text("WEB_CONCURRENCY=3\nDATABASE_URL=postgres://base\n")
    (cwd / "prod.env").write_text("WEB_CONCURRENCY=5\n")
    cfg = load(["--env-file", "base.env", "--env-file", "prod.env", "app:app"], cwd, root)
    assert cfg.workers == 5
    assert cfg.env_files.origin == {"WEB_CONCURRENCY": "prod.env", "DATABASE_URL": "base.env"}


def test_env_file_can_hold_cmd_args(cwd: Path, root: Path) -> None:
    (cwd / "local.env").write_text("DYNOCORN_CMD_ARGS=--timeout 9\n")
    assert load(["--env-file", "local.env", "app:app"], cwd, root).timeout == 9


def test_env_file_from_cmd_args_of_the_real_environment(cwd: Path, root: Path) -> None:
    (cwd / "local.env").write_text("WEB_CONCURRENCY=6\n")
    for variable in ("GUNICORN_CMD_ARGS", "DYNOCORN_CMD_ARGS"):
        cfg = load(["app:app"], cwd, root, **{variable: "--env-file local.env"})
        assert cfg.workers == 6
        assert str(cfg.source("env_file")) == variable


def test_the_config_file_sees_the_env_files(cwd: Path, root: Path) -> None:
    (cwd / "local.env").write_text("ENVIRONMENT=development\n")
    (cwd / "gunicorn.conf.py").write_text(
        "import os\npreload_app = os.environ.get('ENVIRONMENT') != 'development'\n"
    )
    assert load(["app:app"], cwd, root).preload_app is True
    assert load(["--env-file", "local.env", "app:app"], cwd, root).preload_app is False
    # Reading the config file does not leave the values in this process's environment.
    assert "ENVIRONMENT" not in os.environ


def test_what_the_config_file_puts_in_the_environment_stays_for_the_app(
    cwd: Path, root: Path
) -> None:
    (cwd / "gunicorn.conf.py").write_text(
        "import os\nos.environ.setdefault('DYNOCORN_TEST_FROM_CONF', 'set by the file')\n"
    )
    try:
        load(["app:app"], cwd, root)
        assert os.environ["DYNOCORN_TEST_FROM_CONF"] == "set by the file"
    finally:
        os.environ.pop("DYNOCORN_TEST_FROM_CONF", None)


def test_the_config_file_may_name_env_files_and_sees_them(cwd: Path, root: Path) -> None:
    (cwd / "local.env").write_text("ENVIRONMENT=development\n")
    (cwd / "gunicorn.conf.py").write_text(
        "import os\nenv_file = 'local.env'\n"
        "preload_app = os.environ.get('ENVIRONMENT') != 'development'\n"
    )
    cfg = load(["app:app"], cwd, root)
    assert cfg.env_files.added == {"ENVIRONMENT": "development"}
    assert cfg.preload_app is False
    assert str(cfg.source("env_file")) == "config file (gunicorn.conf.py)"


def test_print_config_names_each_variables_env_file_but_not_its_value(
    cwd: Path, root: Path
) -> None:
    (cwd / "a.env").write_text("SECRET_KEY=hunter2\nPORT=6000\n")
    (cwd / "b.env").write_text("DATABASE_URL=postgres://x\n")
    cfg = load(["--env-file", "a.env", "--env-file", "b.env", "app:app"], cwd, root, PORT="7")
    lines = cfg.print_lines()
    assert "env DATABASE_URL  # env file (b.env)" in lines
    assert "env SECRET_KEY  # env file (a.env)" in lines
    assert "env PORT  # env file (a.env), ignored: set in the environment" in lines
    assert not any("hunter2" in line or "postgres" in line for line in lines)


def test_no_env_file_is_a_deprecated_no_op(cwd: Path, root: Path) -> None:
    (cwd / ".env").write_text("WEB_CONCURRENCY=3\n")
    cfg = load(["--no-env-file", "app:app"], cwd, root)
    assert cfg.workers == 1
    assert any("no_env_file" in w and "deprecated" in w for w in cfg.warnings)


def test_a_format_the_access_log_style_ignores_is_warned_about(cwd: Path, root: Path) -> None:
    style = ["--access-log-style", "json"]
    assert load([*style, "app:app"], cwd, root).warnings == []
    cfg = load([*style, "--access-logformat", "%(s)s", "app:app"], cwd, root)
    assert cfg.warnings == [
        "access_log_format (from command line) has no effect: "
        "access_log_style is json (from command line)"
    ]
    (cwd / "gunicorn.conf.py").write_text("access_log_style = None\n")
    assert load(["--access-logformat", "%(s)s", "app:app"], cwd, root).access_log_style is None


def test_a_missing_env_file_is_an_error(cwd: Path, root: Path) -> None:
    with pytest.raises(config.ConfigError, match=re.escape("env_file = 'missing.env'")):
        load(["--env-file", "missing.env", "app:app"], cwd, root)


def test_a_missing_env_file_names_the_variable_that_asked_for_it(cwd: Path, root: Path) -> None:
    for variable in ("GUNICORN_CMD_ARGS", "DYNOCORN_CMD_ARGS"):
        with pytest.raises(config.ConfigError) as raised:
            load(["app:app"], cwd, root, **{variable: "--env-file gone.env"})
        assert str(raised.value) == f"Error: env_file = 'gone.env' from {variable}: no such file"


def test_unimplemented_setting_warns(cwd: Path, root: Path) -> None:
    cfg = load(["--certfile", "x.pem", "app:app"], cwd, root)
    assert any("certfile" in warning and "not implemented" in warning for warning in cfg.warnings)
    assert not load(["app:app"], cwd, root).warnings


def test_setting_that_cannot_be_in_a_config_file(cwd: Path, root: Path) -> None:
    (cwd / "gunicorn.conf.py").write_text("print_config = True\n")
    cfg = load(["app:app"], cwd, root)
    assert cfg.print_config is False
    assert any("print_config cannot be set in a config file" in w for w in cfg.warnings)


def test_print_lines_cover_every_setting(cwd: Path, root: Path) -> None:
    lines = load(["app:app"], cwd, root, PORT="7777").print_lines()
    assert len(lines) == len(SETTINGS)
    assert "bind = ['[::]:7777']  # platform (PORT=7777)" in lines
    assert "on_starting = <no hook>  # default" in lines


def test_umask_and_sizes(cwd: Path, root: Path) -> None:
    cfg = load(["-m", "022", "--max-worker-memory", "300MB", "app:app"], cwd, root)
    assert cfg.umask == 0o22
    assert cfg.max_worker_memory == 300 * 2**20


# One value per variable the settings table names; a variable added there needs one here.
ENVIRONMENT_SAMPLES = {
    "PORT": "7000",
    "WEB_CONCURRENCY": "3",
    "WEB_CONCURRENCY_SET_BY": "heroku/python",
    "DYNO": "web.1",
    "HONCHO_PROCESS_NAME": "web.1",
    "DYNO_RAM": "1024",
    "MEMORY_AVAILABLE": "1024",
    "FLY_VM_MEMORY_MB": "1024",
    "MEMORY_LIMIT": "1024M",
    "CONTAINER_MEMORY": str(1024 * 1024 * 1024),
    "SENDFILE": "0",
    "FORWARDED_ALLOW_IPS": "10.0.0.1",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://collector:4318/v1/metrics",
    "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
    "OTEL_METRIC_EXPORT_INTERVAL": "15000",
}


def test_every_environment_variable_in_the_table_changes_its_setting(cwd: Path, root: Path) -> None:
    named = {variable for setting in SETTINGS.values() for variable in setting.env}
    assert named == set(ENVIRONMENT_SAMPLES)
    for setting in SETTINGS.values():
        for variable in setting.env:
            environ = {variable: ENVIRONMENT_SAMPLES[variable]}
            if variable == "WEB_CONCURRENCY_SET_BY":  # it qualifies WEB_CONCURRENCY
                environ["WEB_CONCURRENCY"] = "9"
            cfg = load(["app:app"], cwd, root, **environ)
            assert str(cfg.source(setting.name)).startswith("platform ("), (setting.name, variable)
            assert variable in str(cfg.source(setting.name)) or variable == "WEB_CONCURRENCY_SET_BY"


def test_honcho_logs_requests_as_a_dyno_and_nothing_else_of_herokus(cwd: Path, root: Path) -> None:
    cfg = load(["app:app"], cwd, root, HONCHO_PROCESS_NAME="web.1")
    assert cfg.accesslog == "-"
    assert str(cfg.source("accesslog")) == "platform (HONCHO_PROCESS_NAME=web.1)"
    assert cfg.is_default("keepalive") and cfg.is_default("forwarded_allow_ips")
    assert (
        load(
            ["--access-logfile", "x.log", "app:app"], cwd, root, HONCHO_PROCESS_NAME="web.1"
        ).accesslog
        == "x.log"
    )


def test_reload_lines_name_what_changed_and_only_that(cwd: Path, root: Path) -> None:
    hooks = "def post_fork(server, worker):\n    server.log.info('forked')\n"
    (cwd / "gunicorn.conf.py").write_text(f"timeout = 45\nraw_env = ['TOKEN=a']\n{hooks}")
    first = load(["app:app"], cwd, root)
    # Run again, the file defines new function objects: the same code is no change.
    assert config.reload_lines(first, load(["app:app"], cwd, root)) == []
    # Nor is the same hook lower in the file.
    (cwd / "gunicorn.conf.py").write_text(f"timeout = 45\n\n\nraw_env = ['TOKEN=a']\n{hooks}")
    assert config.reload_lines(first, load(["app:app"], cwd, root)) == []

    hooks = hooks.replace("forked", "forked!") + "def on_reload(server):\n    pass\n"
    (cwd / "gunicorn.conf.py").write_text(f"raw_env = ['TOKEN=b']\n{hooks}")
    lines = config.reload_lines(first, load(["app:app"], cwd, root))
    assert lines == [
        "Reload: timeout 45 -> 30 (default)",
        "Reload: raw_env changed (config file (gunicorn.conf.py))",  # the token is not shown
        "Reload: on_reload <no hook> -> <function on_reload> (config file (gunicorn.conf.py))",
        "Reload: post_fork changed (config file (gunicorn.conf.py))",
    ]


def test_a_python_module_config_is_run_again_with_the_env_files(
    cwd: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As a file: the first run finds env_file, the second sees what it sets (a module
    import would be cached, and keep the values computed without it)."""
    (cwd / "local.env").write_text("ENVIRONMENT=development\n")
    (cwd / "dynocorn_test_conf_module.py").write_text(
        "import os\nenv_file = 'local.env'\n"
        "preload_app = os.environ.get('ENVIRONMENT') != 'development'\n"
    )
    monkeypatch.syspath_prepend(str(cwd))
    try:
        cfg = load(["-c", "python:dynocorn_test_conf_module", "app:app"], cwd, root)
        assert cfg.env_files.added == {"ENVIRONMENT": "development"}
        assert cfg.preload_app is False
    finally:
        sys.modules.pop("dynocorn_test_conf_module", None)


# -- OTLP: OpenTelemetry's variables, and the flags that win over them


@pytest.mark.parametrize(
    ("environ", "url", "source"),
    [
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"},
            "http://collector:4318/v1/metrics",  # a base URL: the metrics path is added
            "platform (OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318/)",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "https://metrics.example/otlp",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            "https://metrics.example/otlp",  # the metrics one wins, as it is
            "platform (OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=https://metrics.example/otlp)",
        ),
    ],
)
def test_otlp_endpoint_from_opentelemetry_variables(
    cwd: Path, root: Path, environ: dict[str, str], url: str, source: str
) -> None:
    cfg = load(["app:app"], cwd, root, **environ)
    assert (cfg.otlp_endpoint, str(cfg.source("otlp_endpoint"))) == (url, source)
    assert cfg.warnings == []


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/metrics"),
        ("http://127.0.0.1:4318/", "http://127.0.0.1:4318/v1/metrics"),
        ("https://otlp.example/api/metrics", "https://otlp.example/api/metrics"),
    ],
)
def test_otlp_endpoint_flag_wins_and_gets_the_metrics_path_when_it_has_none(
    cwd: Path, root: Path, given: str, url: str
) -> None:
    cfg = load(["--otlp-endpoint", given, "app:app"], cwd, root, OTEL_EXPORTER_OTLP_ENDPOINT="x")
    assert (cfg.otlp_endpoint, str(cfg.source("otlp_endpoint"))) == (url, "command line")
    assert cfg.warnings == []  # the variable is not looked at: the flag decided


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "  "},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_METRICS_EXPORTER": "none"},
    ],
)
def test_no_otlp_push_unless_named_and_not_turned_off(
    cwd: Path, root: Path, environ: dict[str, str]
) -> None:
    cfg = load(["app:app"], cwd, root, **environ)
    assert cfg.otlp_endpoint is None and cfg.is_default("otlp_endpoint")
    assert cfg.warnings == []


@pytest.mark.parametrize(
    ("environ", "reason"),
    [
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"},
            "OTEL_EXPORTER_OTLP_ENDPOINT=collector:4317: not an http:// or https:// URL",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            },
            "OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317 with "
            "OTEL_EXPORTER_OTLP_PROTOCOL=grpc: dynocorn pushes http/protobuf",
        ),
    ],
)
def test_an_opentelemetry_variable_dynocorn_cannot_use_is_a_warning(
    cwd: Path, root: Path, environ: dict[str, str], reason: str
) -> None:
    """It may be meant for the app's own OpenTelemetry: the server starts all the same."""
    cfg = load(["app:app"], cwd, root, **environ)
    assert cfg.otlp_endpoint is None
    assert len(cfg.warnings) == 1
    assert cfg.warnings[0].startswith(reason)
    assert cfg.warnings[0].endswith("; dynocorn pushes no OTLP metrics")


def test_a_bad_otlp_endpoint_flag_is_an_error(cwd: Path, root: Path) -> None:
    with pytest.raises(config.ConfigError) as error:
        load(["--otlp-endpoint", "collector:4318", "app:app"], cwd, root)
    assert str(error.value) == (
        "Error: otlp_endpoint = 'collector:4318' from command line: "
        "not an http:// or https:// URL with a host"
    )


def test_otlp_interval_in_milliseconds_from_opentelemetry(cwd: Path, root: Path) -> None:
    cfg = load(["app:app"], cwd, root, OTEL_METRIC_EXPORT_INTERVAL="500")
    assert cfg.otlp_interval == 0.5
    assert str(cfg.source("otlp_interval")) == "platform (OTEL_METRIC_EXPORT_INTERVAL=500)"
    flag = load(["--otlp-interval", "15", "app:app"], cwd, root, OTEL_METRIC_EXPORT_INTERVAL="1")
    assert flag.otlp_interval == 15.0
    bad = load(["app:app"], cwd, root, OTEL_METRIC_EXPORT_INTERVAL="soon")
    assert (bad.otlp_interval, bad.is_default("otlp_interval")) == (60.0, True)
    assert bad.warnings == [
        "OTEL_METRIC_EXPORT_INTERVAL=soon: not a number; OTLP pushes every 60.0 s"
    ]
    with pytest.raises(config.ConfigError, match="otlp_interval = '0' from command line"):
        load(["--otlp-interval", "0", "app:app"], cwd, root)


def test_a_file_mode_is_shown_as_chmod_reads_it(cwd: Path, root: Path) -> None:
    """0o600, not 384: the value is given as octal, and shown so, by --print-config and a HUP."""
    before = load(["app:app"], cwd, root)
    assert "control_socket_mode = 0o600  # default" in before.print_lines()
    after = load(["--control-socket-mode", "660", "app:app"], cwd, root)
    assert "control_socket_mode = 0o660  # command line" in after.print_lines()
    assert "Reload: control_socket_mode 0o600 -> 0o660 (command line)" in config.reload_lines(
        before, after
    )
