"""The main job's plan: every parameter it passes exists in that notebook's parameters cell."""

import ast
from pathlib import Path

import pytest

from kit.demo import steps

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _parameters(name: str) -> set[str]:
    text = (NOTEBOOKS / f"{name}.py").read_text()
    cell = text.split('# %% tags=["parameters"]', 1)[1].split("# %%", 1)[0]
    return {target.id for node in ast.parse(cell).body if isinstance(node, ast.Assign) for target in node.targets}


@pytest.mark.parametrize("name, parameters", steps("data/demo", Path("outputs/demo")))
def test_main_job_passes_only_known_parameters(name, parameters):
    known = _parameters(name)
    assert set(parameters) <= known, f"{name} has no parameter(s) {set(parameters) - known}"


def test_main_job_runs_the_notebooks_in_order_into_one_folder():
    plan = steps("data/demo", Path("outputs/demo"))
    assert [name for name, _ in plan] == ["01_eda", "02_labels_and_augment", "03_train", "04_predict"]
    assert plan[2][1]["METHOD"] == "uda_geo"
    assert plan[3][1]["RUN_NAME"] == plan[2][1]["RUN_NAME"] and plan[3][1]["RUNS_DIR"] == plan[2][1]["RUNS_DIR"]
    for _, parameters in plan:
        for key, value in parameters.items():
            if key.endswith(("OUTPUT_DIR", "RUNS_DIR")):
                assert Path(value).is_relative_to("outputs/demo")
