"""Rare-class crops (kit.data.rare): the crop holds the drawn class, classes are drawn with the given
probabilities among those present, and the window is uniform among those holding the drawn pixel."""

import random

import numpy as np
import pytest

from kit.data.rare import RareClassCrop, rare_class_probabilities


def _draws(transform, image, mask, n):
    for seed in range(n):
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        yield transform(image=image, mask=mask)


def _only(c, p=1.0):
    prob = np.full(12, 1e-9)
    prob[c] = p
    return prob


def test_probabilities_are_daformers_formula():
    counts = np.array([[60, 0, 0], [20, 15, 0], [0, 0, 5]])
    totals = counts.sum(axis=0)
    f = totals / totals.sum()
    expected = np.exp((1 - f) / 0.5) / np.exp((1 - f) / 0.5).sum()
    np.testing.assert_allclose(rare_class_probabilities(counts, 0.5), expected)
    np.testing.assert_allclose(rare_class_probabilities(np.array([10, 0, 5]), 0.1)[1], 0.0)  # absent: never drawn
    with pytest.raises(ValueError, match="every class count is 0"):
        rare_class_probabilities(np.zeros((2, 3)), 0.5)


def test_the_crop_holds_the_drawn_pixel_and_its_windows_are_uniform():
    mask = np.zeros((60, 100), np.uint8)
    mask[5, 90] = 7  # one pixel of class 7 near the top right corner
    image = np.dstack([np.arange(60 * 100).reshape(60, 100) % 251] * 3).astype(np.uint8)
    crop = RareClassCrop(20, 30, _only(7))
    starts = set()
    for out in _draws(crop, image, mask, 400):
        assert out["image"].shape == (20, 30, 3) and (out["mask"] == 7).sum() == 1
        y, x = np.argwhere(out["mask"] == 7)[0]
        flat = int(out["image"][0, 0, 0])  # the window's top left pixel names where it started
        starts.add((5 - y, 90 - x))
        assert flat == ((5 - y) * 100 + (90 - x)) % 251
    ys, xs = zip(*starts)
    # windows holding (5, 90): y0 ∈ [0, 5], x0 ∈ [61, 70] (clipped by the image's 60×100)
    assert set(ys) == set(range(0, 6)) and set(xs) == set(range(61, 71))


def test_classes_are_drawn_by_their_probabilities_among_those_present():
    mask = np.full((100, 200), 12, np.uint8)  # background: never drawn
    mask[:, :5] = 255  # ignored: never drawn
    mask[10, 20] = 3
    mask[90, 180] = 9  # far apart: a 20×20 crop holds one or the other
    prob = np.zeros(12)
    prob[[3, 9, 4]] = [0.2, 0.6, 0.2]  # class 4 is absent: its share goes to neither
    held = [3 if (o["mask"] == 3).any() else 9 if (o["mask"] == 9).any() else -1
            for o in _draws(RareClassCrop(20, 20, prob), np.zeros((100, 200, 3), np.uint8), mask, 2000)]
    counts = np.bincount(np.array(held) + 1, minlength=11)
    assert counts[0] == 0  # every crop holds a drawn class
    assert abs(counts[4] / 2000 - 0.25) < 0.03 and abs(counts[10] / 2000 - 0.75) < 0.03


def test_without_a_drawable_class_the_crop_is_uniform():
    mask = np.full((40, 50), 12, np.uint8)
    mask[:, :10] = 255
    rows, cols = np.mgrid[0:40, 0:50]
    image = np.dstack([rows, cols, cols]).astype(np.uint8)  # a pixel's value names its place
    starts = {(int(o["image"][0, 0, 0]), int(o["image"][0, 0, 1]))
              for o in _draws(RareClassCrop(30, 40, _only(2)), image, mask, 2000)}
    assert starts == {(y, x) for y in range(11) for x in range(11)}


def test_bad_settings_name_what_was_expected():
    with pytest.raises(ValueError, match="class_prob must be 12 non-negative numbers"):
        RareClassCrop(8, 8, np.ones(5))
    crop = RareClassCrop(64, 64, _only(1))
    with pytest.raises(ValueError, match=r"RareClassCrop of 64×64 from an image of 32×80"):
        list(_draws(crop, np.zeros((32, 80, 3), np.uint8), np.ones((32, 80), np.uint8), 1))
