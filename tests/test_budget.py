"""The budget unit (kit.train.budget): hand-computed costs, a count of the passes the training steps
really make, and fitting a run to a budget."""

import contextlib
import dataclasses

import pytest
import torch
from torch import nn

from kit.train.budget import fit_budget, pseudo_label_passes, run_passes, step_passes
from kit.train.config import TrainConfig
from kit.train.steps import self_train_step, supervised_step
from kit.train.uda import EMATeacher, UDAConfig, uda_step

CROP = (16, 16)


class Counting(nn.Module):
    """A tiny segmentation net that counts image passes as kit.train.budget defines them: each image
    forwarded counts 1 per crop of pixels, and 2 more when its output is back-propagated (grad enabled)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 13, 1))
        self.decode_head = nn.Identity()  # a per-pixel head (no mask-classification losses)
        self.passes = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        crops = x.shape[0] * x.shape[-2] * x.shape[-1] / (CROP[0] * CROP[1])
        self.passes += crops * (3 if torch.is_grad_enabled() else 1)
        return self.net(x)


def _batch(b: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    image = lambda: torch.randn(b, 3, *CROP, generator=g)  # noqa: E731
    label = lambda: torch.randint(0, 13, (b, *CROP), generator=g)  # noqa: E731
    return {"source": image(), "source_label": label(), "distorted": image(), "distorted_label": label(),
            "target": image(), "image": image(), "label": label(), "target_label": label()}


def test_supervised_step_costs_three_passes_per_image():
    model = Counting()
    batch = _batch()
    supervised_step(model, batch["image"], batch["label"], 1.0, torch.Tensor.backward, contextlib.nullcontext)
    config = TrainConfig(method="fisheye_tf", batch_size=2, crop_size=CROP)
    assert model.passes == step_passes(config) == 6


def test_self_train_round_step_costs_six_passes_per_image():
    model = Counting()
    self_train_step(model, _batch(), 1.0, torch.Tensor.backward, contextlib.nullcontext)
    config = TrainConfig(method="self_train", batch_size=2, crop_size=CROP)
    assert model.passes == step_passes(config, pseudo_round=True) == 12
    assert step_passes(config) == 6  # round 0 is fisheye_tf


@pytest.mark.parametrize("values, per_image", [
    ({}, 11),  # source 3 + distortion 3 + teacher 1 + statistics pass 1 + masked target 3
    ({"class_mix": True}, 14),
    ({"distortion_branch": False}, 8),
    ({"bn_stats": "labelled"}, 10),
    ({"target_branch": False, "bn_stats": "labelled"}, 6),
])
def test_uda_step_costs_what_the_budget_counts(values, per_image):
    config = TrainConfig(method="uda", batch_size=2, crop_size=CROP, **values)
    student = Counting()
    teacher = EMATeacher(student)
    teacher.model.passes = 0.0
    batch = _batch()
    if not config.distortion_branch:
        del batch["distorted"], batch["distorted_label"]
    uda_step(student, teacher, batch, dataclasses.replace(UDAConfig.from_train_config(config)))
    assert student.passes + teacher.model.passes == step_passes(config) == per_image * 2


def test_a_self_train_run_costs_its_steps_and_its_pseudo_labels_by_hand():
    config = TrainConfig()  # cpu_demo: self_train, 5 epochs × 60 steps, then 2 rounds of 2 epochs; batch 8
    cost = run_passes(config, target_images=400)
    assert pseudo_label_passes(config, 400) == 2 * 400 * 270 * 480 / (128 * 128)  # whole image + flip = 6328.125
    assert cost == {"steps": 540, "train": 60 * (5 * 24 + 4 * 48), "pseudo": 2 * 6328.125, "total": 18720 + 12656.25}
    # round 1 from a given PSEUDO_SPLIT: that round's labels are not this run's compute
    given = run_passes(dataclasses.replace(config, pseudo_split="elsewhere"), 400)
    assert given["pseudo"] == 6328.125


@pytest.mark.parametrize("method", ["source_only", "fisheye_tf", "oracle", "uda", "uda_geo", "self_train"])
def test_fit_budget_spends_the_budget_to_within_one_step_per_epoch(method):
    budget = 31_376  # what the default self_train costs on 400 target images
    config = fit_budget(TrainConfig(method=method), budget, target_images=400)
    spent = run_passes(config, 400)["total"]
    one_more = run_passes(config, 400, steps_per_epoch=config.steps_per_epoch + 1)["total"]
    assert spent <= budget < one_more
    assert config.epochs == 5 and config.rounds == 2
    # by hand: floor(31,376 / (5 × 24)) = 261, floor(31,376 / (5 × 88)) = 71, floor(18,719.75 / 312) = 59
    expected = {"source_only": 261, "fisheye_tf": 261, "oracle": 261, "uda": 71, "uda_geo": 71, "self_train": 59}
    assert config.steps_per_epoch == expected[method]


def test_fit_budget_refuses_a_budget_that_pays_for_nothing():
    with pytest.raises(ValueError, match=r"12,000 image passes .* self_train .*12,656 of them pseudo-labels"):
        fit_budget(TrainConfig(), 12_000, target_images=400)
    with pytest.raises(ValueError, match="steps_per_epoch is None"):
        run_passes(TrainConfig(steps_per_epoch=None), 400)
