"""The package's structure: no import circles, and no import from a lower layer up to a higher
one (`make imports` prints the graph these rules are checked on)."""

from __future__ import annotations

from pathlib import Path

import pytest

from import_graph import Module, circles, module_name, read_graph

# Lowest first: a module may import from its own layer and the layers before it. Type-only
# imports count too: a lower layer that names a higher one's types cannot be read alone.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundations: HTTP, units, processes, pipes",
        (
            "dynocorn",
            "dynocorn.http",
            "dynocorn.units",
            "dynocorn.addresses",
            "dynocorn.process",
            "dynocorn.channel",
            "dynocorn.exit_cause",
            "dynocorn.envfiles",
            "dynocorn.apploader",
            "dynocorn.sources",
            "dynocorn.logfmt",
            "dynocorn.sd_notify",
        ),
    ),
    ("the platform and what is measured", ("dynocorn.platform", "dynocorn.metrics")),
    (
        "settings",
        (
            "dynocorn.validators",
            "dynocorn.gunicorn27",
            "dynocorn.asgi_settings",
            "dynocorn.settings",
            "dynocorn.setting_values",
            "dynocorn.arguments",
            "dynocorn.config",
        ),
    ),
    (
        "what master and workers share",
        (
            "dynocorn.wsgi",
            "dynocorn.wsgi_input",
            "dynocorn.asgi",
            "dynocorn.access_log",
            "dynocorn.logs",
            "dynocorn.sockets",
            "dynocorn.scoreboard",
            "dynocorn.slow_watch",
            "dynocorn.handoff",
            "dynocorn.reloader",
            "dynocorn.loop_servers",
            "dynocorn.control",
        ),
    ),
    ("the workers", ("dynocorn.workers",)),
    (
        "the master",
        (
            "dynocorn.worker_handle",
            "dynocorn.worker_exits",
            "dynocorn.reloading",
            "dynocorn.master_signals",
            "dynocorn.memory_policy",
            "dynocorn.metrics.monitor",
            "dynocorn.status",
            "dynocorn.metrics_endpoint",
            "dynocorn.otlp_push",
            "dynocorn.master_views",
            "dynocorn.arbiter",
            "dynocorn.docs",
        ),
    ),
    ("the command", ("dynocorn.cli", "dynocorn.__main__", "dynocorn.ctl", "dynocorn.top")),
]


def layer_of(name: str) -> int:
    """The layer of the longest prefix listed (metrics.monitor is the master's, the rest of
    metrics is measuring)."""
    best, depth = -1, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            matches = name == prefix or name.startswith(prefix + ".")
            if matches and prefix.count(".") > depth:
                best, depth = index, prefix.count(".")
    if best < 0:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS")
    return best


@pytest.fixture(scope="module")
def graph() -> dict[str, Module]:
    return read_graph()


def test_no_import_circles(graph: dict[str, Module]) -> None:
    assert circles(graph) == []


def test_no_import_runs_from_a_lower_layer_up(graph: dict[str, Module]) -> None:
    upward = [
        f"{module.name} ({LAYERS[layer_of(module.name)][0]}) imports {target} "
        f"({LAYERS[layer_of(target)][0]})"
        for module in graph.values()
        for target in sorted(module.all_imports)
        if layer_of(target) > layer_of(module.name)
    ]
    assert upward == []


def test_http_imports_nothing_of_ours_outside_it(graph: dict[str, Module]) -> None:
    outside = {
        target
        for module in graph.values()
        if module.name.startswith("dynocorn.http")
        for target in module.all_imports
        if not target.startswith("dynocorn.http")
    }
    assert outside == set()


def test_the_graph_sees_a_circle_and_a_type_only_import(tmp_path: Path) -> None:
    """The rules above check something: a circle through a type-only import is found."""
    package = tmp_path / "dynocorn"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dynocorn.high import H\n"
    )
    (package / "high.py").write_text("from dynocorn import low\n")
    modules = read_graph(tmp_path)
    assert module_name(package / "low.py", tmp_path) == "dynocorn.low"
    assert modules["dynocorn.low"].type_imports == {"dynocorn.high"}
    assert modules["dynocorn.high"].imports == {"dynocorn.low"}
    assert circles(modules) == [["dynocorn.high", "dynocorn.low"]]
