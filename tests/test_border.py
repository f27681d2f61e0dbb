"""The fisheye border has one home (kit.data.border): one image rule, one threshold policy, and the same
border for training and prediction."""

from fractions import Fraction

import cv2
import numpy as np
import pytest
from PIL import Image
from scratch import SCRATCH

from kit.common.files import write_image
from kit.competition.layout import read_split
from kit.data.border import border_mask, ellipse_mask, estimate_border, make_border, otsu_threshold
from kit.data.fisheye import fisheye_camera
from kit.predict.runs import load_run
from kit.predict.splits import run_border
from kit.synth import Cameras
from kit.train.config import TrainConfig
from kit.train.loop import train
from kit.train.recipes import build_data


def _otsu_by_exhaustive_search(grey: np.ndarray) -> int:
    """Otsu's threshold of ``uint8`` values, every cut t tried (class 0: values ≤ t) in exact arithmetic: the
    first t with the largest between-class variance N0·N1·(mean0 − mean1)² = (S0·N1 − S1·N0)² / (N0·N1)."""
    counts = np.bincount(grey.ravel(), minlength=256).tolist()
    best, best_t = Fraction(-1), 0
    for t in range(255):
        n0, n1 = sum(counts[: t + 1]), sum(counts[t + 1 :])
        if n0 == 0 or n1 == 0:
            continue
        s0 = sum(v * c for v, c in enumerate(counts[: t + 1]))
        s1 = sum(v * c for v, c in enumerate(counts[t + 1 :], start=t + 1))
        score = Fraction((s0 * n1 - s1 * n0) ** 2, n0 * n1)
        if score > best:
            best, best_t = score, t
    return best_t


def _grey(kind: str) -> np.ndarray:
    """``uint8 (60, 80)`` images with awkward histograms, all in 1..254."""
    rng = np.random.default_rng(0)
    n = 60 * 80
    values = {
        "bimodal, unequal modes": np.where(rng.random(n) < 0.75, rng.normal(60, 12, n), rng.normal(170, 20, n)),
        "three levels": rng.choice([20, 100, 220], n, p=[0.5, 0.3, 0.2]),
        "two levels (every cut between them ties: the first wins)": rng.choice([30, 200], n),
        "long tail": rng.exponential(25.0, n),
        "uniform": rng.integers(1, 255, n),
        "one pixel one level up": np.r_[np.full(n - 1, 50), 51],
        "constant (no cut: 0)": np.full(n, 50),
    }[kind]
    return np.clip(np.round(values), 1, 254).astype(np.uint8).reshape(60, 80)


@pytest.mark.parametrize("kind", ["bimodal, unequal modes", "three levels",
                                  "two levels (every cut between them ties: the first wins)", "long tail", "uniform",
                                  "one pixel one level up", "constant (no cut: 0)"])
def test_otsu_threshold_equals_opencvs_and_an_exhaustive_search_on_the_channel_mean(kind):
    grey = _grey(kind)
    rgb = np.stack([grey - 1, grey, grey + 1], axis=-1).astype(np.float32)  # channel mean: grey exactly
    opencv, _ = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    assert otsu_threshold(rgb) == opencv == _otsu_by_exhaustive_search(grey)


def test_otsu_threshold_splits_a_two_level_image_between_its_levels():
    image = np.full((20, 40, 3), 30.0, np.float32)
    image[2:18, 1:39] = 200.0  # covers the centre box that border_mask forces inside
    assert 30 <= otsu_threshold(image) < 200
    inside = border_mask(image)  # default: Otsu
    assert inside[2:18, 1:39].all() and inside.sum() == 16 * 38


def test_a_noisy_dark_border_between_two_levels_stays_outside_with_otsu():
    """The new demo data at 480×270 (issue 27): the mean border is 2.05–2.99, the disc 70+. Otsu's histogram
    counts whole levels (all 2), so its threshold is 2; a float comparison put the whole border inside and
    the ellipse fit failed (no outline off the frame edge)."""
    rng = np.random.default_rng(0)
    h, w = 54, 96
    rows, cols = np.mgrid[0:h, 0:w]
    disc = ((cols - 47.5) / 46) ** 2 + ((rows - 26.5) / 33) ** 2 <= 1
    grey = np.where(disc, rng.uniform(70, 180, (h, w)), rng.uniform(2.05, 2.99, (h, w))).astype(np.float32)
    image = np.repeat(grey[..., None], 3, axis=2)
    assert otsu_threshold(image) == 2.0
    np.testing.assert_array_equal(border_mask(image), disc)


def test_estimate_border_averages_evenly_spread_images_with_otsu_by_default(tiny):
    """On the synthetic data the true border is known: the fisheye camera's image circle."""
    frame = read_split(tiny, "train_target")
    assert len(frame) == 3
    estimate = estimate_border(tiny, max_images=2)
    assert estimate.paths == (frame.img_path[0], frame.img_path[2])  # first and last, not the first two
    total = sum(np.asarray(Image.open(p).convert("RGB"), np.int64) for p in estimate.paths)  # (H, W, 3)
    np.testing.assert_array_equal(estimate.mean, total / 2)  # halves: exact in float32
    grey = (total.sum(axis=2) // 6).astype(np.uint8)  # the channel mean, to whole levels
    assert estimate.threshold == _otsu_by_exhaustive_search(grey)
    _, circle = fisheye_camera(160, 90, circle=Cameras().fisheye_circle).pixel_rays()
    # Otsu's cut is not always in the gap between border (≤ 8) and scene: a few dark rim pixels of the
    # vignetted disc may fall below it (10 of 11,000 here), never a border pixel above it
    wrong = estimate.inside != circle
    assert (circle[wrong]).all() and (grey[wrong] <= estimate.threshold).all() and wrong.sum() < 0.005 * circle.sum()
    (cx, cy), axes, _ = estimate.ellipse
    assert (cx, cy) == pytest.approx((79.5, 44.5), abs=0.1)
    # fitted through the outline's pixel centres, up to a pixel inside the circle's edge (and the rim pixels
    # Otsu's cut left out: 1.5 px); with a cut in the gap, the outline is the circle's own (below)
    assert sorted(axes) == pytest.approx(sorted([0.96 * 160, 1.25 * 90]), abs=1.5)
    given = estimate_border(tiny, max_images=2, threshold=60.0)  # any cut between border (≤ 8) and scene
    assert given.threshold == 60.0
    np.testing.assert_array_equal(given.inside, circle)
    assert sorted(given.ellipse[1]) == pytest.approx(sorted([0.96 * 160, 1.25 * 90]), abs=1.0)


# A hand-made target camera: a disc off the frame's centre, cut by the frame at top and bottom
DISC_FRAME, DISC_CENTRE, DISC_SEMI_AXES = (192, 108), (96.8, 52.7), (0.47 * 192, 0.62 * 108)


def _true_disc(size: tuple[int, int]) -> np.ndarray:
    """``bool (H, W)``: the pixel centres inside the disc in a frame of ``size`` (scaled about -0.5, the
    frame's corner)."""
    s = size[0] / DISC_FRAME[0]
    v, u = np.mgrid[0 : size[1], 0 : size[0]]
    (cx, cy), (a, b) = [(c + 0.5) * s - 0.5 for c in DISC_CENTRE], [r * s for r in DISC_SEMI_AXES]
    return ((u - cx) / a) ** 2 + ((v - cy) / b) ** 2 <= 1


@pytest.fixture(scope="module")
def disc_dataset(tmp_path_factory):
    """Three target images: a bright textured scene inside the disc with a dark car in it, a dark noisy
    border with a bright speck."""
    root = tmp_path_factory.mktemp("disc")
    rng = np.random.default_rng(0)
    w, h = DISC_FRAME
    inside = _true_disc(DISC_FRAME)
    rows = []
    for i in range(3):
        image = np.where(inside[..., None], rng.integers(90, 231, (h, w, 3)), rng.integers(0, 21, (h, w, 3)))
        image[80:88, 60:70] = 5  # the car, below the centre box that border_mask forces inside: a hole to fill
        image[2, 3] = 250  # the speck: noise outside the disc
        write_image(root / "train_target_image" / f"TRAIN_TARGET_{i:04d}.png", image.astype(np.uint8))
        rows.append(f"TRAIN_TARGET_{i:04d},./train_target_image/TRAIN_TARGET_{i:04d}.png")
    (root / "train_target.csv").write_text("id,img_path\n" + "\n".join(rows) + "\n")
    return root


def test_estimate_border_recovers_a_hand_made_disc(disc_dataset):
    estimate = estimate_border(disc_dataset, max_images=None)
    np.testing.assert_array_equal(estimate.inside, _true_disc(DISC_FRAME))  # the car filled, the speck dropped
    (cx, cy), axes, _ = estimate.ellipse
    assert (cx, cy) == pytest.approx(DISC_CENTRE, abs=0.1)
    assert sorted(axes) == pytest.approx(sorted(2 * r for r in DISC_SEMI_AXES), abs=1.0)


@pytest.mark.parametrize("kind", ["ellipse", "mask"])
def test_a_border_estimated_at_half_size_is_drawn_in_place_at_full_size(disc_dataset, kind):
    """Estimated on 96×54 means, drawn at 192×108: the disc's centre lands within a tenth of a pixel
    of the true one (scaling pixel coordinates about 0 instead of -0.5 would move it by half a pixel)."""
    estimate = estimate_border(disc_dataset, size=(96, 54), max_images=None)
    drawn, truth = estimate.border(kind).mask(DISC_FRAME), _true_disc(DISC_FRAME)
    rows, cols = np.nonzero(drawn)
    true_rows, true_cols = np.nonzero(truth)
    assert cols.mean() == pytest.approx(true_cols.mean(), abs=0.1)
    assert rows.mean() == pytest.approx(true_rows.mean(), abs=0.1)
    assert (drawn != truth).mean() < 0.012  # the outline, a pixel wide at most


def test_estimate_border_at_a_size_draws_both_kinds_there(tiny):
    estimate = estimate_border(tiny, size=(96, 54))
    assert estimate.mean.shape == (54, 96, 3) and estimate.frame_size == (96, 54)
    assert estimate.border("mask").mask((96, 54)).tolist() == estimate.inside.tolist()
    drawn = estimate.border("ellipse").mask((192, 108))
    np.testing.assert_array_equal(drawn, ellipse_mask((192, 108), estimate.ellipse, scale_from=(96, 54)))
    with pytest.raises(ValueError, match="unknown border 'disc'"):
        estimate.border("disc")


def test_training_and_prediction_on_the_same_dataset_get_the_same_border(tiny, tmp_path):
    config = TrainConfig(**{
        **SCRATCH, "data_dir": str(tiny), "runs_dir": str(tmp_path), "run_name": "run", "method": "fisheye_tf",
        "head_channels": 16, "source_size": (48, 96), "target_size": (54, 96), "crop_size": (32, 32), "epochs": 1,
        "steps_per_epoch": 1, "batch_size": 2, "warmup_steps": 1, "eval_limit": 1, "progress": False,
    })
    trained_with = build_data(config).border
    run = load_run(train(config), "last.pt", device="cpu")
    for kind in ("ellipse", "mask"):
        predicted_with = run_border([run], tiny, kind)
        assert predicted_with.frame_size == trained_with.frame_size == (96, 54)
        for size in ((96, 54), (160, 90)):
            np.testing.assert_array_equal(predicted_with.mask(size), trained_with.border(kind).mask(size))
    assert make_border(tiny, None) is None
