"""Losses of the two reference solutions, as pure functions over logits.

- :func:`cross_entropy`: pixel-wise CE over non-ignored pixels (every solution's supervised loss).
- :func:`dice_loss`: reference solution B's (seed 001) Dice loss ``1 - (2·Σyp + 1)/(Σy + Σp + 1)``
  against class imbalance, averaged over all classes like mmseg's ``DiceLoss``.
- :func:`pseudo_label_loss`: DAFormer's (Hoyer et al., CVPR 2022) confidence-weighted
  pseudo-label CE, which reference solution A (seed 000) uses for its target loss; DAFormer weighs
  a batch by one number, the kit by default each image by its own (``weighting``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kit.competition.labels import IGNORE_INDEX


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean pixel-wise cross-entropy over the pixels whose target is not ``ignore_index``.

    Args:
        logits: (B, C, H, W).
        target: (B, H, W) int64 class ids in 0..C-1 or ``ignore_index``.
        weight: optional (C,) class weights; the mean is then weighted, as in ``F.cross_entropy``.

    Returns:
        A scalar; 0 (not NaN) when every pixel is ignored.
    """
    per_pixel = F.cross_entropy(
        logits, target, weight=weight, ignore_index=ignore_index, reduction="none"
    )  # (B, H, W); 0 on ignored pixels
    valid = target != ignore_index  # (B, H, W)
    total = valid.sum().to(per_pixel.dtype) if weight is None else weight[target[valid]].sum()
    return per_pixel.sum() / total.clamp_min(torch.finfo(per_pixel.dtype).tiny)  # 0 / tiny = 0 when all ignored


def dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: int = IGNORE_INDEX,
    smooth: float = 1.0,
) -> torch.Tensor:
    """Solution B's Dice loss on softmax probabilities against one-hot targets.

    Per image and class c, over the non-ignored pixels: ``1 - (2·Σ y·p + smooth) / (Σ y + Σ p + smooth)``
    with y the one-hot target and p the probability of c. The result is averaged over **all**
    C classes (absent ones included, as mmseg's ``DiceLoss``: an absent class then costs its
    predicted mass) and over the images.

    Args:
        logits: (B, C, H, W).
        target: (B, H, W) int64 class ids in 0..C-1 or ``ignore_index``.

    Returns:
        A scalar; 0 when every pixel is ignored.
    """
    num_classes = logits.shape[1]
    valid = (target != ignore_index).unsqueeze(1).to(logits.dtype)  # (B, 1, H, W)
    probs = logits.softmax(dim=1) * valid  # (B, C, H, W)
    onehot = F.one_hot(target.masked_fill(target == ignore_index, 0), num_classes)  # (B, H, W, C)
    onehot = onehot.permute(0, 3, 1, 2).to(logits.dtype) * valid  # (B, C, H, W)
    intersection = (probs * onehot).sum(dim=(2, 3))  # (B, C)
    dice = (2 * intersection + smooth) / (onehot.sum(dim=(2, 3)) + probs.sum(dim=(2, 3)) + smooth)  # (B, C)
    return (1 - dice).mean()


def confident_pixels(
    confidence: torch.Tensor, pseudo_label: torch.Tensor, threshold: float, keep: torch.Tensor, weighting: str
) -> torch.Tensor:
    """``(B, H, W)`` bool: kept pixels whose teacher confidence exceeds ``threshold``; with
    ``weighting="class"`` also those reaching the batch median confidence of their pseudo-class
    (class-balanced, CBST-like: each class keeps at least its upper half)."""
    confident = (confidence > threshold) & keep
    if weighting == "class":
        for c in pseudo_label[keep].unique():
            of_class = (pseudo_label == c) & keep
            confident |= of_class & (confidence >= confidence[of_class].median())
    return confident


def pseudo_weights(
    confidence: torch.Tensor, pseudo_label: torch.Tensor, threshold: float, keep: torch.Tensor, weighting: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """How much each pseudo-labelled pixel counts, shared by the masked-target loss and the class mix.

    Args:
        confidence, pseudo_label: (B, H, W) the teacher's max probability and argmax.
        keep: (B, H, W) bool, pixels that may count at all.
        weighting: ``"image"`` (the kit's default: every kept pixel weighs its *image's* confident
            share), ``"batch"`` (DAFormer and MIC: every kept pixel weighs the confident share of the
            whole batch, one number), ``"pixel"`` or ``"class"`` (only :func:`confident_pixels`
            count, at weight 1).

    Returns:
        ``(pixel_weight, share)``: (B, H, W) float weights and (B,) the share each image's pixels
        weigh (``"batch"``: the batch's share for every image; otherwise each image's own).
    """
    if weighting not in ("image", "batch", "pixel", "class"):
        raise ValueError(f"weighting must be 'image', 'batch', 'pixel' or 'class', got {weighting!r}")
    confident = confident_pixels(confidence, pseudo_label, threshold, keep, weighting)
    share = confident.sum(dim=(1, 2)) / keep.sum(dim=(1, 2)).clamp_min(1)  # (B,)
    if weighting == "batch":
        share = (confident.sum() / keep.sum().clamp_min(1)).expand(share.shape)
    if weighting in ("image", "batch"):
        return share.view(-1, 1, 1).expand(confident.shape), share
    return confident.float(), share


def pseudo_label_loss(
    student_logits: torch.Tensor,
    teacher: torch.Tensor,
    threshold: float = 0.968,
    ignore_mask: torch.Tensor | None = None,
    teacher_is_probs: bool = False,
    weighting: str = "image",
) -> tuple[torch.Tensor, torch.Tensor]:
    """CE of the student against the teacher's pseudo-labels, weighted by the teacher's confidence.

    The pseudo-label is the teacher's argmax. With ``"image"`` (the kit's default) an image's weight
    is the share of its (non-ignored) pixels whose teacher confidence (max probability) exceeds
    ``threshold``; DAFormer and MIC use one weight per batch, the share over all its pixels
    (``"batch"``). Per image, a crop the teacher is sure of counts more than one it is not, within
    the same batch; with equal-sized crops the two agree on average. Solution A's slides divide the
    confident-pixel count by ``h + w``, a slip for ``h * w``; both weightings use the share.

    Args:
        student_logits: (B, C, H, W).
        teacher: (B, C, H, W) teacher logits, or probabilities with ``teacher_is_probs=True``;
            no gradient flows into it.
        ignore_mask: optional (B, H, W) bool, True where pixels count for nothing (e.g. outside
            the fisheye circle).
        weighting: ``"image"`` (every kept pixel is trained, the image weighted by its confident
            share), ``"batch"`` (DAFormer/MIC: the same with the batch's share) or ``"pixel"``
            (only confident pixels are trained, at weight 1; the loss is the mean CE over them, and
            ``weight`` still reports the confident share) or
            ``"class"`` (as ``"pixel"``, but a pixel also counts as confident when its confidence
            reaches the median of its pseudo-class in the batch, so that classes the teacher is
            unsure of, often the rare ones, keep their most confident half instead of vanishing).

    Returns:
        ``(loss, weight)``: loss = mean over images of weight_i · (mean CE over image i's kept
        pixels) with ``"image"`` and ``"batch"``, the mean CE over all confident pixels otherwise, a scalar;
        weight: (B,) per-image confident shares, for logging.
    """
    with torch.no_grad():
        probs = teacher if teacher_is_probs else teacher.softmax(dim=1)
        confidence, pseudo_label = probs.max(dim=1)  # (B, H, W) each
        keep = torch.ones_like(pseudo_label, dtype=torch.bool) if ignore_mask is None else ~ignore_mask
        pixel_weight, weight = pseudo_weights(confidence, pseudo_label, threshold, keep, weighting)
    per_pixel = F.cross_entropy(student_logits, pseudo_label, reduction="none")  # (B, H, W)
    if weighting in ("pixel", "class"):  # pixel_weight is the confident mask
        return (per_pixel * pixel_weight).sum() / pixel_weight.sum().clamp_min(1), weight
    per_image = (per_pixel * keep).sum(dim=(1, 2)) / keep.sum(dim=(1, 2)).clamp_min(1)  # (B,)
    return (weight.to(per_image.dtype) * per_image).mean(), weight
