"""The main job's plan: every parameter it passes exists in that notebook's parameters cell."""

import ast
from pathlib import Path

import pytest

from kit.bench.demo import steps
from kit.train.config import TrainConfig

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _parameters(name: str) -> set[str]:
    text = (NOTEBOOKS / f"{name}.py").read_text()
    cell = text.split('# %% tags=["parameters"]', 1)[1].split("# %%", 1)[0]
    body = ast.parse(cell).body
    return ({target.id for node in body if isinstance(node, ast.Assign) for target in node.targets}
            | {node.target.id for node in body if isinstance(node, ast.AnnAssign)})


@pytest.mark.parametrize("name, parameters", steps("data/demo", Path("outputs/demo")))
def test_main_job_passes_only_known_parameters(name, parameters):
    known = _parameters(name)
    assert set(parameters) <= known, f"{name} has no parameter(s) {set(parameters) - known}"


def test_main_job_runs_the_notebooks_in_order_into_one_folder():
    plan = steps("data/demo", Path("outputs/demo"))
    assert [name for name, _ in plan] == ["01_eda", "02_labels_and_augment", "03_train", "04_predict"]
    assert "METHOD" not in plan[2][1]  # 03's default preset, cpu_demo, whose method is uda
    trains = TrainConfig.from_parameters({k: v for k, v in plan[2][1].items()})
    assert (trains.method, trains.warm_start) == ("uda", 0.5)  # the recommended uda_warm (docs/RESULTS.md)
    assert plan[3][1]["RUN_NAME"] == plan[2][1]["RUN_NAME"] and plan[3][1]["RUNS_DIR"] == plan[2][1]["RUNS_DIR"]
    for _, parameters in plan:
        for key, value in parameters.items():
            if key.endswith(("OUTPUT_DIR", "RUNS_DIR")):
                assert Path(value).is_relative_to("outputs/demo")


def test_overwrite_refuses_an_output_folder_the_demo_did_not_make(tmp_path):
    import kit.bench.demo

    outputs = tmp_path / "outputs"
    (outputs / "bench_quality").mkdir(parents=True)
    (outputs / "bench_quality" / "quality.md").write_text("an afternoon of benchmarking")
    with pytest.raises(FileExistsError, match="not one of the kit's output folders, so nothing was removed"):
        kit.bench.demo.main(["--out", str(outputs), "--data", str(tmp_path / "data"), "--overwrite"])
    assert (outputs / "bench_quality" / "quality.md").read_text() == "an afternoon of benchmarking"


@pytest.mark.parametrize("unfinished", [True, False])
def test_an_unfinished_synthetic_dataset_is_generated_again(tmp_path, monkeypatch, unfinished):
    import kit.bench.demo
    from kit.common.files import prepare_output_dir, write_text

    data = tmp_path / "data"
    if unfinished:  # what an interrupted generation leaves: images, no CSVs
        write_text(prepare_output_dir(data) / "train_source_image" / "TRAIN_SOURCE_0000.png", "x")
    calls = []

    class Stop(Exception):
        pass

    def generate(out, **kwargs):
        calls.append((out, kwargs))
        raise Stop

    monkeypatch.setattr(kit.bench.demo, "generate", generate)
    with pytest.raises(Stop):
        kit.bench.demo.main(["--out", str(tmp_path / "out"), "--data", str(data)])
    assert calls == [(str(data), {"preset": "demo", "seed": 0, "workers": 2, "overwrite": unfinished})]
