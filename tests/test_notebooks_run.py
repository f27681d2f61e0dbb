"""The EDA and label/augmentation notebooks run headless with papermill on a tiny synthetic dataset."""

import json
from pathlib import Path

import numpy as np
import papermill
import pytest

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
