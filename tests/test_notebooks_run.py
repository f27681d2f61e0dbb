"""The notebooks run headless on a tiny synthetic dataset: each through papermill once (01, 02 and the
chain 03 → 04 → 06 → 03 → 05), their other cases in this process (tests/notebook_cells.py: the same cells
with the parameters papermill injects, without a kernel's seconds of start-up and imports)."""

import json

import cv2
import numpy as np
import pandas as pd
import papermill
import pytest
import torch
from isolation import process_state_kept
from notebook_cells import NOTEBOOKS, run_cells
from scratch import SCRATCH
from transformers import SegformerForSemanticSegmentation

from kit.bench.chain import chain
from kit.common.files import write_image
from kit.competition.labels import PSEUDO_LABEL_VALUES
from kit.competition.layout import read_image, read_label, read_split, read_split_file
from kit.competition.metrics import confusion_matrix, iou_table
from kit.competition.rle import SUBMISSION_SIZE, resize_nearest, rle_decode
from kit.competition.submission import validate_submission
from kit.models.segformer import mit_config
from kit.predict.zero_shot import write_zero_shot_run
from kit.train.config import TrainConfig
from kit.train.loop import train

pytestmark = pytest.mark.slow  # trains, or starts processes: `pytest -m "not slow"` leaves it out


def _outputs(name, tmp_path, parameters):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    if "OUTPUT_DIR" in papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb")):  # 03_train: its run folder
        parameters = {"OUTPUT_DIR": str(out), **parameters}
    return out, parameters


def _run(name, tmp_path, **parameters):
    """Notebook ``name`` through papermill, in a kernel of its own."""
    out, parameters = _outputs(name, tmp_path, parameters)
    papermill.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(out / f"{name}.ipynb"), parameters=parameters,
                               kernel_name="python3", cwd=str(NOTEBOOKS.parent), progress_bar=False)
    return out


def _run_here(name, tmp_path, **parameters):
    """Notebook ``name``'s cells in this process (:func:`notebook_cells.run_cells`)."""
    out, parameters = _outputs(name, tmp_path, parameters)
    run_cells(name, parameters)
    return out


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_eda_notebook(tiny, tmp_path):
    out = _run("01_eda", tmp_path, DATA_DIR=str(tiny), BORDER_THRESHOLD=None)
    for figure in ("class_share.png", "border.png", "samples.png"):
        assert _is_png(out / figure), figure
    stats = json.loads((out / "stats.json").read_text())
    for share in stats["class_share"].values():
        assert sum(share.values()) == pytest.approx(1.0, abs=1e-3)
    assert stats["class_share"]["target (held-out labels)"]["background"] > 0.05  # the fisheye border
    assert 0.5 < stats["border"]["disc_share"] < 0.98
    assert stats["channel_stats"]["target"]["mean"][0] < stats["channel_stats"]["source"]["mean"][0]


def test_labels_and_augment_notebook(tiny, tmp_path):
    out = _run("02_labels_and_augment", tmp_path, DATA_DIR=str(tiny), BORDER_THRESHOLD=None, PSEUDO_COUNT=2)
    for figure in ("sky_fix.png", "transforms.png", "pseudo_fisheye.png"):
        assert _is_png(out / figure), figure
    pseudo = read_split(out / "pseudo_fisheye_data", "pseudo_fisheye")
    assert list(pseudo.id) == list(read_split(tiny, "val_source").id[:2])
    label = read_label(pseudo.gt_path[0])
    assert label.shape == (90, 160) and (label == 255).any() and (label < 12).any()
    # a second run into the same folder refuses to overwrite it
    with pytest.raises(FileExistsError, match="OVERWRITE = True"):
        _run_here("02_labels_and_augment", tmp_path, DATA_DIR=str(tiny), BORDER_THRESHOLD=None, PSEUDO_COUNT=2)
    np.testing.assert_array_equal(read_label(pseudo.gt_path[0]), label)


TRAIN_LOSSES = {
    "source_only": {"loss_ce"},
    "oracle": {"loss_ce"},
    "fisheye_tf": {"loss_ce", "loss_dice"},
    "uda": {"loss_source", "loss_target", "pseudo_weight"},  # no elastic copy: the kit's uda (issue 27)
    "uda_geo": {"loss_source", "loss_distortion", "loss_target", "pseudo_weight"},
}


@pytest.mark.parametrize("method", sorted(TRAIN_LOSSES))
def test_train_notebook(tiny, tmp_path, method):
    _run_here(
        "03_train", tmp_path, DATA_DIR=str(tiny), RUNS_DIR=str(tmp_path / "runs"), RUN_NAME=method, METHOD=method,
        HEAD_CHANNELS=16, SOURCE_SIZE=[48, 96], TARGET_SIZE=[54, 96], CROP_SIZE=[32, 32], EPOCHS=2, STEPS_PER_EPOCH=3,
        BATCH_SIZE=2,
        WARMUP_STEPS=2, MASK_BLOCK=8, EVAL_LIMIT=2, PREVIEW_COUNT=2,
    )
    run = tmp_path / "runs" / method
    assert {"config.json", "metrics.csv", "last.pt", "best.pt", "step.png", "curves.png", "predictions.png"} <= {
        p.name for p in run.iterdir()}
    assert _is_png(run / "step.png") and _is_png(run / "curves.png") and _is_png(run / "predictions.png")
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.epoch) == [0, 1]
    assert TRAIN_LOSSES[method] <= set(metrics.columns)
    assert ("loss_distortion" in metrics.columns) == (method == "uda_geo")
    assert metrics[sorted(TRAIN_LOSSES[method])].notna().all().all()
    assert ((metrics.fisheye_miou >= 0) & (metrics.fisheye_miou <= 1)).all()
    state = torch.load(run / "best.pt", weights_only=False)
    assert (state["teacher"] is not None) == method.startswith("uda")
    config = json.loads((run / "config.json").read_text())
    assert config["method"] == method and config["num_classes"] == 13 and config["crop_size"] == [32, 32]


def test_train_notebook_refuses_a_misspelt_parameter(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"unknown training parameter\(s\) \['LR_ENCODR'\]"):
        _run_here("03_train", tmp_path, DATA_DIR=str(tiny), RUNS_DIR=str(tmp_path / "runs"), LR_ENCODR=1e-3)
    assert not (tmp_path / "runs").exists()  # refused before anything was written


# --- 04_predict and 05_ensemble ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_runs(tiny, tmp_path_factory):
    """Two one-epoch runs on ``tiny`` (different heads and seeds) and a zero-shot Cityscapes SegFormer
    (random weights of SegFormer-B0's configuration) in a runs folder; read-only."""
    runs_dir = tmp_path_factory.mktemp("runs")
    for name, arch, seed in [("a", "daformer", 0), ("b", "segformer", 1)]:
        train(TrainConfig(**{
            **SCRATCH, "data_dir": str(tiny), "runs_dir": str(runs_dir), "run_name": name, "arch": arch, "seed": seed,
            "method": "source_only", "head_channels": 16, "source_size": (48, 96), "target_size": (54, 96),
            "crop_size": (32, 32), "epochs": 1, "batch_size": 2, "warmup_steps": 2, "eval_limit": 2, "progress": False,
        }))
    cityscapes = tmp_path_factory.mktemp("segformer-b0-cityscapes")
    SegformerForSemanticSegmentation(mit_config("mit_b0", num_labels=19)).save_pretrained(cityscapes)
    write_zero_shot_run(str(cityscapes), tiny, "zero_shot", runs_dir, size=(54, 96))
    return runs_dir


@pytest.fixture(scope="module")
def tiny_960(tiny, tmp_path_factory):
    """``tiny`` with its test images and labels at the submission size (960×540; labels through
    kit.competition.rle's nearest resize), so that predict_split scores at exactly the resolution it submits."""
    root = tmp_path_factory.mktemp("tiny_960") / "data"
    root.mkdir()
    for entry in tiny.iterdir():
        if entry.name not in ("test_image", "test_gt"):
            (root / entry.name).symlink_to(entry)
    for item in read_split(tiny, "test_gt").itertuples():
        image = cv2.resize(read_image(item.img_path), SUBMISSION_SIZE, interpolation=cv2.INTER_LINEAR)
        write_image(root / "test_image" / f"{item.id}.png", image)
        write_image(root / "test_gt" / f"{item.id}.png", resize_nearest(read_label(item.gt_path), SUBMISSION_SIZE))
    return root


def _submission_scores(submission, frame):
    """kit.competition.metrics.iou_table of a submission's decoded label maps against ``frame``'s labels (resized
    to 960×540 with kit.competition.rle's nearest rule): the competition's score, computed from the file."""
    rows = pd.read_csv(submission).set_index("id").mask_rle
    confusion = np.zeros((13, 13), np.int64)
    for item in frame.itertuples():
        pred = np.full(SUBMISSION_SIZE[::-1], 255, np.uint8)
        for c in range(12):
            pred[rle_decode(rows[f"{item.id}_class_{c}"], SUBMISSION_SIZE[::-1]) == 1] = c
        confusion_matrix(pred, resize_nearest(read_label(item.gt_path), SUBMISSION_SIZE), out=confusion)
    return iou_table(confusion)


def test_predict_notebook_scores_what_it_submits(tiny_960, tiny_runs, tmp_path):
    parameters = dict(DATA_DIR=str(tiny_960), RUNS_DIR=str(tiny_runs), RUN_NAME="a", MODE="slide", FLIP=True,
                      SCALES=[0.75, 1.0], BATCH_SIZE=16, GRID_COUNT=2, WORST_COUNT=1)
    out = _run_here("04_predict", tmp_path, **parameters)
    assert validate_submission(out / "submission.csv", tiny_960 / "sample_submission.csv") == 2 * 12
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["labelled"] and metrics["images"] == 2 and metrics["settings"]["scales"] == [0.75, 1.0]
    expected = _submission_scores(out / "submission.csv", read_split(tiny_960, "test_gt"))
    # a class absent from truth and prediction has no IoU: NaN in kit, null in strict JSON
    assert metrics["iou"] == {name: None if value != value else value for name, value in expected.items()}
    assert metrics["mIoU"] == expected["mIoU"] and 0 <= metrics["mIoU"] <= 1
    for figure in ("iou.png", "predictions.png", "worst.png"):
        assert _is_png(out / figure), figure
    with pytest.raises(FileExistsError, match="OVERWRITE = True"):
        _run_here("04_predict", tmp_path, **parameters)


def test_ensemble_notebook_with_weights_one_and_zero_is_its_first_member(tiny, tiny_runs, tmp_path):
    out = _run_here("05_ensemble", tmp_path, DATA_DIR=str(tiny), RUNS_DIR=str(tiny_runs), RUN_NAMES=["a", "b", "zero_shot"],
               WEIGHTS=[1, 0, 0], BORDER="mask")
    assert validate_submission(out / "submission.csv", tiny / "sample_submission.csv") == 2 * 12
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["mIoU"]) == {"a", "b", "zero_shot", "ensemble"}
    assert all(0 <= v <= 1 for v in metrics["mIoU"].values())
    assert metrics["mIoU"]["ensemble"] == metrics["mIoU"]["a"]
    assert _is_png(out / "iou.png")


def test_pseudo_label_notebook_writes_a_round_and_never_replaces_it(tiny, tiny_runs, tmp_path):
    folder = tmp_path / "round1"
    parameters = dict(DATA_DIR=str(tiny), RUNS_DIR=str(tiny_runs), RUN_NAMES=["a", "zero_shot"], OUTPUT_DIR=str(folder),
                      GRID_COUNT=2, SCALES=[0.75, 1.0])
    _run_here("06_pseudo_label", tmp_path, **parameters)
    pseudo = read_split_file(folder / "pseudo.csv")
    assert list(pseudo.id) == list(read_split(tiny, "train_target").id)
    label = read_label(pseudo.gt_path[0], PSEUDO_LABEL_VALUES)
    assert label.shape == read_image(pseudo.img_path[0]).shape[:2]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["settings"]["scales"] == [0.75, 1.0] and {"precision", "recall"} <= set(summary["table"][0])
    assert _is_png(folder / "coverage.png") and _is_png(folder / "grid.png")
    before = {p.name: p.read_bytes() for p in (folder / "labels").iterdir()}
    with pytest.raises(FileExistsError, match="OVERWRITE = True"):
        _run_here("06_pseudo_label", tmp_path, **parameters)
    assert {p.name: p.read_bytes() for p in (folder / "labels").iterdir()} == before


def test_predict_notebook_without_labels_skips_the_scores(tiny, tiny_runs, tmp_path):
    """The competition's first day: no fisheye labels, no training, a Cityscapes model predicting zero-shot."""
    root = tmp_path / "unlabelled"  # the real data's layout: no held-out fisheye labels
    root.mkdir()
    for entry in tiny.iterdir():
        if entry.name not in ("test_gt.csv", "train_target_gt.csv"):
            (root / entry.name).symlink_to(entry)
    out = _run_here("04_predict", tmp_path, DATA_DIR=str(root), RUNS_DIR=str(tiny_runs), RUN_NAME="zero_shot",
               CHECKPOINT="best.pt", BORDER=None, GRID_COUNT=2)
    assert validate_submission(out / "submission.csv", root / "sample_submission.csv") == 2 * 12
    metrics = json.loads((out / "metrics.json").read_text())
    assert not metrics["labelled"] and metrics["mIoU"] is None and metrics["iou"] is None
    assert _is_png(out / "predictions.png") and not (out / "iou.png").exists() and not (out / "worst.png").exists()


@pytest.mark.parametrize("name, parameters, message", [
    ("01_eda", {"N_SAMPLES": -1}, "N_SAMPLES = -1: expected an integer ≥ 0"),
    ("02_labels_and_augment", {"SAMPLE_INDEX": 10**6}, "SAMPLE_INDEX = 1000000: expected an integer ≥ 0 and ≤"),
    ("03_train", {"CLIP_GRAD": -1}, "clip_grad = -1: expected a finite number > 0 or None"),
    ("04_predict", {"GRID_COUNT": 2.5}, "GRID_COUNT = 2.5: expected an integer ≥ 0"),
    ("05_ensemble", {"WEIGHTS": [1.0]}, r"WEIGHTS = \[1.0\]: expected one weight per run of RUN_NAMES \(2\)"),
    ("06_pseudo_label", {"QUANTILE": 2}, "QUANTILE = 2: expected a finite number ≥ 0 and ≤ 1"),
])
def test_notebooks_refuse_a_bad_parameter_before_writing_anything(tiny, tmp_path, name, parameters, message):
    if "RUNS_DIR" in papermill.inspect_notebook(str(NOTEBOOKS / f"{name}.ipynb")):
        parameters = {"RUNS_DIR": str(tmp_path / "runs"), **parameters}
    with pytest.raises(ValueError, match=message):
        _run_here(name, tmp_path, DATA_DIR=str(tiny), **parameters)
    assert not any((tmp_path / "out").iterdir())
    assert not (tmp_path / "runs").exists()


def _files(folder):
    """Every file under ``folder`` (hidden ones included) with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_pseudo_label_notebook_with_one_run_passes_its_parameters_and_keeps_the_first_round(tiny, tiny_runs,
                                                                                          tmp_path):
    from kit.predict.pseudo import BINS, NAMES, make_pseudo_labels
    from kit.predict.runs import load_run
    from kit.predict.splits import run_border
    from kit.predict.tta import InferenceSettings

    folder = tmp_path / "round_a"
    parameters = dict(DATA_DIR=str(tiny), RUNS_DIR=str(tiny_runs), RUN_NAMES=["a"], OUTPUT_DIR=str(folder),
                      MODE="whole", FLIP=False, QUANTILE=0.3, CAP=0.8, THRESHOLD_IMAGES=2, BORDER="mask",
                      GRID_COUNT=2, DEVICE="cpu", CPU_THREADS=1)
    _run_here("06_pseudo_label", tmp_path, **parameters)
    frame = read_split(tiny, "train_target")
    assert (folder / "pseudo.csv").is_file() and (folder / "summary.json").is_file()
    assert _is_png(folder / "coverage.png") and _is_png(folder / "grid.png")
    pseudo = read_split_file(folder / "pseudo.csv")
    assert len(pseudo) == len(frame) and list(pseudo.id) == list(frame.id)
    assert list(pseudo.img_path) == list(frame.img_path)
    assert sorted(p.name for p in (folder / "labels").glob("*.png")) == sorted(f"{i}.png" for i in frame.id)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["quantile"] == 0.3 and summary["cap"] == 0.8 and summary["threshold_images"] == 2
    assert summary["settings"] == {"mode": "whole", "stride": None, "scales": [1.0], "flip": False}
    assert summary["weights"] is None and summary["split"] == "train_target"
    assert all(0 <= t <= 0.8 for t in summary["thresholds"].values()) and list(summary["thresholds"]) == list(NAMES)

    # what the notebook wrote is what make_pseudo_labels writes with the same run, border and parameters
    with process_state_kept():
        torch.set_num_threads(1)
        runs = [load_run(tiny_runs / "a", "last.pt", device="cpu")]
        border = run_border(runs, tiny, "mask")
        direct = make_pseudo_labels(runs, tiny, tmp_path / "direct", settings=InferenceSettings(mode="whole", flip=False),
                                    quantile=0.3, cap=0.8, border=border, threshold_images=2, progress=False)
    assert [summary["thresholds"][n] for n in NAMES] == pytest.approx(direct.thresholds, abs=1 / BINS + 1e-9)
    inside = border.mask((read_image(frame.img_path[0]).shape[1], read_image(frame.img_path[0]).shape[0]))
    for row, other in zip(pseudo.itertuples(), read_split_file(direct.csv).itertuples()):
        label = read_label(row.gt_path, PSEUDO_LABEL_VALUES)
        assert label.shape == read_image(row.img_path).shape[:2] == inside.shape
        assert (label[~inside] == 255).all()  # the border: background
        assert (label[inside] < 12).any() and (label[inside] == 254).any()  # kept and dropped pixels in the disc
        assert (label == read_label(other.gt_path, PSEUDO_LABEL_VALUES)).mean() > 0.999, row.id

    before = _files(folder)
    with pytest.raises(FileExistsError, match="OVERWRITE = True"):
        _run_here("06_pseudo_label", tmp_path, **parameters)
    assert _files(folder) == before  # the first round, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no staging folder


# --- the chain (kit.bench.chain) -----------------------------------------------------------------

SMALL = {"source_size": [48, 96], "target_size": [54, 96], "crop_size": [32, 32], "head_channels": 16, "batch_size": 2,
         "steps_per_epoch": 2, "warmup_steps": 1, "mask_block": 8, "eval_limit": 2, "round_epochs": 1, "rounds": 1}


def test_the_chain_is_what_the_notebooks_read_by_default():
    import ast

    steps = chain("data/demo", "outputs")
    first_run = steps[2][1]
    for index, (name, parameters) in enumerate(steps):
        defaults = {k: ast.literal_eval(v["default"]) for k, v in papermill.inspect_notebook(
            str(NOTEBOOKS / f"{name}.ipynb")).items() if k in parameters}
        differ = {k for k, v in parameters.items() if defaults[k] != v}
        # only the self-training round names what it reads: it cannot be the first run's default too
        assert differ == ({"RUN_NAME", "METHOD", "INIT_FROM", "PSEUDO_SPLIT"} if index == 5 else set()), name
    (_, predict), (_, pseudo), (_, round_), (_, ensemble) = steps[3:]
    assert predict["RUN_NAME"] == first_run["RUN_NAME"] and pseudo["RUN_NAMES"] == [first_run["RUN_NAME"]]
    assert round_["PSEUDO_SPLIT"] == pseudo["OUTPUT_DIR"] and round_["INIT_FROM"] == f"outputs/runs/{first_run['RUN_NAME']}"
    assert ensemble["RUN_NAMES"] == [first_run["RUN_NAME"], round_["RUN_NAME"]]


def test_the_chain_runs_with_the_notebooks_defaults(tiny, tmp_path):
    # 03 → 04 → 06 → 03 (a round) → 05 on tiny data: only the folders, the data and the sizes are given;
    # each notebook through papermill once (the round's 03 runs its cells in this process)
    out = tmp_path / "chain"
    steps = chain(str(tiny), out)[2:]
    for index, (name, parameters) in enumerate(steps):
        if name == "03_train":
            parameters = {**parameters, "OVERRIDES": SMALL, "EPOCHS": 1, "PREVIEW_COUNT": 1}
        if index == 3:  # the round
            assert name == "03_train" and parameters["METHOD"] == "self_train", (name, parameters)
            _run_here(name, tmp_path, **parameters)
        else:  # 04, 06 and 05 name their OUTPUT_DIR: _run keeps it
            _run(name, tmp_path, **parameters)
    assert validate_submission(out / "predict/submission.csv", tiny / "sample_submission.csv") == 2 * 12
    assert json.loads((out / "predict/metrics.json").read_text())["run"] == "demo"
    first = json.loads((out / "runs/demo/config.json").read_text())  # cpu_demo's uda, warm-started by source_only
    assert (first["method"], first["warm_start"]) == ("uda", 0.5) and (out / "runs/demo/warm_start/last.pt").is_file()
    round_ = json.loads((out / "runs/demo_round/config.json").read_text())
    assert round_["init_from"] == str(out / "runs/demo") and round_["pseudo_split"] == str(out / "pseudo/demo")
    assert list(pd.read_csv(out / "runs/demo_round/metrics.csv")["round"]) == [1]  # no round 0: warm-started
    ensemble = json.loads((out / "ensemble/metrics.json").read_text())
    assert ensemble["runs"] == ["demo", "demo_round"] and set(ensemble["mIoU"]) == {"demo", "demo_round", "ensemble"}
    assert _is_png(out / "ensemble/members.png") and _is_png(out / "predict/predictions.png")
