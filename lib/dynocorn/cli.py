"""The command: argv and environment in, a Config out, then serve. The only place that exits.

Exit codes (gunicorn's): 0 normal stop, 1 configuration error, 2 bad usage,
3 a worker failed to boot, 4 the app could not be loaded.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from dynocorn import config as config_module
from dynocorn.logs import ErrorLog

EXIT_OK = 0
EXIT_CONFIG = 1
EXIT_USAGE = 2


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    env = os.environ if environ is None else environ
    try:
        config = config_module.load(args, env, Path.cwd())
    except config_module.UsageError as error:
        sys.stderr.write(f"{config_module.build_parser().format_usage()}dynocorn: error: {error}\n")
        return EXIT_USAGE
    except config_module.ConfigError as error:
        sys.stderr.write(f"{error}\n")
        return EXIT_CONFIG

    # The app reads os.environ (DATABASE_URL and the like): give it what .env held.
    for key, value in config.env_file_values.items():
        os.environ.setdefault(key, value)

    log = ErrorLog(level=config.loglevel)
    for warning in config.warnings:
        log.warning(warning)

    if config.print_config:
        sys.stdout.write("".join(line + "\n" for line in config.print_lines()))
        return EXIT_OK
    if not config.wsgi_app:
        sys.stderr.write(
            f"{config_module.build_parser().format_usage()}"
            "dynocorn: error: No application module specified.\n"
        )
        return EXIT_USAGE
    if config.check_config:
        return EXIT_OK
    log.error("the server is not implemented yet (see the serving-core issue)")
    return EXIT_CONFIG


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
