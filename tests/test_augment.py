import albumentations as A
import numpy as np
import pandas as pd
import pytest

from kit.common.files import write_image
from kit.competition.labels import IGNORE_INDEX, VOID_INDEX
from kit.data.augment import (
    FisheyeTransform,
    FisheyeWarp,
    MixBackground,
    fix_sky_bonnet,
    kit_pipeline,
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
