"""The fisheye border has one home (kit.data.border): one image rule, one threshold policy, and the same
border for training and prediction."""

import numpy as np
import pytest
from scratch import SCRATCH

from kit.competition.layout import read_split
from kit.data.border import border_mask, ellipse_mask, estimate_border, make_border, mean_image, otsu_threshold
from kit.predict.runs import load_run
from kit.predict.splits import run_border
from kit.train.config import TrainConfig
from kit.train.loop import train
from kit.train.recipes import build_data


def test_otsu_threshold_splits_a_two_level_image_between_its_levels():
    image = np.full((20, 40, 3), 30.0, np.float32)
    image[2:18, 1:39] = 200.0  # covers the centre box that border_mask forces inside
    assert 30 <= otsu_threshold(image) < 200
    inside = border_mask(image)  # default: Otsu
    assert inside[2:18, 1:39].all() and inside.sum() == 16 * 38


def test_estimate_border_averages_evenly_spread_images_with_otsu_by_default(tiny):
    frame = read_split(tiny, "train_target")
    assert len(frame) == 3
    estimate = estimate_border(tiny, max_images=2)
    assert estimate.paths == (frame.img_path[0], frame.img_path[2])  # first and last, not the first two
    np.testing.assert_array_equal(estimate.mean, mean_image([frame.img_path[0], frame.img_path[2]]))
    assert estimate.threshold == otsu_threshold(estimate.mean)
    np.testing.assert_array_equal(estimate.inside, border_mask(estimate.mean, estimate.threshold))
    given = estimate_border(tiny, max_images=2, threshold=60.0)
    assert given.threshold == 60.0


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
