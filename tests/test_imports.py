"""The import structure of ``helpers/``: no cycle between modules, imports at the top, light modules stay light.

Read from the source with ``ast``, so no module is imported (except in the last test, in a fresh process).
An import inside a function is allowed only with a ``# lazy: <reason>`` comment on its line: a heavy
or optional dependency that the module must not pull in when it is imported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
HELPERS = REPO_ROOT / "helpers"
SOURCES = {path.stem: path.read_text(encoding="utf-8") for path in sorted(HELPERS.glob("*.py"))}
TREES = {name: ast.parse(source, filename=f"helpers/{name}.py") for name, source in SOURCES.items()}

LIGHT = ("config", "constraints", "labeler", "stats", "files", "runs", "instructions", "schema", "dataset", "external")
"""Modules that must import without torch or transformers (the notebooks' and scripts' light end)."""


def helpers_imported(tree: ast.Module, modules=frozenset(SOURCES)) -> set[str]:
    """The helpers ``modules`` one module imports, anywhere in the file (top level or inside functions)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 or (node.level == 0 and node.module and node.module.split(".")[0] == "helpers"):
                parts = (node.module or "").split(".")
                parts = parts[1:] if node.level == 0 else parts
                if parts and parts[0]:
                    found.add(parts[0])  # from .x import y, from helpers.x import y
                else:
                    found.update(alias.name for alias in node.names)  # from . import x, from helpers import x
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("helpers."))
    return found & set(modules)


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None when the graph has none (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = "open"
        path.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                return path[path.index(imported):] + [imported]
            if imported not in state and (cycle := visit(imported)):
                return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def nested_imports(tree: ast.Module):
    """Import statements inside a function or class body (not run when the module is imported)."""
    def walk(node, nested: bool):
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and nested:
                yield child
            yield from walk(child, inner)

    yield from walk(tree, False)


def test_the_checks_see_every_form_of_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    tree = ast.parse("import json\nfrom . import x\nfrom .y import f\nfrom helpers.z import g\nimport helpers.w\n"
                     "from torch import nn\ndef h():\n    from .v import k  # lazy: reason\n"
                     "class C:\n    def m(self):\n        import torch\n")
    assert helpers_imported(tree, {"v", "w", "x", "y", "z", "u"}) == {"v", "w", "x", "y", "z"}
    assert [node.lineno for node in nested_imports(tree)] == [8, 11]


def test_no_import_cycle_between_helpers_modules():
    graph = {name: helpers_imported(tree) - {name} for name, tree in TREES.items()}
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_imports_inside_functions_say_why():
    unexplained = []
    for name, tree in TREES.items():
        lines = SOURCES[name].splitlines()
        for node in nested_imports(tree):
            statement = lines[node.lineno - 1 : node.end_lineno]
            if not any("# lazy:" in line for line in statement):
                unexplained.append(f"helpers/{name}.py:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not unexplained, ("imports inside functions without a '# lazy: <reason>' comment (move them to the top, "
                             "or say why they must wait):\n" + "\n".join(unexplained))


@pytest.mark.parametrize("module", LIGHT)
def test_light_modules_import_without_torch(module):
    script = (f"import sys\nimport helpers.{module}\n"
              "print(sorted(name for name in ('torch', 'transformers') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"importing helpers.{module} imports {result.stdout.strip()}"
