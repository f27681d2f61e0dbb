"""Warm starts (INIT_FROM) and offline self-training (METHOD "self_train": rounds of pseudo-labels).

Most tests read one run trained once for the module (``straight``): a source round and two
pseudo-label rounds of two epochs each, with the checkpoints the rounds' labels come from kept aside;
``resumed`` is the same run interrupted at the end of round 0 and in the middle of round 1.
"""

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import albumentations as A
import numpy as np
import pandas as pd
import pytest
import torch
from scratch import SCRATCH

import kit.data.datasets
import kit.train.loop
from kit.common.files import results_in
from kit.competition.labels import BACKGROUND_CLASS, IGNORE_INDEX, PSEUDO_LABEL_VALUES, VALID_LABEL_VALUES, VOID_INDEX
from kit.competition.layout import read_label, read_split, read_split_file
from kit.data.augment import FisheyeWarp
from kit.data.datasets import normalize
from kit.data.fisheye import pinhole_to_fisheye_maps
from kit.predict.pseudo import CSV_NAME, make_pseudo_labels
from kit.predict.runs import load_checkpoint, load_run
from kit.predict.splits import run_border
from kit.predict.tta import InferenceSettings
from kit.train.checkpoints import save_checkpoint
from kit.train.config import TrainConfig
from kit.train.loop import train
from kit.train.recipes import build_data, build_model, epoch_batches, pseudo_dataset, seed_all
from kit.train.self_train import round_plan

pytestmark = pytest.mark.slow  # trains, or starts processes: `pytest -m "not slow"` leaves it out

# epochs 0 | 1 2 | 3 4 of rounds 0 | 1 | 2: round r is labelled by the model epoch 2r - 2 ended with
ROUNDS = dict(rounds=2, round_epochs=2, steps_per_epoch=1)


def _config(tiny, tmp_path, **overrides) -> TrainConfig:
    values = SCRATCH | dict(
        data_dir=str(tiny), runs_dir=str(tmp_path / "runs"), run_name="run", method="self_train", head_channels=16,
        source_size=(48, 96), target_size=(54, 96), crop_size=(32, 32), epochs=1, steps_per_epoch=2, batch_size=2,
        warmup_steps=1, mask_block=8, eval_limit=2, progress=False, seed=5, rounds=2, round_epochs=1,
    )
    values.update(overrides)
    return TrainConfig(**values)


def _train_keeping_checkpoints(config: TrainConfig, ended: dict[int, Path], into: Path) -> Path:
    """``train(config)``, keeping the ``last.pt`` the loop writes at the end of epochs 0, 2 and 4: ``ended[epoch]``
    is a run folder (``into/epoch<e>``: config.json and a hard link to that checkpoint, which the next one replaces)."""

    def save_and_keep(path: Path, state: dict) -> None:
        save_checkpoint(path, state)
        if state["epoch"] in (0, 2, 4):
            ended[state["epoch"]] = kept = into / f"epoch{state['epoch']}"
            kept.mkdir(parents=True)
            os.link(path, kept / "last.pt")
            shutil.copy(path.parent / "config.json", kept / "config.json")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(kit.train.loop, "save_checkpoint", save_and_keep)
        return train(config)


@pytest.fixture(scope="module")
def straight(tiny, tmp_path_factory) -> SimpleNamespace:
    """The ROUNDS run trained in one go: ``run`` its folder, ``ended[e]`` the checkpoint epoch e ended with."""
    root = tmp_path_factory.mktemp("straight")
    ended = {}
    run = _train_keeping_checkpoints(_config(tiny, root, **ROUNDS), ended, root / "ended")
    return SimpleNamespace(run=run, ended=ended)


@pytest.fixture(scope="module")
def resumed(tiny, tmp_path_factory) -> SimpleNamespace:
    """The same run stopped at the end of round 0, resumed and stopped again after the first of round 1's
    two epochs, resumed to the end: ``run``, ``ended`` as in ``straight``, and what the folder held
    after the first stop (``after_round_0``)."""
    root = tmp_path_factory.mktemp("resumed")
    ended = {}
    run = _train_keeping_checkpoints(_config(tiny, root, stop_after_epoch=1, **ROUNDS), ended, root / "ended")
    after_round_0 = results_in(run)
    _train_keeping_checkpoints(_config(tiny, root, resume=True, stop_after_epoch=2, **ROUNDS), ended, root / "ended")
    _train_keeping_checkpoints(_config(tiny, root, resume=True, **ROUNDS), ended, root / "ended")
    return SimpleNamespace(run=run, ended=ended, after_round_0=after_round_0)


def _assert_same(a, b, what: str) -> None:
    """``a`` and ``b`` (state dicts, optimizer states: nested dicts and lists of tensors) bit for bit."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), what
        for key, value in a.items():
            _assert_same(value, b[key], f"{what}.{key}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), what
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{what}[{i}]")
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=what)
    else:
        assert a == b, f"{what}: {a!r} != {b!r}"


def _label_maps(folder: Path) -> dict[str, np.ndarray]:
    """id → label map of the pseudo-label folder ``folder``."""
    return {row.id: read_label(row.gt_path, PSEUDO_LABEL_VALUES)
            for row in read_split_file(folder / CSV_NAME).itertuples()}


def _same_maps(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _labels_of(run_folder: Path, data_dir: Path, out: Path) -> dict[str, np.ndarray]:
    """What kit.predict.pseudo makes of the target images with the model of ``run_folder``'s last.pt, as
    self_train documents its rounds: whole image + flip, the run's ellipse border, the run's thresholds."""
    run = load_run(run_folder, "last.pt", device="cpu")
    values = run[1].values
    made = make_pseudo_labels([run], data_dir, out, settings=InferenceSettings(mode="whole", flip=True),
                              quantile=values["pseudo_quantile"], cap=values["pseudo_cap"],
                              border=run_border([run], data_dir, "ellipse"), background=values["pseudo_background"],
                              balanced=values["pseudo_balanced"], progress=False)
    return _label_maps(made.folder)


def test_round_plan_counts_the_source_round_and_the_pseudo_label_rounds(tiny, tmp_path):
    assert round_plan(_config(tiny, tmp_path, epochs=3, rounds=2, round_epochs=2)) == [0, 0, 0, 1, 1, 2, 2]
    assert round_plan(_config(tiny, tmp_path, epochs=5, rounds=1, round_epochs=None)) == [0, 0, 0, 0, 0, 1, 1]
    assert round_plan(_config(tiny, tmp_path, epochs=1, rounds=2, round_epochs=None)) == [0, 1, 2]
    assert round_plan(_config(tiny, tmp_path, epochs=2, rounds=2, round_epochs=1, init_from="x")) == [1, 2]
    assert round_plan(_config(tiny, tmp_path, method="uda", epochs=3)) == [0, 0, 0]  # one round, whatever rounds says
    assert round_plan(_config(tiny, tmp_path, **ROUNDS)) == [0, 1, 1, 2, 2]  # the module's run


def test_self_train_rounds_label_the_target_and_train_on_it(tiny, straight):
    run = straight.run
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["round"]) == [0, 1, 1, 2, 2]
    assert metrics["loss_target_ce"].isna().tolist() == [True, False, False, False, False]  # round 0: source only
    assert metrics.loc[1:, ["loss_ce", "loss_target_ce", "loss_target_dice"]].notna().all().all()
    assert load_checkpoint(run / "last.pt")["teacher"] is None
    for round_ in (1, 2):
        folder = run / f"pseudo_round{round_}"
        pseudo = read_split_file(folder / CSV_NAME)
        assert list(pseudo.id) == list(read_split(tiny, "train_target").id)
        assert list(pseudo.img_path) == list(read_split(tiny, "train_target").img_path)
        summary = json.loads((folder / "summary.json").read_text())
        assert summary["quantile"] == 0.5 and summary["cap"] == 0.9
        assert summary["settings"] == {"mode": "whole", "stride": None, "scales": [1.0], "flip": True}
        label = read_label(pseudo.gt_path[0], allowed=PSEUDO_LABEL_VALUES)
        assert label.shape == read_label(read_split(tiny, "train_target_gt").gt_path[0]).shape


def test_each_round_labels_with_the_model_the_round_before_ended_with(tiny, tmp_path, straight):
    """Round 1 starts at epoch 1, round 2 at epoch 3: their labels are those the checkpoints of epochs 0 and 2
    give, loaded and labelled here with kit.predict.pseudo, and no other checkpoint's."""
    labels = {epoch: _labels_of(straight.ended[epoch], tiny, tmp_path / f"epoch{epoch}") for epoch in (0, 2, 4)}
    rounds = {round_: _label_maps(straight.run / f"pseudo_round{round_}") for round_ in (1, 2)}
    assert _same_maps(rounds[1], labels[0]), "round 1's labels are not those of the checkpoint round 0 ended with"
    assert _same_maps(rounds[2], labels[2]), "round 2's labels are not those of the checkpoint round 1 ended with"
    # the checkpoints label differently, so that a round labelled by another model would show
    assert not _same_maps(labels[0], labels[2]) and not _same_maps(labels[2], labels[4])
    assert not _same_maps(labels[0], labels[4])


def test_self_train_resumed_inside_a_round_equals_an_uninterrupted_run(straight, resumed):
    assert "pseudo_round1" not in resumed.after_round_0  # stopped at the end of round 0: round 1 labels on resuming
    # stopped again after epoch 1, the first of round 1's two: epoch 2 resumed the round's optimiser and schedule
    for epoch in (2, 4):
        a, b = (load_checkpoint(run.ended[epoch] / "last.pt") for run in (straight, resumed))
        assert a["epoch"] == b["epoch"] == epoch
        for part in ("model", "optimizer", "scheduler", "scaler"):
            _assert_same(a[part], b[part], f"epoch {epoch} {part}")
    for round_ in (1, 2):
        assert (straight.run / f"pseudo_round{round_}/pseudo.csv").read_bytes() == \
            (resumed.run / f"pseudo_round{round_}/pseudo.csv").read_bytes()
        assert _same_maps(_label_maps(straight.run / f"pseudo_round{round_}"),
                          _label_maps(resumed.run / f"pseudo_round{round_}"))
    pd.testing.assert_frame_equal(pd.read_csv(straight.run / "metrics.csv").drop(columns="train_seconds"),
                                  pd.read_csv(resumed.run / "metrics.csv").drop(columns="train_seconds"))


def test_a_given_pseudo_split_is_what_round_one_trains_on(tiny, tmp_path, straight, monkeypatch):
    # two of the three images, their label files copied: a split no run made, whose files no run reads but from here
    given = read_split_file(straight.run / "pseudo_round1" / CSV_NAME).iloc[[0, 2]]
    (tmp_path / "given").mkdir()
    given["gt_path"] = [shutil.copy(path, tmp_path / "given") for path in given.gt_path]
    given.to_csv(tmp_path / "given.csv", index=False)  # absolute paths
    read = []

    def reading(path, allowed=VALID_LABEL_VALUES):
        if allowed == PSEUDO_LABEL_VALUES:  # a pseudo-label file: the target batches'
            read.append(str(path))
        return read_label(path, allowed)

    monkeypatch.setattr(kit.data.datasets, "read_label", reading)
    run = train(_config(tiny, tmp_path, init_from=str(straight.run), pseudo_split=str(tmp_path / "given.csv"), rounds=1,
                        steps_per_epoch=1))
    assert list(pd.read_csv(run / "metrics.csv")["round"]) == [1]  # warm-started: no source round
    assert len(read) == 2  # one step, a batch of 2: a pass over the given split
    assert sorted(set(read)) == sorted(given.gt_path), "round 1's target batches are not the given split's"
    assert not (run / "pseudo_round1").exists()
    with pytest.raises(FileNotFoundError, match="PSEUDO_SPLIT = .*no such CSV"):
        train(_config(tiny, tmp_path, run_name="third", pseudo_split=str(tmp_path / "nowhere.csv"),
                      init_from=str(straight.run)))


def test_self_train_on_target_images_without_labels(tiny, tmp_path, straight):
    """The competition's case: no train_target_gt (nor test_gt). Round 1's labels are those of the same run on
    the labelled copy (the held-out labels never reach them); the fisheye evaluation is skipped, not failed."""
    bare = tmp_path / "bare"
    shutil.copytree(tiny, bare, ignore=shutil.ignore_patterns("train_target_gt*", "test_gt*", "kit_stats.json"))
    run = train(_config(bare, tmp_path, stop_after_epoch=2, **ROUNDS))  # round 0 and the first epoch of round 1
    assert _same_maps(_label_maps(run / "pseudo_round1"), _label_maps(straight.run / "pseudo_round1")), \
        "round 1's labels differ from the same run's on the labelled data"
    tables = [json.loads((r / "pseudo_round1/summary.json").read_text())["table"] for r in (run, straight.run)]
    assert {"precision", "recall"}.isdisjoint(tables[0][0]) and {"precision", "recall"} <= set(tables[1][0])
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["round"]) == [0, 1] and metrics["loss_target_ce"].notna().tolist() == [False, True]
    assert "fisheye_miou" not in metrics and metrics["source_val_miou"].notna().all()
    assert load_checkpoint(run / "last.pt")["monitor"] == "source_val_miou"
    with pytest.raises(ValueError, match=r"has no train_target_gt\.csv to compute it from \(the real competition "
                                         r"data has no fisheye labels\)"):
        train(_config(bare, tmp_path, run_name="scored", monitor="fisheye_miou"))


def _as_trained(label: np.ndarray) -> torch.Tensor:
    """A source label file's values as training sees them: background the background class, void ignored."""
    return torch.from_numpy(np.where(label == IGNORE_INDEX, BACKGROUND_CLASS,
                                     np.where(label == VOID_INDEX, IGNORE_INDEX, label))).long()


def test_self_train_source_warp_trains_on_the_kits_fisheye_warp_of_the_source_images(tiny, tmp_path, monkeypatch):
    """Each source image of a batch is the kit's warp (kit.data.fisheye) of its resized source image through
    one of the run's cameras (FisheyeWarp's pool from the run's seed), maybe mirrored."""
    monkeypatch.setattr(A.ColorJitter, "apply", lambda self, img, **params: img)  # colours kept: geometry compared
    (th, tw), source_size = (54, 96), (54, 96)  # the crop: the whole fisheye frame; no source smaller than it
    warp = FisheyeWarp(size=(tw, th), src_hfov_deg=90.0, fov_deg=(190.0, 210.0), seed=5)

    def warps_in(source: str) -> list[bool]:
        """For each item of the first batch of epoch 1: is it one of its image's warps?"""
        config = _config(tiny, tmp_path, self_train_source=source, crop_size=(th, tw), source_size=source_size)
        assert (config.seed, config.src_hfov_deg, tuple(config.fisheye_fov_deg)) == (5, 90.0, (190.0, 210.0))
        data = build_data(config)
        batch = next(epoch_batches(data, config, epoch=1)[0])
        mean, std = data.source_stats
        ids, found = list(data.train.frame.id), []
        for image, label, id_ in zip(batch["image"], batch["label"], batch["id"]):
            pixels, truth = data.train.load(ids.index(id_))  # as read (the sky-bonnet fix applied), not augmented
            resized = A.Resize(*source_size)(image=pixels, mask=truth)
            views = []
            for camera in warp.cameras:
                maps = pinhole_to_fisheye_maps((source_size[1], source_size[0]), 90.0, (tw, th), **camera)
                view = warp.apply(resized["image"], maps=maps), warp.apply_to_mask(resized["mask"], maps=maps)
                views += [view, tuple(np.ascontiguousarray(v[:, ::-1]) for v in view)]  # and mirrored
            found.append(any(torch.equal(normalize(v, mean, std), image) and torch.equal(_as_trained(m), label)
                             for v, m in views))
        return found

    assert warps_in("warp") == [True, True], "a warp run's source images are not the kit's warps of them"
    assert warps_in("fisheye_tf") == [False, False]  # solution B's transformation is no such warp: the test can tell


def test_a_round_refuses_a_folder_of_the_users_where_its_labels_go(tiny, tmp_path):
    run = train(_config(tiny, tmp_path, stop_after_epoch=1))  # round 0 only
    folder = run / "pseudo_round1"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    checkpoint = (run / "last.pt").read_bytes()
    with pytest.raises(FileExistsError, match=rf"round 1's pseudo-labels go to {re.escape(str(folder))}, which holds "
                                              r"notes\.txt but is no pseudo-label folder.*nothing was removed"):
        train(_config(tiny, tmp_path, resume=True))
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"] and (folder / "notes.txt").read_text() == "mine"
    assert (run / "last.pt").read_bytes() == checkpoint  # nothing trained on
    assert not [p.name for p in run.iterdir() if p.name.startswith(".pseudo_round1")]  # no staging folder left


@pytest.mark.parametrize("method", ["uda_geo", "fisheye_tf", "self_train"])
def test_init_from_starts_the_student_and_the_teacher_from_the_given_weights(tiny, tmp_path, straight, method):
    weights = load_checkpoint(straight.run / "last.pt")["model"]
    # learning rates 0: the parameters stay where they started (BatchNorm statistics still move)
    config = _config(tiny, tmp_path, method=method, init_from=str(straight.run), lr_encoder=0.0, lr_decoder=0.0,
                     rounds=1, steps_per_epoch=1)
    run = train(config)
    state = load_checkpoint(run / "last.pt")
    parameters = {k for k, v in weights.items() if v.dtype.is_floating_point and "running" not in k}
    for part in ("model", "teacher") if method == "uda_geo" else ("model",):
        _assert_same({k: weights[k] for k in parameters}, {k: state[part][k] for k in parameters}, part)
    seed_all(config.seed)  # as train() does before it builds the model
    cold = build_model(config).state_dict()  # where a run without INIT_FROM starts: the test can tell the difference
    assert any(not torch.equal(cold[k], weights[k]) for k in parameters)


def test_init_from_another_architecture_is_refused_naming_what_differs(tiny, tmp_path, straight):
    start = straight.run
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


def test_self_train_ignores_the_pixels_its_pseudo_labels_leave_void(tiny, tmp_path, straight):
    config = _config(tiny, tmp_path)
    data = build_data(config)
    dataset = pseudo_dataset(config, data, straight.run / "pseudo_round1/pseudo.csv")
    dataset.transform = None  # the labels as written: void becomes ignored (255), background the background class
    label = read_label(dataset.frame.gt_path[0], PSEUDO_LABEL_VALUES)
    item = dataset[0]["label"]
    assert torch.equal(item == 255, torch.from_numpy(label == VOID_INDEX))
    assert torch.equal(item == 12, torch.from_numpy(label == 255))


def test_train_notebook_runs_self_train_and_shows_its_rounds(tiny, tmp_path, capsys):
    from notebook_cells import run_cells  # 03's cells in this process (papermill runs 03: test_notebooks_run's chain)

    run_cells("03_train", dict(
        DATA_DIR=str(tiny), RUNS_DIR=str(tmp_path / "runs"), RUN_NAME="st", METHOD="self_train", HEAD_CHANNELS=16,
        SOURCE_SIZE=[48, 96], TARGET_SIZE=[54, 96], CROP_SIZE=[32, 32], EPOCHS=1, STEPS_PER_EPOCH=2, BATCH_SIZE=2,
        WARMUP_STEPS=1, EVAL_LIMIT=2, PREVIEW_COUNT=2, ROUNDS=1))
    run = tmp_path / "runs" / "st"
    assert list(pd.read_csv(run / "metrics.csv")["round"]) == [0, 1]
    assert (run / "pseudo_round1" / "pseudo.csv").is_file() and (run / "predictions.png").is_file()
    shown = capsys.readouterr().out  # what the cells displayed
    assert "pseudo_round1" in shown and "precision" in shown  # the rounds' table
