"""The package's shape: no import cycle between its modules or between its packages (the
layers: config, data, methods, eval, report, ...), no function past about 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import hvc

PACKAGE = Path(hvc.__file__).parent
MAX_FUNCTION_LINES = 60  # decorators and docstring included


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere (also inside functions)."""
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
                deps.add(node.module)
                deps.update(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in modules)
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules)
        graph[name] = deps - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(v: str) -> list[str] | None:
        state[v] = 1
        path.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == 1:
                return path[path.index(w) :] + [w]
            if w not in state and (found := visit(w)):
                return found
        path.pop()
        state[v] = 2
        return None

    for v in sorted(graph):
        if v not in state and (found := visit(v)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_one_that_imports_it_back():
    graph = _import_graph()
    assert "hvc.config.params" in graph and "hvc.eval.readers" in graph["hvc.eval.predict"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def _package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph folded to the package's top level: ``hvc.config.params`` is ``config``,
    ``hvc.train`` is ``train``; a package's imports of itself are dropped."""

    def top(module: str) -> str:
        parts = module.split(".")
        return parts[1] if len(parts) > 1 else parts[0]

    out: dict[str, set[str]] = {}
    for module, deps in graph.items():
        out.setdefault(top(module), set()).update(top(d) for d in deps)
    return {k: v - {k} for k, v in out.items()}


def test_the_package_graph_folds_modules_into_their_packages():
    folded = _package_graph({"hvc.a.x": {"hvc.b.y", "hvc.a.z"}, "hvc.a.z": set(), "hvc.b.y": {"hvc.c"}, "hvc.c": set()})
    assert folded == {"a": {"b"}, "b": {"c"}, "c": set()}
    assert _cycle(_package_graph({"hvc.a.x": {"hvc.b.y"}, "hvc.b.y": {"hvc.a.z"}, "hvc.a.z": set()})) == ["a", "b", "a"]


def test_no_package_imports_one_that_imports_it_back():
    """The layers point one way: e.g. config never imports eval, methods never import eval
    (a method's inference uses the top-level hvc.propagation)."""
    packages = _package_graph(_import_graph())
    assert {"config", "data", "methods", "eval", "report"} <= set(packages)
    assert _cycle(packages) is None, " -> ".join(_cycle(packages))
    assert "eval" not in packages["config"] and "data" not in packages["config"]


def test_no_function_is_longer_than_about_60_lines():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if node.end_lineno - start + 1 > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({node.end_lineno - start + 1} lines)")
    assert not long, "split these: " + "; ".join(long)
