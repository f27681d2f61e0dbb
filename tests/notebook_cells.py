"""A notebook's code run in the test's own process: the cells papermill would run, with the parameters
papermill itself injects, but without a kernel, whose start and imports cost seconds per run.

Every notebook still runs through papermill in ``tests/test_notebooks_run.py`` (01, 02, and the chain
03 → 04 → 06 → 03 → 05); the other cases of a notebook (its methods, its refusals) run its cells here."""

import os
from pathlib import Path

import matplotlib.pyplot as plt
from isolation import process_state_kept
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_cells(name: str, parameters: dict, cwd: Path = NOTEBOOKS.parent) -> dict:
    """Run notebook ``name``'s code cells in order in one namespace, in ``cwd`` (papermill's ``cwd``),
    after the cell papermill injects for ``parameters``; returns the namespace. A cell's exception
    propagates as itself. What the cells change of the process is restored after: the working
    directory, torch's and OpenCV's threads, the global random generators (a training seeds them) and
    the open figures (:func:`isolation.process_state_kept`)."""
    notebook = load_notebook_node(str(NOTEBOOKS / f"{name}.ipynb"))  # as papermill reads it
    notebook = parameterize_notebook(notebook, parameters, kernel_name="python3", language="python")
    namespace: dict = {"__name__": "__main__"}
    where = os.getcwd()
    os.chdir(cwd)
    try:
        with process_state_kept():
            for index, cell in enumerate(notebook.cells):
                if cell.cell_type == "code":
                    exec(compile(cell.source, f"{name}.ipynb, cell {index}", "exec"), namespace)
    finally:
        os.chdir(where)
        plt.close("all")
    return namespace
