"""The import graph of the model modules: kit.models.model → kit.models.encoders → kit.models.internimage →
kit.models.weights.

Weight loading is tested through the models that use it (tests/test_models.py, tests/test_internimage.py).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

KIT = Path(__file__).resolve().parents[1] / "kit"


@pytest.mark.slow
def test_each_module_imports_without_the_modules_above_it() -> None:
    # A fresh interpreter (in this one other tests have imported everything), importing bottom-up.
    code = (
        "import sys\n"
        "import kit.models.weights\n"
        "print(sorted(m for m in ('kit.models.model', 'kit.models.internimage') if m in sys.modules))\n"
        "import kit.models.internimage\n"
        "print(sorted(m for m in ('kit.models.model',) if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=KIT.parent)
    assert result.stdout.split("\n")[:2] == ["[]", "[]"], result.stdout


@pytest.mark.parametrize("name", ["models/model.py", "models/encoders.py", "models/internimage.py", "models/weights.py"])
def test_no_late_kit_imports(name: str) -> None:
    """An import of ``kit.*`` inside a function would hide an import cycle; they all sit at the top."""
    tree = ast.parse((KIT / name).read_text())
    late = [
        f"line {node.lineno}"
        for function in ast.walk(tree)
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(function)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kit")
        or isinstance(node, ast.Import) and any(alias.name.startswith("kit") for alias in node.names)
    ]
    assert not late, late
