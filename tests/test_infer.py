import csv
import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kit.common.files import write_image
from kit.competition import submission as kit_submission
from kit.competition.layout import read_split
from kit.competition.rle import resize_nearest, rle_decode
from kit.competition.submission import SubmissionError, validate_submission
from kit.data import border as kit_border
from kit.data.border import Border, make_border
from kit.models.model import create_model
from kit.predict.runs import RunConfig, load_run
from kit.predict.splits import apply_border, predict_label_maps, predict_split, prediction_frame, to_label_map
from kit.predict.tta import (
    InferenceSettings,
    ensemble,
    predict_run,
    predict_tta,
    predict_whole,
    slide_predict,
    window_starts,
)

# --- dummy models ------------------------------------------------------------------------------


class Constant(nn.Module):
    """The same logits at every pixel."""

    def __init__(self, logits):
        super().__init__()
        self.register_buffer("logits", torch.tensor(logits, dtype=torch.float32))

    def forward(self, x):
        b, _, h, w = x.shape
        return self.logits.view(1, -1, 1, 1).expand(b, -1, h, w)


class Position(nn.Module):
    """Class 0's logit is the pixel's coordinate inside the window along ``axis``; class 1's is 0."""

    def __init__(self, axis):
        super().__init__()
        self.axis = axis

    def forward(self, x):
        b, _, h, w = x.shape
        coord = torch.arange(x.shape[self.axis], dtype=torch.float32)
        coord = coord.view(1, h, 1) if self.axis == 2 else coord.view(1, 1, w)
        return torch.stack([coord.expand(b, h, w), torch.zeros(b, h, w)], dim=1)  # (B, 2, H, W)


def position_prob(t):
    """Class 0's softmax probability for a window coordinate ``t`` (what Position gives)."""
    return torch.softmax(torch.tensor([float(t), 0.0]), dim=0)[0]


def pixel_model(seed=0, classes=5):
    """A per-pixel function of the colour: flip-equivariant, independent of window placement."""
    torch.manual_seed(seed)
    return nn.Conv2d(3, classes, 1).eval()


def conv_model(seed=0, classes=5):
    """Sees neighbours: its output depends on where the windows are cut."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, classes, 3, padding=1)).eval()


def images(b=2, h=10, w=14, seed=0):
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


class Skewed(nn.Module):
    """A 3×3 conv plus a left-to-right ramp on class 0's logit: neither constant nor flip-equivariant,
    and what it predicts at a pixel depends on the window and the scale it is seen in."""

    def __init__(self, seed=0, classes=4):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, classes, 3, padding=1)

    def forward(self, x):
        logits = self.conv(x)  # (B, C, H, W)
        ramp = torch.linspace(-2.0, 2.0, x.shape[-1])
        return torch.cat([logits[:, :1] + ramp, logits[:, 1:]], dim=1)


# --- slow references: one window, one view at a time -------------------------------------------


def grid(length, window, stride):
    """Window starts every ``stride`` pixels, and one ending at the edge where they miss it."""
    starts = list(range(0, length - window + 1, stride))
    return starts if starts[-1] == length - window else [*starts, length - window]


def slide_reference(model, x, window, stride):
    """Each window's softmax on its own, averaged where windows overlap; an image smaller than the
    window is padded at the bottom and right with zeros and the result cropped back."""
    (h, w), (sh, sw) = window, stride
    height, width = x.shape[-2:]
    x = F.pad(x, (0, max(w - width, 0), 0, max(h - height, 0)))
    padded_h, padded_w = x.shape[-2:]
    total = count = 0
    for y in grid(padded_h, h, sh):
        for left in grid(padded_w, w, sw):
            around = (left, padded_w - left - w, y, padded_h - y - h)  # zeros outside the window
            total = total + F.pad(model(x[..., y : y + h, left : left + w]).softmax(1), around)
            count = count + F.pad(torch.ones(h, w), around)
    return (total / count)[..., :height, :width]


def tta_reference(model, x, scales, flip, window=None):
    """The mean over scales × (plain, flipped) of: resize the input (bilinear), predict (whole, or
    windows with half-window strides), flip back, resize the probabilities (bilinear) to the input size."""
    height, width = x.shape[-2:]

    def predict(view):
        if window is None:
            return model(view).softmax(1)
        return slide_reference(model, view, window, (window[0] // 2, window[1] // 2))

    views = []
    for scale in scales:
        scaled = F.interpolate(x, size=(round(height * scale), round(width * scale)), mode="bilinear",
                               align_corners=False)
        predicted = [predict(scaled)] + ([predict(scaled.flip(-1)).flip(-1)] if flip else [])
        views += [F.interpolate(p, size=(height, width), mode="bilinear", align_corners=False) for p in predicted]
    return torch.stack(views).mean(0)


# --- sliding windows ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "length, window, stride, starts",
    [
        (6, 4, 2, [0, 2]),
        (7, 4, 2, [0, 2, 3]),  # not a multiple of the stride: the last window is clamped to the edge
        (4, 4, 2, [0]),
        (8, 4, 4, [0, 4]),
        (9, 4, 4, [0, 4, 5]),
        (5, 2, 1, [0, 1, 2, 3]),
    ],
)
def test_window_starts(length, window, stride, starts):
    assert window_starts(length, window, stride) == starts


def test_slide_constant_model_gives_its_softmax():
    logits = [1.0, -2.0, 0.5]
    probs = slide_predict(Constant(logits), images(h=11, w=13), window=(4, 6), stride=(3, 4))
    expected = torch.softmax(torch.tensor(logits), 0).view(1, 3, 1, 1).expand(2, 3, 11, 13)
    torch.testing.assert_close(probs, expected)


def test_slide_with_one_window_equals_a_forward_pass():
    x = images(h=10, w=14)
    probs = slide_predict(conv_model(), x, window=(10, 14), stride=(5, 7))
    torch.testing.assert_close(probs, predict_whole(conv_model(), x))


@pytest.mark.parametrize("axis", [2, 3])
@pytest.mark.parametrize(
    "length, window, stride, coords",
    [
        # windows at 0 and 2: overlap counts 1 1 2 2 1 1; each pixel lists its coordinate in every window covering it
        (6, 4, 2, [[0], [1], [2, 0], [3, 1], [2], [3]]),
        # 7 is not a multiple of the stride: windows at 0, 2 and 3 (clamped), counts 1 1 2 3 2 2 1
        (7, 4, 2, [[0], [1], [2, 0], [3, 1, 0], [2, 1], [3, 2], [3]]),
        # smaller than the window: padded to 4, one window at 0, cropped back to 3
        (3, 4, 2, [[0], [1], [2]]),
    ],
)
def test_slide_averages_overlapping_windows(axis, length, window, stride, coords):
    other = 5  # the other axis: one window covers it
    shape = (1, 3, length, other) if axis == 2 else (1, 3, other, length)
    win = (window, other) if axis == 2 else (other, window)
    strd = (stride, other) if axis == 2 else (other, stride)
    probs = slide_predict(Position(axis), torch.zeros(shape), window=win, stride=strd)
    assert probs.shape == (1, 2, *shape[2:])
    expected = torch.stack([torch.stack([position_prob(t) for t in ts]).mean() for ts in coords])  # (length,)
    line = probs[0, 0, :, 0] if axis == 2 else probs[0, 0, 0, :]
    torch.testing.assert_close(line, expected)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, *shape[2:]))


def test_slide_image_smaller_than_window_in_both_axes():
    x = images(b=1, h=3, w=5)
    probs = slide_predict(pixel_model(), x, window=(8, 8), stride=(4, 4))
    assert probs.shape == (1, 5, 3, 5)
    torch.testing.assert_close(probs, predict_whole(pixel_model(), x))  # per-pixel: the padding changes nothing


@pytest.mark.parametrize(
    "size, window, stride",
    [
        ((13, 17), (6, 8), (3, 5)),  # smaller in both axes, neither a multiple of the stride: clamped last windows
        ((10, 17), (10, 8), (5, 3)),  # smaller in the width only
        ((13, 8), (5, 8), (2, 4)),  # smaller in the height only
        ((4, 17), (6, 8), (3, 5)),  # taller than the image (padded) and narrower (slides)
    ],
)
def test_slide_equals_a_window_at_a_time(size, window, stride):
    x, model = images(b=2, h=size[0], w=size[1]), Skewed()
    probs = slide_predict(model, x, window=window, stride=stride, batch_size=3)
    torch.testing.assert_close(probs, slide_reference(model, x, window, stride))


def test_slide_batched_windows_equal_one_at_a_time():
    x = images(b=2, h=13, w=17)
    one = slide_predict(conv_model(), x, window=(6, 8), stride=(3, 5), batch_size=1)
    batched = slide_predict(conv_model(), x, window=(6, 8), stride=(3, 5), batch_size=8)
    torch.testing.assert_close(one, batched, rtol=0, atol=1e-6)


def test_slide_rejects_a_stride_larger_than_the_window():
    with pytest.raises(ValueError, match="larger than the window"):
        slide_predict(Constant([0.0, 1.0]), images(), window=(4, 4), stride=(5, 2))


def test_slide_checks_num_classes():
    with pytest.raises(ValueError, match="predicts 2 classes; expected num_classes=13"):
        slide_predict(Constant([0.0, 1.0]), images(), window=(4, 4), stride=(2, 2), num_classes=13)


# --- test-time augmentation --------------------------------------------------------------------


@pytest.mark.parametrize(
    "scales, flip, window",
    [
        ((1.0,), False, None),  # a plain prediction
        ((1.0,), True, None),
        ((0.5, 0.75, 1.25), False, None),
        ((0.5, 0.75, 1.25), True, None),
        ((1.0,), True, (6, 7)),
        ((0.4, 1.0, 1.25), True, (6, 7)),  # at 0.4 the 5×6 image is smaller than the window
    ],
)
def test_tta_equals_a_view_at_a_time(scales, flip, window):
    x, model = images(h=12, w=16), Skewed()
    probs = predict_tta(model, x, scales=scales, flip=flip, window=window, batch_size=4)
    assert probs.shape == (2, 4, 12, 16)
    torch.testing.assert_close(probs, tta_reference(model, x, scales, flip, window))


# --- label maps and the border -----------------------------------------------------------------


def test_to_label_map_background_output_and_border_are_255():
    probs = torch.zeros(13, 2, 3)
    probs[[0, 4, 12, 11, 12, 7], [0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2]] = 1.0
    inside = np.array([[True, True, True], [True, True, False]])
    assert to_label_map(probs).tolist() == [[0, 4, 255], [11, 255, 7]]
    assert to_label_map(probs, inside).tolist() == [[0, 4, 255], [11, 255, 255]]


def test_apply_border_hand_made_mask():
    label = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)
    inside = np.array([[False, True, True], [True, True, False]])
    out = apply_border(label, inside)
    assert out.tolist() == [[255, 2, 3], [4, 5, 255]]
    assert label.tolist() == [[1, 2, 3], [4, 5, 6]]  # input untouched
    with pytest.raises(ValueError, match="Border.mask"):
        apply_border(label, inside[:, :2])


def test_border_mask_scales_to_any_size():
    inside = np.array([[False, True, True, False], [True, True, True, True]])
    mask = Border((4, 2), inside=inside).mask((8, 4))
    assert mask.tolist() == np.repeat(np.repeat(inside, 2, axis=0), 2, axis=1).tolist()
    ellipse = ((80.0, 45.0), (150.0, 110.0), 0.0)
    drawn = Border((160, 90), ellipse=ellipse).mask((320, 180))
    assert np.array_equal(drawn, kit_border.ellipse_mask((320, 180), ellipse, scale_from=(160, 90)))
    with pytest.raises(ValueError, match="exactly one"):
        Border((4, 2))


# --- runs, ensembles, whole splits -------------------------------------------------------------


def run_config(h, w, **extra):
    """A run's config.json whose normalisation passes raw 0..255 pixel values to the model."""
    return {"arch": "dummy", "encoder": "dummy", "num_classes": 13, "head_kwargs": {},
            "target_mean": [0.0] * 3, "target_std": [1 / 255] * 3, "target_size": [h, w], "crop_size": [h, w], **extra}


def typed_config(h, w, **extra) -> RunConfig:
    return RunConfig.from_dict(run_config(h, w, **extra))


class RedIsClass(nn.Module):
    """Reads the class id from the red channel (raw pixel value): logit_c = -10·(red - c)²."""

    def forward(self, x):
        classes = torch.arange(13, dtype=torch.float32).view(1, 13, 1, 1)
        return -10.0 * (x[:, :1] - classes) ** 2  # (B, 13, H, W)


def stripe_label(rng, h=54, w=96):
    """Vertical stripes of random classes, 12 (background) among them. Stripes, not blocks: where
    four blocks meet, bilinear probabilities can argmax to a third class, which nearest resizing never does."""
    return np.kron(rng.integers(0, 13, (1, w // 12)), np.ones((h, 12), np.int64)).astype(np.uint8)


@pytest.fixture
def labelled_split(tmp_path):
    """Three 96×54 images whose red channel is the class id, their labels (255 for background)
    and a sample submission for them."""
    rng = np.random.default_rng(0)
    rows, labels = [], {}
    for i in range(3):
        classes = stripe_label(rng)
        image = np.zeros((*classes.shape, 3), np.uint8)
        image[..., 0] = classes
        label = np.where(classes == 12, 255, classes).astype(np.uint8)
        image_id = f"TEST_{i:04d}"
        write_image(tmp_path / f"{image_id}.png", image)
        write_image(tmp_path / f"{image_id}_gt.png", label)
        rows.append((image_id, str(tmp_path / f"{image_id}.png"), str(tmp_path / f"{image_id}_gt.png")))
        labels[image_id] = label
    sample = tmp_path / "sample_submission.csv"
    row_ids = [f"{r[0]}_class_{c}" for r in rows for c in range(12)]
    pd.DataFrame({"id": row_ids, "mask_rle": "-1"}).to_csv(sample, index=False)
    return pd.DataFrame(rows, columns=["id", "img_path", "gt_path"]), labels, sample


def test_predict_split_writes_a_submission_that_decodes_back_and_scores(tmp_path, labelled_split):
    frame, labels, sample = labelled_split
    run = (RedIsClass(), typed_config(54, 96))  # probabilities are upsampled 10× to 960×540
    result = predict_split([run], frame, settings=InferenceSettings(mode="whole"), submission=tmp_path / "sub.csv",
                           sample=sample, progress=False)
    assert validate_submission(result.submission, sample) == 36
    rows = list(csv.reader(open(result.submission, newline="")))[1:]
    for i, (image_id, label) in enumerate(labels.items()):
        expected = resize_nearest(label, (960, 540))  # an integer scale: bilinear probabilities argmax to the same map
        for c in range(12):
            assert rows[12 * i + c][0] == f"{image_id}_class_{c}"
            assert np.array_equal(rle_decode(rows[12 * i + c][1], (540, 960)), (expected == c).astype(np.uint8))
    cm = result.confusion
    assert cm.sum() == 3 * 54 * 96 and np.count_nonzero(cm - np.diag(np.diag(cm))) == 0
    assert result.per_image.id.tolist() == list(labels) and (result.per_image.mIoU == 1.0).all()
    assert result.scores["mIoU"] == 1.0


def test_predict_split_border_and_a_corrupted_submission(tmp_path, labelled_split):
    frame, labels, sample = labelled_split
    inside = np.ones((54, 96), bool)
    inside[:, :48] = False  # the left half is outside the "fisheye disc"
    result = predict_split([(RedIsClass(), typed_config(54, 96))], frame.drop(columns="gt_path"),
                           settings=InferenceSettings(mode="slide"), border=Border((96, 54), inside=inside),
                           submission=tmp_path / "sub.csv", sample=sample, progress=False)
    assert result.confusion is None and result.per_image is None
    rows = list(csv.reader(open(result.submission, newline="")))
    for c in range(12):  # TEST_0000: nothing left of column 480 at 960×540
        assert not rle_decode(rows[1 + c][1], (540, 960))[:, :480].any()
    # a corrupted copy is rejected with its rows named: tests/test_rle.py::test_validate_submission_names_offending_rows covers it


def test_predict_split_missing_image_leaves_no_submission(tmp_path, labelled_split):
    frame, _, sample = labelled_split
    with pytest.raises(ValueError, match=r"1 image\(s\).*TEST_0002"):
        predict_split([(RedIsClass(), typed_config(54, 96))], frame.head(2), settings=InferenceSettings(mode="whole"),
                      submission=tmp_path / "sub.csv", sample=sample, progress=False)
    assert not (tmp_path / "sub.csv").exists()


def test_predict_split_refuses_a_label_of_another_size(tmp_path, labelled_split):
    frame, labels, sample = labelled_split
    write_image(frame.gt_path[1], labels["TEST_0001"][:53])  # one row short: was resized silently
    with pytest.raises(ValueError, match=r"label .*TEST_0001_gt.png is 96x53 but image .*TEST_0001.png is 96x54"):
        predict_split([(RedIsClass(), typed_config(54, 96))], frame, settings=InferenceSettings(mode="whole"),
                      submission=tmp_path / "sub.csv", sample=sample, progress=False)
    assert not (tmp_path / "sub.csv").exists()


@pytest.mark.parametrize("earlier", [None, "earlier run\n"])
def test_predict_split_never_puts_an_invalid_submission_in_place(tmp_path, labelled_split, monkeypatch, earlier):
    frame, _, sample = labelled_split
    out = tmp_path / "sub.csv"
    if earlier is not None:
        out.write_text(earlier)
    # an encoder bug: class 5 of every image gets a run past the end of the 960x540 mask
    monkeypatch.setattr(kit_submission, "encode_label_map", lambda label_map, size: ["-1"] * 5 + ["518400 2"] + ["-1"] * 6)
    with pytest.raises(SubmissionError, match=r"sub.csv was not written: 3 problem\(s\):\n  line 7 \(TEST_0000_class_5\)"):
        predict_split([(RedIsClass(), typed_config(54, 96))], frame, settings=InferenceSettings(mode="whole"),
                      submission=out, sample=sample, overwrite=True, progress=False)
    assert (out.read_text() if out.exists() else None) == earlier


def test_predict_label_maps_at_a_requested_size(labelled_split):
    frame, labels, _ = labelled_split
    maps = dict(predict_label_maps([(RedIsClass(), typed_config(54, 96))], frame, size=(192, 108),
                                   settings=InferenceSettings(mode="whole"), progress=False))
    assert list(maps) == list(labels)
    for image_id, label in labels.items():
        assert maps[image_id].dtype == np.uint8
        assert np.array_equal(maps[image_id], resize_nearest(label, (192, 108)))


@pytest.mark.parametrize("crop", [(12, 7), (5, 16), (5, 7)])  # narrower, shorter, both (not dividing 12×16)
def test_predict_run_slides_windows_of_its_crop_when_the_crop_is_smaller_than_the_image(crop):
    image = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    model, config = Skewed(), typed_config(12, 16, crop_size=list(crop), target_mean=[0.5] * 3, target_std=[0.25] * 3)
    probs = predict_run((model, config), image, InferenceSettings(mode="slide"))
    x = (torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.25  # (1, 3, 12, 16)
    half = (crop[0] // 2, crop[1] // 2)  # the default stride
    torch.testing.assert_close(probs, slide_reference(model, x, crop, half)[0])


def test_ensemble_is_the_weighted_mean_at_the_largest_image_size():
    a, b = [2.0] + [0.0] * 12, [0.0, 3.0] + [0.0] * 11
    runs = [(Constant(a), typed_config(4, 6)), (Constant(b), typed_config(8, 12))]
    image = np.zeros((9, 16, 3), np.uint8)
    probs = ensemble(runs, image, weights=(0.9, 1.0), settings=InferenceSettings(mode="whole"))
    assert probs.shape == (13, 8, 12)
    expected = (0.9 * torch.softmax(torch.tensor(a), 0) + torch.softmax(torch.tensor(b), 0)) / 1.9
    torch.testing.assert_close(probs, expected.view(13, 1, 1).expand_as(probs))
    with pytest.raises(ValueError, match="2 non-negative"):
        ensemble(runs, image, weights=(1.0,))


def test_load_run_round_trip(tmp_path):
    torch.manual_seed(0)
    model = create_model("segformer", "pvt_v2_b0", num_classes=13, channels=32).eval()
    config = run_config(32, 64, arch="segformer", encoder="pvt_v2_b0", head_kwargs={"channels": 32})
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config))
    torch.save({"model": model.state_dict(), "config": config}, run_dir / "best.pt")
    loaded, loaded_config = load_run(run_dir)
    assert loaded_config == RunConfig.from_dict(config) and not loaded.training
    # read once into types: tuples where config.json has lists, every value it holds kept
    assert (loaded_config.target_size, loaded_config.crop_size, loaded_config.head_kwargs) == ((32, 64), (32, 64),
                                                                                             {"channels": 32})
    assert loaded_config.target_mean == (0.0, 0.0, 0.0) and loaded_config.values == config
    x = images(b=1, h=32, w=64)
    torch.testing.assert_close(predict_whole(loaded, x), predict_whole(model, x))


def test_load_run_errors_name_what_exists(tmp_path):
    runs = tmp_path / "runs"
    (runs / "demo").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"run folder not found: .*missing.*runs in .*: demo"):
        load_run(runs / "missing")
    with pytest.raises(FileNotFoundError, match=r"config.json not found; the run folder holds: nothing"):
        load_run(runs / "demo")
    (runs / "demo" / "config.json").write_text(json.dumps(run_config(4, 4)))
    (runs / "demo" / "last.pt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"best.pt not found; checkpoints in .*: last.pt"):
        load_run(runs / "demo")
    (runs / "demo" / "config.json").write_text(json.dumps({"arch": "daformer"}))
    with pytest.raises(ValueError, match=r"lacks key\(s\) \['encoder'"):
        load_run(runs / "demo")


def test_prediction_frame_prefers_the_labelled_twin(tiny):
    test = prediction_frame(tiny, "test")
    assert "gt_path" in test.columns and list(test.id) == list(read_split(tiny, "test").id)
    assert list(prediction_frame(tiny, "train_source").columns) == ["id", "img_path", "gt_path"]  # no twin: itself


@pytest.mark.parametrize("kind, field", [("ellipse", "ellipse"), ("mask", "inside")])
def test_make_border_kinds(tiny, kind, field):
    border = make_border(tiny, kind, threshold=None)
    assert getattr(border, field) is not None and border.frame_size == (160, 90)
    assert 0.5 < border.mask((96, 54)).mean() < 0.98


def test_make_border_none_and_unknown(tiny):
    assert make_border(tiny, None) is None
    with pytest.raises(ValueError, match=r"unknown border 'circle'; expected one of \('ellipse', 'mask'\) or None"):
        make_border(tiny, "circle")


def test_inference_settings_take_the_lists_notebooks_pass():
    settings = InferenceSettings(mode="slide", stride=[16, 32], scales=[0.8, 1.0, 1.2])  # papermill parameters are JSON
    assert settings.stride == (16, 32) and settings.scales == (0.8, 1.0, 1.2)
    assert hash(settings) == hash(InferenceSettings(mode="slide", stride=(16, 32), scales=(0.8, 1.0, 1.2)))


@pytest.mark.parametrize(
    "field, value, expected",
    [
        ("mode", "tiles", r"one of \('whole', 'slide'\)"),
        ("stride", (0, 4), r"None or two integers ≥ 1 \(h, w\)"),
        ("stride", [16], r"None or two integers ≥ 1 \(h, w\)"),
        ("stride", (8.0, 8), r"None or two integers ≥ 1 \(h, w\)"),
        ("stride", 16, r"None or two integers ≥ 1 \(h, w\)"),
        ("scales", [], r"a non-empty sequence of finite numbers > 0"),
        ("scales", (1.0, 0), r"a non-empty sequence of finite numbers > 0"),
        ("scales", (float("nan"),), r"a non-empty sequence of finite numbers > 0"),
        ("scales", (1.0, float("inf")), r"a non-empty sequence of finite numbers > 0"),
        ("scales", 1.0, r"a non-empty sequence of finite numbers > 0"),
        ("scales", "1.0", r"a non-empty sequence of finite numbers > 0"),
        ("flip", "yes", r"True or False"),
        ("flip", 1, r"True or False"),
        ("batch_size", 0, r"an integer ≥ 1"),
        ("batch_size", 2.5, r"an integer ≥ 1"),
        ("batch_size", True, r"an integer ≥ 1"),
        ("amp", "false", r"one of \('run', 'auto', 'bf16', 'fp16', 'none'\)"),
    ],
)
def test_inference_settings_name_the_bad_field(field, value, expected):
    shown = repr(tuple(value) if isinstance(value, list) else value)
    with pytest.raises(ValueError, match=rf"^InferenceSettings {field}={re.escape(shown)}: expected {expected}$"):
        InferenceSettings(**{field: value})


def test_inference_settings_take_numpy_integers_and_integral_scales():
    settings = InferenceSettings(stride=(np.int64(8), 16), scales=[1, np.float32(0.5)], batch_size=np.int32(2))
    assert settings.stride == (8, 16) and settings.scales == (1, 0.5) and settings.batch_size == 2


def test_predict_split_keeps_the_first_and_the_worst_label_maps_for_the_figures(labelled_split, tmp_path):
    """04's figures show the first GRID_COUNT images and the WORST_COUNT lowest mIoU: predict_split
    keeps exactly those maps (at each image's size), as predict_label_maps would predict them again."""
    frame, _, sample = labelled_split
    runs, settings = [(RedIsClass(), typed_config(54, 96))], InferenceSettings(mode="whole")
    result = predict_split(runs, frame, settings=settings, progress=False, keep=1, keep_worst=2)
    worst = result.per_image.nsmallest(2, "mIoU")["id"].tolist()
    assert set(result.label_maps) == {frame["id"].iloc[0], *worst}
    again = dict(predict_label_maps(runs, frame[frame["id"].isin(result.label_maps)], settings=settings, progress=False))
    for image_id, label in result.label_maps.items():
        np.testing.assert_array_equal(label, again[image_id])
    assert predict_split(runs, frame, settings=settings, progress=False).label_maps == {}
    unlabelled = frame.drop(columns="gt_path")
    kept = predict_split(runs, unlabelled, settings=settings, progress=False, keep=2, keep_worst=2,
                         submission=tmp_path / "sub.csv", sample=sample).label_maps
    assert list(kept) == frame["id"].iloc[:2].tolist()  # no labels: no worst
