"""Finding the WSGI app from `module:variable`, as gunicorn does.

Forms: `module` (its `application`), `module:name`, `module:name.attr`, and `module:factory()`
or `module:factory('arg', n=1)` with literal arguments.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from typing import Any

WSGIApp = Callable[..., Any]


class AppImportError(Exception):
    """The app's module could not be imported: the worker failed to boot (exit code 3)."""


class AppLoadError(Exception):
    """The module imported but has no usable app (exit code 4)."""


def add_to_sys_path(directories: list[str]) -> None:
    for directory in reversed(directories):
        if directory not in sys.path:
            sys.path.insert(0, directory)


def load_app(spec: str | None) -> WSGIApp:
    if spec is None:  # the command line says so first; a HUP's config file may not
        raise AppLoadError("No application module specified")
    module_name, _, expression = spec.partition(":")
    expression = expression.strip() or "application"
    module_name = module_name.strip()
    if not module_name:
        raise AppLoadError(f"Failed to find application: {spec!r} names no module")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        if getattr(error, "name", None) and module_name.startswith(str(error.name)):
            raise AppImportError(f"No module named {error.name!r}") from error
        raise AppImportError(f"{type(error).__name__}: {error}") from error
    except Exception as error:
        raise AppImportError(
            f"the module {module_name!r} raised {type(error).__name__}: {error}"
        ) from error
    app = _evaluate(module, expression, spec)
    if not callable(app):
        raise AppLoadError(f"Application object must be callable: {spec!r}")
    return app  # type: ignore[no-any-return]


def _evaluate(module: Any, expression: str, spec: str) -> Any:
    try:
        tree = ast.parse(expression, mode="eval").body
    except SyntaxError:
        raise AppLoadError(f"Failed to parse {expression!r} as a name or call") from None
    call_args: list[Any] = []
    call_kwargs: dict[str, Any] = {}
    is_call = isinstance(tree, ast.Call)
    if isinstance(tree, ast.Call):
        try:
            call_args = [ast.literal_eval(arg) for arg in tree.args]
            call_kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in tree.keywords if kw.arg}
        except ValueError:
            raise AppLoadError(f"Factory arguments must be literals: {expression!r}") from None
        tree = tree.func
    names = _dotted_names(tree)
    if names is None:
        raise AppLoadError(f"Failed to parse {expression!r} as a name or call")
    target: Any = module
    for name in names:
        try:
            target = getattr(target, name)
        except AttributeError:
            raise AppLoadError(f"Failed to find attribute {name!r} in {spec!r}.") from None
    if is_call:
        try:
            target = target(*call_args, **call_kwargs)
        except TypeError as error:
            raise AppLoadError(f"Error calling the factory {expression!r}: {error}") from error
    return target


def _dotted_names(node: ast.expr) -> list[str] | None:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        parent = _dotted_names(node.value)
        return None if parent is None else [*parent, node.attr]
    return None
