"""Whole splits: one run or an ensemble (``kit.predict.tta``: slide windows, multi-scale/flip TTA,
weighted probabilities) predicts a split image by image, streamed into a submission and/or a
confusion matrix, with border post-processing.

- :func:`run_border` / :func:`apply_border`: background outside the fisheye disc (``kit.data.border``:
  solution A's ellipse, solution B's thresholded mean image), estimated as the runs' training did.
- :func:`predict_split` / :func:`predict_label_maps`: a split's submission and scores, or its label maps.

Conventions:

- Probabilities are ``float32 (B, C, H, W)`` softmax outputs; C is 13 for the kit's models (classes
  0..11, background 12) but any C works.
- Label maps are ``uint8 (H, W)`` in the label files' convention: 0..11, and **255 for
  background**, whether it comes from the background output (argmax 12) or from the border.
  ``kit.competition.rle.encode_label_map`` does not encode values ≥ 12 and ``kit.competition.metrics.confusion_matrix``
  counts them as background, so both read these maps as they are.
- Output size: probabilities are resized (bilinear) from the model's input size straight to the
  size a consumer needs, then argmaxed: to 960×540 for the submission (so the RLE module's
  nearest resize is the identity) and to the label's size for scoring. Argmaxing at the model size
  and resizing the label map would lose detail on thin classes (poles, signs).
- Memory stays bounded: a split is streamed one image at a time; nothing holds all probabilities.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kit.common.device import describe_device
from kit.common.files import prefetched
from kit.common.progress import tqdm
from kit.competition.labels import IGNORE_INDEX, NUM_CLASSES
from kit.competition.layout import has_split, read_image, read_label, read_split
from kit.competition.metrics import confusion_matrix, iou_table, mean_iou
from kit.competition.rle import SUBMISSION_SIZE
from kit.competition.submission import SubmissionWriter
from kit.data.border import Border, make_border
from kit.predict.runs import Run
from kit.predict.tta import InferenceSettings, ensemble, ensemble_size, model_device, resize_probs


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


def run_border(
    runs: Sequence[Run],
    root: str | os.PathLike,
    kind: str | None,
    threshold: float | None = None,
) -> Border | None:
    """The notebooks' ``BORDER`` (None, ``"ellipse"`` or ``"mask"``) of ``root``'s target camera,
    estimated as the runs' training estimated it (``kit.train.recipes.target_border``): the mean image at
    the ensemble's size (:func:`ensemble_size`) from the runs' number of images (``stats_limit``),
    thresholded at ``threshold`` (None: the first run's ``border_threshold``, itself None for Otsu)."""
    config = runs[0][1]
    threshold = config.border_threshold if threshold is None else threshold
    return border_at(root, kind, ensemble_size(runs), config.stats_limit, threshold)


def border_at(root: str | os.PathLike, kind: str | None, size: tuple[int, int], stats_limit: int | None,
              threshold: float | None) -> Border | None:
    """``root``'s border ``kind`` for a model input ``size`` (H, W), estimated as a training run with
    these ``stats_limit`` and ``threshold`` estimated it (:func:`run_border` for runs)."""
    h, w = size
    return make_border(root, kind, size=(w, h), threshold=threshold, max_images=stats_limit)


def prediction_frame(root: str | os.PathLike, split: str) -> pd.DataFrame:
    """``split`` of ``root``, or its labelled twin ``<split>_gt`` where the dataset has one (the
    kit's synthetic data: the same ids plus ``gt_path``), so that one pass both scores the
    predictions and writes the submission."""
    return read_split(root, f"{split}_gt" if has_split(root, f"{split}_gt") else split)


# --- Whole splits --------------------------------------------------------------------------------


def _iter_probs(runs: Sequence[Run], frame: pd.DataFrame, weights: Sequence[float] | None, settings: InferenceSettings,
                progress: bool) -> Iterator[tuple[pd.Series, tuple[int, int], torch.Tensor]]:
    """(row, the image's (W, H), ensemble probabilities) one image at a time; the next images are read
    (decoded) by a thread while the model predicts."""
    if progress:
        model, config = runs[0]
        device = model_device(model, torch.device("cpu"))
        print(f"predicting {len(frame)} images with {len(runs)} run(s): "
              f"{describe_device(device, settings.precision(config, device))}", flush=True)
    rows = [row for _, row in frame.iterrows()]
    images = prefetched(read_image, [row["img_path"] for row in rows])
    for row, image in tqdm(zip(rows, images), total=len(rows), desc="predict", unit="img", disable=not progress):
        yield row, (image.shape[1], image.shape[0]), ensemble(runs, image, weights, settings)


def _label_map(probs: torch.Tensor, size: tuple[int, int], border: Border | None) -> np.ndarray:
    """``probs`` resized to ``size = (W, H)`` as a label map, background outside ``border``'s disc."""
    return to_label_map(resize_probs(probs, size), border.mask(size) if border is not None else None)


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
    ``kit.competition.layout.read_split``), at ``size = (W, H)`` or each image's own size; 255 is background."""
    for row, image_size, probs in _iter_probs(runs, frame, weights, settings, progress):
        yield row["id"], _label_map(probs, tuple(size) if size is not None else image_size, border)


@dataclass
class SplitResult:
    """What :func:`predict_split` produced; the fields of what was not asked for are None."""

    confusion: np.ndarray | None  # int64 (13, 13), rows truth, columns prediction, index 12 background
    per_image: pd.DataFrame | None  # columns id, mIoU: each image's own mIoU, in frame order
    submission: Path | None  # the written, validated submission.csv
    label_maps: dict[str, np.ndarray] = field(default_factory=dict)  # id → uint8 (H, W) at the image's size: kept ones

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
    keep: int = 0,
    keep_worst: int = 0,
) -> SplitResult:
    """Predict every image of ``frame`` once with ``runs`` (one run or an ensemble) and

    - score it when ``frame`` has ``gt_path`` (e.g. ``test_gt`` / ``train_target_gt`` of the
      synthetic data) against labels of the image's size (another size is a ValueError naming both
      files), background (255) scored as the competition does (kit.competition.metrics);
    - write ``submission`` when given: probabilities resized to 960×540, streamed into
      ``kit.competition.submission.SubmissionWriter`` in ``sample``'s order, which validates the file before moving it
      into place (on any error nothing is written there and an earlier file stays as it was).

    ``border`` sets pixels outside the fisheye disc to background in both. ``label_maps`` keeps the
    label maps (at each image's size) of the first ``keep`` images and, on a labelled split, of the
    ``keep_worst`` with the lowest mIoU, for figures that would otherwise predict them again (at full
    size with test-time augmentation, as long as the whole split's first pass over them).
    """
    labelled = "gt_path" in frame.columns
    if submission is None and not labelled:
        raise ValueError("nothing to do: give submission= (and sample=) or a frame with a gt_path column")
    if submission is not None and sample is None:
        raise ValueError("writing a submission needs sample= (the sample_submission.csv of the dataset)")
    writer = SubmissionWriter(submission, sample, overwrite=overwrite) if submission is not None else None
    confusion = np.zeros((NUM_CLASSES + 1, NUM_CLASSES + 1), np.int64) if labelled else None
    per_image: list[tuple[str, float]] = []
    first, worst = {}, []  # worst: a heap of (-mIoU, -index, id, map), the keep_worst lowest so far
    with writer if writer is not None else contextlib.nullcontext():  # the writer closes, or aborts on an error
        for index, (row, size, probs) in enumerate(_iter_probs(runs, frame, weights, settings, progress)):
            pred = None
            if labelled:
                truth = read_label(row["gt_path"])
                if truth.shape != (size[1], size[0]):
                    raise ValueError(f"label {row['gt_path']} is {truth.shape[1]}x{truth.shape[0]} but image "
                                     f"{row['img_path']} is {size[0]}x{size[1]}")
                pred = _label_map(probs, size, border)
                image_confusion = confusion_matrix(pred, truth)
                confusion += image_confusion
                per_image.append((row["id"], mean_iou(image_confusion)))
                if keep_worst:
                    score = per_image[-1][1]
                    heapq.heappush(worst, (-(math.inf if math.isnan(score) else score), -index, row["id"], pred))  # ties: the first
                    if len(worst) > keep_worst:
                        heapq.heappop(worst)
            if index < keep:
                first[row["id"]] = pred if pred is not None else _label_map(probs, size, border)
            if writer is not None:
                writer.add(row["id"], _label_map(probs, SUBMISSION_SIZE, border))
    per_image_frame = pd.DataFrame(per_image, columns=["id", "mIoU"]) if labelled else None
    kept = {**first, **{image_id: label for _, _, image_id, label in worst}}
    return SplitResult(confusion, per_image_frame, submission=writer.path if writer is not None else None,
                       label_maps=kept)
