"""One batch as the training step sees it (the step view of ``03_train``), drawn by
``kit.report.viz.step_view_png``; kept out of the training loop.
"""

from __future__ import annotations

import numpy as np
import torch

from kit.common.device import resolve_device
from kit.competition.labels import IGNORE_INDEX, NUM_CLASSES
from kit.data.datasets import denormalize
from kit.train.config import TrainConfig
from kit.train.recipes import build_data, build_model, epoch_batches, seed_all
from kit.train.uda import EMATeacher, block_mask


@torch.no_grad()
def preview_step(config: TrainConfig) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """The first batch of a run as its step sees it, for drawing (``kit.report.viz.step_view_png``); trains nothing.

    Returns panels in the step's order, each ``(images uint8 (B, H, W, 3), labels uint8 (B, H, W) or
    None)``, images denormalised with the run's statistics, labels 255 where ignored or background:
    ``input`` (the supervised methods' crop) or, for the uda methods, ``source``, ``distorted``,
    ``target``, ``masked target`` (MIC's blocks at 0 = the domain's mean colour, drawn with the
    step's own generator) and ``pseudo-label`` (the teacher's confident pixels; at step 0 the teacher
    is the freshly built student, so expect noise unless the encoder is pretrained).
    """
    seed_all(config.seed)
    data = build_data(config)
    batches, targets, generator = epoch_batches(data, config, epoch=0)
    batch = next(batches)

    def images(x: torch.Tensor, stats) -> np.ndarray:
        return np.stack([denormalize(image, *stats) for image in x])

    def labels(y: torch.Tensor) -> np.ndarray:
        return torch.where(y >= NUM_CLASSES, IGNORE_INDEX, y).to(torch.uint8).numpy()

    if targets is None:
        stats = data.target_stats if config.method == "oracle" else data.source_stats
        return {"input": (images(batch["image"], stats), labels(batch["label"]))}
    panels = {name: (images(batch[name], data.source_stats), labels(batch[f"{name}_label"]))
              for name in ("source", "distorted") if name in batch}  # the distortion copy where trained
    target = next(targets)["image"]
    device = resolve_device(config.device)  # the run's own device: a GPU-scale model on a GPU
    model = build_model(config).to(device)
    logits = EMATeacher(model, config.ema_max_alpha)(target.to(device)).float()
    confidence, pseudo = (t.cpu() for t in logits.softmax(dim=1).max(dim=1))
    pseudo[confidence <= config.pseudo_threshold] = IGNORE_INDEX
    keep = block_mask((target.shape[0], *target.shape[2:]), config.mask_ratio, config.mask_block, generator=generator)
    panels["target"] = (images(target, data.target_stats), None)
    panels["masked target"] = (images(target * keep, data.target_stats), None)
    panels["pseudo-label"] = (images(target, data.target_stats), labels(pseudo))
    return panels
