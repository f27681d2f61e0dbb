"""Prediction: sliding windows, test-time augmentation, ensembles, border post-processing, and
whole splits streamed into a submission and/or a confusion matrix.

- :func:`slide_predict` follows mmsegmentation's ``slide_inference`` as solution A (seed 000) used
  it: crop-sized windows at a stride, the last window of a row or column clamped to the image edge,
  every window's softmax added into an accumulator with an overlap count, divided by the count.
  Unlike mmseg, windows of all images are batched together (``batch_size`` per forward pass).
- :func:`predict_tta` is solution B's (seed 001) multi-scale + flip test-time augmentation
  (scales 0.8…1.2) on top of whole-image or slide prediction.
- :func:`ensemble` is solution A's weighted sum of class probabilities (MiT-B3/B4/B5: 0.9, 1.0, 0.8).
- :func:`run_border` / :func:`apply_border`: background outside the fisheye disc (``kit.border``:
  solution A's ellipse, solution B's thresholded mean image), estimated as the runs' training did.
- :func:`predict_examples`: a run's student and EMA teacher on a few fisheye images (``03_train``).

Conventions:

- Probabilities are ``float32 (B, C, H, W)`` softmax outputs; C is 13 for the kit's models (classes
  0..11, background 12) but any C works.
- Label maps are ``uint8 (H, W)`` in the label files' convention: 0..11, and **255 for
  background**, whether it comes from the background output (argmax 12) or from the border.
  ``kit.rle.encode_label_map`` does not encode values ≥ 12 and ``kit.metrics.confusion_matrix``
  counts them as background, so both read these maps as they are.
- Output size: probabilities are resized (bilinear) from the model's input size straight to the
  size a consumer needs, then argmaxed: to 960×540 for the submission (so the RLE module's
  nearest resize is the identity) and to the label's size for scoring. Argmaxing at the model size
  and resizing the label map would lose detail on thin classes (poles, signs).
- Memory stays bounded: a split is streamed one image at a time; nothing holds all probabilities.
"""

from __future__ import annotations

import contextlib
import numbers
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from kit.border import BORDER_IMAGES, Border, make_border
from kit.data import IGNORE_INDEX, NUM_CLASSES, evenly_spread, has_split, normalize, read_image, read_label, read_split
from kit.metrics import confusion_matrix, iou_table, mean_iou
from kit.progress import tqdm
from kit.rle import SUBMISSION_SIZE, SubmissionWriter
from kit.runs import Run, load_checkpoint, model_from_config

MODES = ("whole", "slide")


# --- Prediction on tensors -----------------------------------------------------------------------


def _device(model: nn.Module, fallback: torch.device) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else fallback


def _forward_probs(model: nn.Module, x: torch.Tensor, amp: bool) -> torch.Tensor:
    """Softmax of ``model(x)`` as float32 ``(B, C, H, W)`` at the input's size."""
    use_amp = amp and x.device.type == "cuda"
    with torch.autocast("cuda", dtype=torch.float16) if use_amp else contextlib.nullcontext():
        logits = model(x)
    logits = logits.float()
    if logits.shape[-2:] != x.shape[-2:]:  # a head that predicts at a fraction of the input size
        logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return logits.softmax(dim=1)


@torch.no_grad()
def predict_whole(model: nn.Module, images: torch.Tensor, amp: bool = False) -> torch.Tensor:
    """One forward pass: ``images (B, 3, H, W)`` → probabilities ``(B, C, H, W)`` on the model's device."""
    return _forward_probs(model, images.to(_device(model, images.device)), amp)


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
    amp: bool = False,
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
    device = _device(model, images.device)
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
    amp: bool = False,
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
    images = images.to(_device(model, images.device))
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


def apply_border(label_map: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """A copy of ``label_map (H, W)`` with 255 (background) wherever ``inside (H, W)`` is False."""
    if inside.shape != label_map.shape:
        raise ValueError(f"border mask is {inside.shape[1]}x{inside.shape[0]} but the label map is "
                         f"{label_map.shape[1]}x{label_map.shape[0]}; use Border.mask(size) to scale it")
    out = np.array(label_map, copy=True)
    out[~inside] = IGNORE_INDEX
    return out


def to_label_map(probs: torch.Tensor, inside: np.ndarray | None = None) -> np.ndarray:
    """Argmax of ``probs (C, H, W)`` as ``uint8 (H, W)``: 0..11, 255 for the background output
    (class ≥ 12) and, when ``inside`` is given, outside the fisheye border."""
    classes = probs.argmax(dim=0)
    classes = torch.where(classes >= NUM_CLASSES, IGNORE_INDEX, classes)
    label_map = classes.to(torch.uint8).cpu().numpy()
    return label_map if inside is None else apply_border(label_map, inside)


def ensemble_size(runs: Sequence[Run]) -> tuple[int, int]:
    """``(h, w)``: the largest ``target_size`` among the runs, at which :func:`ensemble` averages."""
    return max((tuple(config["target_size"]) for _, config in runs), key=lambda s: s[0] * s[1])


def run_border(
    runs: Sequence[Run],
    root: str | os.PathLike,
    kind: str | None,
    threshold: float | None = None,
) -> Border | None:
    """The notebooks' ``BORDER`` (None, ``"ellipse"`` or ``"mask"``) of ``root``'s target camera,
    estimated as the runs' training estimated it (``kit.recipes.target_border``): the mean image at
    the ensemble's size (:func:`ensemble_size`) from the runs' number of images (``stats_limit``),
    thresholded at ``threshold`` (None: the first run's ``border_threshold``, itself None for Otsu)."""
    h, w = ensemble_size(runs)
    config = runs[0][1]
    threshold = config.get("border_threshold") if threshold is None else threshold
    return make_border(root, kind, size=(w, h), threshold=threshold, max_images=config.get("stats_limit", BORDER_IMAGES))


def prediction_frame(root: str | os.PathLike, split: str) -> pd.DataFrame:
    """``split`` of ``root``, or its labelled twin ``<split>_gt`` where the dataset has one (the
    kit's synthetic data: the same ids plus ``gt_path``), so that one pass both scores the
    predictions and writes the submission."""
    return read_split(root, f"{split}_gt" if has_split(root, f"{split}_gt") else split)


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
    amp: bool = True  # float16 autocast on CUDA; ignored on the CPU

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
            ("amp", isinstance(self.amp, bool), "True or False"),
        ):
            if not valid:
                raise ValueError(f"InferenceSettings {name}={getattr(self, name)!r}: expected {expected}")


def predict_run(run: Run, image: np.ndarray, settings: InferenceSettings = InferenceSettings()) -> torch.Tensor:
    """Probabilities ``(C, h, w)`` of one ``uint8 (H, W, 3) RGB`` image at the run's ``target_size``
    (h, w): resized (bilinear), normalised with the run's target statistics, predicted."""
    model, config = run
    h, w = config["target_size"]
    if image.shape[:2] != (h, w):
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    x = normalize(image, config["target_mean"], config["target_std"])[None]  # (1, 3, h, w)
    window = tuple(config["crop_size"] or config["target_size"]) if settings.mode == "slide" else None
    probs = predict_tta(model, x, scales=settings.scales, flip=settings.flip, window=window,
                        stride=settings.stride, batch_size=settings.batch_size, amp=settings.amp)
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
                             f"({run[1]['arch']}/{run[1]['encoder']})")
        total += weight * probs.to(total.device)
    return total


# --- Whole splits --------------------------------------------------------------------------------


def _iter_probs(runs: Sequence[Run], frame: pd.DataFrame, weights: Sequence[float] | None, settings: InferenceSettings,
                progress: bool) -> Iterator[tuple[pd.Series, tuple[int, int], torch.Tensor]]:
    """(row, the image's (W, H), ensemble probabilities) one image at a time."""
    for _, row in tqdm(frame.iterrows(), total=len(frame), desc="predict", unit="img", disable=not progress):
        image = read_image(row["img_path"])
        yield row, (image.shape[1], image.shape[0]), ensemble(runs, image, weights, settings)


def predict_label_maps(
    runs: Sequence[Run],
    frame: pd.DataFrame,
    size: tuple[int, int] | None = None,
    weights: Sequence[float] | None = None,
    settings: InferenceSettings = InferenceSettings(),
    border: Border | None = None,
    progress: bool = True,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(id, uint8 (H, W) label map)`` for each row of ``frame`` (a split from
    ``kit.data.read_split``), at ``size = (W, H)`` or each image's own size; 255 is background."""
    for row, image_size, probs in _iter_probs(runs, frame, weights, settings, progress):
        out_size = tuple(size) if size is not None else image_size
        inside = border.mask(out_size) if border is not None else None
        yield row["id"], to_label_map(resize_probs(probs, out_size), inside)


@dataclass
class SplitResult:
    """What :func:`predict_split` produced; the fields of what was not asked for are None."""

    confusion: np.ndarray | None  # int64 (13, 13), rows truth, columns prediction, index 12 background
    per_image: pd.DataFrame | None  # columns id, mIoU: each image's own mIoU, in frame order
    submission: Path | None  # the written, validated submission.csv

    @property
    def scores(self) -> dict[str, float]:
        """``{class name: IoU, "mIoU": …}`` of the whole split (competition scoring)."""
        if self.confusion is None:
            raise ValueError("no scores: the split had no labels (gt_path column)")
        return iou_table(self.confusion)


def predict_split(
    runs: Sequence[Run],
    frame: pd.DataFrame,
    weights: Sequence[float] | None = None,
    settings: InferenceSettings = InferenceSettings(),
    border: Border | None = None,
    submission: str | os.PathLike | None = None,
    sample: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> SplitResult:
    """Predict every image of ``frame`` once with ``runs`` (one run or an ensemble) and

    - score it when ``frame`` has ``gt_path`` (e.g. ``test_gt`` / ``train_target_gt`` of the
      synthetic data) against labels of the image's size (another size is a ValueError naming both
      files), background (255) scored as the competition does (kit.metrics);
    - write ``submission`` when given: probabilities resized to 960×540, streamed into
      ``kit.rle.SubmissionWriter`` in ``sample``'s order, which validates the file before moving it
      into place (on any error nothing is written there and an earlier file stays as it was).

    ``border`` sets pixels outside the fisheye disc to background in both.
    """
    labelled = "gt_path" in frame.columns
    if submission is None and not labelled:
        raise ValueError("nothing to do: give submission= (and sample=) or a frame with a gt_path column")
    if submission is not None and sample is None:
        raise ValueError("writing a submission needs sample= (the sample_submission.csv of the dataset)")
    writer = SubmissionWriter(submission, sample, overwrite=overwrite) if submission is not None else None
    confusion = np.zeros((NUM_CLASSES + 1, NUM_CLASSES + 1), np.int64) if labelled else None
    per_image: list[tuple[str, float]] = []
    with writer if writer is not None else contextlib.nullcontext():  # the writer closes, or aborts on an error
        for row, size, probs in _iter_probs(runs, frame, weights, settings, progress):
            if labelled:
                truth = read_label(row["gt_path"])
                if truth.shape != (size[1], size[0]):
                    raise ValueError(f"label {row['gt_path']} is {truth.shape[1]}x{truth.shape[0]} but image "
                                     f"{row['img_path']} is {size[0]}x{size[1]}")
                pred = to_label_map(resize_probs(probs, size), border.mask(size) if border is not None else None)
                image_confusion = confusion_matrix(pred, truth)
                confusion += image_confusion
                per_image.append((row["id"], mean_iou(image_confusion)))
            if writer is not None:
                inside = border.mask(SUBMISSION_SIZE) if border is not None else None
                writer.add(row["id"], to_label_map(resize_probs(probs, SUBMISSION_SIZE), inside))
    per_image_frame = pd.DataFrame(per_image, columns=["id", "mIoU"]) if labelled else None
    return SplitResult(confusion, per_image_frame, submission=writer.path if writer is not None else None)


@torch.no_grad()
def predict_examples(run_dir: str | Path, count: int = 4, checkpoint: str = "last.pt",
                     device: str = "cpu") -> list[dict]:
    """Whole-image predictions of a run's student (and EMA teacher) on ``count`` fisheye images.

    Images (evenly spread) come from the run's labelled fisheye evaluation split when the dataset
    has one, else from ``train_target``. Each example: ``id``, ``image`` uint8 (H, W, 3) at the run's target size,
    ``student`` and ``teacher`` uint8 (H, W) label maps (255 = background; teacher pixels below the
    pseudo-label threshold are 255 too; ``teacher`` None for runs without one) and ``truth`` (or None).
    """
    state = load_checkpoint(Path(run_dir) / checkpoint, device)
    config = state["config"]
    root = Path(config["data_dir"])
    split = config["fisheye_eval_split"] if has_split(root, config["fisheye_eval_split"]) else "train_target"
    th, tw = config["target_size"]
    networks = {}
    for name, weights in (("student", state["model"]), ("teacher", state["teacher"])):
        if weights is not None:
            networks[name] = model_from_config(config).to(device).eval()
            networks[name].load_state_dict(weights)
    examples = []
    for row in evenly_spread(read_split(root, split), count).itertuples():
        image = read_image(row.img_path)
        has_truth = hasattr(row, "gt_path")
        truth = cv2.resize(read_label(row.gt_path), (tw, th), interpolation=cv2.INTER_NEAREST) if has_truth else None
        resized = cv2.resize(image, (tw, th), interpolation=cv2.INTER_LINEAR)
        example = {"id": row.id, "image": resized, "student": None, "teacher": None, "truth": truth}
        for name, model in networks.items():
            probs = predict_run((model, config), image, InferenceSettings(mode="whole", amp=False))
            example[name] = to_label_map(probs)
            if name == "teacher":  # as a pseudo-label: only confident pixels
                example[name][(probs.max(dim=0).values <= config["pseudo_threshold"]).cpu().numpy()] = IGNORE_INDEX
        examples.append(example)
    return examples
