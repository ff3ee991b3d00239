"""Env files: read only when asked (`--env-file PATH`, repeatable), never implicitly.

A `.env` committed for `heroku local` ships in the slug; a server that read it by itself
would run production with development settings. The Procfile runner (honcho, `heroku local`)
reads `.env` for local runs; the server reads the files it is told to, in order, later files
winning, and the real environment winning over all of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values


class MissingEnvFile(Exception):
    """A named env file that does not exist (or is not a file)."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


@dataclass(frozen=True)
class EnvFiles:
    """What the named env files hold, and which file each variable came from."""

    paths: tuple[str, ...] = ()
    # Variables the files add to the environment: name -> value, and name -> the file.
    added: dict[str, str] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)
    # Variables a file sets that the real environment already has (the environment wins).
    shadowed: dict[str, str] = field(default_factory=dict)

    def environment(self, real: Mapping[str, str]) -> dict[str, str]:
        """The environment the config file and the app see: the files under the real one."""
        return {**self.added, **real}

    def provenance_lines(self) -> list[str]:
        """For `--print-config`: one line per variable, naming its file (never the value,
        which may be a secret)."""
        lines = [f"env {name}  # env file ({self.origin[name]})" for name in sorted(self.added)]
        lines += [
            f"env {name}  # env file ({path}), ignored: set in the environment"
            for name, path in sorted(self.shadowed.items())
        ]
        return lines


def read(paths: list[str], cwd: Path, real: Mapping[str, str]) -> EnvFiles:
    """Read the files in order (later wins); raise MissingEnvFile for one that is absent."""
    merged: dict[str, str] = {}
    origin: dict[str, str] = {}
    for path in paths:
        location = cwd / path
        if not location.is_file():
            raise MissingEnvFile(path)
        for name, value in dotenv_values(location).items():
            merged[name] = value or ""
            origin[name] = path
    added = {name: value for name, value in merged.items() if name not in real}
    return EnvFiles(
        paths=tuple(paths),
        added=added,
        origin={name: origin[name] for name in added},
        shadowed={name: origin[name] for name in merged if name in real},
    )


@contextmanager
def process_environment(environment: Mapping[str, str]) -> Iterator[None]:
    """Run a block (the config file) with os.environ set to `environment`, then restore it,
    keeping what the block itself set or removed.

    The config file is Python that reads os.environ; it must see what the app will see.
    What it writes there (`os.environ.setdefault("DJANGO_SETTINGS_MODULE", ...)`) is for
    the app, as with gunicorn, which runs the file in its own process too."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(environment)
    try:
        yield
    finally:
        after = dict(os.environ)
        os.environ.clear()
        os.environ.update(saved)
        os.environ.update({k: v for k, v in after.items() if environment.get(k) != v})
        for name in environment.keys() - after.keys():
            os.environ.pop(name, None)


def export(current: EnvFiles, previous: EnvFiles | None, real: Mapping[str, str]) -> None:
    """Make os.environ hold the real environment plus what the env files add.

    On HUP the files are read again: a variable a file no longer holds is removed (unless
    the real environment has it), a changed one takes its new value."""
    if previous is not None:
        for name in previous.added:
            if name not in current.added and name not in real:
                os.environ.pop(name, None)
    os.environ.update(current.added)
