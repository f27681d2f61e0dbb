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


# kit's modules that subclass or build transformers' models, whose import takes seconds: imported inside the
# functions that build such a model, the one kind of late kit import allowed
LAZY = ("kit.models.mask2former", "kit.models.cityscapes", "kit.models.segformer_head")


@pytest.mark.slow
def test_each_module_imports_without_the_modules_above_it() -> None:
    # A fresh interpreter (in this one other tests have imported everything), importing bottom-up; then
    # training, prediction and a model without transformers' models load none of them
    code = (
        "import sys\n"
        "import kit.models.weights\n"
        "print(sorted(m for m in ('kit.models.model', 'kit.models.internimage') if m in sys.modules))\n"
        "import kit.models.internimage\n"
        "print(sorted(m for m in ('kit.models.model',) if m in sys.modules))\n"
        "import kit.train.loop, kit.predict.splits, kit.predict.pseudo, kit.bench.scoreboard\n"
        "from kit.models.model import create_model, head_option_names\n"
        "create_model('daformer', 'resnet18', channels=16), head_option_names('upernet')\n"
        f"lazy = {LAZY!r} + ('transformers.modeling_utils',)\n"
        "print(sorted(m for m in lazy if m in sys.modules))\n"
        "create_model('segformer', 'resnet18', channels=16)\n"
        "print(sorted(m for m in lazy if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=KIT.parent)
    assert result.stdout.split("\n")[:4] == ["[]", "[]", "[]", "['kit.models.segformer_head', 'transformers.modeling_utils']"], \
        result.stdout


def _late_kit_imports(tree: ast.AST) -> list[str]:
    return [
        f"line {node.lineno}: {module}"
        for function in ast.walk(tree)
        if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
        for node in ast.walk(function)
        for module in ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                       [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
        if module.startswith("kit")
    ]


@pytest.mark.parametrize("name", ["models/model.py", "models/heads.py", "models/encoders.py", "models/internimage.py",
                                  "models/weights.py", "predict/runs.py"])
def test_no_late_kit_imports(name: str) -> None:
    """An import of ``kit.*`` inside a function would hide an import cycle; they all sit at the top, but
    for the modules of LAZY, which only the functions that build their models import."""
    late = [line for line in _late_kit_imports(ast.parse((KIT / name).read_text())) if line.split(": ")[1] not in LAZY]
    assert not late, late


def test_the_late_import_check_sees_a_late_kit_import() -> None:
    tree = ast.parse("def f():\n    from kit.models.mask2former import X\n    import kit.data.augment\n")
    assert _late_kit_imports(tree) == ["line 2: kit.models.mask2former", "line 3: kit.data.augment"]
