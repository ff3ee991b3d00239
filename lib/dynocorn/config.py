"""Configuration: sources, precedence, and the resolved Config.

Later sources win, as in gunicorn:

    defaults (some derived from the platform) < config file < GUNICORN_CMD_ARGS
        < DYNOCORN_CMD_ARGS < command line

Every value remembers where it came from, so `--print-config` and error messages can say.
The environment is read here, from a mapping passed in, never at import time.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import importlib
import shlex
import sys
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dynocorn import envfiles, platform
from dynocorn import validators as v
from dynocorn.arguments import UsageError, build_parser
from dynocorn.setting_values import SettingValues
from dynocorn.settings import SETTINGS, Setting, no_hook
from dynocorn.sources import (
    COMMAND_LINE,
    DEFAULT,
    FOUND_IN_WORKING_DIRECTORY,
    Kind,
    Source,
    cmd_args_variable,
)
from dynocorn.sources import config_file as config_file_source
from dynocorn.sources import platform as platform_source

DEFAULT_CONFIG_FILES = ("dynocorn.conf.py", "gunicorn.conf.py")
CMD_ARGS_VARIABLES = ("GUNICORN_CMD_ARGS", "DYNOCORN_CMD_ARGS")  # the later wins


class ConfigError(Exception):
    """A setting with a value we cannot use; rendered as one line, exit code 1."""

    def __init__(self, setting: str, value: Any, source: Source, reason: str) -> None:
        super().__init__(f"Error: {setting} = {value!r} from {source}: {reason}")
        self.setting = setting


@dataclass
class Config(SettingValues):
    """Resolved settings: `config.workers` (typed by SettingValues, generated from the
    table), plus where each value came from."""

    values: dict[str, Any]
    sources: dict[str, Source]
    platform: platform.Platform
    # The workers were sized by WEB_CONCURRENCY=auto: the memory monitor may refine the
    # count once it has measured the workers (memory_policy.py).
    workers_auto: bool = False
    config_file: Path | str | None = None  # a path, or "python:module"
    # What built it, so HUP can build it again and USR2 can re-execute the same command.
    argv: list[str] = field(default_factory=list)
    cwd: Path = field(default_factory=Path.cwd)
    # What the env files named by --env-file added (the CLI exports it so the app sees it),
    # and the real environment they were read under, so that HUP reads them the same way.
    env_files: envfiles.EnvFiles = field(default_factory=envfiles.EnvFiles)
    real_environ: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    if not TYPE_CHECKING:  # type checkers read SettingValues' annotations instead

        def __getattr__(self, name: str) -> Any:
            try:
                return self.__dict__["values"][name]
            except KeyError:
                raise AttributeError(name) from None

    def source(self, name: str) -> Source:
        return self.sources[name]

    def is_default(self, name: str) -> bool:
        return self.sources[name].kind is Kind.DEFAULT

    def print_lines(self) -> list[str]:
        settings = [
            f"{name} = {format_value(self.values[name], setting)}  # {self.sources[name]}"
            for name, setting in SETTINGS.items()
        ]
        return settings + self.env_files.provenance_lines()


def reload_lines(old: Config, new: Config) -> list[str]:
    """What a HUP changed: one line per setting whose value differs, naming the new value's
    source; none when nothing changed."""
    lines = []
    for name, setting in SETTINGS.items():
        before, after = old.values[name], new.values[name]
        if _same_value(before, after):
            continue
        functions = isinstance(before, types.FunctionType) and isinstance(after, types.FunctionType)
        # A secret is not shown; two hooks of one name would read as no change.
        hidden = setting.secret or (functions and no_hook not in (before, after))
        shown = (format_value(value, setting) for value in (before, after))
        change = "changed" if hidden else " -> ".join(shown)
        lines.append(f"Reload: {name} {change} ({new.sources[name]})")
    return lines


def _same_value(old: Any, new: Any) -> bool:
    if isinstance(old, types.FunctionType) and isinstance(new, types.FunctionType):
        # A config file run again defines new function objects: the same code, defaults and
        # name make the same hook, wherever it now sits in the file.
        return (
            old.__name__ == new.__name__
            and _code_without_lines(old.__code__) == _code_without_lines(new.__code__)
            and (old.__defaults__, old.__kwdefaults__) == (new.__defaults__, new.__kwdefaults__)
        )
    return bool(old == new)


def _code_without_lines(code: types.CodeType) -> types.CodeType:
    """The code with its line numbers dropped (they take part in comparing code objects)."""
    consts = tuple(
        _code_without_lines(const) if isinstance(const, types.CodeType) else const
        for const in code.co_consts
    )
    return code.replace(co_firstlineno=1, co_linetable=b"", co_consts=consts)


def format_value(value: Any, setting: Setting | None = None) -> str:
    if isinstance(value, types.FunctionType):
        return "<no hook>" if value is no_hook else f"<function {value.__name__}>"
    if setting is not None and setting.parse is v.file_mode and isinstance(value, int):
        return oct(value)  # as chmod reads it: 0o600, not 384
    return repr(value)


def load(
    argv: list[str],
    environ: Mapping[str, str],
    cwd: Path,
    *,
    root: Path = Path("/"),
    ipv6: bool | None = None,
) -> Config:
    """Build the configuration from every source; raise ConfigError or UsageError."""
    parser = _Parser(build_parser())
    command_line = parser.parse(argv, COMMAND_LINE)
    real_environ = dict(environ)
    asked = _env_files_asked(parser, command_line, real_environ)
    env_files = _read_env_files(asked, cwd, real_environ)
    sourced = _read_sources(parser, command_line, env_files.environment(real_environ), cwd)
    if sourced.config_file_env_files and not env_files.paths:
        # The config file names the env files: read them, then run the config file again so
        # that it, too, sees the environment the app will get.
        env_files = _read_env_files(sourced.config_file_env_files, cwd, real_environ)
        sourced = _read_sources(parser, command_line, env_files.environment(real_environ), cwd)
    environ = env_files.environment(real_environ)
    warnings = sourced.warnings
    values, sources = _layered(sourced.layers)
    detected = _detect_platform(environ, root, ipv6, sources)
    workers_auto = _apply_platform_defaults(values, sources, detected, environ)
    warnings.extend(_otlp_defaults(values, sources, environ))
    if values["worker_class"] == "sync" and values["threads"] > 1:
        # gunicorn's rule: threads with the sync class means the threaded worker.
        values["worker_class"] = "gthread"
        sources["worker_class"] = sources["threads"].noting(f"threads={values['threads']}")
    if sourced.config_file_found is not None:
        # Named by nobody, but read all the same (gunicorn's ./gunicorn.conf.py): say which.
        values["config"] = f"./{sourced.config_file_found}"
        sources["config"] = FOUND_IN_WORKING_DIRECTORY
    warnings.extend(_setting_warnings(values, sources))
    warnings.extend(_router_warnings(values, sources, detected.on_heroku))
    return Config(
        values=values,
        sources=sources,
        platform=detected,
        workers_auto=workers_auto,
        config_file=sourced.config_file,
        env_files=env_files,
        real_environ=real_environ,
        argv=list(argv),
        cwd=cwd,
        warnings=warnings,
    )


def _layered(
    layers: list[tuple[Source, dict[str, Any]]],
) -> tuple[dict[str, Any], dict[str, Source]]:
    """Every setting's value and source: its default, overridden by each layer in turn."""
    values = {setting.name: setting.default for setting in SETTINGS.values()}
    sources = dict.fromkeys(SETTINGS, DEFAULT)
    for source, layer in layers:
        for name, raw in layer.items():
            values[name] = _parse_value(SETTINGS[name], raw, source)
            sources[name] = source
    return values, sources


class _Parser:
    """The command-line parser, for the command line and the *_CMD_ARGS variables; a
    variable's text is parsed once per load, though the env files are looked for with it
    before the layers are read."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser
        self.variables: dict[tuple[str, str], dict[str, Any]] = {}

    def parse(self, args: list[str], source: Source) -> dict[str, Any]:
        try:
            namespace = self.parser.parse_args(args)
        except UsageError as error:
            if source.kind is Kind.COMMAND_LINE:
                raise
            raise UsageError(f"{source}: {error}") from None
        return vars(namespace)

    def variable(self, environ: Mapping[str, str], variable: str) -> dict[str, Any]:
        """A *_CMD_ARGS variable, shell-split as gunicorn does."""
        text = environ[variable]
        if (variable, text) not in self.variables:
            try:
                args = shlex.split(text)
            except ValueError as error:  # an unbalanced quote
                raise UsageError(f"{variable}: {error}: {text!r}") from None
            self.variables[variable, text] = self.parse(args, cmd_args_variable(variable))
        return dict(self.variables[variable, text])


def _parse_value(setting: Setting, raw: Any, source: Source) -> Any:
    try:
        return setting.parse(raw)
    except ValueError as error:
        shown = raw[0] if isinstance(raw, list) and len(raw) == 1 else raw
        raise ConfigError(setting.name, shown, source, str(error)) from None


def _env_files_asked(
    parser: _Parser, command_line: dict[str, Any], real_environ: Mapping[str, str]
) -> tuple[list[str], Source]:
    """The env files named before any is read, and by which source: the command line, or
    a *_CMD_ARGS variable of the real environment (one in an env file cannot name more)."""
    asked: tuple[list[str], Source] = ([], DEFAULT)
    for variable in CMD_ARGS_VARIABLES:
        if real_environ.get(variable, "").strip():
            layer = parser.variable(real_environ, variable)
            if "env_file" in layer:
                asked = (layer["env_file"], cmd_args_variable(variable))
    if "env_file" in command_line:
        asked = (command_line["env_file"], COMMAND_LINE)
    return asked


def _read_env_files(
    asked: tuple[list[str], Source], cwd: Path, real_environ: Mapping[str, str]
) -> envfiles.EnvFiles:
    paths, source = asked
    try:
        return envfiles.read(paths, cwd, real_environ)
    except envfiles.MissingEnvFile as missing:
        raise ConfigError("env_file", missing.path, source, "no such file") from None


@dataclass
class _Sources:
    """The layers above the defaults, as read under one environment."""

    layers: list[tuple[Source, dict[str, Any]]]
    warnings: list[str]
    config_file: Path | str | None
    config_file_env_files: tuple[list[str], Source] | None
    # The name of the config file when it was found in the working directory, not named.
    config_file_found: str | None = None


def _read_sources(
    parser: _Parser,
    command_line: dict[str, Any],
    environ: Mapping[str, str],
    cwd: Path,
) -> _Sources:
    """The config file (run under `environ`), the *_CMD_ARGS variables and the command line."""
    layers: list[tuple[Source, dict[str, Any]]] = []
    for variable in CMD_ARGS_VARIABLES:
        if environ.get(variable, "").strip():
            layers.append((cmd_args_variable(variable), parser.variable(environ, variable)))
    layers.append((COMMAND_LINE, command_line))
    warnings: list[str] = []
    config_file = _find_config_file(layers, cwd)
    if config_file is None:
        return _Sources(layers, warnings, None, None)
    location, shown, found = config_file
    label = config_file_source(shown)
    with envfiles.process_environment(environ):
        file_layer = _read_config_file((location, shown), label, warnings)
    asked = None
    if "env_file" in file_layer:
        asked = (_parse_value(SETTINGS["env_file"], file_layer["env_file"], label), label)
    layers = [(label, file_layer), *layers]
    return _Sources(layers, warnings, location, asked, shown if found else None)


def _find_config_file(
    layers: list[tuple[Source, dict[str, Any]]], cwd: Path
) -> tuple[Path | str, str, bool] | None:
    """(path or python:module, how to name it, whether it was found rather than named);
    None when there is none."""
    for source, layer in reversed(layers):
        if layer.get("config"):
            spec = str(layer["config"])
            if spec.startswith("python:"):
                return spec, spec, False
            path = cwd / spec
            # Not is_file(): `-c /dev/null` is how gunicorn users skip ./gunicorn.conf.py.
            if not path.exists():
                raise ConfigError("config", spec, source, "no such file")
            if path.is_dir():
                raise ConfigError("config", spec, source, "is a directory, not a file")
            return path, spec, False
    for name in DEFAULT_CONFIG_FILES:
        if (cwd / name).is_file():
            return cwd / name, name, True
    return None


def _read_config_file(
    config_file: tuple[Path | str, str], label: Source, warnings: list[str]
) -> dict[str, Any]:
    """Run the config file and keep its top-level names that are settings."""
    location, shown = config_file
    try:
        if isinstance(location, str):
            name = location.removeprefix("python:")
            cached = name in sys.modules
            module = importlib.import_module(name)
            # Run again (a second pass, a HUP) as a file is: under this environment.
            namespace = vars(importlib.reload(module) if cached else module)
        else:
            code = compile(location.read_text(encoding="utf-8"), str(location), "exec")
            namespace = {"__file__": str(location), "__name__": "__config__"}
            exec(code, namespace)
    except Exception as error:
        line = _error_line(error, str(location))
        reason = f"the file raised {type(error).__name__}: {error}{line}"
        raise ConfigError("config", shown, label, reason) from None

    layer: dict[str, Any] = {}
    unknown: list[str] = []
    own_module = namespace.get("__name__")
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        setting = SETTINGS.get(name)
        if setting is None:
            # Functions and classes imported from elsewhere are tools, not typos.
            imported = getattr(value, "__module__", own_module) != own_module
            if not (imported and callable(value)):
                unknown.append(name)
        elif not setting.in_config_file:
            warnings.append(
                f"{label}: {name} cannot be set in a config file; "
                "give it on the command line or in DYNOCORN_CMD_ARGS"
            )
        else:
            layer[name] = value
    for name in unknown:
        guess = difflib.get_close_matches(name, SETTINGS, n=1)
        hint = f" (did you mean {guess[0]}?)" if guess else ""
        warnings.append(f"{label}: unknown setting {name}{hint}; it has no effect")
    return layer


def _error_line(error: BaseException, filename: str) -> str:
    if isinstance(error, SyntaxError) and error.lineno:
        return f" (line {error.lineno})"
    traceback = error.__traceback__
    lineno = None
    while traceback is not None:
        if traceback.tb_frame.f_code.co_filename == filename:
            lineno = traceback.tb_lineno
        traceback = traceback.tb_next
    return f" (line {lineno})" if lineno else ""


def _detect_platform(
    environ: Mapping[str, str], root: Path, ipv6: bool | None, sources: Mapping[str, Source]
) -> platform.Platform:
    """Detect the platform; a bad variable is an error only if its setting was not given."""
    environ = dict(environ)
    while True:
        try:
            return platform.detect(environ, root, ipv6=ipv6)
        except platform.PlatformError as error:
            # A bad variable matters only when the setting it feeds was not given explicitly.
            setting = _setting_fed_by(error.variable)
            if sources[setting].kind is Kind.DEFAULT:
                raise ConfigError(
                    setting, error.value, platform_source(error.variable), error.reason
                ) from None
            del environ[error.variable]


def _setting_fed_by(variable: str) -> str:
    """The setting whose default a platform variable decides (a CPU count only sizes the
    worker pool: an explicit --workers makes it irrelevant)."""
    if variable in platform.CPU_VARIABLES:
        return "workers"
    for setting in SETTINGS.values():
        if variable in setting.env:
            return setting.name
    raise AssertionError(f"{variable} feeds no setting: list it in settings.py")


def _apply_platform_defaults(
    values: dict[str, Any],
    sources: dict[str, Source],
    detected: platform.Platform,
    environ: Mapping[str, str],
) -> bool:
    """Defaults that depend on where we run; only for settings nobody set. True when
    WEB_CONCURRENCY=auto sized the worker pool."""

    def derive(name: str, value: Any, why: str) -> None:
        if sources[name].kind is Kind.DEFAULT:
            values[name] = value
            sources[name] = platform_source(why)

    if detected.port is not None:
        host = "[::]" if detected.ipv6 else "0.0.0.0"
        derive("bind", [f"{host}:{detected.port}"], f"PORT={detected.port}")

    if detected.memory is not None:
        derive("memory_quota", detected.memory.amount, detected.memory.source)

    workers_auto = False
    if sources["workers"].kind is Kind.DEFAULT:
        # An explicit --memory-quota replaces the detected memory in the sizing rule.
        explicit = sources["memory_quota"].kind is not Kind.PLATFORM
        explicit_quota = values["memory_quota"] if explicit else None
        count = platform.worker_count(detected, values["worker_memory"], explicit_quota)
        workers_auto = count.auto
        if count.from_platform:
            derive("workers", count.workers, count.explanation)
        else:
            values["workers"] = count.workers
            sources["workers"] = DEFAULT.noting(count.explanation)

    for setting in SETTINGS.values():
        variable = setting.env_value
        raw = environ.get(variable, "").strip() if variable else ""
        if raw and sources[setting.name].kind is Kind.DEFAULT:
            why = f"{variable}={raw}"
            derive(setting.name, _parse_value(setting, raw, platform_source(why)), why)

    if detected.on_heroku:
        dyno = f"DYNO={environ.get('DYNO', '')}"
        for setting in SETTINGS.values():
            if setting.heroku is not None:
                derive(setting.name, copy.deepcopy(setting.heroku.value), dyno)
    elif honcho := environ.get("HONCHO_PROCESS_NAME", "").strip():
        # A Procfile run locally (`honcho start`, `make run`): its logs as on a dyno, the
        # request lines with the metrics lines; the rest of Heroku's defaults (the router's
        # timeouts, trusting every proxy) are the platform's, not a laptop's.
        derive("accesslog", "-", f"HONCHO_PROCESS_NAME={honcho}")
    return workers_auto


# OpenTelemetry's variables for where metrics go, the metrics-only one first (it wins).
OTLP_ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
OTLP_PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")


def _otlp_defaults(
    values: dict[str, Any], sources: dict[str, Source], environ: Mapping[str, str]
) -> list[str]:
    """OpenTelemetry's own variables, for the OTLP settings nobody set; the warnings. They
    may be meant for the app's OpenTelemetry SDK, so one that dynocorn cannot use is a
    warning, never an error."""
    warnings = []
    raw = environ.get("OTEL_METRIC_EXPORT_INTERVAL", "").strip()
    if raw and sources["otlp_interval"].kind is Kind.DEFAULT:
        why = f"OTEL_METRIC_EXPORT_INTERVAL={raw}"
        try:
            values["otlp_interval"] = v.positive_float(raw) / 1000  # milliseconds
            sources["otlp_interval"] = platform_source(why)
        except ValueError as error:
            warnings.append(f"{why}: {error}; OTLP pushes every {values['otlp_interval']} s")
    if sources["otlp_endpoint"].kind is Kind.DEFAULT:
        try:
            found = _otlp_from_environ(environ)
        except ValueError as error:
            warnings.append(f"{error}; dynocorn pushes no OTLP metrics")
        else:
            if found is not None:
                values["otlp_endpoint"], sources["otlp_endpoint"] = found
    return warnings


def _otlp_from_environ(environ: Mapping[str, str]) -> tuple[str, Source] | None:
    """The metrics URL OpenTelemetry's variables name, and its source; None when they name
    none or turn metrics off. ValueError, naming the variable, when dynocorn cannot use it."""
    variable = next((name for name in OTLP_ENDPOINT_VARIABLES if environ.get(name, "").strip()), "")
    exporters = environ.get("OTEL_METRICS_EXPORTER", "otlp").replace(" ", "").split(",")
    if not variable or "otlp" not in exporters:
        return None
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    raw = environ[variable].strip()
    why = f"{variable}={raw}"
    for name in OTLP_PROTOCOL_VARIABLES:
        protocol = environ.get(name, "").strip()
        if protocol:
            if protocol != "http/protobuf":
                raise ValueError(f"{why} with {name}={protocol}: dynocorn pushes http/protobuf")
            break
    # The generic variable is a base URL; the metrics one is used as is (OTLP's rule).
    url = raw if variable == OTLP_ENDPOINT_VARIABLES[0] else raw.rstrip("/") + "/v1/metrics"
    try:
        v.http_url(url)
    except ValueError as error:
        raise ValueError(f"{why}: {error}") from None
    if not v.otlp_extra_installed():
        raise ValueError(f"{why}: {v.OTLP_MISSING}")
    return url, platform_source(why)


def _setting_warnings(values: Mapping[str, Any], sources: Mapping[str, Source]) -> Iterable[str]:
    """Settings that were set but have no effect."""
    yield from _unimplemented_warnings(values, sources)
    if values["no_env_file"]:
        yield (
            f"no_env_file (from {sources['no_env_file']}) is deprecated and has no effect: "
            "dynocorn reads an env file only when --env-file names one"
        )
    style = values["access_log_style"]
    # Only the gunicorn style has a format; logfmt and json lines have fixed fields.
    if style not in (None, "gunicorn") and sources["access_log_format"].kind is not Kind.DEFAULT:
        yield (
            f"access_log_format (from {sources['access_log_format']}) has no effect: "
            f"access_log_style is {style} (from {sources['access_log_style']})"
        )


# Heroku's Router 2.0 closes a connection to the dyno after 90 s idle. A server that closes
# one first races the router's next request on it, which fails: H13 or H18.
ROUTER_IDLE_CLOSE = 90


def _router_warnings(
    values: Mapping[str, Any], sources: Mapping[str, Source], on_heroku: bool
) -> Iterable[str]:
    """Settings that make the Heroku router fail requests, and dynocorn would log nothing."""
    keepalive = values["keepalive"]
    if on_heroku and 0 < keepalive <= ROUTER_IDLE_CLOSE:
        yield (
            f"keepalive = {keepalive} from {sources['keepalive']} closes idle connections "
            f"before the Heroku router's {ROUTER_IDLE_CLOSE} s: a request the router sends on "
            f"one as it closes fails with H13 or H18; set it above {ROUTER_IDLE_CLOSE} "
            "(unset, it is 95 on Heroku)"
        )


def _unimplemented_warnings(
    values: Mapping[str, Any], sources: Mapping[str, Source]
) -> Iterable[str]:
    for name, setting in SETTINGS.items():
        if (
            not setting.implemented
            and sources[name].kind is not Kind.DEFAULT
            and values[name] != setting.default
        ):
            yield (
                f"{name} (from {sources[name]}) is accepted for gunicorn compatibility "
                "but not implemented by dynocorn yet; it has no effect"
            )
