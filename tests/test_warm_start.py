"""cpu_demo's source_only warm start inside one uda run (``warm_start``, kit.train.budget.warm_start_plan):
its share of the budget, its configuration against the benchmark's two runs (uda_warm), the same weights
as those two runs, and resuming across it."""

import dataclasses
import json

import pandas as pd
import pytest
import torch
from scratch import SCRATCH

from kit.bench.scoreboard import QUALITY_OVERRIDES, QUALITY_ROWS, Job, _train_config
from kit.predict.runs import load_checkpoint
from kit.train.budget import run_passes, warm_start_plan
from kit.train.config import TrainConfig
from kit.train.loop import train

_HOW = ("runs_dir", "run_name")


def _tiny(tiny, tmp_path, **overrides) -> TrainConfig:
    values = SCRATCH | dict(
        data_dir=str(tiny), runs_dir=str(tmp_path / "runs"), run_name="run", method="uda", head_channels=16,
        source_size=(48, 96), target_size=(54, 96), crop_size=(32, 32), epochs=2, steps_per_epoch=4, batch_size=2,
        warmup_steps=2, mask_block=8, eval_limit=2, progress=False, seed=3, warm_start=0.5)
    return TrainConfig(**{**values, **overrides})


def test_cpu_demo_shares_its_budget_half_and_half():
    plan = warm_start_plan(TrainConfig())
    # 16,000 passes: source_only 5 × floor(8,000 / (5 × 8 × 3)) = 5 × 66, uda 5 × floor(8,000 / (5 × 8 × 8)) = 5 × 25
    assert (plan.config.method, plan.config.epochs, plan.config.steps_per_epoch) == ("source_only", 5, 66)
    assert (plan.run.method, plan.run.epochs, plan.run.steps_per_epoch, plan.run.warm_start) == ("uda", 5, 25, 0.0)
    assert run_passes(plan.config, 0)["total"] == 7_920 and run_passes(plan.run, 0)["total"] == 8_000
    assert (plan.config.runs_dir, plan.config.run_name) == ("outputs/runs/demo", "warm_start")
    assert warm_start_plan(TrainConfig(warm_start=0.0)) is None and warm_start_plan(TrainConfig(method="source_only")) is None


@pytest.mark.parametrize("share, source_steps, uda_steps", [(0.25, 33, 37), (0.75, 100, 12)])
def test_other_shares_split_the_same_budget(share, source_steps, uda_steps):
    # 16,000 passes: floor(16,000 × share) for source_only (5 × 24 per step of an epoch), the rest for uda (5 × 64)
    plan = warm_start_plan(TrainConfig(warm_start=share))
    assert (plan.config.steps_per_epoch, plan.run.steps_per_epoch) == (source_steps, uda_steps)
    assert run_passes(TrainConfig(warm_start=share), 0)["total"] <= 16_000


def test_the_warm_start_is_the_benchmarks_uda_warm(tiny):
    """03_train's warm start trains what the scoreboard's uda_warm row trains as two runs (Job.start)."""
    job = Job("uda_warm", QUALITY_ROWS["uda_warm"], seed=1, steps=16_000, passes=True)
    start = job.start(QUALITY_ROWS["source_only"])
    benchmark_start = _train_config(start, str(tiny), dict(QUALITY_OVERRIDES))
    benchmark_run = _train_config(job, str(tiny), dict(QUALITY_OVERRIDES))
    own = TrainConfig.from_preset("cpu_demo", **{**QUALITY_OVERRIDES, "warm_start": None}, data_dir=str(tiny), seed=1)
    plan = warm_start_plan(own)

    def defining(config, *leave_out):
        return {k: v for k, v in dataclasses.asdict(config).items() if k not in (*_HOW, *leave_out)}

    assert own.warm_start == 0.5 and defining(plan.config) == defining(benchmark_start)
    assert benchmark_run.init_from == "@source_only" and plan.run.init_from is None
    assert defining(plan.run, "init_from") == defining(benchmark_run, "init_from")


def _weights(run_dir):
    state = load_checkpoint(run_dir / "last.pt")
    return {part: state[part] for part in ("model", "teacher")}


def _assert_same(a, b):
    for part in a:
        for name, value in a[part].items():
            torch.testing.assert_close(b[part][name], value, rtol=0, atol=0, msg=f"{part}.{name}")


@pytest.fixture(scope="module")
def straight(tiny, tmp_path_factory):
    """A warm-started run trained in one go, its plan, and the same two runs trained by hand."""
    tmp_path = tmp_path_factory.mktemp("warm")
    config = _tiny(tiny, tmp_path)
    plan = warm_start_plan(config)
    run = train(config)
    first = train(dataclasses.replace(plan.config, runs_dir=str(tmp_path / "by_hand"), run_name="first"))
    second = train(dataclasses.replace(plan.run, runs_dir=str(tmp_path / "by_hand"), run_name="second",
                                       init_from=str(first)))
    return run, plan, first, second


def test_a_warm_started_run_is_its_two_runs(straight):
    run, plan, first, second = straight
    # 2 epochs × 4 steps × 2 images × 8 passes = 128: 64 for source_only (2 × 6 per step of an epoch), 64 for uda (2 × 16)
    assert (plan.config.steps_per_epoch, plan.run.steps_per_epoch) == (5, 2)
    assert load_checkpoint(run / "warm_start" / "last.pt")["config"]["method"] == "source_only"
    _assert_same({"model": load_checkpoint(first / "last.pt")["model"]},
                 {"model": load_checkpoint(run / "warm_start" / "last.pt")["model"]})
    _assert_same(_weights(second), _weights(run))
    recorded = json.loads((run / "config.json").read_text())
    assert (recorded["warm_start"], recorded["steps_per_epoch"], recorded["init_from"]) == (0.5, 4, None)
    assert pd.read_csv(run / "metrics.csv")["step"].tolist() == [2, 4]
    assert pd.read_csv(run / "warm_start" / "metrics.csv")["step"].tolist() == [5, 10]


@pytest.mark.parametrize("stops", [(1,), (2,), (3,), (1, 3)])
def test_resuming_across_the_warm_start_gives_the_same_run(straight, tiny, tmp_path, stops):
    """Stopped inside the warm start, right after it, or inside the run itself (epochs 1–2 warm, 3–4 uda)."""
    run = _tiny(tiny, tmp_path)
    train(dataclasses.replace(run, stop_after_epoch=stops[0]))
    assert (tmp_path / "runs/run/last.pt").is_file() == (stops[0] > 2)
    with pytest.raises(FileExistsError, match="RESUME"):  # an interrupted warm-started run is a run
        train(run)
    for stop in stops[1:]:
        train(dataclasses.replace(run, resume=True, stop_after_epoch=stop))
    resumed = train(dataclasses.replace(run, resume=True))
    _assert_same(_weights(straight[0]), _weights(resumed))
    _assert_same({"model": load_checkpoint(straight[0] / "warm_start/last.pt")["model"]},
                 {"model": load_checkpoint(resumed / "warm_start/last.pt")["model"]})


def test_overwrite_replaces_the_warm_start_too(tiny, tmp_path):
    run = _tiny(tiny, tmp_path, epochs=1, steps_per_epoch=2)
    train(run)
    before = (tmp_path / "runs/run/warm_start/last.pt").stat().st_mtime_ns
    train(dataclasses.replace(run, overwrite=True, seed=4))
    assert (tmp_path / "runs/run/warm_start/last.pt").stat().st_mtime_ns != before
    assert load_checkpoint(tmp_path / "runs/run/warm_start/last.pt")["config"]["seed"] == 4


@pytest.mark.parametrize("overrides, error", [
    (dict(method="fisheye_tf", warm_start=0.5), r"warm_start = 0.5: .* not 'fisheye_tf'"),
    (dict(method="uda", warm_start=1.0), r"warm_start"),
    (dict(method="uda", warm_start=-0.1), r"warm_start"),
])
def test_a_warm_start_where_there_is_none_to_make_is_refused(overrides, error):
    with pytest.raises(ValueError, match=error):
        TrainConfig(**overrides)


def test_the_method_default_is_uda_s_only():
    assert TrainConfig().warm_start == 0.5 and TrainConfig(method="uda_geo").warm_start == 0.0
    assert TrainConfig(method="source_only").warm_start == 0.0
    assert TrainConfig.from_preset("solution_a").warm_start == 0.0  # solution A as published
