"""The layout rules of the code base, checked on the source tree.

* imports go one way: ``app.py`` and ``training/`` import ``atr_demo``; ``atr_demo`` never imports
  ``training`` or ``app``;
* no import cycle between the project's modules (module-level and function-level imports alike);
* no Python module over 600 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("atr_demo", "training")
MAX_LINES = 600


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for ``atr_demo``, ``training`` and ``app``."""
    modules: dict[str, Path] = {"app": ROOT / "app.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules that ``name`` imports anywhere in its body (resolved to known modules)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            # the longest known prefix: `from atr_demo.ot import x` -> atr_demo.ot
            parts = target.split(".")
            for cut in range(len(parts), 0, -1):
                candidate = ".".join(parts[:cut])
                if candidate in known:
                    if candidate != name:
                        found.add(candidate)
                    break
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    return {name: imported_modules(name, path, known) for name, path in modules.items()}


def test_library_never_imports_training_or_app() -> None:
    graph = import_graph()
    offenders = {name: sorted(dep for dep in deps if dep.split(".")[0] in ("training", "app"))
                 for name, deps in graph.items() if name.startswith("atr_demo")}
    offenders = {name: deps for name, deps in offenders.items() if deps}
    assert not offenders, f"atr_demo must not import training/app: {offenders}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of module names (first == last), or None. Package ``__init__``
    edges to their own sub-modules are re-exports, not cycles, and are ignored."""
    def edges(name: str) -> list[str]:
        return sorted(dep for dep in graph[name] if not dep.startswith(name + "."))

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for dep in edges(name):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep):], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set(), "pkg": {"pkg.x"}, "pkg.x": {"pkg"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"pkg": {"pkg.x"}, "pkg.x": {"pkg"}}) is None


@pytest.mark.parametrize("folder", ["atr_demo", "training", "benchmarks", "tests"])
def test_no_module_over_600_lines(folder: str) -> None:
    long = {str(path.relative_to(ROOT)): n for path in (ROOT / folder).rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
