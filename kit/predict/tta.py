"""Prediction on tensors: whole-image and sliding-window prediction (mmsegmentation's
``slide_inference``, as solution A used it, with windows batched across images), solution B's
multi-scale + flip test-time augmentation, and solution A's weighted ensemble of runs.
"""

from __future__ import annotations

import contextlib
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kit.common.device import AMP_CHOICES, AMP_DTYPES, resolve_amp
from kit.data.datasets import normalize
from kit.predict.runs import Run

MODES = ("whole", "slide")


# --- Prediction on tensors -----------------------------------------------------------------------


def model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    """The device of ``model``'s parameters (``fallback`` for a model without any)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else fallback


def _forward_probs(model: nn.Module, x: torch.Tensor, amp: str) -> torch.Tensor:
    """Softmax of ``model(x)`` as float32 ``(B, C, H, W)`` at the input's size; ``amp``: ``"bf16"``,
    ``"fp16"`` (autocast on CUDA; the CPU computes in float32) or ``"none"``."""
    dtype = AMP_DTYPES[amp] if x.device.type == "cuda" else None
    with torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext():
        logits = model(x)
    logits = logits.float()
    if logits.shape[-2:] != x.shape[-2:]:  # a head that predicts at a fraction of the input size
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return logits.softmax(dim=1)


@torch.no_grad()
def predict_whole(model: nn.Module, images: torch.Tensor, amp: str = "none") -> torch.Tensor:
    """One forward pass: ``images (B, 3, H, W)`` → probabilities ``(B, C, H, W)`` on the model's device."""
    return _forward_probs(model, images.to(model_device(model, images.device)), amp)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Window start offsets along one axis of ``length ≥ window`` pixels (mmseg's grid: the last
    window is clamped to end at the edge). E.g. (6, 4, 2) → [0, 2]; (7, 4, 2) → [0, 2, 3]."""
    count = max(length - window + stride - 1, 0) // stride + 1
    return [min(i * stride, length - window) for i in range(count)]


@torch.no_grad()
def slide_predict(
    model: nn.Module,
    images: torch.Tensor,
    window: tuple[int, int],
    stride: tuple[int, int],
    batch_size: int = 8,
    num_classes: int | None = None,
    amp: str = "none",
) -> torch.Tensor:
    """Sliding-window probabilities ``(B, C, H, W)`` of ``images (B, 3, H, W)``.

    ``window`` and ``stride`` are (h, w). An image smaller than the window is padded at the bottom
    and right with zeros (the mean colour, after normalisation) and the result cropped back. The
    windows of all images go through the model ``batch_size`` at a time; each pixel's probabilities
    are the mean over the windows that cover it. One window covering the image is a plain forward
    pass. ``num_classes``, when given, is checked against the model's output.
    """
    (h, w), (sh, sw) = window, stride
    if min(h, w, sh, sw, batch_size) < 1:
        raise ValueError(f"window {window}, stride {stride} and batch_size {batch_size} must be positive")
    if sh > h or sw > w:
        raise ValueError(f"stride {stride} is larger than the window {window}: some pixels would be in no window")
    device = model_device(model, images.device)
    images = images.to(device)
    batch, _, height, width = images.shape
    images = F.pad(images, (0, max(w - width, 0), 0, max(h - height, 0)))  # (B, 3, Hp, Wp)
    padded = images.shape[-2:]
    tiles = [(y, x) for y in window_starts(padded[0], h, sh) for x in window_starts(padded[1], w, sw)]
    count = torch.zeros(padded, device=device)  # (Hp, Wp) windows covering each pixel
    for y, x in tiles:
        count[y : y + h, x : x + w] += 1
    jobs = [(b, y, x) for b in range(batch) for y, x in tiles]
    total = None  # (B, C, Hp, Wp), allocated once the model's class count is known
    for i in range(0, len(jobs), batch_size):
        chunk = jobs[i : i + batch_size]
        crops = torch.stack([images[b, :, y : y + h, x : x + w] for b, y, x in chunk])  # (n, 3, h, w)
        probs = _forward_probs(model, crops, amp)  # (n, C, h, w)
        if total is None:
            if num_classes is not None and probs.shape[1] != num_classes:
                raise ValueError(f"the model predicts {probs.shape[1]} classes; expected num_classes={num_classes}")
            total = torch.zeros((batch, probs.shape[1], *padded), device=device)
        for (b, y, x), p in zip(chunk, probs):
            total[b, :, y : y + h, x : x + w] += p
    return (total / count)[..., :height, :width]


@torch.no_grad()
def predict_tta(
    model: nn.Module,
    images: torch.Tensor,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    window: tuple[int, int] | None = None,
    stride: tuple[int, int] | None = None,
    batch_size: int = 8,
    amp: str = "none",
) -> torch.Tensor:
    """Mean probabilities ``(B, C, H, W)`` over ``scales`` × (plain, horizontally flipped).

    Each scaled copy (bilinear) is predicted whole, or with :func:`slide_predict` when ``window`` is
    given (``stride`` defaults to half the window); its probabilities are flipped back and resized
    to (H, W). ``scales=(1.0,), flip=False`` is a plain prediction.
    """
    if not scales or min(scales) <= 0:
        raise ValueError(f"scales {tuple(scales)} must be a non-empty list of positive factors")
    if window is not None and stride is None:
        stride = (max(window[0] // 2, 1), max(window[1] // 2, 1))
    images = images.to(model_device(model, images.device))
    height, width = images.shape[-2:]
    total = None
    for scale in scales:
        size = (max(round(height * scale), 1), max(round(width * scale), 1))
        scaled = images
        if size != (height, width):
            scaled = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        for flipped in (False, True) if flip else (False,):
            x = scaled.flip(-1) if flipped else scaled
            if window is None:
                probs = _forward_probs(model, x, amp)
            else:
                probs = slide_predict(model, x, window, stride, batch_size=batch_size, amp=amp)
            if flipped:
                probs = probs.flip(-1)
            if size != (height, width):
                probs = F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)
            total = probs if total is None else total + probs
    return total / (len(scales) * (2 if flip else 1))


# --- Label maps and the fisheye border -----------------------------------------------------------


def resize_probs(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(C, H, W)`` or ``(B, C, H, W)`` probabilities to ``size = (W, H)``."""
    if tuple(probs.shape[-2:]) == (size[1], size[0]):
        return probs
    batched = probs if probs.dim() == 4 else probs[None]
    out = F.interpolate(batched, size=(size[1], size[0]), mode="bilinear", align_corners=False)
    return out if probs.dim() == 4 else out[0]


def ensemble_size(runs: Sequence[Run]) -> tuple[int, int]:
    """``(h, w)``: the largest ``target_size`` among the runs, at which :func:`ensemble` averages."""
    return max((config.target_size for _, config in runs), key=lambda s: s[0] * s[1])


# --- One image through one or several runs -------------------------------------------------------


def _number(value, kind: type = numbers.Real) -> bool:
    """Whether ``value`` is a number of ``kind`` (NumPy's included); bools are not: True is no batch size."""
    return isinstance(value, kind) and not isinstance(value, bool)


@dataclass(frozen=True)
class InferenceSettings:
    """How each run predicts an image; test-time augmentation is ``scales`` ≠ (1.0,) or ``flip``."""

    mode: str = "slide"  # "whole": the resized image in one pass; "slide": windows of the run's crop_size
    stride: tuple[int, int] | None = None  # slide stride (h, w); None: half the crop size (solution A)
    scales: tuple[float, ...] = (1.0,)  # e.g. (0.75, 1.0, 1.25), or solution B's (0.8, 0.9, 1.0, 1.1, 1.2)
    flip: bool = False  # also predict the horizontally flipped image and average
    batch_size: int = 8  # windows per forward pass
    amp: str = "run"  # "run": the precision the run trained in, on this device (kit.common.device.resolve_amp); bf16 | fp16 | none

    def __post_init__(self) -> None:
        # notebooks pass lists (papermill parameters are JSON); the settings are hashable tuples
        for name in ("stride", "scales"):
            if isinstance(value := getattr(self, name), list):
                object.__setattr__(self, name, tuple(value))
        stride, scales = self.stride, self.scales
        for name, valid, expected in (  # every field, so that a bad parameter fails before any prediction
            ("mode", self.mode in MODES, f"one of {MODES}"),
            ("stride", stride is None or (isinstance(stride, tuple) and len(stride) == 2
                                          and all(_number(v, numbers.Integral) and v >= 1 for v in stride)),
             "None or two integers ≥ 1 (h, w)"),
            ("scales", isinstance(scales, tuple) and len(scales) > 0
                       and all(_number(v) and 0 < v < np.inf for v in scales),
             "a non-empty sequence of finite numbers > 0"),
            ("flip", isinstance(self.flip, bool), "True or False"),
            ("batch_size", _number(self.batch_size, numbers.Integral) and self.batch_size >= 1, "an integer ≥ 1"),
            ("amp", self.amp in ("run", *AMP_CHOICES), f"one of {('run', *AMP_CHOICES)}"),
        ):
            if not valid:
                raise ValueError(f"InferenceSettings {name}={getattr(self, name)!r}: expected {expected}")

    def precision(self, config, device: torch.device) -> str:
        """The precision a run (its ``RunConfig``) predicts in on ``device``: ``amp``, or for ``"run"`` the
        precision it trained in (``prediction_precision`` in its config.json; runs from before it was
        stored, and zero-shot runs, predict in float16 as they always did)."""
        return resolve_amp(config.values.get("prediction_precision", "fp16") if self.amp == "run" else self.amp, device)


def run_settings(
    runs: Sequence[Run],
    mode: str | None = None,
    stride: Sequence[int] | None = None,
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    batch_size: int = 8,
) -> InferenceSettings:
    """The notebooks' prediction parameters, each None taking the first run's own (its training
    recipe's ``predict_mode``, ``predict_scales``, ``predict_flip``: solution B's runs predict with its
    multi-scale flip TTA unless told otherwise)."""
    config = runs[0][1]
    return InferenceSettings(mode=config.predict_mode if mode is None else mode, stride=stride,
                             scales=config.predict_scales if scales is None else scales,
                             flip=config.predict_flip if flip is None else flip, batch_size=batch_size)


def predict_run(run: Run, image: np.ndarray, settings: InferenceSettings = InferenceSettings()) -> torch.Tensor:
    """Probabilities ``(C, h, w)`` of one ``uint8 (H, W, 3) RGB`` image at the run's ``target_size``
    (h, w): resized (bilinear), normalised with the run's target statistics, predicted."""
    model, config = run
    h, w = config.target_size
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    x = normalize(image, config.target_mean, config.target_std)[None]  # (1, 3, h, w)
    window = (config.crop_size or config.target_size) if settings.mode == "slide" else None
    amp = settings.precision(config, model_device(model, x.device))
    probs = predict_tta(model, x, scales=settings.scales, flip=settings.flip, window=window,
                        stride=settings.stride, batch_size=settings.batch_size, amp=amp)
    return probs[0]


def _weights(weights: Sequence[float] | None, n: int) -> list[float]:
    weights = [1.0] * n if weights is None else [float(v) for v in weights]
    if len(weights) != n or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"ensemble weights {weights}: expected {n} non-negative numbers with a positive sum")
    return [v / sum(weights) for v in weights]


def ensemble(
    runs: Sequence[Run],
    image: np.ndarray,
    weights: Sequence[float] | None = None,
    settings: InferenceSettings = InferenceSettings(),
) -> torch.Tensor:
    """Weighted mean of the runs' probabilities for one ``uint8 (H, W, 3)`` image: ``(C, h, w)`` at
    the largest ``target_size`` among the runs, on the first run's device.

    Each run uses its own image size, normalisation and crop. Weights (solution A: 0.9, 1.0, 0.8)
    are normalised to sum to 1 so the result stays a probability; the argmax is the same either way.
    """
    weights = _weights(weights, len(runs))
    size = ensemble_size(runs)  # (h, w)
    total = None
    for run, weight in zip(runs, weights):
        probs = resize_probs(predict_run(run, image, settings), (size[1], size[0]))
        if total is None:
            total = torch.zeros_like(probs)
        elif probs.shape[0] != total.shape[0]:
            raise ValueError(f"runs disagree on the number of classes: {total.shape[0]} and {probs.shape[0]} "
                             f"({run[1].arch}/{run[1].encoder})")
        total += weight * probs.to(total.device)
    return total
