"""Which environment variables dynocorn reads, found by scanning its source (and the examples').

Used by tests/unit/test_app_json.py (app.json names only variables dynocorn reads) and
tests/unit/test_env_example.py (.env.example documents every one). The scan is derived from
the code, so a variable added to the code, renamed or dropped shows up in those checks.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

from dynocorn.config import CMD_ARGS_VARIABLES
from dynocorn.settings import SETTINGS

REPO = Path(__file__).resolve().parents[1]
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
