"""The shape of the code (docs/architecture.md, issue 10): server/ knows NETCONF and YANG and nothing of
the application, ha/ knows no NETCONF, mipha/ is the glue, and no import cycle exists, not even through an
import inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ha", "server", "mipha")


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, *, module_level: bool) -> set[str]:
    """The modules `name` imports (all of them, or those a plain import of it runs), absolute."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, *([node.module] if node.module else [])])
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and _is_type_checking(node):
                continue  # annotations only
            elif module_level and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue  # runs when called, not when imported
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    visit(
                        [n for n in getattr(node, field, []) if isinstance(n, ast.stmt | ast.excepthandler)]
                    )

    visit(ast.parse(path.read_text()).body)
    return found


def test_server_and_ha_import_nothing_of_the_layers_above_or_beside():
    for name, path in _modules().items():
        top = name.split(".")[0]
        forbidden = {"server": ("ha", "mipha"), "ha": ("server", "mipha")}.get(top, ())
        bad = sorted(m for m in _imports(name, path, module_level=False) if m.split(".")[0] in forbidden)
        assert not bad, f"{name} imports {bad}"


def test_server_code_names_no_application():
    """No string of server/ code (docstrings and comments aside) names mipha: the application registers
    its modules, subscribers and providers."""
    for name, path in _modules().items():
        if not name.startswith("server"):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        named = [
            node.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
            and "mipha" in node.value.lower()
        ]
        assert not named, f"{name}: {named}"


def test_the_glue_imports_nothing_of_the_daemon():
    """The daemon hands the glue its routers and a router factory (one-way)."""
    modules = _modules()
    for name in ("mipha.glue", "mipha.runtime", "mipha.changes", "mipha.yang_config"):
        assert "mipha.daemon" not in _imports(name, modules[name], module_level=False), name


def _first_cycle(module_level: bool) -> list[str] | None:
    """A cycle of imports among the project's modules (``module_level``: only those an import runs)."""
    modules = _modules()
    graph = {
        name: {m for m in _imports(name, path, module_level=module_level) if m in modules and m != name}
        for name, path in modules.items()
    }
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def walk(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (cycle := walk(dep, [*path, dep])):
                return cycle
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := walk(name, [name])):
            return cycle
    return None


@pytest.mark.parametrize("module_level", [True, False], ids=["module-level", "deferred-too"])
def test_no_import_cycle(module_level: bool) -> None:
    """Not even through an import inside a function: a deferred import that closes a cycle still
    couples the two modules both ways (move what they share into a third module instead)."""
    cycle = _first_cycle(module_level)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
