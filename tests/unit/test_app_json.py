"""app.json: a valid Heroku manifest, naming only environment variables dynocorn reads.

The schema (tests/app_json_schema.json) follows PLATFORM.md's key list, and requires the keys
the Deploy button and Heroku CI need from this manifest. The set of variables dynocorn reads
is derived from its source (tests/env_reads.py), so a variable added to app.json that dynocorn
does not read (a typo, a setting that was renamed, a gunicorn-only variable, an app's own
variable) fails here, unless it is listed in APP_VARIABLES with the reason it is there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from dynocorn.config import CMD_ARGS_VARIABLES
from env_reads import variables_dynocorn_reads, variables_examples_read

REPO = Path(__file__).resolve().parents[2]
APP_JSON = REPO / "app.json"
SCHEMA = REPO / "tests" / "app_json_schema.json"

# Variables app.json may set for the example app rather than for dynocorn, each with its
# reason. None so far: the example app's SECRET_KEY has a default fit for a demo.
APP_VARIABLES: dict[str, str] = {}

# What the Deploy button and Heroku CI need, beyond the schema's shapes.
REQUIRED_KEYS = (
    "name",
    "description",
    "repository",
    "keywords",
    "env",
    "formation",
    "buildpacks",
    "environments",
)
DYNOCORN_VARIABLES = ("WEB_CONCURRENCY", "DYNOCORN_CMD_ARGS", "FORWARDED_ALLOW_IPS")


def unread_variables(manifest: dict[str, Any], read: set[str]) -> set[str]:
    names = set(manifest.get("env", {}))
    for environment in manifest.get("environments", {}).values():
        names |= set(environment.get("env", {}))
    return names - read


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(APP_JSON.read_text())
    return loaded


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_app_json_matches_the_manifest_schema(
    manifest: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(manifest)]
    assert errors == []


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"homepage": "https://example.com"}, "homepage"),  # not an app.json key
        ({"keywords": "python"}, "keywords"),
        ({"env": {"WEB_CONCURRENCY": {"required": "no"}}}, "env"),
        ({"env": {"X": {"generator": "random"}}}, "env"),
        ({"env": {"X": {"default": "1"}}}, "env"),
        ({"formation": {"web": {"quantity": "1"}}}, "formation"),
        ({"formation": {"web": {"count": 1}}}, "formation"),
        ({"buildpacks": ["heroku/python"]}, "buildpacks"),
        ({"buildpacks": [{"name": "heroku/python"}]}, "buildpacks"),
        ({"environments": {"test": {"scripts": {"test": ["make", "test"]}}}}, "environments"),
        ({"repository": "github.com/dynocorn/dynocorn"}, "repository"),
        ({"environments": {"review": {}}}, "test"),
        ({"environments": {"test": {}}}, "scripts"),
        ({"environments": {"test": {"scripts": {"postdeploy": "true"}}}}, "test"),
    ],
)
def test_the_schema_rejects_a_malformed_manifest(
    manifest: dict[str, Any],
    validator: jsonschema.protocols.Validator,
    change: dict[str, Any],
    where: str,
) -> None:
    broken = {**manifest, **change}
    messages = [f"{list(e.absolute_path)} {e.message}" for e in validator.iter_errors(broken)]
    assert messages, f"accepted {change}"
    assert any(where in message for message in messages), messages


def test_the_schema_requires_what_the_deploy_button_and_ci_need(
    manifest: dict[str, Any], validator: jsonschema.protocols.Validator
) -> None:
    assert list(validator.iter_errors({"website": manifest["website"]})), "accepted a bare website"
    for key in REQUIRED_KEYS:
        without = {name: value for name, value in manifest.items() if name != key}
        messages = [e.message for e in validator.iter_errors(without)]
        assert f"'{key}' is a required property" in messages, (key, messages)


def test_the_deploy_button_works_as_the_platform_expects(manifest: dict[str, Any]) -> None:
    assert manifest["repository"] == "https://github.com/dynocorn/dynocorn"
    assert manifest["formation"] == {"web": {"quantity": 1, "size": "basic"}}
    assert manifest["buildpacks"] == [{"url": "heroku/python"}]
    assert manifest["environments"]["test"]["scripts"]["test"] == "make test"
    assert manifest["env"]["FORWARDED_ALLOW_IPS"]["value"] == "*"
    assert set(DYNOCORN_VARIABLES) <= set(manifest["env"])
    web_concurrency = manifest["env"]["WEB_CONCURRENCY"]
    assert "worker processes" in web_concurrency["description"]
    assert "value" not in web_concurrency  # unset: dynocorn sizes the workers from the dyno
    for name, entry in manifest["env"].items():
        # Each one explained, and none blocks the button waiting for the user's input.
        assert isinstance(entry, dict), name
        assert entry.get("description"), name
        assert entry.get("required") is False, name


def test_the_scan_finds_the_variables_the_code_is_known_to_read() -> None:
    read = variables_dynocorn_reads()
    known = {"PORT", "WEB_CONCURRENCY", "DYNO", "FORWARDED_ALLOW_IPS", "DYNO_RAM", "SCRIPT_NAME"}
    known |= {"LISTEN_FDS", "LISTEN_PID", "HONCHO_PROCESS_NAME", "SENDFILE"}
    assert known | set(CMD_ARGS_VARIABLES) <= read
    assert not {"REQUEST_METHOD", "PATH_INFO", "DATABASE_URL", "GUNICORN_WORKERS"} & read
    assert variables_examples_read() == {"SECRET_KEY"}


def test_app_json_names_only_variables_dynocorn_reads(manifest: dict[str, Any]) -> None:
    read = variables_dynocorn_reads() | set(APP_VARIABLES)
    assert unread_variables(manifest, read) == set()
    # An app variable listed here is one the example app really reads.
    assert set(APP_VARIABLES) <= variables_examples_read()


# SECRET_KEY: the example app reads it, dynocorn does not, and APP_VARIABLES does not list it.
@pytest.mark.parametrize(
    "name", ["DATABASE_URL", "WEB_CONCURENCY", "GUNICORN_WORKERS", "SECRET_KEY"]
)
def test_a_variable_dynocorn_does_not_read_is_caught(manifest: dict[str, Any], name: str) -> None:
    read = variables_dynocorn_reads() | set(APP_VARIABLES)
    doctored = {**manifest, "env": {**manifest["env"], name: {"required": False}}}
    assert unread_variables(doctored, read) == {name}
    in_review = {**manifest, "environments": {"review": {"env": {name: "1"}}}}
    assert unread_variables(in_review, read) == {name}
