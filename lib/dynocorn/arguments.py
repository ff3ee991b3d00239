"""The command line, derived from the settings table: the parser and its `--help`.

Every flag of the table is accepted, so a gunicorn command line keeps working; `--help`
describes the flags of implemented settings, with their defaults, and names the others in its
last paragraph; `--help-all` describes them all.
"""

from __future__ import annotations

import argparse
import textwrap
from typing import Any, NoReturn

from dynocorn import __version__
from dynocorn.settings import NOT_IMPLEMENTED_NOTE, SETTINGS, Setting


class UsageError(Exception):
    """The command line (or a *_CMD_ARGS variable) is malformed; exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


class _HelpFormatter(argparse.HelpFormatter):
    """Lines are not broken inside a flag or a word with a hyphen (`--log-syslog-to`)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(
            " ".join(text.split()), width, break_on_hyphens=False, break_long_words=False
        )

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(
            " ".join(text.split()),
            width,
            initial_indent=indent,
            subsequent_indent=indent,
            break_on_hyphens=False,
            break_long_words=False,
        )


class _HelpAll(argparse.Action):
    """`--help-all`: the help with every flag, those not implemented too."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, argparse.SUPPRESS, nargs=0, help=kwargs.get("help"))

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        build_parser(every_flag=True).print_help()
        parser.exit()


def build_parser(every_flag: bool = False) -> argparse.ArgumentParser:
    """The argument parser, derived from the settings table.

    Every flag is accepted (a gunicorn command line keeps working); `--help` describes those
    of implemented settings and names the others in one paragraph, `--help-all` all of them."""
    hidden = [] if every_flag else [s for s in SETTINGS.values() if s.flags and not s.implemented]
    parser = _Parser(
        prog="dynocorn",
        usage="dynocorn [OPTIONS] [APP_MODULE]",
        description="A pre-fork WSGI HTTP server for Heroku-style platforms.",
        epilog=_not_implemented_paragraph(hidden) if hidden else None,
        formatter_class=_HelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument(
        "-v", "--version", action="version", version=f"dynocorn (version {__version__})"
    )
    parser.add_argument(
        "--help-all",
        action=_HelpAll,
        help="show every flag, with those accepted for gunicorn compatibility but not "
        "implemented, and exit",
    )
    parser.add_argument("wsgi_app", nargs="?", metavar="APP_MODULE", help="module:variable")
    groups: dict[str, argparse._ArgumentGroup] = {}
    for setting in SETTINGS.values():
        if not setting.flags:
            continue
        group = groups.get(setting.section) or parser.add_argument_group(setting.section)
        groups[setting.section] = group
        shown = argparse.SUPPRESS if setting in hidden else _help_text(setting)
        options: dict[str, Any] = {"dest": setting.name, "help": shown}
        if setting.action in ("store", "append"):
            options.update(action=setting.action, metavar=setting.metavar)
        elif setting.action == "optional":  # `--flag` alone means `const`, `--flag VALUE` a value
            options.update(nargs="?", const=setting.const, metavar=setting.metavar)
        else:
            const = {"true": True, "false": False, "const": setting.const}[setting.action]
            options.update(action="store_const", const=const)
        group.add_argument(*setting.flags, **options)
    return parser


def _help_text(setting: Setting) -> str:
    text = setting.help
    if not setting.implemented:
        text += f" {NOT_IMPLEMENTED_NOTE}"
    if setting.action not in ("true", "false"):  # a switch's help says what it turns on or off
        default = _default_text(setting)
        text += f" (default: {default})" if default else ""
    # argparse formats help with %: a literal one (`90%`, `%(h)s`) must be doubled.
    return text.replace("%", "%%")


def _default_text(setting: Setting) -> str:
    """The default as it would be typed, then how the platform changes it; "" for none."""
    default = setting.default
    if isinstance(default, list):
        shown = ",".join(str(item) for item in default)
    else:
        shown = "" if default is None else str(default)
    return "; ".join(part for part in (shown, setting.platform_default) if part)


def _not_implemented_paragraph(hidden: list[Setting]) -> str:
    flags = [next(flag for flag in s.flags if flag.startswith("--")) for s in hidden]
    return (
        "Accepted for gunicorn compatibility but not implemented (setting one logs a warning; "
        f"--help-all describes them): {', '.join(flags)}."
    )
