"""Offline pseudo-labels (kit.predict.pseudo): class-wise thresholds, the label files, the folder's safety.

The end-to-end tests label the ``tiny`` dataset's fisheye images with a fake run whose model is a
nearest-colour classifier: its run config normalises with mean 0 and std 1/255, so the model sees the
raw 0..255 pixel values, rounds them back to integers and returns minus the squared distance to one
colour per class. Every pixel thus gets its own confidence, every class (background 12 included) is
predicted somewhere, and the reference below recomputes the probabilities without kit.predict: the
model on the raw image, softmax. Thresholds, label files and the per-class table are then compared
with independent, slow recomputations (sorting instead of histograms, per-pixel counts).
"""

import csv
import json
import math
import os
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kit.common.files import MANIFEST, write_image
from kit.competition.labels import PSEUDO_LABEL_VALUES, VOID_INDEX
from kit.competition.layout import read_image, read_label, read_split, read_split_file
from kit.data.border import Border
from kit.data.datasets import SegmentationDataset
from kit.predict.pseudo import (
    BINS,
    CSV_NAME,
    NAMES,
    candidates,
    class_thresholds,
    confidence_histograms,
    is_pseudo_folder,
    make_pseudo_labels,
    pseudo_label_map,
)
from kit.predict.runs import RunConfig
from kit.predict.tta import InferenceSettings

WHOLE = InferenceSettings(mode="whole", flip=False, amp="none")
SIZE = (90, 160)  # (h, w) of the tiny dataset's fisheye images: the runs predict at that size, but RUN_SIZE's


# --- class_thresholds ------------------------------------------------------------------------------


def test_class_thresholds_by_hand():
    h = np.zeros((5, BINS), np.int64)
    h[0, [100, 600, 1800]] = 1  # confidences 0.05, 0.3, 0.9: the median (first bin past 1.5 pixels) is 0.3
    h[1, 1900] = 4  # every pixel at 0.95: the cap (0.9) wins
    # class 2: predicted nowhere → the cap
    h[3, [100, 200, 300, 400]] = 1  # 4 pixels: the first bin whose cumulative count exceeds 2 is bin 300
    h[4, 500], h[4, 1000] = 3, 1  # 3 pixels at 0.25, 1 at 0.5
    assert class_thresholds(h, 0.5, 0.9).tolist() == pytest.approx([0.3, 0.9, 0.9, 0.15, 0.25], abs=1e-12)
    # quantile 0: the lowest occupied bin's lower edge; the cap applies to it too
    assert class_thresholds(h, 0.0, 1.0).tolist() == pytest.approx([0.05, 0.95, 1.0, 0.05, 0.25], abs=1e-12)
    assert class_thresholds(h, 0.0, 0.2).tolist() == pytest.approx([0.05, 0.2, 0.2, 0.05, 0.2], abs=1e-12)
    # 0.75: class 4 has 3 of its 4 pixels in bin 500, not more than 3 → the next occupied bin, 1000
    assert class_thresholds(h, 0.75, 1.0).tolist() == pytest.approx([0.9, 0.95, 1.0, 0.2, 0.5], abs=1e-12)
    assert class_thresholds(h, 0.5, 0.9).dtype == np.float64 and class_thresholds(h, 0.5, 0.9).shape == (5,)


@pytest.mark.parametrize("quantile, cap", [(-0.1, 0.9), (1.5, 0.9), (math.nan, 0.9), (0.5, 0.0), (0.5, -0.5),
                                           (0.5, 1.1), (0.5, math.nan)])
def test_class_thresholds_refuse_an_invalid_quantile_or_cap(quantile, cap):
    h = np.ones((13, BINS), np.int64)
    with pytest.raises(ValueError, match="expected 0 ≤ quantile ≤ 1 and 0 < cap ≤ 1"):
        class_thresholds(h, quantile, cap)


def _rank_threshold(values, quantile, cap):
    """The slow rule: sort the class's confidences, take the one at rank floor(quantile·N), its bin's lower edge."""
    if len(values) == 0:
        return cap
    v = np.sort(np.asarray(values, np.float32))
    k = min(int(np.floor(quantile * len(v))), len(v) - 1)
    edge = min(int(np.floor(v[k] * np.float32(BINS))), BINS - 1) / BINS  # float32 product, as the kit bins
    return min(edge, cap)


def _histogram(values):
    bins = np.minimum((np.asarray(values, np.float32) * np.float32(BINS)).astype(np.int64), BINS - 1)
    return np.bincount(bins, minlength=BINS)


def test_class_thresholds_agree_with_numpy_quantiles_at_bin_resolution():
    rng = np.random.default_rng(0)
    # confidences exactly on bin edges k/BINS: binning loses nothing, so the quantile is exact
    values = [rng.integers(0, BINS, n) / BINS for n in (4999, 1, 2, 7, 333)]
    h = np.stack([np.bincount(np.round(v * BINS).astype(int), minlength=BINS) for v in values])
    for q in (0.0, 0.1, 0.25, 0.5, 0.8, 0.97):
        got = class_thresholds(h, q, 1.0)
        # numpy's inverted CDF: the smallest value whose cumulative share reaches q (the kit: exceeds q,
        # the same wherever q·N is not a whole number; at whole numbers the kit takes the next value)
        for c, v in enumerate(values):
            s = np.sort(v)
            k = min(int(np.floor(q * len(v))), len(v) - 1)
            assert got[c] == pytest.approx(s[k], abs=1e-12), (c, q)
            if q * len(v) != int(q * len(v)) and q > 0:
                assert got[c] == pytest.approx(np.quantile(v, q, method="inverted_cdf"), abs=1e-12), (c, q)
        # and numpy's default (linear) quantile of the many-pixel class is within one bin
        assert abs(got[0] - np.quantile(values[0], q)) <= 1 / BINS + 1e-12, q


def test_class_thresholds_of_binned_confidences_are_within_one_bin_below_the_quantile():
    rng = np.random.default_rng(1)
    values = [rng.beta(a, 2, size=n) for a, n in ((1, 5001), (3, 2001), (8, 777))]  # q·N never whole
    h = np.stack([_histogram(v) for v in values])
    for q in (0.05, 0.2, 0.5, 0.8, 0.95):
        got = class_thresholds(h, q, 1.0)
        for c, v in enumerate(values):
            exact = np.quantile(v.astype(np.float32), q, method="inverted_cdf")
            assert 0 <= exact - got[c] < 1 / BINS + 1e-9, (c, q, exact, got[c])  # the lower edge of its bin
            assert got[c] == _rank_threshold(v, q, 1.0)
        capped = class_thresholds(h, q, 0.6)
        np.testing.assert_array_equal(capped, np.minimum(got, 0.6))


# --- pseudo_label_map and candidates ---------------------------------------------------------------


def test_pseudo_label_map_by_hand():
    classes = np.array([[0, 0, 12, 12, 5],
                        [11, 11, 3, 3, 5]], np.uint8)
    confidence = np.array([[0.9, 0.4, 0.9, 0.4, 0.75],
                           [0.6, 0.2, 0.99, 0.99, 0.75]], np.float32)
    thresholds = np.full(13, 0.5)
    thresholds[5] = 0.75  # exactly at the threshold (exact in float32 too): kept
    thresholds[3] = 0.995  # class 3's pixels are below it
    inside = np.array([[1, 1, 1, 1, 1],
                       [1, 1, 1, 0, 0]], bool)
    out = pseudo_label_map(classes, confidence, thresholds, inside)
    assert out.dtype == np.uint8 and out.shape == classes.shape
    np.testing.assert_array_equal(out, [[0, 254, 255, 254, 5],
                                        [11, 254, 254, 255, 255]])  # outside: 255 whether kept or not
    no_border = pseudo_label_map(classes, confidence, thresholds, None)
    np.testing.assert_array_equal(no_border, [[0, 254, 255, 254, 5],
                                              [11, 254, 254, 254, 5]])
    no_background = pseudo_label_map(classes, confidence, thresholds, inside, background=False)
    np.testing.assert_array_equal(no_background, [[0, 254, 254, 254, 5],  # confident background: not kept
                                                  [11, 254, 254, 255, 255]])


def test_pseudo_label_map_agrees_with_a_per_pixel_loop():
    rng = np.random.default_rng(2)
    classes = rng.integers(0, 13, (17, 23)).astype(np.uint8)
    confidence = rng.random((17, 23)).astype(np.float32)
    thresholds = rng.uniform(0.1, 0.9, 13)
    inside = rng.random((17, 23)) < 0.8
    for background in (True, False):
        out = pseudo_label_map(classes, confidence, thresholds, inside, background)
        for y in range(17):
            for x in range(23):
                c = int(classes[y, x])
                if not inside[y, x]:
                    want = 255
                elif confidence[y, x] < thresholds[c] or (c == 12 and not background):
                    want = 254
                else:
                    want = 255 if c == 12 else c
                assert out[y, x] == want, (y, x, background)


def test_balanced_candidates_prefer_the_class_with_the_larger_share_of_its_threshold():
    probs = torch.tensor([0.6, 0.35, 0.05])[:, None, None].expand(3, 1, 2).clone()
    thresholds = np.array([0.9, 0.4, 0.9])
    classes, confidence = candidates(probs, thresholds, balanced=False)
    assert classes.tolist() == [[0, 0]] and classes.dtype == torch.uint8 and confidence.flatten().tolist() == pytest.approx([0.6] * 2)
    classes, confidence = candidates(probs, thresholds, balanced=True)
    assert classes.tolist() == [[1, 1]] and confidence.flatten().tolist() == pytest.approx([0.35] * 2)  # 0.35 / 0.4 > 0.6 / 0.9


def test_confidence_histograms_count_what_a_per_pixel_count_counts():
    """The device-side histogram (torch.bincount) against numpy's unbuffered add.at of the same bins."""
    rng = np.random.default_rng(4)
    probs = torch.from_numpy(rng.dirichlet(np.ones(13), (37, 41)).astype(np.float32)).permute(2, 0, 1).contiguous()
    probs[:, 0, :3] = 0.0
    probs[5, 0, :3] = 1.0  # confidence exactly 1: the last bin
    inside = rng.random((37, 41)) < 0.7
    inside[0, :3] = True
    confidence, classes = (t.numpy() for t in probs.max(dim=0))
    expected = np.zeros((13, BINS), np.int64)
    bins = np.minimum((confidence[inside] * np.float32(BINS)).astype(np.int64), BINS - 1)
    np.add.at(expected, (classes[inside].astype(np.int64), bins), 1)
    got = confidence_histograms(probs, torch.from_numpy(inside))
    np.testing.assert_array_equal(got, expected)
    assert got[5, BINS - 1] >= 3 and got.sum() == inside.sum()


# --- fake runs and the independent recomputation ---------------------------------------------------

# one colour per class (RGB 0..255), near the mean colour of that class in the tiny data; 12 = background
CENTRES = [(142, 141, 144), (159, 153, 152), (143, 138, 140), (160, 167, 136), (146, 147, 151), (128, 128, 128),
           (139, 132, 135), (102, 114, 103), (189, 202, 218), (137, 125, 120), (139, 140, 152), (123, 123, 127),
           (35, 35, 36)]


class NearestColour(nn.Module):
    """logit_c = -|pixel - centre_c|² / temperature on the raw pixel values (the run's normalisation
    passes them through; rounding undoes its float error, so the reference gets the same logits)."""

    def __init__(self, centres=CENTRES, temperature=1000.0, fail_at=None, error=RuntimeError):
        super().__init__()
        self.register_buffer("centres", torch.tensor(centres, dtype=torch.float32).view(1, -1, 3, 1, 1))
        self.temperature = temperature
        self.calls = 0
        self.fail_at, self.error = fail_at, error  # raise ``error`` on this forward pass (1-based), if given

    def forward(self, x):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise self.error("out of memory (simulated)")
        return -((x.round()[:, None] - self.centres) ** 2).sum(2) / self.temperature


def run_of(model, size=SIZE):
    config = {"arch": "nearest", "encoder": "colour", "num_classes": 13, "head_kwargs": {}, "target_size": list(size),
              "crop_size": list(size), "target_mean": [0.0] * 3, "target_std": [1 / 255] * 3}
    return model.eval(), RunConfig.from_dict(config)


def reference_probs(models, image, weights=None):
    """Softmax (13, H, W) of the models on the raw image, weighted as kit.predict.tta.ensemble promises."""
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None]
    weights = [1.0] * len(models) if weights is None else [float(w) for w in weights]
    weights = [w / sum(weights) for w in weights]
    total = None
    with torch.no_grad():
        for model, weight in zip(models, weights):
            p = weight * model(x).softmax(1)[0]
            total = p if total is None else total + p
    return total.numpy()


def reference(tiny, models, quantile, cap, inside=None, background=True, balanced=False, weights=None,
              threshold_ids=None, probs_of=None):
    """Independently: thresholds (sorting each class's confidences), expected label maps, the table's counts.
    ``probs_of(image)``: the probabilities (13, H, W) the labels follow (default :func:`reference_probs`)."""
    frame = read_split(tiny, "train_target_gt")
    probs_of = probs_of or (lambda image: reference_probs(models, image, weights))
    probs = {row.id: probs_of(read_image(row.img_path)) for row in frame.itertuples()}
    inside = np.ones(SIZE, bool) if inside is None else inside
    values = [[] for _ in range(13)]
    for image_id in threshold_ids or list(frame.id):
        classes = probs[image_id].argmax(0)
        confidence = probs[image_id].max(0)
        for c in range(13):
            values[c].extend(confidence[inside & (classes == c)].tolist())
    thresholds = np.array([_rank_threshold(v, quantile, cap) for v in values])
    maps, counts = {}, np.zeros((13, 4), np.int64)  # predicted, kept, kept and right, true (inside the disc)
    for row in frame.itertuples():
        p = probs[row.id]
        classes = (p / thresholds.astype(np.float32)[:, None, None]).argmax(0) if balanced else p.argmax(0)
        confidence = np.take_along_axis(p, classes[None], 0)[0]
        label = np.where(classes == 12, 255, classes).astype(np.uint8)
        label[(confidence < thresholds[classes]) | ((classes == 12) & (not background))] = VOID_INDEX
        label[~inside] = 255
        maps[row.id] = label
        truth = np.minimum(read_label(row.gt_path), 12)
        kept = label != VOID_INDEX
        for c in range(13):
            counts[c] += [(inside & (classes == c)).sum(), (inside & (classes == c) & kept).sum(),
                          (inside & (classes == c) & kept & (truth == c)).sum(), (inside & (truth == c)).sum()]
    return thresholds, maps, counts


def _tree(folder):
    """Every file under ``folder`` (hidden ones included) with its bytes: a byte-for-byte snapshot."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def _labels(made):
    return {row.id: read_label(row.gt_path, PSEUDO_LABEL_VALUES) for row in read_split_file(made.csv).itertuples()}


def _rectangle():
    inside = np.zeros(SIZE, bool)
    inside[12:80, 20:141] = True
    return inside


# --- make_pseudo_labels ------------------------------------------------------------------------------


@pytest.mark.parametrize("border, quantile, cap, background, balanced", [
    (False, 0.5, 0.9, True, False),
    (True, 0.3, 0.8, True, False),
    (True, 0.7, 0.95, False, True),
], ids=["plain", "border", "balanced-no-background"])
def test_pseudo_labels_match_an_independent_recomputation(tiny, tmp_path, border, quantile, cap, background,
                                                          balanced):
    inside = _rectangle() if border else None
    made = make_pseudo_labels([run_of(NearestColour())], tiny, tmp_path / "round1", settings=WHOLE,
                              quantile=quantile, cap=cap, threshold_images=None, progress=False,
                              border=Border((SIZE[1], SIZE[0]), inside=inside) if border else None,
                              background=background, balanced=balanced)
    thresholds, maps, counts = reference(tiny, [NearestColour()], quantile, cap, inside, background, balanced)
    np.testing.assert_array_equal(made.thresholds, thresholds)
    assert len(set(thresholds.tolist())) > 3 and (thresholds <= cap).all()  # the classes' thresholds differ

    labels = _labels(made)
    assert list(labels) == list(maps)
    for image_id, label in labels.items():
        np.testing.assert_array_equal(label, maps[image_id], err_msg=image_id)
        # ...which is what pseudo_label_map makes of the reference's classes and confidences
        p = reference_probs([NearestColour()], read_image(tiny / "train_target_image" / f"{image_id}.png"))
        classes = (p / made.thresholds.astype(np.float32)[:, None, None]).argmax(0) if balanced else p.argmax(0)
        confidence = np.take_along_axis(p, classes[None], 0)[0]
        np.testing.assert_array_equal(label, pseudo_label_map(classes.astype(np.uint8), confidence, made.thresholds,
                                                              inside, background))
    every = np.stack(list(labels.values()))
    assert {0, 254, 255} <= set(np.unique(every).tolist())  # kept, dropped and background pixels all occur
    if border:
        assert (every[:, ~inside] == 255).all()
    if not background:
        assert ((every == 255) == ~inside[None]).all()  # background only outside the disc

    table = made.table.set_index("class")
    assert list(table.index) == list(NAMES)
    predicted, kept, right, true = counts.T.astype(np.float64)
    disc = (inside if inside is not None else np.ones(SIZE, bool)).sum() * len(labels)  # pixels inside
    assert predicted.sum() == true.sum() == disc
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = {
            "threshold": thresholds.round(4),
            "predicted_share": predicted / disc,
            "kept": np.where(predicted > 0, kept / predicted, np.nan),
            "precision": np.where(kept > 0, right / kept, np.nan),
            "recall": np.where(true > 0, right / true, np.nan),
            "true_share": true / disc,
        }
    for column, values in expected.items():
        np.testing.assert_allclose(table[column].to_numpy(float), values, rtol=1e-12, equal_nan=True, err_msg=column)
    assert 0 < table.loc["Road", "precision"] < 1 and 0 < table.loc["Road", "recall"] < 1  # a non-trivial class

    summary = json.loads((made.folder / "summary.json").read_text())
    assert summary["thresholds"] == {name: pytest.approx(t, abs=1e-9) for name, t in zip(NAMES, thresholds)}
    assert summary["quantile"] == quantile and summary["cap"] == cap and summary["split"] == "train_target"
    assert summary["background"] == background and summary["balanced"] == balanced
    assert summary["threshold_images"] is None and summary["weights"] is None
    assert summary["settings"] == {"mode": "whole", "stride": None, "scales": [1.0], "flip": False}
    assert [r["class"] for r in summary["table"]] == list(NAMES)
    for record, (_, row) in zip(summary["table"], made.table.iterrows()):
        for column in ("precision", "recall", "kept"):
            assert (record[column] is None) if np.isnan(row[column]) else record[column] == pytest.approx(row[column])


class Leaning(NearestColour):
    """NearestColour plus a left-to-right ramp on the logits, rising for the later classes: a model whose
    prediction of the mirror image, mirrored back, is not its prediction (NearestColour's is)."""

    def forward(self, x):
        ramp = torch.linspace(-1.0, 1.0, x.shape[-1])  # (W,)
        return super().forward(x) + 0.05 * (torch.arange(13.0) - 6.0)[:, None, None] * ramp


RUN_SIZE = (54, 96)  # (h, w) a run that predicts at less than the images' own size


def tta_probs(model, image, flip):
    """The documented path to a label's probabilities, written out: the image resized to the run's size
    (bilinear; the run's normalisation passes raw values), the softmax there averaged with that of the
    mirrored image mirrored back when ``flip``, resized back to the image (bilinear)."""
    h, w = RUN_SIZE
    x = torch.from_numpy(cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1).float()[None]
    with torch.no_grad():
        probs = model(x).softmax(1)  # (1, 13, h, w)
        if flip:
            probs = (probs + model(x.flip(-1)).softmax(1).flip(-1)) / 2
    return F.interpolate(probs, size=image.shape[:2], mode="bilinear", align_corners=False)[0].numpy()


def test_flip_tta_at_another_size_labels_with_both_views_resized_to_the_image(tiny, tmp_path):
    """As self_train's rounds label: whole image + flip, by a run of another size than the images'."""
    model = Leaning()
    made = make_pseudo_labels([run_of(model, RUN_SIZE)], tiny, tmp_path / "tta", threshold_images=None, progress=False,
                              settings=InferenceSettings(mode="whole", flip=True, amp="none"))
    thresholds, maps, _ = reference(tiny, [model], 0.5, 0.9, probs_of=lambda image: tta_probs(model, image, True))
    np.testing.assert_array_equal(made.thresholds, thresholds)
    labels = _labels(made)
    assert list(labels) == list(maps)
    for image_id, label in labels.items():
        assert label.shape == SIZE  # at the image's size, not the run's
        np.testing.assert_array_equal(label, maps[image_id], err_msg=f"{image_id}: not the flip TTA's labels")
    _, unflipped, _ = reference(tiny, [model], 0.5, 0.9, probs_of=lambda image: tta_probs(model, image, False))
    assert any((unflipped[i] != maps[i]).any() for i in maps)  # the mirrored view changes labels: the test can tell
    assert json.loads((made.folder / "summary.json").read_text())["settings"]["flip"] is True


def test_target_images_without_labels_get_the_labels_labelled_ones_get(tiny, tmp_path):
    """The competition's data has no train_target_gt: the labels and thresholds are those of the labelled
    data (the held-out labels only add the table's precision and recall), and nothing fails for their absence."""
    bare = tmp_path / "bare"  # train_target alone, as the competition gives it
    shutil.copytree(tiny / "train_target_image", bare / "train_target_image")
    shutil.copy(tiny / "train_target.csv", bare)
    labelled = make_pseudo_labels([run_of(NearestColour())], tiny, tmp_path / "labelled", settings=WHOLE,
                                  progress=False)
    unlabelled = make_pseudo_labels([run_of(NearestColour())], bare, tmp_path / "unlabelled", settings=WHOLE,
                                    progress=False)
    np.testing.assert_array_equal(unlabelled.thresholds, labelled.thresholds)
    ours, theirs = _labels(unlabelled), _labels(labelled)
    assert list(ours) == list(theirs) == list(read_split(tiny, "train_target").id)
    for image_id, label in ours.items():
        np.testing.assert_array_equal(label, theirs[image_id], err_msg=f"{image_id}: the held-out labels changed it")
    assert list(unlabelled.table.columns) == ["class", "threshold", "predicted_share", "kept"]
    assert {"precision", "recall", "true_share"} <= set(labelled.table.columns)
    pd.testing.assert_frame_equal(unlabelled.table, labelled.table[unlabelled.table.columns])
    summary = json.loads((unlabelled.folder / "summary.json").read_text())
    assert [set(r) for r in summary["table"]] == [{"class", "threshold", "predicted_share", "kept"}] * len(NAMES)


def test_thresholds_come_from_the_threshold_images_only(tiny, tmp_path):
    frame = read_split(tiny, "train_target")
    made = make_pseudo_labels([run_of(NearestColour())], tiny, tmp_path / "r", settings=WHOLE, threshold_images=1,
                              progress=False)
    first_only, maps, _ = reference(tiny, [NearestColour()], 0.5, 0.9, threshold_ids=[frame.id[0]])
    every, _, _ = reference(tiny, [NearestColour()], 0.5, 0.9)
    assert not np.array_equal(first_only, every)  # the test can tell them apart
    np.testing.assert_array_equal(made.thresholds, first_only)
    labels = _labels(made)
    assert len(labels) == len(frame)  # every image is labelled, not only the threshold images
    for image_id, label in labels.items():
        np.testing.assert_array_equal(label, maps[image_id])
    assert json.loads((made.folder / "summary.json").read_text())["threshold_images"] == 1


def test_a_weighted_ensemble_labels_with_the_weighted_mean_of_its_members(tiny, tmp_path):
    other = NearestColour(centres=[(r + 12, g - 9, b + 5) for r, g, b in CENTRES], temperature=300.0)
    runs = [run_of(NearestColour()), run_of(other)]
    made = make_pseudo_labels(runs, tiny, tmp_path / "ensemble", weights=[3, 1], settings=WHOLE,
                              threshold_images=None, progress=False)
    thresholds, maps, _ = reference(tiny, [NearestColour(), other], 0.5, 0.9, weights=[3, 1])
    np.testing.assert_array_equal(made.thresholds, thresholds)
    for image_id, label in _labels(made).items():
        np.testing.assert_array_equal(label, maps[image_id], err_msg=image_id)
    assert json.loads((made.folder / "summary.json").read_text())["weights"] == [3, 1]
    # weights 1, 0: the first member alone
    alone = make_pseudo_labels(runs[:1], tiny, tmp_path / "alone", settings=WHOLE, progress=False)
    first = make_pseudo_labels(runs, tiny, tmp_path / "first", weights=[1, 0], settings=WHOLE, progress=False)
    np.testing.assert_array_equal(alone.thresholds, first.thresholds)
    assert _labels(alone).keys() == _labels(first).keys()
    for (a, la), (_, lb) in zip(_labels(alone).items(), _labels(first).items()):
        np.testing.assert_array_equal(la, lb, err_msg=a)


def test_the_csv_is_the_train_target_split_with_relative_paths(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative OUTPUT_DIR, as the notebook's default
    made = make_pseudo_labels([run_of(NearestColour())], tiny, os.path.join("pseudo", "round1"), settings=WHOLE,
                              progress=False)
    folder = tmp_path / "pseudo" / "round1"
    assert made.folder.resolve() == folder and made.csv.resolve() == folder / CSV_NAME
    frame = read_split(tiny, "train_target")
    with open(folder / CSV_NAME, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["id", "img_path", "gt_path"] and len(rows) == 1 + len(frame)
    for (image_id, img_path, gt_path), expected_id in zip(rows[1:], frame.id):
        assert image_id == expected_id
        assert gt_path == f"./labels/{image_id}.png"
        assert not os.path.isabs(img_path)  # relative to the folder: the folder moves with its dataset
    monkeypatch.chdir(tiny)  # read from elsewhere: the paths are the folder's, not the working directory's
    pseudo = read_split_file(folder / CSV_NAME)
    assert list(pseudo.id) == list(frame.id)
    assert list(pseudo.img_path) == list(frame.img_path)  # the real target images, the same absolute paths
    assert list(pseudo.gt_path) == [str(folder / "labels" / f"{i}.png") for i in frame.id]
    assert sorted(p.name for p in (folder / "labels").iterdir()) == sorted([MANIFEST, *(f"{i}.png" for i in frame.id)])
    for row in pseudo.itertuples():
        assert read_label(row.gt_path, PSEUDO_LABEL_VALUES).shape == read_image(row.img_path).shape[:2]
    assert is_pseudo_folder(folder)
    umask = os.umask(0)
    os.umask(umask)
    assert folder.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's owner-only mode
    assert sorted(p.name for p in (tmp_path / "pseudo").iterdir()) == ["round1"]  # no staging folder left


def test_a_second_round_into_the_same_folder_is_refused_and_leaves_it_as_it_was(tiny, tmp_path):
    out = tmp_path / "round1"
    make_pseudo_labels([run_of(NearestColour())], tiny, out, settings=WHOLE, progress=False)
    before = _tree(out)
    assert "pseudo.csv" in before and "summary.json" in before and "labels/TRAIN_TARGET_0000.png" in before
    other = NearestColour(temperature=100.0)
    with pytest.raises(FileExistsError, match=r"round1 already exists.*OVERWRITE = True"):
        make_pseudo_labels([run_of(other)], tiny, out, settings=WHOLE, quantile=0.2, progress=False)
    assert other.calls == 0  # refused before predicting anything
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round1"]


def test_overwrite_replaces_an_earlier_round(tiny, tmp_path):
    out = tmp_path / "round1"
    make_pseudo_labels([run_of(NearestColour())], tiny, out, settings=WHOLE, progress=False)
    before = _tree(out)
    made = make_pseudo_labels([run_of(NearestColour())], tiny, out, settings=WHOLE, quantile=0.2, cap=0.6,
                              threshold_images=None, overwrite=True, progress=False)
    assert _tree(out) != before
    assert json.loads((out / "summary.json").read_text())["quantile"] == 0.2
    thresholds, maps, _ = reference(tiny, [NearestColour()], 0.2, 0.6)
    np.testing.assert_array_equal(made.thresholds, thresholds)
    for image_id, label in _labels(made).items():
        np.testing.assert_array_equal(label, maps[image_id])
    assert is_pseudo_folder(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round1"]


def test_overwrite_refuses_a_folder_that_is_not_a_pseudo_label_folder(tiny, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    model = NearestColour()
    with pytest.raises(FileExistsError, match=r"mine holds no pseudo\.csv: it is not a pseudo-label folder"):
        make_pseudo_labels([run_of(model)], tiny, mine, overwrite=True, progress=False)
    with pytest.raises(FileExistsError, match="already exists"):
        make_pseudo_labels([run_of(model)], tiny, mine, progress=False)
    assert model.calls == 0
    assert _tree(mine) == {"notes.txt": b"keep"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    assert not is_pseudo_folder(mine)
    (mine / CSV_NAME).write_text("id,img_path,gt_path\n")  # a pseudo.csv, but no manifest: not the kit's
    assert not is_pseudo_folder(mine) and not is_pseudo_folder(tmp_path / "missing")


class Stop(BaseException):
    """Not an Exception: as KeyboardInterrupt, it must clean up too."""


@pytest.mark.parametrize("fail_at, error", [(2, RuntimeError), (5, RuntimeError), (6, Stop)],
                         ids=["thresholds-pass", "write-pass", "interrupt-at-the-last-image"])
def test_a_run_that_fails_midway_leaves_no_folder_and_no_staging(tiny, tmp_path, fail_at, error):
    parent = tmp_path / "pseudo"
    parent.mkdir()
    (parent / "other.txt").write_text("x")
    model = NearestColour(fail_at=fail_at, error=error)
    # 3 images: forward passes 1-3 set the thresholds, 4-6 write the labels
    with pytest.raises(error):
        make_pseudo_labels([run_of(model)], tiny, parent / "round2", settings=WHOLE, threshold_images=None,
                           progress=False)
    assert sorted(p.name for p in parent.iterdir()) == ["other.txt"]  # no round2, no .round2.*.tmp


def test_a_failure_while_overwriting_keeps_the_earlier_round(tiny, tmp_path):
    out = tmp_path / "round1"
    make_pseudo_labels([run_of(NearestColour())], tiny, out, settings=WHOLE, progress=False)
    before = _tree(out)
    with pytest.raises(RuntimeError, match="simulated"):
        make_pseudo_labels([run_of(NearestColour(fail_at=5))], tiny, out, settings=WHOLE, threshold_images=None,
                           overwrite=True, progress=False)
    assert _tree(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round1"]


def test_a_round_that_appears_while_labelling_is_not_replaced_without_overwrite(tiny, tmp_path):
    out = tmp_path / "round1"

    class Racer(NearestColour):
        def forward(self, x):
            if self.calls == 5:  # the last image: another run finishes round1 meanwhile
                out.mkdir()
                (out / CSV_NAME).write_text("theirs")
            return super().forward(x)

    with pytest.raises(FileExistsError):
        make_pseudo_labels([run_of(Racer())], tiny, out, settings=WHOLE, threshold_images=None, progress=False)
    assert (out / CSV_NAME).read_text() == "theirs"


# --- reading pseudo-label splits -------------------------------------------------------------------


def test_read_split_file_resolves_paths_against_the_csv_folder(tmp_path, monkeypatch):
    folder = tmp_path / "pseudo" / "round1"
    (folder / "labels").mkdir(parents=True)
    absolute = tmp_path / "elsewhere.png"
    (folder / CSV_NAME).write_text(f"id,img_path,gt_path\na,../../img/x.png,./labels/a.png\nb,{absolute},labels/b.png\n")
    monkeypatch.chdir(tmp_path / "pseudo")  # not where the CSV is
    frame = read_split_file(folder / CSV_NAME)
    assert list(frame.id) == ["a", "b"]
    assert list(frame.img_path) == [str(tmp_path / "img" / "x.png"), str(absolute)]
    assert list(frame.gt_path) == [str(folder / "labels" / "a.png"), str(folder / "labels" / "b.png")]
    monkeypatch.chdir(tmp_path)
    relative = read_split_file(os.path.join("pseudo", "round1", CSV_NAME))  # a relative CSV path: the same
    assert list(relative.gt_path) == list(frame.gt_path) and list(relative.img_path) == list(frame.img_path)


def test_read_split_file_without_gt_path_names_the_file(tmp_path):
    (tmp_path / "bad.csv").write_text("id,img_path\na,x.png\n")
    with pytest.raises(ValueError, match=r"bad\.csv: missing column\(s\) \['gt_path'\]"):
        read_split_file(tmp_path / "bad.csv")
    assert list(read_split_file(tmp_path / "bad.csv", ("id", "img_path")).id) == ["a"]  # asked for fewer columns


def test_read_label_refuses_void_unless_pseudo_label_values_are_allowed(tmp_path):
    label = np.array([[0, VOID_INDEX, VOID_INDEX], [255, 11, 3]], np.uint8)
    write_image(tmp_path / "a.png", label)
    with pytest.raises(ValueError, match=r"a\.png: label values outside 0..11 and 255: 254 \(2 px\)"):
        read_label(tmp_path / "a.png")
    np.testing.assert_array_equal(read_label(tmp_path / "a.png", allowed=PSEUDO_LABEL_VALUES), label)
    write_image(tmp_path / "b.png", np.array([[0, 253]], np.uint8))  # 253 is no pseudo-label value either
    with pytest.raises(ValueError, match=r"b\.png: label values outside 0..11 and 255 and 254: 253 \(1 px\)"):
        read_label(tmp_path / "b.png", allowed=PSEUDO_LABEL_VALUES)


def test_a_pseudo_label_split_trains_with_void_ignored_and_background_as_a_class(tiny, tmp_path):
    made = make_pseudo_labels([run_of(NearestColour())], tiny, tmp_path / "round1", settings=WHOLE, progress=False)
    pseudo = read_split_file(made.csv)
    dataset = SegmentationDataset(pseudo, background=12, label_values=PSEUDO_LABEL_VALUES)
    item = dataset[0]
    label = read_label(pseudo.gt_path[0], PSEUDO_LABEL_VALUES)
    expected = np.where(label == 255, 12, np.where(label == VOID_INDEX, 255, label))
    np.testing.assert_array_equal(item["label"].numpy(), expected)
    assert item["id"] == pseudo.id[0] and tuple(item["image"].shape) == (3, *SIZE)
