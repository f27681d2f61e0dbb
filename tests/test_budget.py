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
    ({"distortion_branch": True}, 11),  # source 3 + distortion 3 + teacher 1 + statistics pass 1 + masked target 3
    ({"distortion_branch": True, "class_mix": True}, 14),
    ({}, 8),  # the kit's uda: no distortion copy
    ({"distortion_branch": True, "bn_stats": "labelled"}, 10),
    ({"distortion_branch": True, "target_branch": False, "bn_stats": "labelled"}, 6),
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
    config = TrainConfig(method="self_train", steps_per_epoch=60)  # 5 epochs × 60 steps, then 2 rounds of 2 epochs; batch 8
    cost = run_passes(config, target_images=400)
    # whole image + flip over 100 threshold images, then over all 400: 2 × 500 × 270·480 / 128² = 7910.15625
    assert pseudo_label_passes(config, 400) == 2 * (100 + 400) * 270 * 480 / (128 * 128) == 7910.15625
    assert cost == {"steps": 540, "train": 60 * (5 * 24 + 4 * 48), "pseudo": 2 * 7910.15625, "total": 18720 + 15820.3125}
    # round 1 from a given PSEUDO_SPLIT: that round's labels are not this run's compute
    given = run_passes(dataclasses.replace(config, pseudo_split="elsewhere"), 400)
    assert given["pseudo"] == 7910.15625
    assert pseudo_label_passes(config, 30) == 2 * (30 + 30) * 270 * 480 / (128 * 128)  # fewer frames than 100


def test_a_round_of_pseudo_labels_costs_what_the_budget_counts(tiny, tmp_path):
    """Counted on kit.predict.pseudo's own passes: every image the model sees, by its pixels."""
    from kit.predict.pseudo import make_pseudo_labels
    from kit.predict.runs import RunConfig
    from kit.predict.tta import InferenceSettings

    h, w = 90, 160  # the tiny fisheye frames; the run predicts at that size
    model = nn.Conv2d(3, 13, 1).eval()
    seen = []
    model.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    run = RunConfig.from_dict({"arch": "x", "encoder": "x", "num_classes": 13, "head_kwargs": {}, "target_size": [h, w],
                               "crop_size": [32, 32], "target_mean": [0.0] * 3, "target_std": [1.0] * 3})
    make_pseudo_labels([(model, run)], tiny, tmp_path / "round", settings=InferenceSettings(mode="whole", flip=True),
                       progress=False)
    passes = sum(s[0] * s[2] * s[3] for s in seen) / (32 * 32)
    config = TrainConfig(method="self_train", target_size=(h, w), crop_size=(32, 32), source_size=(48, 96))
    assert passes == pseudo_label_passes(config, 3) == 2 * (3 + 3) * h * w / (32 * 32)


@pytest.mark.parametrize("method", ["source_only", "fisheye_tf", "oracle", "uda", "uda_geo", "self_train"])
def test_fit_budget_spends_the_budget_to_within_one_step_per_epoch(method):
    budget = 34_540  # what self_train at 5 × 60 steps costs on 400 target images
    config = fit_budget(TrainConfig(method=method, distortion_branch=True if method.startswith("uda") else None,
                                    warm_start=0.0), budget, target_images=400)  # warm: tests/test_warm_start.py
    spent = run_passes(config, 400)["total"]
    one_more = run_passes(config, 400, steps_per_epoch=config.steps_per_epoch + 1)["total"]
    assert spent <= budget < one_more
    assert config.epochs == 5 and config.rounds == 2
    # by hand: floor(34,540 / (5 × 24)) = 287, floor(34,540 / (5 × 88)) = 78, floor(18,719.69 / 312) = 59
    expected = {"source_only": 287, "fisheye_tf": 287, "oracle": 287, "uda": 78, "uda_geo": 78, "self_train": 59}
    assert config.steps_per_epoch == expected[method]


def test_the_main_job_costs_the_benchmarks_budget():
    # cpu_demo: uda without the distortion copy, 5 × 50 steps of 8 × (source 3 + teacher 1 + statistics 1 + masked 3)
    # = 16,000 passes, shared out by its warm start: source_only 5 × floor(8,000 / (5 × 24)) = 5 × 66 steps (7,920)
    # then uda 5 × floor(8,000 / (5 × 64)) = 5 × 25 (8,000)
    assert run_passes(TrainConfig(warm_start=0.0), 400) == {"steps": 250, "train": 16_000, "pseudo": 0, "total": 16_000}
    assert run_passes(TrainConfig(), 400) == {"steps": 330 + 125, "train": 15_920, "pseudo": 0, "total": 15_920}
    assert fit_budget(TrainConfig(), 16_000, 400).steps_per_epoch == 50


def test_fit_budget_refuses_a_budget_that_pays_for_nothing():
    with pytest.raises(ValueError, match=r"12,000 image passes .* self_train .*15,820 of them pseudo-labels"):
        fit_budget(TrainConfig(method="self_train"), 12_000, target_images=400)
    with pytest.raises(ValueError, match="steps_per_epoch is None"):
        run_passes(TrainConfig(steps_per_epoch=None), 400)
