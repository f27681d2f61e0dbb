"""The notebooks run headless with papermill on a tiny synthetic dataset."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import papermill
import pytest
import torch

from kit.data import read_label, read_split

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _run(name, tmp_path, **parameters):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"), str(out / f"{name}.ipynb"),
        parameters={"OUTPUT_DIR": str(out), **parameters}, kernel_name="python3", cwd=str(NOTEBOOKS.parent),
        progress_bar=False,
    )
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
    with pytest.raises(papermill.PapermillExecutionError, match="OVERWRITE = True"):
        _run("02_labels_and_augment", tmp_path, DATA_DIR=str(tiny), BORDER_THRESHOLD=None, PSEUDO_COUNT=2)
    np.testing.assert_array_equal(read_label(pseudo.gt_path[0]), label)


TRAIN_LOSSES = {
    "source_only": {"loss_ce"},
    "oracle": {"loss_ce"},
    "fisheye_tf": {"loss_ce", "loss_dice"},
    "uda": {"loss_source", "loss_distortion", "loss_target", "pseudo_weight"},
    "uda_geo": {"loss_source", "loss_distortion", "loss_target", "pseudo_weight"},
}


@pytest.mark.parametrize("method", sorted(TRAIN_LOSSES))
def test_train_notebook(tiny, tmp_path, method):
    out = _run(
        "03_train", tmp_path, DATA_DIR=str(tiny), RUNS_DIR=str(tmp_path / "runs"), RUN_NAME=method, METHOD=method,
        HEAD_CHANNELS=16, SOURCE_SIZE=[48, 96], TARGET_SIZE=[54, 96], CROP_SIZE=[32, 32], EPOCHS=2, BATCH_SIZE=2,
        WARMUP_STEPS=2, MASK_BLOCK=8, EVAL_LIMIT=2, PREVIEW_COUNT=2,
    )
    run = tmp_path / "runs" / method
    assert {"config.json", "metrics.csv", "last.pt", "best.pt", "curves.png", "predictions.png"} <= {
        p.name for p in run.iterdir()}
    assert _is_png(run / "curves.png") and _is_png(run / "predictions.png")
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.epoch) == [0, 1]
    assert TRAIN_LOSSES[method] <= set(metrics.columns)
    assert metrics[sorted(TRAIN_LOSSES[method])].notna().all().all()
    assert ((metrics.fisheye_miou >= 0) & (metrics.fisheye_miou <= 1)).all()
    state = torch.load(run / "best.pt", weights_only=False)
    assert (state["teacher"] is not None) == method.startswith("uda")
    config = json.loads((run / "config.json").read_text())
    assert config["method"] == method and config["num_classes"] == 13 and config["crop_size"] == [32, 32]
    assert (out / "03_train.ipynb").is_file()
