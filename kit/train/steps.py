"""The pieces of a training step: the learning-rate schedule (linear warm-up, then polynomial decay),
AdamW with encoder/decoder learning rates, autocast, the supervised step (CE + Dice, or a mask
head's own losses), the self-training step and the evaluation pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from kit.common.device import AMP_DTYPES
from kit.competition.labels import IGNORE_INDEX
from kit.competition.metrics import confusion_matrix
from kit.train.config import OUTPUTS, TrainConfig
from kit.train.distributed import unwrap
from kit.train.losses import cross_entropy, dice_loss
from kit.train.uda import frozen_norm_stats


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


def lr_factor(step: int, warmup_steps: int, total_steps: int, power: float = 1.0) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then ``(1 - progress)^power`` decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    return max(0.0, 1.0 - (step - warmup_steps) / span) ** power


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with the encoder at ``lr_encoder`` and everything else (the decoder) at ``lr_decoder``."""
    encoder = set(id(p) for p in model.encoder.parameters())
    decoder = [p for p in model.parameters() if id(p) not in encoder]
    return torch.optim.AdamW(
        [{"params": list(model.encoder.parameters()), "lr": config.lr_encoder},
         {"params": decoder, "lr": config.lr_decoder}],
        weight_decay=config.weight_decay,
    )


def autocast_factory(amp: str, device: torch.device) -> Callable:
    """A context-manager factory for ``amp``, a precision of :func:`kit.common.device.resolve_amp`."""
    if device.type != "cuda" or AMP_DTYPES[amp] is None:
        return contextlib.nullcontext
    return lambda: torch.autocast("cuda", dtype=AMP_DTYPES[amp])


def supervised_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    dice_weight: float,
    backward: Callable[[torch.Tensor], None],
    autocast: Callable,
) -> dict[str, float]:
    """CE (+ ``dice_weight`` · Dice, solution B) on a labelled batch; back-propagates, returns the losses.
    A mask-classification model (``kit.models.mask2former``) has its own: class CE, mask BCE and Dice over
    every decoder layer (``dice_weight`` does not apply)."""
    with autocast():
        outputs = model(images)
    head = unwrap(model).decode_head
    if hasattr(head, "losses"):  # MaskPredictions, not logits
        losses = head.losses(outputs, labels, ignore_index=IGNORE_INDEX)
        backward(sum(losses.values()))
        return {f"m2f_{k}": v.item() for k, v in losses.items()}
    logits = outputs.float()
    losses = {"ce": cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)}
    if dice_weight > 0:
        losses["dice"] = dice_weight * dice_loss(logits, labels, ignore_index=IGNORE_INDEX)
    backward(sum(losses.values()))
    return {k: v.item() for k, v in losses.items()}


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[dict], device: torch.device, autocast: Callable) -> np.ndarray:
    """The 13×13 confusion matrix of whole-image predictions at model input size, over the labelled
    ``batches`` (a ``DataLoader``: ``kit.train.recipes.Batches.evals``).

    Background is scored (row and column 12) as the competition scores it; pixels the dataset's
    labels make void (``IGNORE_INDEX`` in its items: the bonnet under ``bonnet="void"``, pixels a
    warp left empty) are not counted at all, so that a method is not judged on pixels it was told to
    ignore.
    """
    model.eval()
    cm = np.zeros((OUTPUTS, OUTPUTS), np.int64)
    for batch in batches:
        with autocast():
            logits = model(batch["image"].to(device))
        label = batch["label"].to(device)
        counted = label != IGNORE_INDEX  # void; background is BACKGROUND_CLASS in the items
        confusion_matrix(logits.argmax(1)[counted], label[counted], out=cm)
    model.train()
    return cm


def self_train_step(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    dice_weight: float,
    backward: Callable[[torch.Tensor], None],
    autocast: Callable,
) -> dict[str, float]:
    """``self_train``'s step from round 1 on: the source crop (its pass leaves the BatchNorm statistics
    alone, as uda's ``bn_stats="target"``) and the pseudo-labelled target crop (its pass updates
    them), CE (+ Dice) each; pseudo-label pixels of 254 are ignored."""
    with frozen_norm_stats(model):
        losses = supervised_step(model, batch["image"], batch["label"], dice_weight, backward, autocast)
    target = supervised_step(model, batch["target"], batch["target_label"], dice_weight, backward, autocast)
    return {**losses, **{f"target_{k}": v for k, v in target.items()}}
