"""The package's import graph, from the source text: `make imports`.

Prints each module of lib/dynocorn with the modules of ours it imports (those imported only
for type checking marked `(types)`), then the import circles, each as the group of modules
that import one another round a loop. tests/unit/test_layers.py holds the package to the
rules this shows.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "dynocorn"
LIB = Path(__file__).resolve().parent.parent / "lib"


@dataclass
class Module:
    name: str
    path: Path
    imports: set[str] = field(default_factory=set)  # at run time
    type_imports: set[str] = field(default_factory=set)  # under `if TYPE_CHECKING:` only

    @property
    def all_imports(self) -> set[str]:
        return self.imports | self.type_imports


def module_name(path: Path, lib: Path) -> str:
    parts = list(path.relative_to(lib).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_graph(lib: Path = LIB) -> dict[str, Module]:
    """Every module of the package and the modules of ours each imports."""
    modules = {
        module_name(path, lib): Module(module_name(path, lib), path)
        for path in sorted((lib / PACKAGE).rglob("*.py"))
    }
    for module in modules.values():
        tree = ast.parse(module.path.read_text(), str(module.path))
        for node, type_only in _import_nodes(tree.body, type_only=False):
            for target in _targets(node, module, modules):
                if target != module.name:
                    (module.type_imports if type_only else module.imports).add(target)
        module.type_imports -= module.imports
    return modules


def _import_nodes(body: list[ast.stmt], type_only: bool) -> Iterator[tuple[ast.stmt, bool]]:
    """Import statements anywhere (functions too), and whether only type checking runs them."""
    for statement in body:
        if isinstance(statement, ast.Import | ast.ImportFrom):
            yield statement, type_only
        elif isinstance(statement, ast.If) and _is_type_checking(statement.test):
            yield from _import_nodes(statement.body, True)
            yield from _import_nodes(statement.orelse, type_only)
        else:
            for child in ast.iter_child_nodes(statement):
                if isinstance(child, ast.stmt):
                    yield from _import_nodes([child], type_only)
                elif isinstance(child, ast.ExceptHandler):
                    yield from _import_nodes(child.body, type_only)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _targets(node: ast.stmt, module: Module, modules: dict[str, Module]) -> Iterator[str]:
    """The modules of ours an import statement loads."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == PACKAGE:
                yield _known(alias.name, modules)
        return
    assert isinstance(node, ast.ImportFrom)
    base = _absolute(node, module)
    if base is None or base.split(".")[0] != PACKAGE:
        return
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        yield submodule if submodule in modules else _known(base, modules)


def _absolute(node: ast.ImportFrom, module: Module) -> str | None:
    if not node.level:
        return node.module
    package = module.name.split(".")
    if module.path.name != "__init__.py":
        package.pop()
    package = package[: len(package) - node.level + 1]
    return ".".join([*package, node.module] if node.module else package) or None


def _known(name: str, modules: dict[str, Module]) -> str:
    while name not in modules and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def circles(modules: dict[str, Module]) -> list[list[str]]:
    """The strongly connected groups of two modules or more (Tarjan), type imports included:
    a circle through a type import still means neither module can be understood alone."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        for target in sorted(modules[name].all_imports):
            if target not in index:
                visit(target)
                low[name] = min(low[name], low[target])
            elif target in stack:
                low[name] = min(low[name], index[target])
        if low[name] == index[name]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == name:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return sorted(found)


def main() -> int:
    modules = read_graph()
    for name, module in sorted(modules.items()):
        lines = len(module.path.read_text().splitlines())
        used = sorted(module.imports) + [f"{t} (types)" for t in sorted(module.type_imports)]
        print(f"{name} ({lines} lines) -> {', '.join(used) or '-'}")
    found = circles(modules)
    print(f"\n{len(modules)} modules, {len(found)} import circle(s)")
    for group in found:
        print("  circle: " + " <-> ".join(group))
    return 0


if __name__ == "__main__":
    sys.exit(main())
