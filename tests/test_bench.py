"""python -m kit.bench: the scoreboard commands' arguments reach kit.bench.scoreboard (the benchmarks
themselves: tests/test_scoreboard.py)."""

import pytest

import kit.bench.cli
import kit.bench.variants


@pytest.fixture
def calls(monkeypatch):
    seen = []
    for name in ("bench_quality", "bench_tune", "bench_ladder"):
        monkeypatch.setattr(kit.bench.cli, name, lambda *args, name=name, train_missing, **kw: seen.append((name, args, *kw.values()))
                            if train_missing else seen.append((name, "report only")))
    return seen


def test_seeds_take_one_or_several_values_and_seed_is_an_alias(calls):
    kit.bench.cli.main(["quality", "--data", "d", "--out", "o", "--seed", "3"])
    kit.bench.cli.main(["quality", "--seeds", "0", "5", "--jobs", "2", "--budget", "0.5", "--overwrite"])
    kit.bench.cli.main(["quality"])  # the scoreboard: three seeds at the full budget
    assert calls == [("bench_quality", ("d", "o", 1.0, [3], False, 1, 1)),
                     ("bench_quality", ("data/demo", "outputs/bench_quality", 0.5, [0, 5], True, 1, 2)),
                     ("bench_quality", ("data/demo", "outputs/bench_quality", 1.0, [0, 1, 2], False, 1, 1))]


def test_tune_and_ladder_defaults_and_choices(calls):
    kit.bench.cli.main(["tune", "--variant", "uda_geo_untuned", "uda", "--threads", "2"])
    kit.bench.cli.main(["tune", "--variant", "self_train_warm", "--reference", "fisheye_tf"])
    kit.bench.cli.main(["ladder"])
    kit.bench.cli.main(["ladder", "--rung", "source_only", "mix_background", "--seeds", "4"])
    assert calls == [
        ("bench_tune", ("data/demo_val", "outputs/tune", ["uda_geo_untuned", "uda"], 0.5, [0], False, 2, 1), "uda_geo_untuned"),
        ("bench_tune", ("data/demo_val", "outputs/tune", ["self_train_warm"], 0.5, [0], False, 1, 1), "fisheye_tf"),
        ("bench_ladder", ("data/demo", "outputs/bench_quality", list(kit.bench.variants.LADDER), 1.0, [0, 1, 2], False, 1, 1)),
        ("bench_ladder", ("data/demo", "outputs/bench_quality", ["source_only", "mix_background"], 1.0, [4], False, 1, 1)),
    ]
    with pytest.raises(SystemExit):
        kit.bench.cli.main(["ladder", "--rung", "no_rung"])


def test_report_only_trains_nothing(calls):
    kit.bench.cli.main(["quality", "--report-only"])
    kit.bench.cli.main(["ladder", "--report-only", "--budget", "0.25"])
    assert calls == [("bench_quality", "report only"), ("bench_ladder", "report only")]


def test_the_gpu_check_runs_its_cases_on_a_cpu_and_fails_on_a_nan(tiny, tmp_path, monkeypatch, capsys):
    """The GPU check's code at toy sizes on the CPU (no test depends on a GPU): every case trains,
    the table has a row per case, and a non-finite loss fails the case and the exit code."""
    import pandas as pd

    import kit.bench.gpu

    args = ["--device", "cpu", "--data-dir", str(tiny), "--out", str(tmp_path / "gpu"), "--size", "32", "--steps", "1",
            "--images", "3", "--batch-size", "2", "--uda-encoder", "pvt_v2_b0"]
    assert kit.bench.gpu.main(args) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0] for row in rows] == [
        "| uda pvt_v2_b0 32² bf16", "| uda pvt_v2_b0 32² fp16", "| uda pvt_v2_b0 32² none",
        "| mask2former internimage_t 32² bf16", "| pseudo-label 3 images (whole + flip)"]
    assert all(row.endswith("| ok |") for row in rows)
    real_train = kit.bench.gpu.train

    def diverging(config):
        run = real_train(config)
        metrics = pd.read_csv(run / "metrics.csv")
        metrics.loc[0, "loss_ce"] = float("nan")
        metrics.to_csv(run / "metrics.csv", index=False)
        return run

    monkeypatch.setattr(kit.bench.gpu, "train", diverging)
    with pytest.raises(SystemExit) as exit_:  # through python -m kit.bench's command line
        kit.bench.cli.main(["gpu", *args])
    assert exit_.value.code == 1
    assert "FloatingPointError: a loss is not finite" in capsys.readouterr().out


def test_the_scale_dry_run_passes_each_notebook_parameters_it_has():
    """``python -m kit.bench scale`` runs at full size only by hand (half an hour): its stages must at
    least name parameters their notebooks have and TrainConfig fields that exist."""
    import dataclasses
    from pathlib import Path

    import papermill

    import kit.bench.scale
    from kit.train.config import TrainConfig

    root = Path(__file__).resolve().parents[1]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    stages = kit.bench.scale.stages("data", Path("out"))
    assert [s[1] for s in stages] == ["01_eda", "02_labels_and_augment", "03_train", "03_train", "06_pseudo_label",
                                      "04_predict", "05_ensemble"]
    for _, notebook, parameters, _, _ in stages:
        known = papermill.inspect_notebook(str(root / f"notebooks/{notebook}.ipynb"))
        assert set(parameters) <= set(known), (notebook, set(parameters) - set(known))
        assert set(parameters.get("OVERRIDES", {})) <= fields
