"""Telling an ASGI 3 app from a WSGI one by inspection (apploader.app_interface), on the
shapes real apps take: frameworks' app objects, functions, partials, bound methods,
middleware that sets its own `__call__`, and what is not ASGI 3."""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

import flask
import pytest
from asgiref.sync import markcoroutinefunction
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from fastapi import FastAPI
from starlette.applications import Starlette

from dynocorn.apploader import AppInterfaceError, app_interface, check_interface


async def asgi_function(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("inspected only, never called")


async def asgi_with_options(scope: Any, receive: Any, send: Any, debug: bool = False) -> None:
    raise AssertionError("never called")


async def takes_anything(*args: Any) -> None:
    raise AssertionError("never called")


async def async_two_arguments(environ: Any, start_response: Any) -> None:
    raise AssertionError("never called")


def wsgi_function(environ: Any, start_response: Any) -> list[bytes]:
    raise AssertionError("never called")


class AsgiObject:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")


class WsgiObject:
    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        raise AssertionError("never called")


class Asgi2App:
    """ASGI 2's class form: constructed with the scope, then called with receive and send."""

    def __init__(self, scope: Any) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        raise AssertionError("never called")


class SlotMiddleware:
    """Sentry's SentryAsgiMiddleware's way: `__call__` is a slot set per instance to the
    ASGI 3 or ASGI 2 runner, depending on the app it wraps."""

    __slots__ = ("__call__", "app")

    def __init__(self, app: Any) -> None:
        self.app = app
        self.__call__ = self.run_asgi3

    async def run_asgi3(self, scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")


def starlette_app() -> Starlette:
    return Starlette()


def fastapi_app() -> FastAPI:
    return FastAPI()


def django_asgi_handler() -> ASGIHandler:
    # get_asgi_application() needs a settings module; inspection needs only the object.
    return ASGIHandler.__new__(ASGIHandler)


def django_wsgi_handler() -> WSGIHandler:
    return WSGIHandler.__new__(WSGIHandler)


def flask_app() -> flask.Flask:
    return flask.Flask(__name__)


@pytest.mark.parametrize(
    "make",
    [
        lambda: asgi_function,
        lambda: asgi_with_options,
        lambda: takes_anything,
        starlette_app,
        fastapi_app,
        django_asgi_handler,
        lambda: AsgiObject(),
        lambda: AsgiObject().handle,
        lambda: functools.partial(asgi_with_options, debug=True),
        lambda: functools.partial(AsgiObject()),
        lambda: SlotMiddleware(asgi_function),
        lambda: markcoroutinefunction(lambda scope, receive, send: None),
    ],
    ids=[
        "async-def",
        "async-def-with-a-default",
        "async-def-star-args",
        "starlette",
        "fastapi",
        "django-asgi-handler",
        "object-with-async-call",
        "bound-async-method",
        "partial-of-async-def",
        "partial-of-asgi-object",
        "instance-slot-call",
        "asgiref-marked",
    ],
)
def test_asgi_3_apps(make: Any) -> None:
    assert app_interface(make()) == "asgi"


@pytest.mark.parametrize(
    "make",
    [
        lambda: wsgi_function,
        lambda: WsgiObject(),
        flask_app,
        django_wsgi_handler,
        lambda: functools.partial(wsgi_function),
        lambda: Asgi2App,
        lambda: AsgiObject,  # the class, not an instance: calling it makes an object
        lambda: async_two_arguments,
        lambda: functools.partial(asgi_function, {"type": "http"}),  # two arguments left
    ],
    ids=[
        "def",
        "object-with-call",
        "flask",
        "django-wsgi-handler",
        "partial-of-def",
        "asgi-2-class",
        "a-class",
        "async-def-of-two",
        "partial-leaving-two",
    ],
)
def test_wsgi_or_not_asgi_3(make: Any) -> None:
    assert app_interface(make()) == "wsgi"


def served(spec: str, worker: str) -> SimpleNamespace:
    return SimpleNamespace(wsgi_app=spec, worker_class=worker)


def test_an_asgi_app_under_a_wsgi_class_names_the_class_to_use() -> None:
    with pytest.raises(AppInterfaceError) as error:
        check_interface(fastapi_app(), served("main:app", "sync"), "wsgi")
    assert str(error.value) == (
        "app 'main:app' is an ASGI app; the sync worker serves WSGI apps: use -k asgi"
    )


def test_a_wsgi_app_under_an_asgi_class_names_the_classes_to_use() -> None:
    with pytest.raises(AppInterfaceError) as error:
        check_interface(flask_app(), served("main:app", "asgi"), "asgi")
    assert str(error.value) == (
        "app 'main:app' is a WSGI app; the asgi worker serves ASGI apps: "
        "use -k sync (or gthread, gevent)"
    )


def test_matching_apps_pass() -> None:
    check_interface(flask_app(), served("main:app", "gthread"), "wsgi")
    check_interface(starlette_app(), served("main:app", "asgi"), "asgi")
