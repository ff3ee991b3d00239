"""bin/detect, bin/compile and bin/release: the classic buildpack interface, run as the
platform runs them, then the web process they describe, started the way a dyno starts it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from honcho_runs import free_port

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "bin"
VENV_BIN = Path(sys.executable).parent  # the repo's .venv, where `dynocorn` is installed
BASH = shutil.which("bash") or "/bin/bash"


def run(script: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(),
        check=False,
    )


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def clean_env(**extra: str) -> dict[str, str]:
    """A dyno-like environment: none of this shell's variables leak in."""
    return {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), **extra}


def release_yaml(web: str | None) -> str:
    if web is None:
        return "--- {}\n"
    return f"---\ndefault_process_types:\n  web: {web}\n"


# --- detect -------------------------------------------------------------------------------

DJANGO_MANAGE = """\
import os, sys
if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
"""
DJANGO_WSGI = """\
import os
from django.core.wsgi import get_wsgi_application
application = get_wsgi_application()
"""


@pytest.mark.parametrize(
    ("files", "detected"),
    [
        ({"Procfile": "web: dynocorn app:app\n"}, True),
        ({"Procfile": "release: ./migrate\nweb: exec dynocorn --chdir src hello:app\n"}, True),
        ({"Procfile": "web: python -m dynocorn wsgi:application\n"}, True),
        ({"Procfile": "web: bin/dynocorn app:app\n"}, True),
        ({"Procfile": "web: gunicorn app:app\n"}, False),
        ({"Procfile": "worker: dynocorn app:app\n"}, False),  # not the web process
        ({"Procfile": "web: gunicorn dynocorn_app:app\n"}, False),
        ({"requirements.txt": "flask>=3\ndynocorn==0.1.0\n"}, True),
        ({"requirements.txt": "Dynocorn[setproctitle] >= 0.1\n"}, True),
        ({"requirements.txt": "dynocorn @ git+https://github.com/dynocorn/dynocorn\n"}, True),
        ({"requirements.txt": "dynocorn\n"}, True),
        ({"requirements.txt": "dynocorn-extras==1\n# dynocorn one day\ngunicorn\n"}, False),
        ({"pyproject.toml": '[project]\nname = "x"\ndependencies = ["dynocorn>=0.1"]\n'}, True),
        ({"pyproject.toml": '[project]\ndependencies = [\n  "flask",\n  "dynocorn",\n]\n'}, True),
        ({"pyproject.toml": '[tool.poetry.dependencies]\ndynocorn = "^0.1"\n'}, True),
        ({"pyproject.toml": '[project]\nname = "dynocorn"\ndependencies = ["httptools"]\n'}, False),
        ({"pyproject.toml": '[project]\ndependencies = ["gunicorn"]\n'}, False),
        ({"Pipfile": '[packages]\nflask = "*"\ndynocorn = "*"\n'}, True),
        ({"Pipfile": '[packages]\ngunicorn = "*"\n'}, False),
        ({"app.py": "app = None\n"}, False),
        ({}, False),
    ],
)
def test_detect(tmp_path: Path, files: dict[str, str], detected: bool) -> None:
    result = run("detect", write(tmp_path, files))
    if detected:
        assert (result.returncode, result.stdout) == (0, "dynocorn\n")
    else:
        assert (result.returncode, result.stdout) == (1, "")
        assert result.stderr.strip()  # a short reason


def test_detect_without_a_build_dir_is_a_usage_error(tmp_path: Path) -> None:
    result = run("detect", tmp_path / "missing")
    assert result.returncode == 1
    assert "usage" in result.stderr


# --- release ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "web"),
    [
        ({"wsgi.py": "from hello import app as application\n"}, "dynocorn wsgi:application"),
        (
            {"wsgi.py": "def application(environ, start_response):\n    ...\n"},
            "dynocorn wsgi:application",
        ),
        ({"app.py": "from flask import Flask\napp = Flask(__name__)\n"}, "dynocorn app:app"),
        ({"app.py": "app: object = object()\n"}, "dynocorn app:app"),
        ({"app.py": "from hello import app\n"}, "dynocorn app:app"),
        ({"app.py": "from hello import (BODY, app)\n"}, "dynocorn app:app"),
        ({"app.py": "def app(environ, start_response):\n    ...\n"}, "dynocorn app:app"),
        # wsgi.py first; a name that only starts like the one wanted is not it.
        ({"wsgi.py": "application = 1\n", "app.py": "app = 2\n"}, "dynocorn wsgi:application"),
        ({"wsgi.py": "app = 1\n", "app.py": "app = 2\n"}, "dynocorn app:app"),
        ({"app.py": "application = 1\napp_name = 'x'\n"}, None),
        ({"app.py": "def create_app():\n    app = Flask(__name__)\n    return app\n"}, None),
        (
            {"manage.py": DJANGO_MANAGE, "mysite/wsgi.py": DJANGO_WSGI, "mysite/__init__.py": ""},
            "dynocorn mysite.wsgi:application",
        ),
        (
            # Two candidates: the one manage.py names wins.
            {
                "manage.py": DJANGO_MANAGE,
                "mysite/wsgi.py": DJANGO_WSGI,
                "other/wsgi.py": DJANGO_WSGI,
            },
            "dynocorn mysite.wsgi:application",
        ),
        (
            {"manage.py": "import sys\n", "project/wsgi.py": DJANGO_WSGI},
            "dynocorn project.wsgi:application",
        ),
        ({"manage.py": "import sys\n", "a/wsgi.py": DJANGO_WSGI, "b/wsgi.py": DJANGO_WSGI}, None),
        ({"mysite/wsgi.py": DJANGO_WSGI}, None),  # no manage.py: not a Django project root
        ({"manage.py": DJANGO_MANAGE, "mysite/settings.py": ""}, None),
        ({"README.md": "hello\n"}, None),
        ({}, None),
    ],
)
def test_release(tmp_path: Path, files: dict[str, str], web: str | None) -> None:
    result = run("release", write(tmp_path, files))
    assert result.returncode == 0, result.stderr
    assert result.stdout == release_yaml(web)


# --- compile ------------------------------------------------------------------------------


def source_and_print(build_dir: Path, name: str, shell: str = BASH, **env: str) -> str:
    """The value of `name` after a dyno's bash (or another shell) sources the profile script."""
    script = f'. "$1/.profile.d/dynocorn.sh"; printf "%s" "${{{name}-<unset>}}"'
    result = subprocess.run(
        [shell, "-c", script, "sh", str(build_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(**env),
        check=True,
    )
    return result.stdout


def test_compile_writes_runtime_defaults(tmp_path: Path) -> None:
    build = write(tmp_path / "build", {"requirements.txt": "dynocorn\n"})
    result = run("compile", build, tmp_path / "cache", tmp_path / "no-env-dir")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "-----> Configuring dynocorn"
    assert all(line.startswith("       ") and line.strip() for line in lines[1:]), lines
    assert not any("Warning" in line for line in lines)

    assert source_and_print(build, "FORWARDED_ALLOW_IPS") == "*"
    assert source_and_print(build, "WEB_CONCURRENCY") == "<unset>"  # dynocorn computes it
    # A value the dyno already has is never overridden; an empty one counts as unset.
    assert source_and_print(build, "FORWARDED_ALLOW_IPS", FORWARDED_ALLOW_IPS="10.0.0.0/8") == (
        "10.0.0.0/8"
    )
    assert source_and_print(build, "FORWARDED_ALLOW_IPS", FORWARDED_ALLOW_IPS="") == "*"
    assert source_and_print(build, "WEB_CONCURRENCY", WEB_CONCURRENCY="3") == "3"


def test_compile_takes_defaults_from_env_dir_and_nothing_else(tmp_path: Path) -> None:
    build = write(tmp_path / "build", {"Procfile": "web: dynocorn app:app\n"})
    tricky = """10.0.0.1,it's $HOME "x" `id` \\ ${PATH}"""
    env_dir = write(
        tmp_path / "env",
        {"FORWARDED_ALLOW_IPS": tricky, "SECRET_KEY": "s3cret-value", "WEB_CONCURRENCY": "3"},
    )
    result = run("compile", build, tmp_path / "cache", env_dir)
    assert result.returncode == 0, result.stderr
    assert "WEB_CONCURRENCY=3" in result.stdout

    assert source_and_print(build, "FORWARDED_ALLOW_IPS") == tricky  # exactly, unexpanded
    # Plain POSIX sh too (other Heroku-style platforms), and bash in POSIX mode.
    assert source_and_print(build, "FORWARDED_ALLOW_IPS", shell="/bin/sh") == tricky
    posix_bash = source_and_print(build, "FORWARDED_ALLOW_IPS", POSIXLY_CORRECT="1")
    assert posix_bash == tricky
    assert source_and_print(build, "FORWARDED_ALLOW_IPS", FORWARDED_ALLOW_IPS="1.2.3.4") == (
        "1.2.3.4"  # the runtime config var still wins
    )
    profile = (build / ".profile.d" / "dynocorn.sh").read_text()
    assert "s3cret-value" not in profile  # other config vars stay out of the slug
    assert "WEB_CONCURRENCY=" not in profile


@pytest.mark.parametrize("env_dir", ["empty", "missing", "not given"])
def test_compile_needs_no_env_dir_and_is_idempotent(tmp_path: Path, env_dir: str) -> None:
    build = write(tmp_path / "build", {"app.py": "app = None\n"})
    (tmp_path / "empty").mkdir()
    args: list[str | Path] = [build, tmp_path / "cache"]
    if env_dir != "not given":
        args.append(tmp_path / env_dir)
    first = run("compile", *args)
    assert first.returncode == 0, first.stderr
    profile = (build / ".profile.d" / "dynocorn.sh").read_text()
    # Nothing names dynocorn: compile still works, and says what is missing.
    assert "Warning" in first.stdout
    second = run("compile", *args)
    assert (second.returncode, second.stdout) == (0, first.stdout)
    assert (build / ".profile.d" / "dynocorn.sh").read_text() == profile
    assert sorted(p.name for p in (build / ".profile.d").iterdir()) == ["dynocorn.sh"]


# --- the whole sequence, then the web process ---------------------------------------------


def wait_for_200(url: str, process: subprocess.Popen[bytes], log: Path) -> requests.Response:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, f"the web process exited: {log.read_text()}"
        try:
            response = requests.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"no HTTP 200 within 30 s: {log.read_text()}"
        time.sleep(0.1)


def test_detect_compile_release_then_serve(tmp_path: Path) -> None:
    build = tmp_path / "build"
    build.mkdir()
    shutil.copy(REPO / "examples" / "hello.py", build / "app.py")
    (build / "requirements.txt").write_text("dynocorn\n")
    env_dir = write(tmp_path / "env", {"FORWARDED_ALLOW_IPS": "10.1.2.3", "GREETING": "hi"})

    assert run("detect", build).stdout == "dynocorn\n"
    compiled = run("compile", build, tmp_path / "cache", env_dir)
    assert compiled.returncode == 0, compiled.stderr
    release = run("release", build)
    assert release.stdout == release_yaml("dynocorn app:app")
    web = release.stdout.splitlines()[-1].removeprefix("  web: ")

    # What the dyno does: source .profile.d with bash, then run the web command.
    dyno = ". ./.profile.d/dynocorn.sh\n"
    shown = subprocess.run(
        [BASH, "-c", f"{dyno}{web} --print-config"],
        cwd=build,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "forwarded_allow_ips = ['10.1.2.3']  # platform (FORWARDED_ALLOW_IPS=10.1.2.3)" in shown
    assert "GREETING" not in (build / ".profile.d" / "dynocorn.sh").read_text()

    port = free_port()
    log = tmp_path / "web.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [BASH, "-c", f"{dyno}exec {web}"],
            cwd=build,
            env=clean_env(PORT=str(port)),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: ours to signal, nobody else's
        )
    try:
        response = wait_for_200(f"http://127.0.0.1:{port}/", process, log)
        assert response.text == "Hello, World!"
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    assert f":{port}" in log.read_text()
