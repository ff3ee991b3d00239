"""The settings table: the one place a setting is declared.

The command-line parser, config-file loading, `--print-config` and the manual's settings
section are all derived from SETTINGS. Names are gunicorn's config-file names; flags are
gunicorn's flags, so a Procfile or `gunicorn.conf.py` written for gunicorn works unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from dynocorn import validators as v
from dynocorn.asgi_settings import ASGI_ROWS, ASGI_SECTION
from dynocorn.gunicorn27 import GUNICORN_EXTRAS
from dynocorn.platform import MEMORY_VARIABLES

Action = Literal["store", "append", "true", "false", "const", "optional"]
# What the docs and `--help-all` say of a setting whose `implemented` is False.
NOT_IMPLEMENTED_NOTE = "Accepted, not implemented yet: a warning says so."

DEFAULT_ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'
ACCESS_LOG_STYLES = ("gunicorn", "logfmt", "json")
DEFAULT_SECURE_SCHEME_HEADERS = {
    "X-FORWARDED-PROTOCOL": "ssl",
    "X-FORWARDED-PROTO": "https",
    "X-FORWARDED-SSL": "on",
}


@dataclass(frozen=True)
class HerokuDefault:
    """The default on Heroku (`DYNO` set): config.py applies it, the docs show it."""

    value: Any
    why: str

    @property
    def shown(self) -> str:
        value = self.value
        return ", ".join(value) if isinstance(value, list) else str(value)


@dataclass(frozen=True)
class Setting:
    name: str
    section: str
    help: str
    default: Any = None
    flags: tuple[str, ...] = ()
    parse: Callable[[Any], Any] = v.as_str
    action: Action = "store"
    const: Any = None  # what an action="const" flag, or an "optional" flag alone, stores
    metavar: str | None = None
    # How the platform changes the default, for the docs; the logic is in config.py.
    platform: str | None = None
    heroku: HerokuDefault | None = None
    # The environment variables that change the default (PLATFORM.md); empty for most.
    env: tuple[str, ...] = ()
    # The one among them that holds the value itself, parsed as the flag's value would be.
    env_value: str | None = None
    # False: accepted (so a gunicorn config keeps working) but warned about when set.
    implemented: bool = True
    # Settings that steer how configuration itself is read cannot come from a config file.
    in_config_file: bool = True
    # The value may hold a secret (`-e DATABASE_URL=postgres://user:password@...`): the log
    # says that it changed, never what it is.
    secret: bool = False

    @property
    def is_hook(self) -> bool:
        return self.section == "Server hooks"

    @property
    def platform_default(self) -> str | None:
        """How the platform changes the default, in words for the docs."""
        parts = [self.platform] if self.platform else []
        if self.heroku is not None:
            parts.append(f"`{self.heroku.shown}` when `DYNO` is set ({self.heroku.why})")
        return "; ".join(parts) or None


def no_hook(*args: Any) -> None:
    """The default for every server hook: do nothing."""


def _hook(name: str, signature: str, help: str) -> Setting:
    return Setting(name, "Server hooks", help, default=no_hook, parse=v.hook, metavar=signature)


# The table is kept compact by hand (a formatter would put every argument on its own line
# and quadruple its length).
# fmt: off
_SETTINGS: list[Setting] = [
    # -- Config file and app
    Setting(
        "config", "Config file", "The config file (Python), or `python:module.name`.",
        flags=("-c", "--config"), parse=v.optional_str, metavar="CONFIG", in_config_file=False,
        platform="`./dynocorn.conf.py`, else `./gunicorn.conf.py`, when present",
    ),
    Setting(
        "wsgi_app", "Config file", "The WSGI app to serve, `module:variable` (the APP argument).",
        parse=v.optional_str,
    ),
    Setting(
        "env_file", "Config file",
        "An env file (`KEY=value` lines, read with python-dotenv) whose variables the config "
        "file and the app see; repeatable, later files win, real environment variables win "
        "over all. None is read unless named: a `.env` in the app is for `honcho start` and "
        "`heroku local`, not for production.",
        default=[], flags=("--env-file",), parse=v.as_str_list, action="append", metavar="PATH",
    ),
    Setting(
        "no_env_file", "Config file",
        "Deprecated, no effect: no env file is read unless `--env-file` names one.",
        default=False, flags=("--no-env-file",), parse=v.as_bool, action="true",
        in_config_file=False,
    ),
    # -- Server socket
    Setting(
        "bind", "Server socket",
        "Address to listen on, repeatable: `HOST:PORT`, `[::1]:PORT`, `unix:PATH`, `fd://N`.",
        default=["127.0.0.1:8000"], flags=("-b", "--bind"), parse=v.bind_list, action="append",
        metavar="ADDRESS",
        platform="`[::]:$PORT` (or `0.0.0.0:$PORT` without IPv6) when PORT is set",
        env=("PORT",),
    ),
    Setting(
        "backlog", "Server socket", "Pending connections the kernel queues per socket.",
        default=2048, flags=("--backlog",), parse=v.positive_int, metavar="INT",
    ),
    Setting(
        "reuse_port", "Server socket", "Set SO_REUSEPORT on listening sockets.",
        default=False, flags=("--reuse-port",), parse=v.as_bool, action="true",
    ),
    # -- Worker processes
    Setting(
        "workers", "Worker processes", "Number of worker processes.",
        default=1, flags=("-w", "--workers"), parse=v.positive_int, metavar="INT",
        platform="from `WEB_CONCURRENCY` (a number, or `auto`), or computed from the memory "
        "and CPU limits as the Heroku Python buildpack does",
        env=("WEB_CONCURRENCY", "WEB_CONCURRENCY_SET_BY"),
    ),
    Setting(
        "worker_class", "Worker processes",
        "Worker class: `sync`, `gthread`, `gevent`, or a dotted path to a class.",
        default="sync", flags=("-k", "--worker-class"), parse=v.as_str, metavar="STRING",
    ),
    Setting(
        "threads", "Worker processes", "Threads per worker for `gthread` (more than 1 with "
        "`sync` means `gthread`).",
        default=1, flags=("--threads",), parse=v.positive_int, metavar="INT",
    ),
    Setting(
        "worker_connections", "Worker processes",
        "Most simultaneous connections per worker (`gthread`, `gevent`).",
        default=1000, flags=("--worker-connections",), parse=v.positive_int, metavar="INT",
    ),
    Setting(
        "max_requests", "Worker processes",
        "Restart a worker after this many requests (0 = never).",
        default=0, flags=("--max-requests",), parse=v.non_negative_int, metavar="INT",
    ),
    Setting(
        "max_requests_jitter", "Worker processes",
        "Random extra requests (0 to this) added to `max_requests` per worker.",
        default=0, flags=("--max-requests-jitter",), parse=v.non_negative_int, metavar="INT",
    ),
    Setting(
        "max_worker_lifetime", "Worker processes",
        "Restart a worker after this many seconds, with up to 10% jitter (0 = never).",
        default=0, flags=("--max-worker-lifetime",), parse=v.non_negative_int, metavar="SECONDS",
    ),
    Setting(
        "timeout", "Worker processes",
        "Seconds a worker may be silent (one request running) before it is killed; 0 = never.",
        default=30, flags=("-t", "--timeout"), parse=v.non_negative_int, metavar="INT",
    ),
    Setting(
        "graceful_timeout", "Worker processes",
        "Seconds workers get to finish their requests on a graceful stop or restart.",
        default=30, flags=("--graceful-timeout",), parse=v.non_negative_int, metavar="INT",
        heroku=HerokuDefault(25, "everything is gone before Heroku's 30 s SIGKILL"),
        env=("DYNO",),
    ),
    Setting(
        "keepalive", "Worker processes",
        "Seconds an idle kept-alive connection is held open.",
        default=2, flags=("--keep-alive",), parse=v.non_negative_int, metavar="INT",
        heroku=HerokuDefault(95, "above the router's 90 s idle close"),
        env=("DYNO",),
    ),
    # -- ASGI: the `asgi` worker's (asgi_settings.py holds the rows)
    *(
        Setting(row.name, ASGI_SECTION, row.help, default=row.default, flags=row.flags,
                parse=row.parse, metavar=row.metavar)
        for row in ASGI_ROWS
    ),
    # -- Memory (dynocorn)
    Setting(
        "memory_quota", "Memory",
        "The dyno's memory quota (e.g. `512MB`); overrides the detected limit.",
        flags=("--memory-quota",), parse=v.size_bytes, metavar="SIZE",
        platform="detected: cgroup v2, cgroup v1, `DYNO_RAM`, `MEMORY_AVAILABLE`, "
        "`FLY_VM_MEMORY_MB`, `MEMORY_LIMIT`, `CONTAINER_MEMORY`, then physical memory",
        env=tuple(variable for variable, _unit in MEMORY_VARIABLES),
    ),
    Setting(
        "worker_memory", "Memory",
        "Expected memory per worker in MB, used to size `WEB_CONCURRENCY=auto`.",
        default=256, flags=("--worker-memory",), parse=v.size_mb, metavar="MB",
    ),
    Setting(
        "max_worker_memory", "Memory",
        "Soft per-worker limit on private memory (USS, e.g. `300MB`): a worker above it "
        "finishes its request and is replaced.",
        flags=("--max-worker-memory",), parse=v.size_bytes, metavar="SIZE",
    ),
    Setting(
        "max_worker_memory_hard", "Memory",
        "Hard per-worker limit: a worker above it is stopped (TERM, then KILL after "
        "`graceful_timeout`). Default: 1.5 x `max_worker_memory`.",
        flags=("--max-worker-memory-hard",), parse=v.size_bytes, metavar="SIZE",
    ),
    Setting(
        "memory_budget", "Memory",
        "Share of the memory quota the dyno's processes may hold (rss + swap): past it the "
        "largest worker is recycled, and no worker is started that would pass it "
        "(`0.9` or `90%`).",
        default=0.9, flags=("--memory-budget",), parse=v.fraction, metavar="FRACTION",
    ),
    Setting(
        "metrics_interval", "Memory",
        "Seconds between runtime-metrics lines on stdout (0 = off).",
        default=20.0, flags=("--metrics-interval",), parse=v.non_negative_float,
        metavar="SECONDS",
    ),
    # -- Security
    Setting(
        "limit_request_line", "Security",
        "Longest request line in bytes (0 = unlimited); longer gets 414.",
        default=4094, flags=("--limit-request-line",), parse=v.bounded_int(0, 8190),
        metavar="INT",
    ),
    Setting(
        "limit_request_fields", "Security",
        "Most header fields in a request; more gets 431.",
        default=100, flags=("--limit-request-fields",), parse=v.bounded_int(0, 32768),
        metavar="INT",
    ),
    Setting(
        "limit_request_field_size", "Security",
        "Longest header field line in bytes, its CRLF included as gunicorn counts it"
        " (0 = unlimited); longer gets 431.",
        default=8190, flags=("--limit-request-field_size", "--limit-request-field-size"),
        parse=v.non_negative_int, metavar="INT",
    ),
    # -- Server mechanics
    Setting(
        "preload_app", "Server mechanics",
        "Load the app in the master before forking, so workers share its memory.",
        default=False, flags=("--preload",), parse=v.as_bool, action="true",
    ),
    Setting(
        "sendfile", "Server mechanics",
        "Send `wsgi.file_wrapper` responses with sendfile(); `--no-sendfile` turns it off.",
        default=True, flags=("--no-sendfile",), parse=v.as_bool, action="false",
        platform="`SENDFILE=0` turns it off",
        env=("SENDFILE",), env_value="SENDFILE",
    ),
    Setting(
        "chdir", "Server mechanics", "Change to this directory before loading the app.",
        flags=("--chdir",), parse=v.optional_str, metavar="DIR",
    ),
    Setting(
        "daemon", "Server mechanics", "Detach from the terminal and run in the background.",
        default=False, flags=("-D", "--daemon"), parse=v.as_bool, action="true",
    ),
    Setting(
        "raw_env", "Server mechanics", "Set an environment variable for the app, `KEY=VALUE`.",
        default=[], flags=("-e", "--env"), parse=v.key_value_list, action="append",
        metavar="ENV", secret=True,
    ),
    Setting(
        "pidfile", "Server mechanics", "Write the master's PID to this file.",
        flags=("-p", "--pid"), parse=v.optional_str, metavar="FILE",
    ),
    Setting(
        "worker_tmp_dir", "Server mechanics",
        "Accepted for gunicorn compatibility; dynocorn's heartbeat is a pipe, not a file.",
        flags=("--worker-tmp-dir",), parse=v.optional_str, metavar="DIR",
    ),
    Setting(
        "user", "Server mechanics", "Switch worker processes to this user (name or uid).",
        flags=("-u", "--user"), parse=v.user_id, metavar="USER",
    ),
    Setting(
        "group", "Server mechanics", "Switch worker processes to this group (name or gid).",
        flags=("-g", "--group"), parse=v.group_id, metavar="GROUP",
    ),
    Setting(
        "umask", "Server mechanics", "File mode creation mask of the server processes.",
        default=0, flags=("-m", "--umask"), parse=v.umask, metavar="INT",
    ),
    Setting(
        "initgroups", "Server mechanics", "Set the worker's supplementary groups from `user`.",
        default=False, flags=("--initgroups",), parse=v.as_bool, action="true",
    ),
    Setting(
        "tmp_upload_dir", "Server mechanics", "Accepted for gunicorn compatibility; unused.",
        parse=v.optional_str,
    ),
    Setting(
        "secure_scheme_headers", "Server mechanics",
        "Headers (and values) from a trusted proxy that mean the request came over HTTPS.",
        default=DEFAULT_SECURE_SCHEME_HEADERS, parse=v.str_dict,
    ),
    Setting(
        "forwarded_allow_ips", "Server mechanics",
        "Proxies trusted to set `X-Forwarded-*` headers: IPs or CIDRs, comma-separated, or `*`.",
        default=["127.0.0.1", "::1"], flags=("--forwarded-allow-ips",), parse=v.ip_allow_list,
        metavar="STRING",
        platform="`$FORWARDED_ALLOW_IPS`",
        heroku=HerokuDefault(["*"], "the router is the only peer"),
        env=("FORWARDED_ALLOW_IPS", "DYNO"), env_value="FORWARDED_ALLOW_IPS",
    ),
    Setting(
        "pythonpath", "Server mechanics",
        "Comma-separated directories added to `sys.path` before loading the app.",
        flags=("--pythonpath",), parse=v.optional_str, metavar="STRING",
    ),
    Setting(
        "proxy_protocol", "Server mechanics",
        "Accept the PROXY protocol header: `off`, `v1`, `v2` or `auto` (the flag alone).",
        default="off", flags=("--proxy-protocol",), parse=v.proxy_protocol, action="optional",
        const="auto", metavar="MODE", implemented=False,
    ),
    Setting(
        "proxy_allow_ips", "Server mechanics", "Peers allowed to send the PROXY protocol.",
        default=["127.0.0.1", "::1"], flags=("--proxy-allow-from",), parse=v.ip_allow_list,
        metavar="STRING", implemented=False,
    ),
    Setting(
        "paste", "Server mechanics", "Load a PasteDeploy config file.",
        flags=("--paste", "--paster"), parse=v.optional_str, metavar="STRING",
        implemented=False,
    ),
    # -- Logging
    Setting(
        "accesslog", "Logging", "Access log file; `-` is stdout.",
        flags=("--access-logfile",), parse=v.optional_str, metavar="FILE",
        heroku=HerokuDefault("-", "stdout, in the Heroku router's logfmt"),
        platform="`-` also when `HONCHO_PROCESS_NAME` is set: a Procfile run by honcho logs "
        "as on a dyno",
        env=("DYNO", "HONCHO_PROCESS_NAME"),
    ),
    Setting(
        "access_log_format", "Logging", "Access log format, with gunicorn's `%(x)s` atoms.",
        default=DEFAULT_ACCESS_LOG_FORMAT, flags=("--access-logformat",), parse=v.as_str,
        metavar="STRING",
    ),
    Setting(
        "access_log_style", "Logging",
        "Access log line: `gunicorn` (`access_log_format`), `logfmt` (the Heroku router's "
        "style) or `json` (the logfmt fields and `time`, one JSON object a line).",
        flags=("--access-log-style",), parse=v.optional_choice(*ACCESS_LOG_STYLES),
        metavar="STYLE",
        platform="when unset, `logfmt` if `DYNO` or `HONCHO_PROCESS_NAME` is set and neither "
        "`accesslog` nor `access_log_format` is, else `gunicorn`",
    ),
    Setting(
        "errorlog", "Logging", "Error log file; `-` is stderr.",
        default="-", flags=("--error-logfile", "--log-file"), parse=v.as_str, metavar="FILE",
    ),
    Setting(
        "loglevel", "Logging", "Error log level: debug, info, warning, error, critical.",
        default="info", flags=("--log-level",),
        parse=v.choice("debug", "info", "warning", "error", "critical"), metavar="LEVEL",
    ),
    Setting(
        "capture_output", "Logging", "Send the app's stdout and stderr to the error log.",
        default=False, flags=("--capture-output",), parse=v.as_bool, action="true",
    ),
    Setting(
        "logger_class", "Logging", "A custom logger class.",
        default="gunicorn.glogging.Logger", flags=("--logger-class",), parse=v.as_str,
        metavar="STRING", implemented=False,
    ),
    Setting(
        "logconfig", "Logging", "A `logging.config.fileConfig` file.",
        flags=("--log-config",), parse=v.optional_str, metavar="FILE", implemented=False,
    ),
    Setting(
        "logconfig_dict", "Logging", "A `logging.config.dictConfig` dict.",
        default={}, parse=v.any_dict, implemented=False, secret=True,  # handlers' passwords
    ),
    Setting(
        "logconfig_json", "Logging", "A `logging.config.dictConfig` JSON file.",
        flags=("--log-config-json",), parse=v.optional_str, metavar="FILE", implemented=False,
    ),
    Setting(
        "syslog", "Logging", "Send the error log to syslog.",
        default=False, flags=("--log-syslog",), parse=v.as_bool, action="true",
        implemented=False,
    ),
    Setting(
        "syslog_addr", "Logging", "Syslog address.",
        default="udp://localhost:514", flags=("--log-syslog-to",), parse=v.as_str,
        metavar="SYSLOG_ADDR", implemented=False,
    ),
    Setting(
        "syslog_prefix", "Logging", "Syslog program name prefix.",
        flags=("--log-syslog-prefix",), parse=v.optional_str, metavar="SYSLOG_PREFIX",
        implemented=False,
    ),
    Setting(
        "syslog_facility", "Logging", "Syslog facility.",
        default="user", flags=("--log-syslog-facility",), parse=v.as_str,
        metavar="SYSLOG_FACILITY", implemented=False,
    ),
    Setting(
        "disable_redirect_access_to_syslog", "Logging", "Do not send the access log to syslog.",
        default=False, flags=("--disable-redirect-access-to-syslog",), parse=v.as_bool,
        action="true", implemented=False,
    ),
    Setting(
        "enable_stdio_inheritance", "Logging", "Keep stdio of daemonized processes.",
        default=False, flags=("-R", "--enable-stdio-inheritance"), parse=v.as_bool,
        action="true", implemented=False,
    ),
    Setting(
        "statsd_host", "Logging", "StatsD server, `HOST:PORT`.",
        flags=("--statsd-host",), parse=v.statsd_host, metavar="STATSD_ADDR",
    ),
    Setting(
        "statsd_prefix", "Logging", "Prefix of StatsD metric names.",
        default="", flags=("--statsd-prefix",), parse=v.as_str, metavar="STATSD_PREFIX",
    ),
    Setting(
        "dogstatsd_tags", "Logging", "Comma-separated DogStatsD tags, `key:value`.",
        default="", flags=("--dogstatsd-tags",), parse=v.as_str, metavar="DOGSTATSD_TAGS",
    ),
    # -- Control and metrics
    Setting(
        "control_socket", "Control and metrics",
        "Unix socket of `dynocorn ctl` and `dynocorn top`.",
        flags=("--control-socket",), parse=v.optional_str, metavar="PATH",
        platform="`$XDG_RUNTIME_DIR/dynocorn/<pid>.ctl`, else `/tmp/dynocorn-<uid>/<pid>.ctl`",
    ),
    Setting(
        "control_socket_mode", "Control and metrics", "Permissions of the control socket.",
        default=0o600, flags=("--control-socket-mode",), parse=v.file_mode, metavar="MODE",
    ),
    Setting(
        "control_socket_disable", "Control and metrics", "No control socket.",
        default=False, flags=("--no-control-socket",), parse=v.as_bool, action="true",
    ),
    Setting(
        "metrics_bind", "Control and metrics",
        "Serve Prometheus/OpenMetrics `/metrics` from the master at `HOST:PORT`.",
        flags=("--metrics-bind",), parse=v.tcp_address, metavar="HOST:PORT",
    ),
    Setting(
        "otlp_endpoint", "Control and metrics",
        "Push the same metrics over OTLP/HTTP to this URL (one without a path gets "
        "`/v1/metrics`), from the master; needs the `otlp` extra.",
        flags=("--otlp-endpoint",), parse=v.otlp_endpoint, metavar="URL",
        platform="`$OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`, else `$OTEL_EXPORTER_OTLP_ENDPOINT` "
        "+ `/v1/metrics` (with a warning, not an error, when they cannot be used)",
        env=("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ),
    Setting(
        "otlp_interval", "Control and metrics", "Seconds between OTLP pushes.",
        default=60.0, flags=("--otlp-interval",), parse=v.positive_float, metavar="SECONDS",
        platform="`$OTEL_METRIC_EXPORT_INTERVAL` (milliseconds)",
        env=("OTEL_METRIC_EXPORT_INTERVAL",),
    ),
    # -- Process naming
    Setting(
        "proc_name", "Process naming", "Process title (with setproctitle installed).",
        flags=("-n", "--name"), parse=v.optional_str, metavar="STRING",
    ),
    Setting(
        "default_proc_name", "Process naming", "Process title when `proc_name` is not set.",
        default="dynocorn", parse=v.as_str,
    ),
    # -- TLS: terminated by the platform's router; kept so gunicorn configs load.
    Setting(
        "keyfile", "TLS", "TLS key file.", flags=("--keyfile",), parse=v.optional_str,
        metavar="FILE", implemented=False,
    ),
    Setting(
        "certfile", "TLS", "TLS certificate file.", flags=("--certfile",),
        parse=v.optional_str, metavar="FILE", implemented=False,
    ),
    Setting(
        "ca_certs", "TLS", "CA certificates file.", flags=("--ca-certs",),
        parse=v.optional_str, metavar="FILE", implemented=False,
    ),
    Setting(
        "cert_reqs", "TLS", "Whether client certificates are required.", default=0,
        flags=("--cert-reqs",), parse=v.non_negative_int, metavar="INT", implemented=False,
    ),
    Setting(
        "ciphers", "TLS", "TLS ciphers.", flags=("--ciphers",), parse=v.optional_str,
        metavar="CIPHERS", implemented=False,
    ),
    # -- Debugging
    Setting(
        "reload", "Debugging", "Restart workers when code changes.",
        default=False, flags=("--reload",), parse=v.as_bool, action="true",
    ),
    Setting(
        "reload_engine", "Debugging", "How to watch for changes: auto, poll, inotify.",
        default="auto", flags=("--reload-engine",), parse=v.choice("auto", "poll", "inotify"),
        metavar="STRING",
    ),
    Setting(
        "reload_extra_files", "Debugging", "More files to watch with `--reload`.",
        default=[], flags=("--reload-extra-file",), parse=v.as_str_list, action="append",
        metavar="FILES",
    ),
    Setting(
        "spew", "Debugging", "Trace every line executed.",
        default=False, flags=("--spew",), parse=v.as_bool, action="true", implemented=False,
    ),
    Setting(
        "check_config", "Debugging", "Check the configuration and the app, then exit (0 or 1).",
        default=False, flags=("--check-config",), parse=v.as_bool, action="true",
        in_config_file=False,
    ),
    Setting(
        "print_config", "Debugging",
        "Print every setting with its value and source, then exit.",
        default=False, flags=("--print-config",), parse=v.as_bool, action="true",
        in_config_file=False,
    ),
    # -- Server hooks: config-file functions, gunicorn's names, arguments and moments.
    _hook("on_starting", "server", "Called before the master is initialized."),
    _hook("on_reload", "server", "Called when the master reloads on SIGHUP."),
    _hook("when_ready", "server", "Called when the server has bound and started."),
    _hook("pre_fork", "server, worker", "Called in the master just before a worker is forked."),
    _hook("post_fork", "server, worker", "Called in the worker just after it is forked."),
    _hook("post_worker_init", "worker", "Called in the worker after the app is loaded."),
    _hook("worker_int", "worker", "Called in the worker on SIGINT or SIGQUIT."),
    _hook(
        "worker_abort", "worker",
        "Called in the worker on SIGABRT (a timeout), or when a gthread request times out.",
    ),
    _hook("pre_exec", "server", "Called in the new master before a USR2 re-exec."),
    _hook("pre_request", "worker, req", "Called in the worker before each request."),
    _hook(
        "post_request", "worker, req, environ, resp", "Called in the worker after each request."
    ),
    _hook("child_exit", "server, worker", "Called in the master when a worker has exited."),
    _hook("worker_exit", "server, worker", "Called in the worker just before it exits."),
    _hook(
        "nworkers_changed", "server, new_value, old_value",
        "Called in the master when the worker count is first set (old_value None) and when "
        "it changes.",
    ),
    _hook("on_exit", "server", "Called in the master just before it exits."),
]
# fmt: on

# Settings gunicorn 27 added that dynocorn does not implement (gunicorn27.py lists them).
GUNICORN_EXTRAS_SECTION = "gunicorn 27 settings accepted but not implemented"
_EXTRA_KINDS: dict[str, tuple[Callable[[Any], Any], Action]] = {
    "str": (v.as_str, "store"),
    "int": (v.as_int, "store"),
    "bool": (v.as_bool, "true"),
    "list": (v.as_str_list, "append"),
    "hook": (v.hook, "store"),
}


def _gunicorn_extra(name: str, flag: str | None, default: Any, kind: str) -> Setting:
    parse, action = _EXTRA_KINDS[kind]
    if kind == "hook":
        default = no_hook
    return Setting(
        name,
        GUNICORN_EXTRAS_SECTION,
        "A gunicorn 27 setting.",
        default=default,
        flags=(flag,) if flag else (),
        parse=parse,
        action=action,
        metavar=name.upper() if action != "true" else None,
        implemented=False,
    )


_SETTINGS.extend(_gunicorn_extra(*extra) for extra in GUNICORN_EXTRAS)

SETTINGS: dict[str, Setting] = {setting.name: setting for setting in _SETTINGS}
