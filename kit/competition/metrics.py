"""Scoring as the competition does it: mIoU over classes 0..11 from a 13×13 confusion matrix.

Background (label 255) is not a scored class but it is not ignored either: a class predicted on a
background pixel is a false positive for that class. Row/column 12 of the matrix collects
background, so these false positives count. ``ignore_background=True`` drops background pixels
instead, which suits source-domain validation where 255 means "unlabelled".
"""

from __future__ import annotations

import numpy as np
import torch

from kit.competition.labels import CLASSES, IGNORE_INDEX, NUM_CLASSES


def _as_numpy(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def confusion_matrix(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    num_classes: int = NUM_CLASSES,
    ignore_background: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Count (truth, prediction) pairs into an ``int64 (num_classes + 1, num_classes + 1)`` matrix.

    Args:
        pred: predicted class ids, any shape, e.g. ``(B, H, W)``; values ≥ ``num_classes``
            (a background output, 255) count as background.
        target: ground truth of the same shape: ``0..num_classes-1`` or 255 (background).
        ignore_background: drop pixels whose truth is background instead of scoring them.
        out: a matrix to add into, for accumulating over batches; returned.

    Rows are truth, columns prediction; index ``num_classes`` is background.
    """
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
    n = num_classes + 1
    if isinstance(pred, torch.Tensor) and isinstance(target, torch.Tensor):
        # Count on the tensors' device: a GPU evaluation loop moves 169 numbers, not the maps.
        p = pred.reshape(-1).long().clamp(0, num_classes)
        t = target.reshape(-1).long()
        t = torch.where(t == IGNORE_INDEX, torch.full_like(t, num_classes), t)
        bad = (t < 0) | (t > num_classes)
        if ignore_background:
            keep = t != num_classes
            p, t, bad = p[keep], t[keep], bad[keep]
        if bool(bad.any()):
            raise ValueError(f"target values outside 0..{num_classes - 1} and {IGNORE_INDEX}: {torch.unique(t[bad]).tolist()}")
        counts = torch.bincount(t * n + p, minlength=n * n).cpu().numpy()
    else:
        p = np.minimum(_as_numpy(pred).reshape(-1).astype(np.int64), num_classes)
        p = np.maximum(p, 0)
        t = _as_numpy(target).reshape(-1).astype(np.int64)
        t = np.where(t == IGNORE_INDEX, num_classes, t)
        if ignore_background:
            keep = t != num_classes
            p, t = p[keep], t[keep]
        bad = (t < 0) | (t > num_classes)
        if bad.any():
            raise ValueError(f"target values outside 0..{num_classes - 1} and {IGNORE_INDEX}: {np.unique(t[bad]).tolist()}")
        counts = np.bincount(t * n + p, minlength=n * n)
    cm = counts.reshape(n, n).astype(np.int64)
    if out is not None:
        if out.shape != cm.shape:
            raise ValueError(f"out has shape {out.shape}, expected {cm.shape}")
        out += cm
        return out
    return cm


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU of each scored class (all rows but the last): ``TP / (TP + FP + FN)``, NaN when absent.

    False positives include predictions on background pixels (the last row); false negatives
    include class pixels predicted as background (the last column).
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)[:-1]
    fp = cm[:, :-1].sum(axis=0) - tp
    fn = cm[:-1, :].sum(axis=1) - tp
    union = tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def mean_iou(cm: np.ndarray) -> float:
    """Mean IoU over the classes present in truth or prediction (NaN classes are skipped)."""
    ious = iou_per_class(cm)
    return float(np.nanmean(ious)) if np.isfinite(ious).any() else float("nan")


def iou_table(cm: np.ndarray, class_names: tuple[str, ...] = CLASSES) -> dict[str, float]:
    """``{class name: IoU}`` plus ``"mIoU"``, for printing and JSON."""
    ious = iou_per_class(cm)
    table = {name: float(v) for name, v in zip(class_names, ious)}
    table["mIoU"] = mean_iou(cm)
    return table
