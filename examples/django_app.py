"""A one-file Django project. `dynocorn --chdir examples django_app:application`, or, as an
ASGI app, `dynocorn -k asgi --chdir examples django_app:asgi_application`."""

from __future__ import annotations

import os

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY=os.environ.get("SECRET_KEY", "example-only-not-secret"),
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        USE_TZ=True,
        SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
    )
    django.setup()


def index(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"message": "Hello from Django on dynocorn", "pid": os.getpid()})


def echo(request: HttpRequest) -> HttpResponse:
    return JsonResponse(
        {
            "method": request.method,
            "path": request.path,
            "query": request.GET.dict(),
            "length": len(request.body),
            "secure": request.is_secure(),
        }
    )


urlpatterns = [path("", index), path("echo", echo)]

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
asgi_application = get_asgi_application()  # what a project's asgi.py holds
