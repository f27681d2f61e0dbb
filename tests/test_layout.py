"""The shape of the ``kit`` package: imports flow one way, modules stay small enough to read."""

import ast
from pathlib import Path

import pytest

KIT = Path(__file__).parents[1] / "kit"
MAX_LINES = 450  # per module outside the synthetic-data package


def _module_name(path: Path, root: Path = KIT) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_of(path: Path, root: Path) -> str:
    name = _module_name(path, root)
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def import_graph(root: Path = KIT) -> dict[str, set[str]]:
    """``module → kit modules it imports``, counting imports anywhere in the file (a function-level
    import that dodges a cycle is still a cycle)."""
    modules = {_module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .x import y
                    package = _package_of(path, root).split(".")
                    base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
                # "from kit import viz" imports the module kit.viz
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            else:
                continue
            edges |= {t for t in targets if t in modules and t != name}
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_kit_import_graph_has_no_cycle():
    graph = import_graph()
    assert {"kit.train", "kit.infer", "kit.runs", "kit.border", "kit.weights"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_prediction_imports_no_training_code():
    graph = import_graph()
    reachable, todo = set(), ["kit.infer"]
    while todo:
        for nxt in graph[todo.pop()] - reachable:
            reachable.add(nxt)
            todo.append(nxt)
    assert not reachable & {"kit.train", "kit.recipes", "kit.uda", "kit.losses", "kit.augment"}, sorted(reachable)


def test_the_cycle_finder_finds_a_late_import_cycle(tmp_path):
    # the check must be able to fail: two modules importing each other, one of them inside a function
    package = tmp_path / "kit"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from kit.b import g\n")
    (package / "b.py").write_text("def g():\n    from kit import a\n")
    (package / "c.py").write_text("from . import a\n")
    graph = import_graph(package)
    assert graph["kit.c"] == {"kit.a"}
    assert find_cycle(graph) in (["kit.a", "kit.b", "kit.a"], ["kit.b", "kit.a", "kit.b"])


@pytest.mark.parametrize("path", sorted(p for p in KIT.glob("*.py")), ids=lambda p: p.name)
def test_modules_stay_readable(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.name} has {lines} lines; split it by concern (limit {MAX_LINES})"
