"""Warm starts (INIT_FROM) and offline self-training (METHOD "self_train": rounds of pseudo-labels)."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from scratch import SCRATCH

from kit.competition.labels import PSEUDO_LABEL_VALUES, VOID_INDEX
from kit.competition.layout import read_label, read_split, read_split_file
from kit.predict.runs import load_checkpoint
from kit.train.config import TrainConfig
from kit.train.loop import train
from kit.train.self_train import round_plan


def _config(tiny, tmp_path, **overrides) -> TrainConfig:
    values = SCRATCH | dict(
        data_dir=str(tiny), runs_dir=str(tmp_path / "runs"), run_name="run", method="self_train", head_channels=16,
        source_size=(48, 96), target_size=(54, 96), crop_size=(32, 32), epochs=1, steps_per_epoch=2, batch_size=2,
        warmup_steps=1, mask_block=8, eval_limit=2, progress=False, seed=5, rounds=2, round_epochs=1,
    )
    values.update(overrides)
    return TrainConfig(**values)


def _assert_same(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, rtol=0, atol=0, msg=f"{what}.{name}")


def test_round_plan_counts_the_source_round_and_the_pseudo_label_rounds(tiny, tmp_path):
    assert round_plan(_config(tiny, tmp_path, epochs=3, rounds=2, round_epochs=2)) == [0, 0, 0, 1, 1, 2, 2]
    assert round_plan(_config(tiny, tmp_path, epochs=5, rounds=1, round_epochs=None)) == [0, 0, 0, 0, 0, 1, 1]
    assert round_plan(_config(tiny, tmp_path, epochs=1, rounds=2, round_epochs=None)) == [0, 1, 2]
    assert round_plan(_config(tiny, tmp_path, epochs=2, rounds=2, round_epochs=1, init_from="x")) == [1, 2]
    assert round_plan(_config(tiny, tmp_path, method="uda", epochs=3)) == [0, 0, 0]  # one round, whatever rounds says


def test_self_train_rounds_label_the_target_and_train_on_it(tiny, tmp_path):
    run = train(_config(tiny, tmp_path))
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["round"]) == [0, 1, 2]
    assert metrics["loss_target_ce"].isna().tolist() == [True, False, False]  # round 0: source images only
    assert metrics.loc[1:, ["loss_ce", "loss_target_ce", "loss_target_dice"]].notna().all().all()
    assert load_checkpoint(run / "last.pt")["teacher"] is None
    for round_ in (1, 2):
        folder = run / f"pseudo_round{round_}"
        pseudo = read_split_file(folder / "pseudo.csv")
        assert list(pseudo.id) == list(read_split(tiny, "train_target").id)
        assert list(pseudo.img_path) == list(read_split(tiny, "train_target").img_path)
        label = read_label(pseudo.gt_path[0], allowed=PSEUDO_LABEL_VALUES)
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["quantile"] == 0.5 and summary["cap"] == 0.9
        assert label.shape == read_label(read_split(tiny, "train_target_gt").gt_path[0]).shape
    # each round labels with the model the round before ended with: the rounds' labels differ
    first, second = (read_label(run / f"pseudo_round{r}/labels/{pseudo.id[0]}.png", PSEUDO_LABEL_VALUES) for r in (1, 2))
    assert (first != second).any()


def test_self_train_resumed_across_rounds_equals_an_uninterrupted_run(tiny, tmp_path):
    straight = train(_config(tiny, tmp_path, run_name="straight"))
    train(_config(tiny, tmp_path, run_name="resumed", stop_after_epoch=1))  # stops at the end of round 0
    assert not (tmp_path / "runs/resumed/pseudo_round1").exists()
    train(_config(tiny, tmp_path, run_name="resumed", resume=True, stop_after_epoch=2))  # stops inside the rounds
    resumed = train(_config(tiny, tmp_path, run_name="resumed", resume=True))
    _assert_same(load_checkpoint(straight / "last.pt")["model"], load_checkpoint(resumed / "last.pt")["model"], "model")
    for round_ in (1, 2):
        assert (straight / f"pseudo_round{round_}/pseudo.csv").read_bytes() == \
            (resumed / f"pseudo_round{round_}/pseudo.csv").read_bytes()
        ids = read_split_file(straight / f"pseudo_round{round_}/pseudo.csv").id
        for id_ in ids:
            a, b = (run / f"pseudo_round{round_}/labels/{id_}.png" for run in (straight, resumed))
            assert a.read_bytes() == b.read_bytes()
    pd.testing.assert_frame_equal(pd.read_csv(straight / "metrics.csv").drop(columns="train_seconds"),
                                  pd.read_csv(resumed / "metrics.csv").drop(columns="train_seconds"))


def test_a_given_pseudo_split_replaces_round_ones_labels(tiny, tmp_path):
    first = train(_config(tiny, tmp_path, run_name="first", rounds=1))
    second = train(_config(tiny, tmp_path, run_name="second", init_from=str(first), pseudo_split=str(first / "pseudo_round1"),
                           rounds=2))
    assert not (second / "pseudo_round1").exists() and (second / "pseudo_round2/pseudo.csv").is_file()
    assert list(pd.read_csv(second / "metrics.csv")["round"]) == [1, 2]  # warm-started: no source round
    with pytest.raises(FileNotFoundError, match="PSEUDO_SPLIT = .*no such CSV"):
        train(_config(tiny, tmp_path, run_name="third", pseudo_split=str(tmp_path / "nowhere.csv"), init_from=str(first)))


@pytest.mark.parametrize("method", ["uda_geo", "fisheye_tf", "self_train"])
def test_init_from_starts_the_student_and_the_teacher_from_the_given_weights(tiny, tmp_path, method):
    start = train(_config(tiny, tmp_path, run_name="start", method="source_only"))
    weights = load_checkpoint(start / "last.pt")["model"]
    # learning rates 0: the parameters stay where they started (BatchNorm statistics still move)
    run = train(_config(tiny, tmp_path, method=method, init_from=str(start), lr_encoder=0.0, lr_decoder=0.0, rounds=1))
    state = load_checkpoint(run / "last.pt")
    parameters = {k for k, v in weights.items() if v.dtype.is_floating_point and "running" not in k}
    for part in ("model", "teacher") if method == "uda_geo" else ("model",):
        _assert_same({k: weights[k] for k in parameters}, {k: state[part][k] for k in parameters}, part)
    cold = train(_config(tiny, tmp_path, run_name="cold", method=method, lr_encoder=0.0, lr_decoder=0.0, rounds=1))
    cold_weights = load_checkpoint(cold / "last.pt")["model"]
    assert any(not torch.equal(cold_weights[k], weights[k]) for k in parameters)  # the test can tell the difference


def test_init_from_another_architecture_is_refused_naming_what_differs(tiny, tmp_path):
    start = train(_config(tiny, tmp_path, run_name="start", method="source_only"))
    with pytest.raises(ValueError, match=r"HEAD_KWARGS \{'channels': 16\} there, \{'channels': 8\} here"):
        train(_config(tiny, tmp_path, method="uda", init_from=str(start), head_channels=8))
    weights = load_checkpoint(start / "last.pt")["model"]
    dropped = next(iter(weights))
    torch.save({k: v for k, v in weights.items() if k != dropped}, tmp_path / "bare.pt")  # a bare state dict
    with pytest.raises(ValueError, match=rf"does not fit .*missing keys: {dropped}"):
        train(_config(tiny, tmp_path, method="uda", init_from=str(tmp_path / "bare.pt")))
    assert not (tmp_path / "runs/run").exists()  # refused before the run folder was made
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(_config(tiny, tmp_path, method="uda", init_from=str(tmp_path / "missing.pt")))


def test_pseudo_label_options_are_checked(tiny, tmp_path):
    with pytest.raises(ValueError, match="pseudo-labels are trained on by METHOD 'self_train' only, not 'uda'"):
        _config(tiny, tmp_path, method="uda", pseudo_split="x.csv")
    with pytest.raises(ValueError, match="pseudo_cap = 0: expected a finite number > 0 and ≤ 1"):
        _config(tiny, tmp_path, pseudo_cap=0)
    with pytest.raises(ValueError, match="self_train_source = 'elastic' is not one of 'fisheye_tf', 'warp'"):
        _config(tiny, tmp_path, self_train_source="elastic")
    with pytest.raises(ValueError, match="rounds = 0: expected an integer ≥ 1"):
        _config(tiny, tmp_path, rounds=0)


def test_self_train_ignores_the_pixels_its_pseudo_labels_leave_void(tiny, tmp_path):
    from kit.train.recipes import build_data, pseudo_dataset

    first = train(_config(tiny, tmp_path, run_name="first", rounds=1))
    config = _config(tiny, tmp_path)
    data = build_data(config)
    dataset = pseudo_dataset(config, data, first / "pseudo_round1/pseudo.csv")
    dataset.transform = None  # the labels as written: void becomes ignored (255), background the background class
    label = read_label(dataset.frame.gt_path[0], PSEUDO_LABEL_VALUES)
    item = dataset[0]["label"]
    assert torch.equal(item == 255, torch.from_numpy(label == VOID_INDEX))
    assert torch.equal(item == 12, torch.from_numpy(label == 255))


def test_train_notebook_runs_self_train_and_shows_its_rounds(tiny, tmp_path):
    import papermill

    notebook = Path(__file__).resolve().parents[1] / "notebooks" / "03_train.ipynb"
    papermill.execute_notebook(
        str(notebook), str(tmp_path / "03_train.ipynb"), kernel_name="python3", cwd=str(notebook.parents[1]),
        progress_bar=False, parameters=dict(
            DATA_DIR=str(tiny), RUNS_DIR=str(tmp_path / "runs"), RUN_NAME="st", METHOD="self_train", HEAD_CHANNELS=16,
            SOURCE_SIZE=[48, 96], TARGET_SIZE=[54, 96], CROP_SIZE=[32, 32], EPOCHS=1, STEPS_PER_EPOCH=2, BATCH_SIZE=2,
            WARMUP_STEPS=1, EVAL_LIMIT=2, PREVIEW_COUNT=2, ROUNDS=1))
    run = tmp_path / "runs" / "st"
    assert list(pd.read_csv(run / "metrics.csv")["round"]) == [0, 1]
    assert (run / "pseudo_round1" / "pseudo.csv").is_file() and (run / "predictions.png").is_file()
    executed = json.loads((tmp_path / "03_train.ipynb").read_text())
    shown = "".join("".join(o.get("data", {}).get("text/plain", "")) for cell in executed["cells"]
                    for o in cell.get("outputs", []))
    assert "pseudo_round1" in shown and "precision" in shown  # the rounds' table
