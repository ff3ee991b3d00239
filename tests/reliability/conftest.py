"""The reliability suite: bounded load with every outcome counted, and hostile input.

Fast cases run with the rest of `make test`. Cases marked `soak` run for minutes and are
skipped unless `--soak` is given (with `pytest tests/reliability`, where this file is an
initial conftest) or the environment has SOAK=1; `make soak` runs them.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak", action="store_true", default=False, help="run the long `soak` cases too"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: a long run, skipped unless --soak or SOAK=1")


def soak_enabled(config: pytest.Config) -> bool:
    if os.environ.get("SOAK", "") not in ("", "0"):
        return True
    try:
        return bool(config.getoption("--soak"))
    except ValueError:  # this file was not an initial conftest: the option does not exist
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if soak_enabled(config):
        return
    skip = pytest.mark.skip(reason="soak: run with --soak or SOAK=1 (make soak)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)
