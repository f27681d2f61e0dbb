import albumentations as A
import cv2
import numpy as np
import pandas as pd
import pytest

from kit.common.files import write_image
from kit.competition.labels import IGNORE_INDEX, VOID_INDEX
from kit.data.augment import (
    FisheyeTransform,
    FisheyeWarp,
    FourierStyle,
    MixBackground,
    inscribed_box,
    fix_sky_bonnet,
    kit_pipeline,
    random_scale,
    solution_a_distortion,
    solution_a_pipeline,
    solution_b_pipeline,
)
from kit.data.border import ellipse_mask
from kit.data.datasets import SegmentationDataset
from kit.data.fisheye import pinhole_to_fisheye_maps, warp_label
from kit.data.stats import channel_stats


def test_fix_sky_bonnet_hand_made():
    label = np.array(
        [
            [8, 8, 8],
            [8, 0, 8],
            [8, 8, 0],  # row 2 of 6: above 2/3·H = 4
            [8, 11, 8],  # row 3: above
            [8, 8, 0],  # row 4: fixed
            [11, 8, 255],  # row 5: fixed
        ],
        np.uint8,
    )
    fixed = fix_sky_bonnet(label)
    expected = label.copy()
    expected[4] = [255, 255, 0]
    expected[5] = [11, 255, 255]
    assert np.array_equal(fixed, expected)
    assert label[4, 0] == 8  # input untouched
    assert np.array_equal(fix_sky_bonnet(label, start=0.5)[3], [255, 11, 255])
    void = fix_sky_bonnet(label, value=VOID_INDEX)  # bonnet "void": ignored in training, not background
    assert np.array_equal(void[4], [VOID_INDEX, VOID_INDEX, 0])
    assert np.array_equal(void[5], [11, VOID_INDEX, 255])  # a true 255 stays background


@pytest.fixture
def source():
    rng = np.random.default_rng(0)
    image = rng.integers(30, 255, (64, 128, 3)).astype(np.uint8)
    label = rng.choice([0, 2, 8, 11], (64, 128)).astype(np.uint8)  # no background anywhere
    return image, label


def test_mix_background_sets_exactly_the_border_to_background(source, tmp_path):
    image, label = source
    target = np.full((27, 48, 3), 5, np.uint8)
    write_image(tmp_path / "t.png", target)
    ellipse = ((23.5, 13.5), (44.0, 30.0), 0.0)
    t = MixBackground([tmp_path / "t.png"], ellipse, frame_size=(48, 27), p=1.0)
    out = A.Compose([t])(image=image, mask=label)
    outside = ~ellipse_mask((128, 64), ellipse, scale_from=(48, 27))
    assert outside.sum() > 0 and (~outside).sum() > 0
    assert np.array_equal(out["mask"] == IGNORE_INDEX, outside)
    assert np.array_equal(out["mask"][~outside], label[~outside])
    assert (out["image"][outside] == 5).all() and np.array_equal(out["image"][~outside], image[~outside])


def test_inscribed_box_hand_computed_and_inside_the_disc():
    # a circle of diameter 27 (cv2.fitEllipse's full axes) in a 48×27 frame, read at 480×270: half-side
    # 13.5 / √2 = 9.546 frame px around the centre (24.0, 14.0) in edge coordinates (pixel centres + 0.5), × 10:
    # x 145.5…335.5 → pixels 146…335, y 44.5…235.5 → 45…235 (whole pixels inside)
    ellipse = ((23.5, 13.5), (27.0, 27.0), 0.0)
    x0, y0, x1, y1 = inscribed_box(ellipse, (48, 27), (480, 270))
    assert (x0, x1, y0, y1) == (145, 335, 45, 235)
    inside = ellipse_mask((480, 270), ellipse, scale_from=(48, 27))
    assert inside[y0:y1, x0:x1].all()
    assert not inside[y0 - 30 : y1 + 30, x0 - 30 : x1 + 30].all()  # a box 30 px larger leaves the disc
    with pytest.raises(ValueError, match="no box of at least 2×2"):
        inscribed_box(((5.0, 5.0), (1.0, 1.0), 0.0), (48, 27), (48, 27))


def _fda_reference(image: np.ndarray, style: np.ndarray, beta: float) -> np.ndarray:
    """FDA written out: amplitudes of the centred spectrum swapped in a square of half-side
    floor(beta · shorter side) around zero frequency, phase kept; then each channel's mean and std put back
    (uint8 range)."""
    out = np.empty(image.shape, np.float64)
    h, w = image.shape[:2]
    b = int(np.floor(min(h, w) * beta))
    cy, cx = h / 2 - 0.5, w / 2 - 0.5  # albumentations' centre of the shifted spectrum
    rows = slice(max(0, int(cy - b)), min(int(cy + b), h))
    cols = slice(max(0, int(cx - b)), min(int(cx + b), w))
    for c in range(3):
        src = np.fft.fftshift(np.fft.fft2(image[..., c].astype(np.float64)))
        trg = np.fft.fftshift(np.fft.fft2(style[..., c].astype(np.float64)))
        amp, phase = np.abs(src), np.angle(src)
        amp[rows, cols] = np.abs(trg)[rows, cols]
        out[..., c] = np.real(np.fft.ifft2(np.fft.ifftshift(amp * np.exp(1j * phase))))
    out = np.clip(out, 0, 255)
    src = image.astype(np.float64)
    out = (out - out.mean((0, 1))) / out.std((0, 1)) * src.std((0, 1)) + src.mean((0, 1))
    return np.clip(out, 0, 255)  # a uint8 image again


def test_fourier_style_matches_fda_written_out_and_ignores_the_border(source, tmp_path):
    image, label = source
    image = image // 2 + 50  # 65…177: FDA's output rarely leaves the uint8 range
    rng = np.random.default_rng(1)
    ellipse, frame = ((47.5, 26.5), (54.0, 54.0), 0.0), (96, 54)
    frame_image = rng.integers(0, 255, (54, 96, 3)).astype(np.uint8)
    x0, y0, x1, y1 = inscribed_box(ellipse, frame, (96, 54))
    frame_image[y0:y1, x0:x1] = np.clip(frame_image[y0:y1, x0:x1] * np.linspace(0.2, 1, x1 - x0)[None, :, None], 0, 255)
    write_image(tmp_path / "t.png", frame_image)
    bright = frame_image.copy()
    bright[~ellipse_mask((96, 54), ellipse, scale_from=frame)] = 255  # another border: the same style
    write_image(tmp_path / "b.png", bright)
    style = cv2_resize(frame_image[y0:y1, x0:x1], (128, 64))
    for beta in (0.05, 0.2):
        out = A.Compose([FourierStyle([tmp_path / "t.png"], ellipse, frame, beta)])(image=image, mask=label)
        assert np.array_equal(out["mask"], label) and out["image"].dtype == np.uint8
        expected = _fda_reference(image, style, beta)
        assert np.abs(out["image"].astype(np.float64) - expected).max() <= 1.0  # rounding to uint8 (and clipping)
        assert np.abs(out["image"].astype(np.float64) - image).mean() > 3  # it did change the image
        other = A.Compose([FourierStyle([tmp_path / "b.png"], ellipse, frame, beta)])(image=image, mask=label)
        assert np.array_equal(other["image"], out["image"])
    # each channel keeps its mean and standard deviation (what per-domain normalisation sees)
    assert np.allclose(out["image"].mean((0, 1)), image.mean((0, 1)), atol=0.5)
    assert np.allclose(out["image"].std((0, 1)), image.std((0, 1)), atol=0.5)
    with pytest.raises(ValueError, match="FDA beta = 0.0"):
        FourierStyle([tmp_path / "t.png"], ellipse, frame, 0.0)
    with pytest.raises(ValueError, match="at least one target image"):
        FourierStyle([], ellipse, frame)


def cv2_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def test_fisheye_transform_sets_exactly_the_border_to_background(source):
    image, label = source
    inside = np.zeros((54, 96), bool)
    inside[10:44, 8:88] = True
    mean_target = np.full((54, 96, 3), 3.0, np.float32)
    out = A.Compose([FisheyeTransform(mean_target, inside)])(image=image, mask=label)
    assert out["image"].shape == (54, 96, 3)
    assert np.array_equal(out["mask"] == IGNORE_INDEX, ~inside)
    assert (out["image"][~inside] == 3).all()
    assert set(np.unique(out["mask"][inside])) <= {0, 2, 8, 11}


def test_fisheye_warp_is_label_exact_and_uses_a_cached_pool(source):
    image, label = source
    warp = FisheyeWarp(size=(96, 54), pool_size=3, seed=1)
    compose = A.Compose([warp], seed=0)
    seen = set()
    for _ in range(6):
        out = compose(image=image, mask=label)
        assert out["image"].shape == (54, 96, 3) and out["mask"].shape == (54, 96)
        assert set(np.unique(out["mask"])) <= {0, 2, 8, 11, IGNORE_INDEX, VOID_INDEX}
        unseen = (out["mask"] == IGNORE_INDEX) | (out["mask"] == VOID_INDEX)
        assert (unseen == (out["image"].max(axis=2) == 0)).mean() > 0.99
        seen.add(out["mask"].tobytes())
    assert 1 < len(seen) <= 3
    for camera in warp.cameras:  # every camera's maps are in the cache: a second build is the same object
        assert pinhole_to_fisheye_maps((128, 64), 90.0, (96, 54), **camera) is pinhole_to_fisheye_maps(
            (128, 64), 90.0, (96, 54), **camera)


def test_fisheye_warp_labels_the_unseen_disc_void_and_only_the_outside_background(source, tmp_path):
    image, label = source
    warp = FisheyeWarp(size=(96, 54), pool_size=1, seed=2)
    maps = pinhole_to_fisheye_maps((128, 64), 90.0, (96, 54), **warp.cameras[0])
    out = A.Compose([warp], seed=0)(image=image, mask=label)["mask"]
    assert np.array_equal(out == IGNORE_INDEX, ~maps.circle)
    assert np.array_equal(out == VOID_INDEX, maps.circle & ~maps.valid) and (out == VOID_INDEX).any()
    np.testing.assert_array_equal(out[maps.valid], warp_label(label, maps)[maps.valid])
    # in a dataset with a background class: outside → 12 (learned), void → 255 (ignored by the losses)
    frame = pd.DataFrame({"id": ["a"], "img_path": [tmp_path / "a.png"], "gt_path": [tmp_path / "a_gt.png"]})
    write_image(frame.img_path[0], image)
    write_image(frame.gt_path[0], label)
    item = SegmentationDataset(frame, A.Compose([warp], seed=0), background=12)[0]
    target = item["label"].numpy()
    assert np.array_equal(target == 12, ~maps.circle | (maps.valid & (warp_label(label, maps) == 12)))
    assert np.array_equal(target == IGNORE_INDEX, maps.circle & ~maps.valid)


def test_pipelines_give_crop_sized_pairs(source, tmp_path):
    image, label = source
    write_image(tmp_path / "t.png", np.zeros((27, 48, 3), np.uint8))
    mix = MixBackground([tmp_path / "t.png"], ((23.5, 13.5), (44.0, 30.0), 0.0), (48, 27))
    inside = np.ones((54, 96), bool)
    pipelines = [
        (solution_a_pipeline((64, 128), (32, 64), mix), (32, 64)),
        (solution_a_distortion(), (64, 128)),
        (solution_b_pipeline(FisheyeTransform(np.zeros((54, 96, 3)), inside), (27, 48)), (27, 48)),
        (kit_pipeline(FisheyeWarp(size=(96, 54), pool_size=2), (27, 48)), (27, 48)),
    ]
    for pipeline, (h, w) in pipelines:
        out = pipeline(image=image, mask=label)
        assert out["image"].shape == (h, w, 3) and out["mask"].shape == (h, w)
        assert set(np.unique(out["mask"])) <= {0, 2, 8, 11, IGNORE_INDEX, VOID_INDEX}


def test_random_scale_against_opencv():
    """A fixed factor: OpenCV's resize (bilinear image, nearest label, albumentations' floor of the size),
    then image 0 and VOID_INDEX labels below and right of it up to the crop; (1, 1) adds no step."""
    rng = np.random.default_rng(0)
    image = rng.integers(1, 256, (256, 512, 3)).astype(np.uint8)
    label = rng.integers(0, 12, (256, 512)).astype(np.uint8)
    out = A.Compose(random_scale((0.3, 0.3), (128, 128)))(image=image, mask=label)
    h, w = 76, 153  # floor(256 · 0.3), floor(512 · 0.3)
    assert out["image"].shape == (128, 153, 3) and out["mask"].shape == (128, 153)
    assert np.array_equal(out["image"][:h], cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR))
    assert np.array_equal(out["mask"][:h], cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST))
    assert (out["image"][h:] == 0).all() and (out["mask"][h:] == VOID_INDEX).all()
    assert random_scale((1.0, 1.0), (128, 128)) == []
    sizes = {A.Compose(random_scale((0.5, 1.0), (16, 16)), seed=s)(image=image, mask=label)["image"].shape[0]
             for s in range(30)}
    assert min(sizes) >= 128 and max(sizes) <= 256 and len(sizes) > 10  # drawn across the range


def test_source_scale_pads_are_ignored_not_background(tmp_path):
    """Through solution A's pipeline and the dataset, the padding of a shrunk source image is ignored
    (255 after background became class 12); the image's own background stays class 12."""
    label = np.full((64, 128), 2, np.uint8)
    label[:, :10] = IGNORE_INDEX  # background
    frame = pd.DataFrame({"id": ["a"], "img_path": [str(tmp_path / "a.png")], "gt_path": [str(tmp_path / "a_gt.png")]})
    write_image(frame.img_path[0], np.full((64, 128, 3), 200, np.uint8))
    write_image(frame.gt_path[0], label)
    pipeline = solution_a_pipeline((64, 128), (48, 48), scale=(0.5, 0.5))
    steps = [type(t).__name__ for t in pipeline.transforms]
    assert steps[-3:] == ["RandomScale", "PadIfNeeded", "RandomCrop"]
    target = SegmentationDataset(frame, A.Compose([*pipeline.transforms[:-1], A.Crop(0, 0, 64, 48)]), background=12)[0]
    labels = target["label"].numpy()  # the shrunk image is 32 × 64, padded to 48 rows
    assert (labels[32:] == IGNORE_INDEX).all() and (labels[:32] != IGNORE_INDEX).all()
    assert set(np.unique(labels[:32])) == {2, 12}


def test_channel_stats_against_numpy(tmp_path):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (5 + i, 7, 3)).astype(np.uint8) for i in range(3)]
    paths = []
    for i, im in enumerate(images):
        write_image(tmp_path / f"{i}.png", im)
        paths.append(tmp_path / f"{i}.png")
    mean, std = channel_stats(paths)
    pixels = np.concatenate([im.reshape(-1, 3) for im in images]) / 255.0
    np.testing.assert_allclose(mean, pixels.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(std, pixels.std(axis=0), rtol=1e-7)
