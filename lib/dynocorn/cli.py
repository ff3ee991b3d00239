"""The command: argv and environment in, a Config out, then serve. The only place that exits.

Exit codes (gunicorn's): 0 normal stop, 1 configuration error, 2 bad usage,
3 a worker failed to boot, 4 the app could not be loaded.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path

from dynocorn import apploader, envfiles, process
from dynocorn import config as config_module
from dynocorn.arbiter import Arbiter
from dynocorn.arguments import UsageError, build_parser
from dynocorn.logs import ErrorLog, Logs
from dynocorn.workers import WorkerClassError, worker_class_for

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_USAGE = 2


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    env = os.environ if environ is None else environ
    if args and args[0] in ("ctl", "top"):
        return run_client(args[0], args[1:])
    try:
        config = config_module.load(args, env, Path.cwd())
    except UsageError as error:
        sys.stderr.write(f"{build_parser().format_usage()}dynocorn: error: {error}\n")
        return EXIT_USAGE
    except config_module.ConfigError as error:
        sys.stderr.write(f"{error}\n")
        return EXIT_CONFIG

    # The app reads os.environ (DATABASE_URL and the like): give it what the env files hold.
    envfiles.export(config.env_files, None, config.real_environ)

    if config.print_config or config.check_config:
        # Neither starts the logs the server would use; warnings still must not pass unseen.
        log = ErrorLog(level=config.loglevel)
        for warning in config.warnings:
            log.warning(warning)
    if config.print_config:
        sys.stdout.write("".join(line + "\n" for line in config.print_lines()))
        return EXIT_OK
    if not config.wsgi_app:
        sys.stderr.write(
            f"{build_parser().format_usage()}dynocorn: error: No application module specified.\n"
        )
        return EXIT_USAGE
    if config.reload and config.preload_app:
        # The master holds the preloaded app: new workers would fork the old code.
        sys.stderr.write(
            f"Error: reload = True from {config.source('reload')}: it cannot reload an app "
            f"preloaded in the master (preload_app from {config.source('preload_app')}); "
            "use one or the other\n"
        )
        return EXIT_CONFIG
    prepare_process(config)  # first: a worker class of the user's may live in the app's dir
    try:
        worker_class = worker_class_for(config)
    except WorkerClassError as error:
        source = config.source("worker_class")
        sys.stderr.write(f"Error: worker_class = {config.worker_class!r} from {source}: {error}\n")
        return EXIT_CONFIG
    if config.check_config:
        return check_app(config, worker_class.interface)
    if config.daemon:
        process.daemonize()
    logs = Logs.from_config(config)
    if config.capture_output and config.errorlog != "-":
        capture_output(config.errorlog)
    for warning in config.warnings:
        logs.error.warning(warning)

    exported = {"last": config.env_files}

    def reload_config() -> config_module.Config:
        # The same real environment as at start, and the env files read again, so that the
        # config file sees after HUP what it saw at start (plus edits to the files).
        new = config_module.load(config.argv, config.real_environ, config.cwd)
        envfiles.export(new.env_files, exported["last"], config.real_environ)
        exported["last"] = new.env_files
        return new

    return Arbiter(config, logs, reload_config).run()


def prepare_process(config: config_module.Config) -> None:
    """What gunicorn does before loading the app: directory, import path, environment."""
    if config.chdir:
        os.chdir(config.chdir)
    # The working directory is importable, as with gunicorn (`dynocorn app:app` finds app.py).
    directories = [os.getcwd()]
    if config.pythonpath:
        directories = [part.strip() for part in config.pythonpath.split(",") if part.strip()]
        directories.append(os.getcwd())
    apploader.add_to_sys_path(directories)
    for pair in config.raw_env:
        key, _, value = pair.partition("=")
        os.environ[key] = value
    os.umask(config.umask)


def capture_output(path: str) -> None:
    """The app's print() and stray stderr go to the error log file (gunicorn's semantics)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def check_app(config: config_module.Config, interface: apploader.Interface) -> int:
    try:
        apploader.check_interface(apploader.load_app(config.wsgi_app), config, interface)
    except apploader.AppInterfaceError as error:
        sys.stderr.write(f"Error: {error}\n")
        return EXIT_CONFIG
    except (apploader.AppImportError, apploader.AppLoadError) as error:
        source = config.source("wsgi_app")
        sys.stderr.write(f"Error: wsgi_app = {config.wsgi_app!r} from {source}: {error}\n")
        if config.reload and error.__cause__ is not None:
            # The reloader shows this to a developer mid-edit: where, not only what.
            sys.stderr.write("".join(traceback.format_exception(error.__cause__)))
        return EXIT_CONFIG
    return EXIT_OK


def run_client(name: str, args: list[str]) -> int:
    """`dynocorn ctl` and `dynocorn top`: clients of a running server's control socket
    (an app module cannot be named either: it would be the word alone, without `:app`)."""
    if name == "ctl":
        from dynocorn import ctl

        return ctl.main(args)
    from dynocorn import top

    return top.main(args)


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
