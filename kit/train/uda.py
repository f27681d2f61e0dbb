"""Self-training for unsupervised domain adaptation: EMA teacher, masked target images, class mix
and the one UDA training step.

The structure follows DAFormer / MIC (Hoyer et al., CVPR 2022 / CVPR 2023; mmseg ``uda/dacs.py``
and ``masking_consistency_module.py``) as simplified by reference solution A (seed 000):

- a student trained on labelled source crops;
- a "distortion" branch: the same source images through a distortion (solution A: elastic, the
  kit's ``uda_geo``: the geometric fisheye warp), so the student sees fisheye-like geometry with labels;
- an EMA teacher that pseudo-labels unmasked target crops, weighted per image by the share of
  confident pixels (the kit's default; DAFormer and MIC weigh the whole batch by its share:
  ``pseudo_weighting="batch"``);
- the student on *masked* target crops against those pseudo-labels (MIC's masked image consistency).

Which forward passes update the student's BatchNorm running statistics (``bn_stats``), which
prediction and the teacher normalise with: MIC's code lets every pass update them (``"all"``), so
they ended as a blend of source, warped-source and three-quarters-blank masked crops, and the
models lost Car (docs/RESULTS.md, the Car ladder). The kit's default ``"target"`` keeps every
training pass out of them (:func:`frozen_norm_stats`) and measures them on one extra gradient-free
pass of the unmasked target crop: the statistics of the images it will predict (AdaBN's idea, Li et
al. 2016, kept up to date during training). ``"labelled"`` keeps only the masked crops out.
- optionally DACS ClassMix (Tranheden et al., WACV 2021): half the source classes pasted on the target.

Plotting and logging stay outside; :func:`uda_step` only computes and back-propagates losses.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from kit.competition.labels import IGNORE_INDEX
from kit.train.config import BN_STATS, TrainConfig
from kit.train.losses import cross_entropy, dice_loss, pseudo_label_loss, pseudo_weights


@contextlib.contextmanager
def frozen_norm_stats(model: nn.Module):
    """Within the block, BatchNorm layers in training mode still normalise with the batch's own
    statistics but leave their running mean and variance as they were (momentum 0)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


class EMATeacher:
    """An exponential moving average of a student network, used to pseudo-label target images.

    After each optimiser step, ``teacher = alpha · teacher + (1 - alpha) · student`` for every
    floating-point parameter *and* buffer (BatchNorm running statistics follow the student the same
    way); integer buffers such as ``num_batches_tracked`` are copied. The teacher stays in eval mode
    (no dropout, running BatchNorm statistics) and never receives gradients.

    ``alpha = min(max_alpha, 1 - 1 / (t + 1))`` ramps up from 0, so early on the teacher follows the
    student closely; ``t`` is the iteration (DAFormer/MIC) or the epoch (solution A's ``1 - 1/epoch``
    with epochs counted from 1), as the trainer chooses.
    """

    def __init__(self, student: nn.Module, max_alpha: float = 0.999) -> None:
        if not 0.0 <= max_alpha <= 1.0:
            raise ValueError(f"max_alpha must be in [0, 1], got {max_alpha}")
        self.max_alpha = max_alpha
        self.model = copy.deepcopy(student)
        self.model.eval()
        self.model.requires_grad_(False)

    def alpha(self, t: int) -> float:
        """The EMA weight at counter ``t`` (iteration or epoch, starting at 0)."""
        return min(self.max_alpha, 1.0 - 1.0 / (t + 1))

    @torch.no_grad()
    def update(self, student: nn.Module, t: int | None = None, alpha: float | None = None) -> float:
        """Move the teacher towards ``student``; give the counter ``t`` or an explicit ``alpha``."""
        if (t is None) == (alpha is None):
            raise ValueError("give exactly one of t (counter) and alpha")
        a = self.alpha(t) if alpha is None else float(alpha)
        teacher_state = self.model.state_dict()
        for name, value in student.state_dict().items():
            target = teacher_state[name]
            if target.dtype.is_floating_point:
                target.mul_(a).add_(value.detach().to(target.dtype), alpha=1.0 - a)
            else:
                target.copy_(value)
        return a

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


def block_mask(
    shape: tuple[int, int, int],
    ratio: float,
    block: int,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """MIC's random block mask: ``(B, 1, H, W)`` float, 1 = keep, 0 = masked.

    The image is tiled into ``block × block`` squares (the last row/column cut at the border) and
    each square is masked with probability ``ratio`` independently.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    if block < 1:
        raise ValueError(f"mask block must be ≥ 1 pixel, got {block}")
    b, h, w = shape
    grid = (b, 1, -(-h // block), -(-w // block))  # ceil division
    keep = (torch.rand(grid, generator=generator) >= ratio).float().to(device)
    keep = keep.repeat_interleave(block, dim=2).repeat_interleave(block, dim=3)
    return keep[:, :, :h, :w]


def class_mix_masks(
    labels: torch.Tensor,
    ignore_index: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DACS ClassMix masks: for each source label map ``(B, H, W)``, half of the classes present
    (rounded up, never the ignore value) chosen at random; returns ``(B, 1, H, W)`` float, 1 where
    the source pixel is pasted."""
    masks = []
    for label in labels:
        classes = torch.unique(label)
        classes = classes[classes != ignore_index]
        order = torch.randperm(len(classes), generator=generator)
        chosen = classes[order[: (len(classes) + 1) // 2].to(classes.device)]
        masks.append(torch.isin(label, chosen))
    return torch.stack(masks).unsqueeze(1).float()  # (B, 1, H, W)


@dataclass(frozen=True)
class UDAConfig:
    """The knobs of :func:`uda_step`: the :class:`kit.train.config.TrainConfig` fields of these names
    (``dice_weight`` is its ``uda_dice_weight``), read by :meth:`from_train_config`; no defaults of its
    own, so that there is one set of them."""

    pseudo_threshold: float  # teacher confidence above which a pixel counts as confident
    mask_ratio: float  # share of target blocks masked for the student
    mask_block: int  # mask block size in pixels
    class_mix: bool  # DACS ClassMix of source classes onto target images
    pseudo_weighting: str  # "image" | "batch" (DAFormer, MIC) | "pixel" | "class": kit.train.losses.pseudo_weights
    dice_weight: float  # Dice (solution B) next to CE on the labelled source and distortion branches
    bn_stats: str  # passes updating BatchNorm running statistics: target | labelled | all (MIC's code)
    target_branch: bool  # False: no teacher, no target loss (an ablation: source branches alone)
    ignore_index: int = IGNORE_INDEX  # the label files' background: no class of its own here

    @classmethod
    def from_train_config(cls, config: TrainConfig) -> UDAConfig:
        return cls(pseudo_threshold=config.pseudo_threshold, mask_ratio=config.mask_ratio, mask_block=config.mask_block,
                   class_mix=config.class_mix, pseudo_weighting=config.pseudo_weighting,
                   dice_weight=config.uda_dice_weight, bn_stats=config.bn_stats, target_branch=config.target_branch)

    def __post_init__(self) -> None:
        if self.bn_stats not in BN_STATS:
            raise ValueError(f"bn_stats = {self.bn_stats!r}: expected one of {BN_STATS}")
        if self.bn_stats == "target" and not self.target_branch:
            raise ValueError("bn_stats = 'target' measures BatchNorm statistics on target crops: it needs the target branch")


def uda_step(
    student: nn.Module,
    teacher: EMATeacher,
    batch: dict[str, torch.Tensor],
    config: UDAConfig,
    backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
    autocast: Callable = contextlib.nullcontext,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """One self-training step: back-propagates each phase's loss into the student's gradients.

    ``batch`` holds normalised tensors: ``source`` (B, 3, h, w) with ``source_label`` (B, h, w);
    optionally ``distorted`` / ``distorted_label`` (the distortion branch); ``target`` (B, 3, h', w').
    Each phase calls ``backward`` on its own loss (MIC does the same) so that only one graph is
    held at a time; the optimiser step, the EMA update and logging are the caller's.
    ``autocast`` is a context factory ``autocast()`` (mixed precision on CUDA, a no-op otherwise).
    Returns the losses (floats) and the mean pseudo-label weight.
    """
    losses: dict[str, float] = {}
    ignore = config.ignore_index

    def supervised(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = cross_entropy(logits, labels, ignore_index=ignore)
        if config.dice_weight > 0:
            loss = loss + config.dice_weight * dice_loss(logits.float(), labels, ignore_index=ignore)
        return loss

    def norm_stats(update: bool):  # a training pass that updates the running statistics, or not
        return contextlib.nullcontext() if update else frozen_norm_stats(student)

    labelled_updates = config.bn_stats in ("all", "labelled")  # the source and distortion passes
    others_update = config.bn_stats == "all"  # the class-mix and masked target passes

    # 1. source: supervised cross-entropy (+ Dice) on the labelled source crop
    with norm_stats(labelled_updates), autocast():
        loss = supervised(student(batch["source"]), batch["source_label"])
    backward(loss)
    losses["source"] = loss.item()

    # 2. distortion: the same supervision on the distorted copy of the source
    if "distorted" in batch:
        with norm_stats(labelled_updates), autocast():
            loss = supervised(student(batch["distorted"]), batch["distorted_label"])
        backward(loss)
        losses["distortion"] = loss.item()

    if not config.target_branch:
        return losses

    # 3. pseudo-label: the teacher's prediction on the whole (unmasked) target crop
    target = batch["target"]
    with torch.no_grad(), autocast():
        teacher_probs = torch.softmax(teacher(target).float(), dim=1)  # (B, C, h', w')
        if config.bn_stats == "target":  # the student's running statistics from the unmasked target crop
            student(target)

    # 4. (optional) class mix: half the source classes pasted onto the target, labels mixed alike
    if config.class_mix:
        if batch["source"].shape[-2:] != target.shape[-2:]:
            raise ValueError(
                f"class mix needs source and target crops of one size, got {tuple(batch['source'].shape[-2:])} "
                f"and {tuple(target.shape[-2:])}"
            )
        mix = class_mix_masks(batch["source_label"], ignore, generator).to(target.device)  # (B, 1, h, w)
        mixed = mix * batch["source"] + (1 - mix) * target
        confidence, pseudo = teacher_probs.max(dim=1)
        mixed_label = torch.where(mix[:, 0].bool(), batch["source_label"], pseudo)
        with norm_stats(others_update), autocast():
            mixed_logits = student(mixed)
            loss_pixels = F.cross_entropy(mixed_logits.float(), mixed_label, ignore_index=ignore, reduction="none")
        every = torch.ones_like(pseudo, dtype=torch.bool)
        weight, _ = pseudo_weights(confidence, pseudo, config.pseudo_threshold, every, config.pseudo_weighting)
        pixel_weight = torch.where(mix[:, 0].bool(), torch.ones_like(loss_pixels), weight)  # source pixels weigh 1
        valid = (mixed_label != ignore).float()
        loss = (loss_pixels * pixel_weight * valid).sum() / valid.sum().clamp(min=1.0)
        backward(loss)
        losses["mix"] = loss.item()

    # 5. masked target: the student sees the target with random blocks blanked and must still
    #    reproduce the teacher's confident pseudo-labels (masking to 0 = the domain's mean colour)
    keep = block_mask(
        (target.shape[0], target.shape[2], target.shape[3]), config.mask_ratio, config.mask_block,
        generator=generator, device=target.device,
    )
    with norm_stats(others_update), autocast():
        student_logits = student(target * keep)
    loss, weights = pseudo_label_loss(student_logits.float(), teacher_probs, threshold=config.pseudo_threshold,
                                      teacher_is_probs=True, weighting=config.pseudo_weighting)
    backward(loss)
    losses["target"] = loss.item()
    losses["pseudo_weight"] = weights.mean().item()
    return losses
