"""EMA teacher, MIC block masking, DACS class-mix masks and the UDA step."""

import dataclasses
import math

import pytest
import torch
from torch import nn

from kit.train.config import TrainConfig
from kit.train.uda import EMATeacher, UDAConfig, block_mask, class_mix_masks, frozen_norm_stats, uda_step


def _uda(**values) -> UDAConfig:
    """uda's knobs as TrainConfig sets them, with ``values`` on top."""
    return dataclasses.replace(UDAConfig.from_train_config(TrainConfig(method="uda")), **values)


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 13, 1))


def _params(module: nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_ema_alpha_zero_copies_the_student():
    student, teacher = _net(0), EMATeacher(_net(1))
    student[1].running_mean.fill_(3.0)
    student[1].num_batches_tracked.fill_(7)
    teacher.update(student, alpha=0.0)
    for name, value in student.state_dict().items():
        torch.testing.assert_close(teacher.state_dict()[name], value, rtol=0, atol=0)


def test_ema_alpha_one_keeps_the_teacher_and_copies_integer_buffers():
    student, teacher = _net(0), EMATeacher(_net(1))
    before = _params(teacher.model)
    student[1].num_batches_tracked.fill_(7)
    teacher.update(student, alpha=1.0)
    after = teacher.state_dict()
    for name, value in before.items():
        if name.endswith("num_batches_tracked"):
            assert after[name].item() == 7
        else:
            torch.testing.assert_close(after[name], value, rtol=0, atol=0)


def test_ema_mixes_parameters_and_float_buffers():
    student, teacher = _net(0), EMATeacher(_net(1))
    before, s = _params(teacher.model), student.state_dict()
    teacher.update(student, alpha=0.25)
    for name in ("0.weight", "1.running_var", "2.bias"):
        torch.testing.assert_close(teacher.state_dict()[name], 0.25 * before[name] + 0.75 * s[name])


@pytest.mark.parametrize("t, max_alpha, expected", [(0, 0.999, 0.0), (1, 0.999, 0.5), (3, 0.999, 0.75),
                                                    (9, 0.9, 0.9), (99, 0.999, 0.99), (10_000, 0.999, 0.999)])
def test_ema_ramp_follows_the_formula(t, max_alpha, expected):
    teacher = EMATeacher(_net(0), max_alpha=max_alpha)
    assert teacher.alpha(t) == pytest.approx(expected)
    assert teacher.update(_net(1), t=t) == pytest.approx(expected)


def test_teacher_gets_no_gradients_and_stays_in_eval_mode():
    teacher = EMATeacher(_net(0))
    assert not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())


@pytest.mark.parametrize("ratio, block", [(0.75, 32), (0.5, 16), (0.7, 64), (0.0, 8)])
def test_block_mask_hits_the_ratio(ratio, block):
    g = torch.Generator().manual_seed(0)
    mask = block_mask((8, 512, 512), ratio, block, generator=g)
    assert mask.shape == (8, 1, 512, 512)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    blocks = 8 * (512 // block) ** 2
    tolerance = 4 * math.sqrt(ratio * (1 - ratio) / blocks) + 1e-9  # 4 binomial standard deviations
    assert abs((1 - mask.mean().item()) - ratio) <= tolerance


def test_block_mask_is_constant_on_blocks_and_cut_at_the_border():
    mask = block_mask((2, 70, 45), 0.5, 16, generator=torch.Generator().manual_seed(1))
    assert mask.shape == (2, 1, 70, 45)
    for r in range(0, 70, 16):
        for c in range(0, 45, 16):
            tile = mask[:, :, r : r + 16, c : c + 16]
            assert (tile == tile[:, :, :1, :1]).all()


def test_class_mix_takes_half_of_the_present_classes():
    label = torch.tensor([[[0, 0, 1, 1], [2, 2, 3, 255]]])  # 4 classes present + ignore
    mask = class_mix_masks(label, ignore_index=255, generator=torch.Generator().manual_seed(0))
    chosen = set(label[mask[:, 0].bool()].tolist())
    assert len(chosen) == 2 and chosen <= {0, 1, 2, 3}
    assert mask[0, 0, 1, 3] == 0  # the ignore pixel is never pasted
    # whole classes are pasted: every pixel of a chosen class is in the mask
    for c in chosen:
        assert mask[0, 0][label[0] == c].all()


def test_uda_step_reports_every_phase_and_fills_gradients():
    student, teacher = _net(0), EMATeacher(_net(0))
    g = torch.Generator().manual_seed(0)
    batch = {
        "source": torch.randn(2, 3, 16, 16, generator=g), "source_label": torch.randint(0, 13, (2, 16, 16), generator=g),
        "distorted": torch.randn(2, 3, 16, 16, generator=g), "distorted_label": torch.randint(0, 13, (2, 16, 16), generator=g),
        "target": torch.randn(2, 3, 16, 16, generator=g),
    }
    config = _uda(pseudo_threshold=0.0, mask_ratio=0.5, mask_block=4, class_mix=True)
    losses = uda_step(student, teacher, batch, config, generator=g)
    assert set(losses) == {"source", "distortion", "mix", "target", "pseudo_weight"}
    assert losses["pseudo_weight"] == pytest.approx(1.0)  # threshold 0: every pixel is confident
    assert all(math.isfinite(v) and v > 0 for v in losses.values())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.model.parameters())


def test_uda_step_without_confident_pixels_has_zero_target_loss():
    student, teacher = _net(0), EMATeacher(_net(1))
    batch = {"source": torch.randn(1, 3, 8, 8), "source_label": torch.zeros(1, 8, 8, dtype=torch.long),
             "target": torch.randn(1, 3, 8, 8)}
    losses = uda_step(student, teacher, batch, _uda(pseudo_threshold=0.999999, mask_block=2))
    assert losses["pseudo_weight"] == 0.0 and losses["target"] == 0.0


def test_uda_step_dice_weight_adds_dice_to_the_supervised_branches():
    from kit.train.losses import cross_entropy, dice_loss

    g = torch.Generator().manual_seed(1)
    batch = {
        "source": torch.randn(2, 3, 8, 8, generator=g), "source_label": torch.randint(0, 13, (2, 8, 8), generator=g),
        "distorted": torch.randn(2, 3, 8, 8, generator=g), "distorted_label": torch.randint(0, 13, (2, 8, 8), generator=g),
        "target": torch.randn(2, 3, 8, 8, generator=g),
    }
    batch["distorted_label"][:, :2] = 255  # ignored pixels count in neither loss
    student, teacher = _net(0), EMATeacher(_net(0))
    losses = uda_step(student, teacher, batch, _uda(mask_block=2, dice_weight=0.5))
    with torch.no_grad():
        for name, image, label in (("source", "source", "source_label"), ("distortion", "distorted", "distorted_label")):
            logits = _net(0)(batch[image])
            expected = cross_entropy(logits, batch[label]) + 0.5 * dice_loss(logits, batch[label])
            assert losses[name] == pytest.approx(expected.item(), rel=1e-5)


def _bn_stats(module: nn.Module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items() if k.endswith(("running_mean", "running_var"))}


def test_frozen_norm_stats_keeps_running_stats_but_normalises_with_the_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=0.3)).train()
    x = 3.0 + 2.0 * torch.randn(4, 3, 8, 8)  # far from the initial running statistics (0, 1)
    before = _bn_stats(model)
    with torch.no_grad():
        with frozen_norm_stats(model):
            inside = model(x)
        for name, value in before.items():
            torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=0, msg=name)
        assert model[1].momentum == 0.3
        outside = model(x)
        torch.testing.assert_close(inside, outside, rtol=0, atol=0)  # batch statistics inside too
        assert not torch.allclose(model.state_dict()["1.running_mean"], before["1.running_mean"])  # outside: updated
        assert not torch.allclose(model.eval()(x), inside, atol=1e-2)  # running statistics would differ
    with pytest.raises(RuntimeError, match="inside"), frozen_norm_stats(model):
        assert model[1].momentum == 0.0
        raise RuntimeError("inside")
    assert model[1].momentum == 0.3


def _uda_batch(seed: int, target: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {
        "source": torch.randn(2, 3, 8, 8, generator=g), "source_label": torch.randint(0, 13, (2, 8, 8), generator=g),
        "distorted": torch.randn(2, 3, 8, 8, generator=g), "distorted_label": torch.randint(0, 13, (2, 8, 8), generator=g),
    }
    if target:
        batch["target"] = 4.0 + 3.0 * torch.randn(2, 3, 8, 8, generator=g)  # another domain: other statistics
    return batch


@pytest.mark.parametrize("bn_stats", ["target", "labelled", "all"])
def test_which_passes_update_the_bn_statistics(bn_stats):
    # the student's running statistics after one step equal those of the passes named by hand
    batch = _uda_batch(2)
    student, teacher = _net(0), EMATeacher(_net(0))
    uda_step(student, teacher, batch, _uda(mask_block=2, bn_stats=bn_stats))
    by_hand = _net(0).train()
    with torch.no_grad():
        if bn_stats == "target":
            by_hand(batch["target"])  # the unmasked target crop alone
        else:
            by_hand(batch["source"])
            by_hand(batch["distorted"])
    same = all(torch.allclose(value, _bn_stats(by_hand)[name]) for name, value in _bn_stats(student).items())
    assert same == (bn_stats != "all")  # "all": the masked target crop moved them further
    if bn_stats != "all":
        for name, value in _bn_stats(student).items():
            torch.testing.assert_close(value, _bn_stats(by_hand)[name], msg=name)
    torch.testing.assert_close(_bn_stats(teacher.model), _bn_stats(_net(0)))  # the teacher is only read


def test_target_bn_statistics_need_the_target_branch():
    with pytest.raises(ValueError, match="needs the target branch"):
        uda_step(_net(0), EMATeacher(_net(0)), _uda_batch(3, target=False), _uda(mask_block=2, target_branch=False))
    with pytest.raises(ValueError, match="bn_stats = 'some'"):
        uda_step(_net(0), EMATeacher(_net(0)), _uda_batch(3), _uda(mask_block=2, bn_stats="some"))


def test_without_the_target_branch_the_step_needs_no_target():
    student, teacher = _net(0), EMATeacher(_net(1))
    teacher_before = _params(teacher.model)
    losses = uda_step(student, teacher, _uda_batch(3, target=False),
                      _uda(mask_block=2, target_branch=False, bn_stats="labelled"))
    assert set(losses) == {"source", "distortion"}
    assert all(math.isfinite(v) and v > 0 for v in losses.values())
    assert all(p.grad is not None for p in student.parameters())
    for name, value in teacher_before.items():
        torch.testing.assert_close(teacher.state_dict()[name], value, rtol=0, atol=0)
    with pytest.raises(KeyError, match="target"):  # the default target branch does need one
        uda_step(student, teacher, _uda_batch(3, target=False), _uda(mask_block=2))


def test_uda_step_class_mix_and_masked_target_losses_match_a_computation_by_hand():
    """Source, class-mix and masked-target losses of one step against the same losses written out
    with torch.nn.functional, on a 1×1 convolution with fixed weights (no BatchNorm: the weights
    alone say what every pass computes)."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(5)
    source, target = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 3, 4, 4, generator=g)
    # one class per source image, so that ClassMix pastes exactly its non-ignored pixels
    label = torch.tensor([0, 2]).view(2, 1, 1).repeat(1, 4, 4)
    label[0, :2, :2] = 255  # an ignored corner: the target shows through, pseudo-labelled
    label[1, 3] = 255  # an ignored row
    student, teacher_net = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)
    with torch.no_grad():
        student.weight.copy_(torch.tensor([[1.0, -0.5, 0.2], [-0.3, 0.8, 0.1], [0.4, 0.3, -0.9]]).view(3, 3, 1, 1))
        student.bias.copy_(torch.tensor([0.1, -0.2, 0.05]))
        teacher_net.weight.copy_(torch.tensor([[2.0, 0.5, -1.0], [-1.0, 1.5, 0.5], [0.5, -1.0, 2.0]]).view(3, 3, 1, 1))
        teacher_net.bias.zero_()
    seen = []  # the images the student is shown, in order: source, class mix, masked target
    student.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach().clone()))

    with torch.no_grad():  # the teacher's pseudo-labels, and a threshold that leaves both images partly confident
        confidence, pseudo = torch.softmax(teacher_net(target), dim=1).max(dim=1)  # (B, H, W) each
    threshold = confidence.median().item()
    share = (confidence > threshold).float().mean(dim=(1, 2))  # (B,) each image's confident share
    assert ((share > 0) & (share < 1)).all(), share  # the weights are not all 0 or all 1

    config = _uda(pseudo_threshold=threshold, mask_ratio=0.5, mask_block=2, class_mix=True, pseudo_weighting="image",
                  dice_weight=0.0, bn_stats="labelled")
    losses = uda_step(student, EMATeacher(teacher_net), {"source": source, "source_label": label, "target": target},
                      config, generator=torch.Generator().manual_seed(0))
    assert len(seen) == 3

    pasted = (label != 255).unsqueeze(1)  # (B, 1, H, W): the source classes, every one of them
    mixed = torch.where(pasted, source, target)
    mixed_label = torch.where(pasted[:, 0], label, pseudo)
    torch.testing.assert_close(seen[1], mixed, rtol=0, atol=0)
    keep = (seen[2] != 0).all(dim=1, keepdim=True)  # (B, 1, H, W): the unmasked blocks
    torch.testing.assert_close(seen[2], target * keep, rtol=0, atol=0)
    assert 0 < keep.float().mean() < 1  # some blocks masked, some kept
    blocks = keep.view(2, 1, 2, 2, 2, 2)  # (B, 1, block row, 2, block column, 2): mask_block = 2
    assert (blocks == blocks[:, :, :, :1, :, :1]).all()  # whole 2×2 blocks, not pixels
    with torch.no_grad():
        source_ce = F.cross_entropy(student(source), label, ignore_index=255)  # mean over the non-ignored pixels
        mix_ce = F.cross_entropy(student(mixed), mixed_label, reduction="none")  # (B, H, W)
        mix_weight = torch.where(pasted[:, 0], 1.0, share.view(2, 1, 1))  # pasted source pixels weigh 1
        target_ce = F.cross_entropy(student(target * keep), pseudo, reduction="none").mean(dim=(1, 2))  # (B,)
    assert losses["source"] == pytest.approx(source_ce.item(), rel=1e-6)
    assert losses["mix"] == pytest.approx((mix_ce * mix_weight).mean().item(), rel=1e-6)
    assert losses["target"] == pytest.approx((share * target_ce).mean().item(), rel=1e-6)
    assert losses["pseudo_weight"] == pytest.approx(share.mean().item(), rel=1e-6)
