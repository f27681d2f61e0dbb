"""Offline pseudo-labels (kit.pseudo): class-wise thresholds, the label files, the folder's safety."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from kit.data import PSEUDO_LABEL_VALUES, VOID_INDEX, read_label, read_split, read_split_file
from kit.infer import InferenceSettings, resize_probs
from kit.pseudo import BINS, candidates, class_thresholds, make_pseudo_labels, pseudo_label_map


def test_class_thresholds_by_hand():
    h = np.zeros((3, BINS), np.int64)
    h[0, [100, 600, 1800]] = 1  # confidences 0.05, 0.3, 0.9: the median is 0.3
    h[1, 1900] = 4  # every pixel at 0.95: the cap (0.9) wins
    # class 2: no pixel predicted → the cap
    assert class_thresholds(h, 0.5, 0.9) == pytest.approx([0.3, 0.9, 0.9])
    assert class_thresholds(h, 0.0, 1.0) == pytest.approx([0.05, 0.95, 1.0])  # quantile 0: the lowest occupied bin
    for quantile, cap in ((-0.1, 0.9), (0.5, 0.0), (1.5, 0.9)):
        with pytest.raises(ValueError, match="expected 0 ≤ quantile ≤ 1 and 0 < cap ≤ 1"):
            class_thresholds(h, quantile, cap)


def test_class_thresholds_agree_with_numpy_quantiles():
    rng = np.random.default_rng(0)
    values = [rng.beta(a, 2, size=5000) for a in (1, 3, 8)]
    h = np.stack([np.bincount(np.minimum((v * BINS).astype(int), BINS - 1), minlength=BINS) for v in values])
    for q in (0.2, 0.5, 0.8):
        expected = [np.quantile(v, q) for v in values]
        assert class_thresholds(h, q, 1.0) == pytest.approx(expected, abs=1.5 / BINS)


def test_pseudo_label_map_keeps_confident_pixels_and_the_border_is_background():
    classes = np.array([[0, 0, 12, 12], [11, 11, 3, 3]], np.uint8)
    confidence = np.array([[0.9, 0.4, 0.9, 0.4], [0.6, 0.2, 0.99, 0.99]], np.float32)
    thresholds = np.full(13, 0.5)
    inside = np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)
    out = pseudo_label_map(classes, confidence, thresholds, inside)
    np.testing.assert_array_equal(out, [[0, VOID_INDEX, 255, VOID_INDEX], [11, VOID_INDEX, 3, 255]])
    no_background = pseudo_label_map(classes, confidence, thresholds, inside, background=False)
    assert no_background[0, 2] == VOID_INDEX and no_background[1, 3] == 255  # the border stays background


def test_balanced_candidates_prefer_the_class_with_the_larger_share_of_its_threshold():
    probs = torch.tensor([0.6, 0.35, 0.05])[:, None, None].expand(3, 1, 2).clone()
    thresholds = np.array([0.9, 0.4, 0.9])
    assert candidates(probs, thresholds, balanced=False)[0].tolist() == [[0, 0]]
    classes, confidence = candidates(probs, thresholds, balanced=True)
    assert classes.tolist() == [[1, 1]] and confidence == pytest.approx(0.35)  # 0.35 / 0.4 > 0.6 / 0.9


class Striped(nn.Module):
    """Logits from the image itself: class = red channel bucket, confidence from the green channel."""

    def forward(self, x):
        red, green = x[:, 0], x[:, 1]
        logits = torch.zeros(x.shape[0], 13, *x.shape[2:])
        bucket = ((red - red.amin()) / (red.amax() - red.amin() + 1e-6) * 3).long().clamp(0, 2)
        logits.scatter_(1, (bucket * 4)[:, None], (2 + 3 * torch.sigmoid(green))[:, None])
        return logits + 0 * self.dummy

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))


def _run():
    config = {"target_size": [54, 96], "target_mean": [0.5] * 3, "target_std": [0.25] * 3, "crop_size": [32, 32]}
    return Striped().eval(), config


def test_pseudo_labels_end_to_end_match_an_independent_recomputation(tiny, tmp_path):
    from kit.data import read_image
    from kit.infer import predict_run

    run = _run()
    settings = InferenceSettings(mode="whole", flip=False)
    made = make_pseudo_labels([run], tiny, tmp_path / "round1", settings=settings, quantile=0.5, cap=0.9,
                              threshold_images=None, progress=False)
    frame = read_split(tiny, "train_target")
    pseudo = read_split_file(made.csv)
    assert list(pseudo.id) == list(frame.id) and list(pseudo.img_path) == list(frame.img_path)
    truth = read_split(tiny, "train_target_gt").set_index("id")["gt_path"]
    tp = kept = 0
    for row in pseudo.itertuples():
        image = read_image(row.img_path)
        probs = resize_probs(predict_run(run, image, settings), (image.shape[1], image.shape[0]))
        confidence, classes = (t.numpy() for t in probs.max(0))
        expected = np.where(classes == 12, 255, classes).astype(np.uint8)  # by hand: background is 255,
        expected[confidence < made.thresholds[classes]] = VOID_INDEX  # below the class's threshold: 254
        got = read_label(row.gt_path, PSEUDO_LABEL_VALUES)
        np.testing.assert_array_equal(got, expected)
        t = read_label(truth[row.id])
        t = np.where(t >= 12, 12, t)
        c = classes
        keep = got != VOID_INDEX
        tp += ((c == 0) & keep & (t == 0)).sum()
        kept += ((c == 0) & keep).sum()
    table = made.table.set_index("class")
    assert table.loc["Road", "precision"] == pytest.approx(tp / kept, abs=0.01)
    summary = json.loads((made.folder / "summary.json").read_text())
    assert summary["thresholds"]["Road"] == pytest.approx(made.thresholds[0], abs=1e-4)


def test_a_round_folder_is_never_replaced_unless_asked_and_a_failure_leaves_nothing(tiny, tmp_path):
    run = _run()
    out = tmp_path / "round1"
    make_pseudo_labels([run], tiny, out, progress=False)
    before = {p.name: p.read_bytes() for p in (out / "labels").iterdir()}
    with pytest.raises(FileExistsError, match="already exists"):
        make_pseudo_labels([run], tiny, out, progress=False)
    assert {p.name: p.read_bytes() for p in (out / "labels").iterdir()} == before
    make_pseudo_labels([run], tiny, out, quantile=0.9, overwrite=True, progress=False)
    assert json.loads((out / "summary.json").read_text())["quantile"] == 0.9
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="not a pseudo-label folder"):
        make_pseudo_labels([run], tiny, tmp_path / "mine", overwrite=True, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"

    class Broken(nn.Module):
        calls = 0

        def forward(self, x):
            Broken.calls += 1
            if Broken.calls > 3:
                raise RuntimeError("out of memory")
            return torch.zeros(x.shape[0], 13, *x.shape[2:])

    with pytest.raises(RuntimeError, match="out of memory"):
        make_pseudo_labels([(Broken(), run[1])], tiny, tmp_path / "round2", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "round1"]  # no folder, no staging left


def test_read_split_file_and_pseudo_label_values(tmp_path):
    from kit.files import write_image

    (tmp_path / "labels").mkdir()
    write_image(tmp_path / "labels" / "a.png", np.array([[0, VOID_INDEX], [255, 11]], np.uint8))
    (tmp_path / "pseudo.csv").write_text("id,img_path,gt_path\na,../x.png,./labels/a.png\n")
    frame = read_split_file(tmp_path / "pseudo.csv")
    assert frame.gt_path[0] == str((tmp_path / "labels/a.png").resolve())
    assert frame.img_path[0] == str((tmp_path.parent / "x.png").resolve())
    with pytest.raises(ValueError, match=r"a\.png: label values outside 0..11 and 255: 254 \(1 px\)"):
        read_label(frame.gt_path[0])
    assert read_label(frame.gt_path[0], PSEUDO_LABEL_VALUES)[0, 1] == VOID_INDEX
    (tmp_path / "bad.csv").write_text("id,img_path\na,x.png\n")
    with pytest.raises(ValueError, match=r"bad\.csv: missing column\(s\) \['gt_path'\]"):
        read_split_file(tmp_path / "bad.csv")
