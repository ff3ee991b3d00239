"""app.json: a valid Heroku manifest, naming only environment variables something reads.

The schema (tests/app_json_schema.json) follows PLATFORM.md's key list. The set of variables
dynocorn reads is derived from its source, so a variable added to app.json that nothing reads
(a typo, a setting that was renamed, a gunicorn-only variable) fails here.
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from dynocorn.config import CMD_ARGS_VARIABLES
from dynocorn.settings import SETTINGS

REPO = Path(__file__).resolve().parents[2]
APP_JSON = REPO / "app.json"
SCHEMA = REPO / "tests" / "app_json_schema.json"
LIB = REPO / "lib" / "dynocorn"
EXAMPLES = REPO / "examples"

# In these modules `environ` is the WSGI environ (request data), not the process's
# environment: only their direct os.environ reads count.
WSGI_ENVIRON_MODULES = ("wsgi.py", "access_log.py", "http/", "workers/")

_VARIABLE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*\Z")
_READ_METHODS = {"get", "pop", "setdefault"}


def _name(node: ast.AST) -> str | None:
    """The node's value when it is a string literal shaped like an environment variable."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value if _VARIABLE.match(node.value) else None
    return None


def _is_os(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == "os"


def _is_os_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and _is_os(node.value)


def direct_reads(tree: ast.Module) -> set[str]:
    """`os.environ.get("X")`, `os.environ["X"]`, `"X" in os.environ`, `os.getenv("X")`..."""
    keys: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
            func = node.func
            on_environ = func.attr in _READ_METHODS and _is_os_environ(func.value)
            if on_environ or (func.attr == "getenv" and _is_os(func.value)):
                keys.append(node.args[0])
        elif isinstance(node, ast.Subscript) and _is_os_environ(node.value):
            keys.append(node.slice)
        elif isinstance(node, ast.Compare) and _is_os_environ(node.comparators[-1]):
            keys.append(node.left)
    return {name for key in keys if (name := _name(key))}


def _mentions_environ(node: ast.AST) -> bool:
    return any(
        (isinstance(n, ast.Name) and n.id == "environ")
        or (isinstance(n, ast.arg) and n.arg == "environ")
        or (isinstance(n, ast.Attribute) and n.attr == "environ")
        for n in ast.walk(node)
    )


def mapping_reads(tree: ast.Module) -> set[str]:
    """Names read through an environment mapping passed in (DESIGN habit 4).

    Any variable-shaped literal in a function (or module-level statement) that handles
    `environ`, and in the module constants it uses: `environ.get("PORT")`, but also a table
    such as `CMD_ARGS_VARIABLES = ("GUNICORN_CMD_ARGS", ...)` looped over with
    `environ.get(variable)`. It errs towards too many names (a unit such as "MB" gets in),
    which only makes the subset check below more lenient, never wrong about a real read.
    """
    constants: dict[str, ast.AST] = {}
    for statement in tree.body:
        if isinstance(statement, ast.Assign | ast.AnnAssign) and statement.value is not None:
            value = statement.value
            targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
            constants.update({t.id: value for t in targets if isinstance(t, ast.Name)})
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    scopes: list[ast.AST] = [node for node in ast.walk(tree) if isinstance(node, functions)]
    scopes += [s for s in tree.body if not isinstance(s, (*functions, ast.ClassDef))]
    found: set[str] = set()
    for scope in scopes:
        if not _mentions_environ(scope):
            continue
        used = [
            constants[n.id]
            for n in ast.walk(scope)
            if isinstance(n, ast.Name) and n.id in constants
        ]
        for node in [scope, *used]:
            found.update(name for n in ast.walk(node) if (name := _name(n)))
    return found


def _modules(root: Path) -> Iterable[tuple[str, ast.Module]]:
    for path in sorted(root.rglob("*.py")):
        yield path.relative_to(root).as_posix(), ast.parse(path.read_text(), str(path))


def variables_dynocorn_reads() -> set[str]:
    # The names the code exposes (the CMD_ARGS, the settings table's value variables, which
    # config.py reads by name; test_config proves it), plus what its source reads.
    names = set(CMD_ARGS_VARIABLES)
    names |= {setting.env_value for setting in SETTINGS.values() if setting.env_value}
    for relative, tree in _modules(LIB):
        names |= direct_reads(tree)
        if not relative.startswith(WSGI_ENVIRON_MODULES):
            names |= mapping_reads(tree)
    return names


def variables_examples_read() -> set[str]:
    # An example app's `environ` is the WSGI environ: only os.environ reads count.
    return {name for _, tree in _modules(EXAMPLES) for name in direct_reads(tree)}


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


def test_the_deploy_button_works_as_the_platform_expects(manifest: dict[str, Any]) -> None:
    assert manifest["repository"] == "https://github.com/dynocorn/dynocorn"
    assert manifest["formation"] == {"web": {"quantity": 1, "size": "basic"}}
    assert manifest["buildpacks"] == [{"url": "heroku/python"}]
    assert manifest["environments"]["test"]["scripts"]["test"] == "make test"
    assert manifest["env"]["FORWARDED_ALLOW_IPS"]["value"] == "*"
    for name, entry in manifest["env"].items():
        # Each one explained, and none blocks the button waiting for the user's input.
        assert isinstance(entry, dict), name
        assert entry.get("description"), name
        assert entry.get("required") is False, name


def test_the_scan_finds_the_variables_the_code_is_known_to_read() -> None:
    read = variables_dynocorn_reads()
    known = {"PORT", "WEB_CONCURRENCY", "DYNO", "FORWARDED_ALLOW_IPS", "DYNO_RAM", "SCRIPT_NAME"}
    assert known | set(CMD_ARGS_VARIABLES) <= read
    assert not {"REQUEST_METHOD", "PATH_INFO", "DATABASE_URL", "GUNICORN_WORKERS"} & read
    assert variables_examples_read() == {"SECRET_KEY"}


def test_app_json_names_only_variables_that_something_reads(manifest: dict[str, Any]) -> None:
    read = variables_dynocorn_reads() | variables_examples_read()
    assert unread_variables(manifest, read) == set()


@pytest.mark.parametrize("name", ["DATABASE_URL", "WEB_CONCURENCY", "GUNICORN_WORKERS"])
def test_a_variable_nothing_reads_is_caught(manifest: dict[str, Any], name: str) -> None:
    read = variables_dynocorn_reads() | variables_examples_read()
    doctored = {**manifest, "env": {**manifest["env"], name: {"required": False}}}
    assert unread_variables(doctored, read) == {name}
    in_review = {**manifest, "environments": {"review": {"env": {name: "1"}}}}
    assert unread_variables(in_review, read) == {name}
