"""`make dist`'s packages are whole: the wheel, installed in a new venv with nothing of this
checkout, runs `dynocorn --version` and loads an app, and both pass `twine check`."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

from dynocorn import __version__
from server import REPO


def run(*command: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=300, cwd=cwd
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_the_wheel_installs_in_a_clean_venv_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--outdir", dist, ".")
    wheel = next(dist.glob("dynocorn-*.whl"))
    assert next(dist.glob("dynocorn-*.tar.gz"))
    run(sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir()))
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", wheel)
    version = run(environment / "bin" / "dynocorn", "--version", cwd=tmp_path)
    assert version.stdout.strip() == f"dynocorn (version {__version__})"
    (tmp_path / "app.py").write_text(
        "def app(environ, start_response):\n    start_response('200 OK', [])\n    return [b'ok']\n"
    )
    checked = run(environment / "bin" / "dynocorn", "--check-config", "app:app", cwd=tmp_path)
    assert checked.returncode == 0
    # Every module is in the wheel: the whole package imports from the venv alone.
    imported = run(
        python, "-c",
        "import dynocorn.arbiter, dynocorn.ctl, dynocorn.metrics.exposition, "
        "dynocorn.workers.gthread; print(dynocorn.arbiter.__file__)",
        cwd=tmp_path,
    )  # fmt: skip
    assert str(environment) in imported.stdout
