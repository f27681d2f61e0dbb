"""A notebook's code run in the test's own process: the cells papermill would run, with the parameters
papermill itself injects, but without a kernel, whose start and imports cost seconds per run.

Every notebook still runs through papermill in ``tests/test_notebooks_run.py`` (01, 02, and the chain
03 → 04 → 06 → 03 → 05); the other cases of a notebook (its methods, its refusals) run its cells here."""

import os
import random
from pathlib import Path

import cv2
import matplotlib.pyplot as plt
import numpy as np
import torch
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def run_cells(name: str, parameters: dict, cwd: Path = NOTEBOOKS.parent) -> dict:
    """Run notebook ``name``'s code cells in order in one namespace, in ``cwd`` (papermill's ``cwd``),
    after the cell papermill injects for ``parameters``; returns the namespace. A cell's exception
    propagates as itself. What the cells change of the process is restored after: the working
    directory, torch's and OpenCV's threads, the global random generators (a training seeds them) and
    the open figures."""
    notebook = load_notebook_node(str(NOTEBOOKS / f"{name}.ipynb"))  # as papermill reads it
    notebook = parameterize_notebook(notebook, parameters, kernel_name="python3", language="python")
    namespace: dict = {"__name__": "__main__"}
    threads, cv2_threads, where = torch.get_num_threads(), cv2.getNumThreads(), os.getcwd()
    generators = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    os.chdir(cwd)
    try:
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type == "code":
                exec(compile(cell.source, f"{name}.ipynb, cell {index}", "exec"), namespace)
    finally:
        os.chdir(where)
        torch.set_num_threads(threads)
        cv2.setNumThreads(cv2_threads)
        random.setstate(generators[0])
        np.random.set_state(generators[1])
        torch.random.set_rng_state(generators[2])
        plt.close("all")
    return namespace
