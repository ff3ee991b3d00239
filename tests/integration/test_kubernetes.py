"""deploy/kubernetes/ checked offline: each manifest against the Kubernetes schemas
(kubernetes-validate, strict), and the numbers that must agree with dynocorn's settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from server import DYNOCORN, REPO

MANIFESTS = sorted((REPO / "deploy" / "kubernetes").glob("*.yaml"))


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda path: path.name)
def test_each_manifest_is_valid_kubernetes(manifest: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", str(manifest)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "passed" in done.stdout + done.stderr


def deployment() -> dict[str, Any]:
    return yaml.safe_load((REPO / "deploy" / "kubernetes" / "deployment.yaml").read_text())  # type: ignore[no-any-return]


def test_the_grace_period_outlasts_prestop_and_dynocorns_graceful_timeout() -> None:
    pod = deployment()["spec"]["template"]["spec"]
    container = pod["containers"][0]
    args = container["args"]
    graceful = float(args[args.index("--graceful-timeout") + 1])
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + graceful


def test_the_memory_limit_sizes_the_workers_the_comment_says() -> None:
    container = deployment()["spec"]["template"]["spec"]["containers"][0]
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Mi")
    args = container["args"][1:]  # the manifest runs dynocorn itself
    done = subprocess.run(
        [*DYNOCORN, *args[:-1], "--memory-quota", f"{int(limit[:-2])}MB", "--print-config",
         "testapps:routes"],
        capture_output=True, text=True, timeout=60, cwd=REPO / "tests" / "apps",
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "lib"), "PORT": "8000"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    workers = next(line for line in done.stdout.splitlines() if line.startswith("workers = "))
    assert workers.startswith("workers = 2 "), workers
