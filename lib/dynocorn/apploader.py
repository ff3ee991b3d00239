"""Finding the app from `module:variable`, as gunicorn does, and telling a WSGI app from an
ASGI 3 one.

Forms: `module` (its `application`), `module:name`, `module:name.attr`, and `module:factory()`
or `module:factory('arg', n=1)` with literal arguments.
"""

from __future__ import annotations

import ast
import asyncio.coroutines
import functools
import importlib
import inspect
import sys
from collections.abc import Callable
from typing import Any, Literal, Protocol

WSGIApp = Callable[..., Any]
# What an app is called with: WSGI's (environ, start_response) or ASGI 3's (scope, receive,
# send). Each worker class serves one (Worker.interface).
Interface = Literal["wsgi", "asgi"]


class AppImportError(Exception):
    """The app's module could not be imported: the worker failed to boot (exit code 3)."""


class AppLoadError(Exception):
    """The module imported but has no usable app (exit code 4)."""


class AppInterfaceError(AppLoadError):
    """The app is WSGI and the worker class serves ASGI apps, or the reverse."""


class ServedApp(Protocol):
    """The two settings that say what is served and by which worker class (a Config)."""

    @property
    def wsgi_app(self) -> str | None: ...

    @property
    def worker_class(self) -> str: ...


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


# asgiref's markcoroutinefunction on Pythons before 3.12 marks a function this way.
_ASYNCIO_MARK = getattr(asyncio.coroutines, "_is_coroutine", object())


def app_interface(app: object) -> Interface:
    """ "asgi" for an ASGI 3 app, else "wsgi"; the app is inspected, never called.

    ASGI 3: an `async def` (a function, a bound method, a functools.partial of one) that
    accepts (scope, receive, send), or an object whose `__call__` is one (Starlette, FastAPI,
    Django's ASGIHandler). A class is WSGI (a class-style WSGI app; ASGI 2's classes are not
    served), as is any other callable: uvicorn tells ASGI 3 from ASGI 2 the same way.
    """
    if inspect.isclass(app):
        return "wsgi"
    callee = _called(app)
    function = callee
    while isinstance(function, functools.partial):
        function = _called(function.func)
    if not _is_coroutine_function(function):
        return "wsgi"
    try:
        inspect.signature(callee).bind(None, None, None)
    except TypeError:
        return "wsgi"  # an `async def` not taking (scope, receive, send): ASGI 2 or other
    except ValueError:
        pass  # no signature to read: the coroutine function is taken at its word
    return "asgi"


def _called(app: Any) -> Any:
    """What calling `app` runs: itself for a function, method or partial, else its
    `__call__` (looked up on the instance: a `__call__` in `__slots__`, set per instance, is
    what Python calls; Sentry's ASGI middleware is made so)."""
    if inspect.isroutine(app) or isinstance(app, functools.partial):
        return app
    return getattr(app, "__call__", None)  # noqa: B004 (the instance's own, not callable())


def _is_coroutine_function(function: object) -> bool:
    return inspect.iscoroutinefunction(function) or (
        getattr(function, "_is_coroutine", None) is _ASYNCIO_MARK
    )


def check_interface(app: object, served: ServedApp, serves: Interface) -> None:
    """Raise AppInterfaceError, naming the `-k` to use, unless a worker class that serves
    `serves` apps can serve this one."""
    if app_interface(app) == serves:
        return
    spec, worker = served.wsgi_app, served.worker_class
    if serves == "wsgi":
        raise AppInterfaceError(
            f"app {spec!r} is an ASGI app; the {worker} worker serves WSGI apps: use -k asgi"
        )
    raise AppInterfaceError(
        f"app {spec!r} is a WSGI app; the {worker} worker serves ASGI apps: "
        "use -k sync (or gthread, gevent)"
    )
