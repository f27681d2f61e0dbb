"""The quality benchmark and the tuning sweep, at a one-step budget on the tiny preset."""

import json
import math

import pytest

import kit.bench
import kit.files
from kit.data import CLASSES


@pytest.fixture
def small_quality(monkeypatch):
    # the tiny preset's frames are small: train and predict at its scale, one step per method
    monkeypatch.setitem(kit.bench.QUALITY_CONFIG, "source_size", (48, 96))
    monkeypatch.setitem(kit.bench.QUALITY_CONFIG, "target_size", (54, 96))
    monkeypatch.setitem(kit.bench.QUALITY_CONFIG, "crop_size", (32, 32))
    monkeypatch.setitem(kit.bench.QUALITY_CONFIG, "batch_size", 2)
    monkeypatch.setitem(kit.bench.QUALITY_CONFIG, "pretrained", False)
    monkeypatch.setitem(kit.bench.QUALITY_OVERRIDES, "eval_limit", 2)
    monkeypatch.setitem(kit.bench.QUALITY_CONFIG, "mask_block", 8)
    return 1 / kit.bench.QUALITY_STEPS


def test_quality_table_gap_closed_and_refusal_to_overwrite(tiny, tmp_path, small_quality):
    out = tmp_path / "quality"
    kit.bench.bench_quality(str(tiny), str(out), small_quality, seed=0, overwrite=False, threads=1)
    report = json.loads((out / "quality.json").read_text())
    results = report["results"]
    assert list(results) == ["source_only", "fisheye_tf", "uda", "uda_geo", "oracle"]
    low, high = results["source_only"]["mIoU"], results["oracle"]["mIoU"]
    for method, r in results.items():
        present = [r["iou"][c] for c in CLASSES if r["iou"][c] is not None]
        assert r["mIoU"] == pytest.approx(sum(present) / len(present))
        if high != low:
            assert r["gap_closed"] == pytest.approx((r["mIoU"] - low) / (high - low))
    if high != low:
        assert results["source_only"]["gap_closed"] == 0 and results["oracle"]["gap_closed"] == pytest.approx(1)
    table = (out / "quality.md").read_text()
    assert all(f"| {method} | {r['mIoU']:.4f} |" in table for method, r in results.items())
    with pytest.raises(FileExistsError):
        kit.bench.bench_quality(str(tiny), str(out), small_quality, seed=0, overwrite=False, threads=1)


def test_methods_in_parallel_processes_give_the_sequential_results(tiny, tmp_path, small_quality):
    # the spawned processes must train with the caller's (here: patched) settings, not the module's
    kwargs = dict(seed=0, overwrite=False, threads=1)
    kit.bench.bench_quality(str(tiny), str(tmp_path / "one"), small_quality, processes=1, **kwargs)
    kit.bench.bench_quality(str(tiny), str(tmp_path / "two"), small_quality, processes=2, **kwargs)
    one, two = (json.loads((tmp_path / name / "quality.json").read_text())["results"] for name in ("one", "two"))
    assert list(one) == list(two)
    for method in one:
        assert two[method]["iou"] == pytest.approx(one[method]["iou"], nan_ok=True), method


def test_tune_writes_one_result_per_variant_and_never_redoes_one_silently(tiny, tmp_path, small_quality):
    out = tmp_path / "tune"
    kit.bench.bench_tune(str(tiny), str(out), ["uda_geo_untuned"], small_quality, seed=0, threads=1, overwrite=False)
    result = json.loads((out / "uda_geo_untuned.json").read_text())
    assert result["overrides"] == kit.bench.TUNE_VARIANTS["uda_geo_untuned"] and result["steps"] == 1
    assert math.isfinite(result["mIoU"]) and f"| uda_geo_untuned | {result['mIoU']:.4f} |" in (out / "tune.md").read_text()
    with pytest.raises(FileExistsError, match="uda_geo_untuned.json"):
        kit.bench.bench_tune(str(tiny), str(out), ["uda_geo_untuned"], small_quality, seed=0, threads=1, overwrite=False)
    with pytest.raises(ValueError, match="unknown variant"):
        kit.bench.bench_tune(str(tiny), str(out), ["nope"], small_quality, seed=0, threads=1, overwrite=False)


def test_tune_table_holds_only_results_of_its_own_steps_seed_and_data(tmp_path):
    iou = {c: 0.5 for c in CLASSES}
    for name, steps, seed in (("now", 300, 0), ("older", 600, 0), ("other_seed", 300, 1)):
        kit.files.write_json(tmp_path / f"{name}.json", {"iou": iou, "mIoU": 0.5, "train_seconds": 1.0,
                                                       "steps": steps, "seed": seed, "data": "data/demo_val"})
    table = kit.bench.write_tune_table(tmp_path, "data/demo_val", steps=300, seed=0)
    assert "| now | 0.5000 |" in table and "| older |" not in table and "| other_seed |" not in table
    assert "Not tabulated (other settings): older (600 steps, seed 0, data/demo_val), other_seed (300 steps, seed 1" in table
    assert (tmp_path / "tune.md").read_text() == table


def test_the_benchmark_scores_with_the_border_training_used(tiny, tmp_path, small_quality, monkeypatch):
    # Otsu (solution B's threshold 108 fits the real mean target image, not the synthetic one), at
    # the run's target size, from as many images as training averaged
    import kit.infer

    seen = []
    real = kit.infer.make_border

    def spy(root, kind, **kwargs):
        seen.append((kind, kwargs))
        return real(root, kind, **kwargs)

    monkeypatch.setattr(kit.infer, "make_border", spy)
    kit.bench._ellipse_border.cache_clear()  # computed once per process: an earlier test may have cached it
    kit.bench.bench_tune(str(tiny), str(tmp_path / "tune"), ["uda_geo_untuned"], small_quality, seed=0, threads=1,
                         overwrite=False)
    assert seen == [("ellipse", {"size": (96, 54), "threshold": None, "max_images": 200})]


def test_quality_config_is_03_trains_parameters_cell():
    # the benchmark claims to train with 03_train's CPU values: every TrainConfig field 03 sets,
    # apart from a run's identity and the benchmark's declared departures, must agree
    import ast
    import dataclasses
    import pathlib

    import papermill

    from kit.config import TrainConfig

    notebook = pathlib.Path(__file__).parents[1] / "notebooks/03_train.ipynb"
    cell = {name.lower(): ast.literal_eval(p["default"]) for name, p in papermill.inspect_notebook(str(notebook)).items()}
    identity = {"data_dir", "runs_dir", "run_name", "method", "epochs", "steps_per_epoch", "seed", "cpu_threads",
                "resume", "overwrite", "device", "preview_count"}
    assert set(kit.bench.QUALITY_CONFIG) <= set(cell) - identity
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for name, value in cell.items():
        if name in identity:
            continue
        used = kit.bench.QUALITY_CONFIG.get(name, defaults[name])
        assert _as_tuple(used) == _as_tuple(value), f"{name}: benchmark {used!r}, 03_train {value!r}"
    assert set(kit.bench.QUALITY_OVERRIDES) == {"eval_limit", "progress"}


def _as_tuple(value):
    return tuple(value) if isinstance(value, list) else value
