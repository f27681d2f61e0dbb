"""Every notebooks/*.py (jupytext percent format) has an .ipynb twin with the same cells, and back."""

from pathlib import Path

import jupytext
import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def pairing_problems(folder: Path) -> list[str]:
    problems = []
    scripts = {p.stem for p in folder.glob("*.py")}
    notebooks = {p.stem for p in folder.glob("*.ipynb")}
    problems += [f"{s}.py has no {s}.ipynb (run jupytext --sync)" for s in sorted(scripts - notebooks)]
    problems += [f"{s}.ipynb has no {s}.py (run jupytext --sync)" for s in sorted(notebooks - scripts)]
    for stem in sorted(scripts & notebooks):
        a = jupytext.read(folder / f"{stem}.py")
        b = jupytext.read(folder / f"{stem}.ipynb")
        cells_a = [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in a.cells]
        cells_b = [(c.cell_type, c.source.strip(), sorted(c.metadata.get("tags", []))) for c in b.cells]
        if cells_a != cells_b:
            problems.append(f"{stem}.py and {stem}.ipynb differ (run jupytext --sync)")
    return problems


def test_every_notebook_is_paired_and_in_sync():
    assert pairing_problems(NOTEBOOKS) == []


def _write_pair(folder: Path, stem: str, py_text: str, ipynb_from: str) -> None:
    (folder / f"{stem}.py").write_text(py_text)
    jupytext.write(jupytext.reads(ipynb_from, fmt="py:percent"), folder / f"{stem}.ipynb")


PY = '# %% tags=["parameters"]\nEPOCHS = 2  # 2 for the CPU demo\n\n# %%\nprint(EPOCHS)\n'


@pytest.mark.parametrize(
    "edit, expected",
    [
        (lambda f: None, []),
        (lambda f: (f / "a.ipynb").unlink(), ["a.py has no a.ipynb (run jupytext --sync)"]),
        (lambda f: (f / "a.py").unlink(), ["a.ipynb has no a.py (run jupytext --sync)"]),
        (lambda f: (f / "a.py").write_text(PY.replace("2", "3")), ["a.py and a.ipynb differ (run jupytext --sync)"]),
        (lambda f: (f / "a.py").write_text(PY.replace('tags=["parameters"]', "")), ["a.py and a.ipynb differ (run jupytext --sync)"]),
    ],
)
def test_pairing_check_detects_problems(tmp_path, edit, expected):
    _write_pair(tmp_path, "a", PY, PY)
    edit(tmp_path)
    assert pairing_problems(tmp_path) == expected


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.stem)
def test_papermill_shows_every_parameter_with_its_type_and_comment(path):
    # papermill --help-notebook reads the parameters cell line by line and silently skips a line it
    # cannot parse (e.g. an annotation with "|", or a second "=" in the comment)
    import ast

    import papermill

    cell = next(c for c in jupytext.read(path).cells if "parameters" in c.metadata.get("tags", []))
    body = ast.parse(cell.source).body
    assert all(isinstance(node, ast.AnnAssign) for node in body), "every parameter has a type annotation"
    shown = papermill.inspect_notebook(str(path))
    assert list(shown) == [node.target.id for node in body]
    for name, parameter in shown.items():
        assert parameter["inferred_type_name"] not in ("None", "") and parameter["help"], name
