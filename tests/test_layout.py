"""The shape of the ``kit`` package: subpackages by the data's journey, imports flowing one way
between them, modules small enough to read."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

KIT = Path(__file__).parents[1] / "kit"
MAX_LINES = 400  # per module
# The data's journey: a package imports only from itself and from the packages before it.
# synth (the embedded dataset) stands apart: it may use every package up to report, and only bench
# (the main job, the benchmarks) uses it.
ORDER = ("common", "competition", "data", "report", "models", "predict", "train", "bench")
SYNTH_MAY_USE = {"common", "competition", "data", "report"}


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
                # "from kit import viz" imports the module kit.report.viz
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
    assert {"kit.train.loop", "kit.predict.splits", "kit.predict.runs", "kit.data.border", "kit.models.weights"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def backward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """``(importer, imported)`` pairs that go against :data:`ORDER` (or out of synth's reach)."""
    wrong = []
    for module, edges in graph.items():
        package = module.split(".")[1] if module.count(".") else None
        for target in edges:
            other = target.split(".")[1]
            if package is None or other == package:
                continue
            if package == "synth":
                ok = other in SYNTH_MAY_USE
            else:
                ok = package == "bench" if other == "synth" else ORDER.index(other) < ORDER.index(package)
            if not ok:
                wrong.append((module, target))
    return sorted(wrong)


def test_imports_flow_one_way_between_the_packages():
    graph = import_graph()
    packages = {name.split(".")[1] for name in graph if name.count(".")}
    assert packages == {*ORDER, "synth"}, packages
    assert backward_imports(graph) == []


def test_the_direction_check_can_fail():
    graph = {"kit.predict.runs": {"kit.train.config"}, "kit.train.loop": {"kit.predict.runs"},
             "kit.synth.city": {"kit.models.heads"}}
    assert backward_imports(graph) == [("kit.predict.runs", "kit.train.config"), ("kit.synth.city", "kit.models.heads")]


def test_prediction_imports_no_training_code():
    graph = import_graph()
    reachable, todo = set(), [m for m in graph if m.startswith("kit.predict.")]
    while todo:
        for nxt in graph[todo.pop()] - reachable:
            reachable.add(nxt)
            todo.append(nxt)
    assert not {m for m in reachable if m.startswith("kit.train.")} | ({"kit.data.augment"} & reachable), sorted(reachable)


def test_the_top_of_kit_is_a_handful_of_packages():
    entries = sorted(p.name for p in KIT.iterdir() if p.name != "__pycache__")
    assert len(entries) <= 10 and [e for e in entries if e.endswith(".py")] == ["__init__.py"], entries


@pytest.mark.slow
def test_parameter_checks_and_01_eda_import_no_torch():
    # the notebooks check their parameters with kit.common.checks, and 01_eda only looks at the data:
    # neither may load torch, timm or transformers
    eda = (KIT.parent / "notebooks/01_eda.py").read_text()
    modules = ["kit.common.checks"] + [f"{m[1]}.{name.strip()}" for m in re.finditer(r"^from (kit\.\w+) import (.+)$", eda, re.M)
                                      for name in m[2].split(",")]
    assert "kit.data.stats" in modules and "kit.report.viz" in modules, modules
    code = (f"import sys, {', '.join(modules)}; "
            "print(sorted(m for m in ('torch', 'timm', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=KIT.parent)
    assert out.stdout.strip() == "[]"


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


@pytest.mark.parametrize("path", sorted(KIT.rglob("*.py")), ids=lambda p: str(p.relative_to(KIT)))
def test_modules_stay_readable(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(KIT)} has {lines} lines; split it by concern (limit {MAX_LINES})"
