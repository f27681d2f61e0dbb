"""Offline pseudo-labels: a trained run (or an ensemble) labels the unlabelled fisheye images, each
class keeps only its most confident pixels, and the result is a labelled split that ``03_train``
trains on like any other (``METHOD = "self_train"``, ``PSEUDO_SPLIT``).

The competition's strongest entries did this (REFERENCE.md: 1st place pseudo-labelled the target with
an ensemble and fine-tuned on it; another top team pseudo-labelled once from a source-trained model
and retrained on source + pseudo-labels). Class-wise thresholds follow CRST / Trans4PASS: the
threshold of class c is the ``quantile`` of the confidences of the pixels predicted as c (0.5: each
class keeps its more confident half, Trans4PASS's median), capped at ``cap`` (Trans4PASS 0.9), so
that a rare, uncertain class keeps its share while a sure class keeps every pixel above ``cap``.

A pseudo-label file is a label PNG of the competition's kind (0..11, 255 background) plus
:data:`kit.competition.labels.VOID_INDEX` (254) for pixels below their class's threshold, which training ignores.
Outside the fisheye border every pixel is background (255), whatever the model said.

A pseudo-label folder holds ``pseudo.csv`` (``id,img_path,gt_path``, paths relative to the folder),
``labels/<id>.png`` and ``summary.json`` (thresholds and the per-class table). It is written in a
staging folder beside its final place and renamed into place when complete: an interrupted run
leaves no half folder, and an earlier round's folder is never replaced unless ``overwrite``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kit.common.files import (
    _UMASK,
    _manifest_entries,
    is_output_dir,
    make_dirs,
    prepare_output_dir,
    record_output,
    results_in,
    write_csv,
    write_image,
    write_json,
)
from kit.common.progress import tqdm
from kit.competition.labels import BACKGROUND_CLASS, CLASSES, IGNORE_INDEX, NUM_CLASSES, VOID_INDEX
from kit.competition.layout import evenly_spread, has_split, read_image, read_label, read_split
from kit.data.border import Border
from kit.predict.runs import Run
from kit.predict.tta import InferenceSettings, ensemble, resize_probs

BINS = 2000  # confidence histogram bins over [0, 1]: thresholds are exact to 1/BINS
NAMES = (*CLASSES, "background")  # rows of the per-class table, index = class id (12 = background)
CSV_NAME = "pseudo.csv"


@dataclass
class PseudoLabels:
    """A written pseudo-label folder and what was measured while writing it."""

    folder: Path
    csv: Path  # the split to train on (PSEUDO_SPLIT)
    thresholds: np.ndarray  # float (13,): each class's confidence threshold (12 = background)
    table: pd.DataFrame  # per class: threshold, predicted/kept pixels inside the disc, precision, recall


def class_thresholds(histograms: np.ndarray, quantile: float, cap: float) -> np.ndarray:
    """Each class's threshold from ``histograms (C, BINS)`` of the confidences of its predicted pixels:
    the ``quantile`` of that distribution (the lower edge of the first bin whose cumulative share
    exceeds it; 0: the lowest confidence seen), at most ``cap``; a class predicted nowhere gets ``cap``."""
    if not 0.0 <= quantile <= 1.0 or not 0.0 < cap <= 1.0:
        raise ValueError(f"quantile = {quantile}, cap = {cap}: expected 0 ≤ quantile ≤ 1 and 0 < cap ≤ 1")
    bins = histograms.shape[1]
    totals = histograms.sum(axis=1)
    cumulative = np.cumsum(histograms, axis=1)
    thresholds = np.full(len(histograms), cap, dtype=np.float64)
    for c in np.flatnonzero(totals):
        share = min(quantile * totals[c], totals[c] - 1)  # quantile 1: the highest confidence seen
        index = int(np.searchsorted(cumulative[c], share, side="right"))  # first bin past the share
        thresholds[c] = min(index / bins, cap)
    return thresholds


def pseudo_label_map(classes: np.ndarray, confidence: np.ndarray, thresholds: np.ndarray,
                     inside: np.ndarray | None, background: bool = True) -> np.ndarray:
    """The file's label map from the argmax ``classes (H, W)`` (0..12) and its ``confidence (H, W)``:
    kept pixels get their class (background 255), the rest 254; outside ``inside`` everything is 255.
    ``background`` False: background predicted inside the disc is never kept (254)."""
    kept = confidence >= thresholds[classes]
    if not background:
        kept &= classes < NUM_CLASSES
    out = np.where(classes >= NUM_CLASSES, IGNORE_INDEX, classes).astype(np.uint8)
    out[~kept] = VOID_INDEX
    if inside is not None:
        out[~inside] = IGNORE_INDEX
    return out


def candidates(probs: torch.Tensor, thresholds: np.ndarray, balanced: bool) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's candidate class ``(H, W)`` uint8 and its probability ``(H, W)`` float32 from
    ``probs (C, H, W)``: the argmax, or with ``balanced`` the argmax of ``probs / thresholds`` (CBST:
    Zou et al. 2018), which keeps a pixel exactly when some class clears its own threshold."""
    if balanced:
        classes = (probs / torch.as_tensor(thresholds, dtype=probs.dtype)[:, None, None]).argmax(dim=0)
        confidence = probs.gather(0, classes[None])[0]
    else:
        confidence, classes = probs.max(dim=0)
    return classes.to(torch.uint8).numpy(), confidence.numpy()


def _check_folder(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"pseudo-label folder {out_dir} already exists (an earlier round's labels); choose "
                              f"another name or set OVERWRITE = True to replace it")
    if out_dir.exists() and not (out_dir / CSV_NAME).is_file():
        raise FileExistsError(f"OVERWRITE = True, but {out_dir} holds no {CSV_NAME}: it is not a pseudo-label "
                              f"folder of the kit, so it was left as it was")
    if out_dir.exists():
        extra = sorted(set(results_in(out_dir)) - {e.rstrip("/") for e in _manifest_entries(out_dir)})
        if extra:
            raise FileExistsError(f"OVERWRITE = True, but {out_dir} also holds files the kit did not write there "
                                  f"({', '.join(extra[:5])}); move them out first, nothing was removed")


def make_pseudo_labels(
    runs: Sequence[Run],
    data_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str = "train_target",
    weights: Sequence[float] | None = None,
    settings: InferenceSettings = InferenceSettings(mode="whole", flip=True),
    quantile: float = 0.5,
    cap: float = 0.9,
    border: Border | None = None,
    background: bool = True,
    balanced: bool = False,
    threshold_images: int | None = 100,
    overwrite: bool = False,
    progress: bool = True,
) -> PseudoLabels:
    """Pseudo-label ``split`` of ``data_dir`` with ``runs`` (one run or a weighted ensemble, each
    predicting as ``settings`` say: whole/slide, scales, flip) into ``out_dir`` (see the module
    docstring). Labels are written at each image's own size. ``background`` False: background
    predicted inside the disc is left unlabelled (254), as on data whose in-disc background the
    model cannot tell (the source images' background is not the target's ego-vehicle body).

    ``balanced`` (CBST's class-balanced rule, :func:`candidates`): a pixel's label is the class with the
    largest probability relative to its threshold, so a rare class the model under-predicts is not
    swallowed by a frequent one whose threshold sits at the cap.

    Two passes: the first counts each class's confidences on ``threshold_images`` images spread evenly
    over the split (None: all), from which the thresholds follow; the second predicts every image
    and writes its label file. Nothing of the size of the split is held in memory. Where ``data_dir`` holds the split's labelled twin
    (``<split>_gt``, the kit's synthetic data), the table adds each class's precision and recall.
    """
    out_dir = Path(out_dir)
    _check_folder(out_dir, overwrite)
    frame = read_split(data_dir, split)
    truth = read_split(data_dir, f"{split}_gt").set_index("id")["gt_path"] if has_split(data_dir, f"{split}_gt") else None

    def predicted(path: str) -> tuple[torch.Tensor, np.ndarray]:
        """Probabilities (C, H, W) at the image's own size, and the disc there (all True without a border)."""
        image = read_image(path)
        size = (image.shape[1], image.shape[0])
        with torch.no_grad():
            probs = resize_probs(ensemble(runs, image, weights, settings), size).float().cpu()
        return probs, border.mask(size) if border is not None else np.ones(probs.shape[1:], bool)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        prepare_output_dir(staging)  # a kit output folder: its manifest lists what is written below
        histograms = np.zeros((NUM_CLASSES + 1, BINS), np.int64)
        for row in tqdm(list(evenly_spread(frame, threshold_images).itertuples()), desc="pseudo-label: thresholds",
                        unit="img", disable=not progress):
            probs, inside = predicted(row.img_path)
            confidence, classes = (t.numpy() for t in probs.max(dim=0))
            index = np.minimum((confidence[inside] * BINS).astype(np.int64), BINS - 1)
            np.add.at(histograms, (classes[inside].astype(np.int64), index), 1)
        thresholds = class_thresholds(histograms, quantile, cap)
        stats = np.zeros((NUM_CLASSES + 1, 4), np.int64)  # candidates, kept, kept & correct, truth (inside the disc)
        labels = make_dirs(staging / "labels")
        for row in tqdm(list(frame.itertuples()), desc="pseudo-label: write", unit="img", disable=not progress):
            probs, inside = predicted(row.img_path)
            classes, confidence = candidates(probs, thresholds, balanced)
            label = pseudo_label_map(classes, confidence, thresholds, inside, background)
            write_image(labels / f"{row.id}.png", label)
            kept = label[inside] != VOID_INDEX
            candidate = classes[inside].astype(np.int64)
            stats[:, 0] += np.bincount(candidate, minlength=NUM_CLASSES + 1)
            stats[:, 1] += np.bincount(candidate[kept], minlength=NUM_CLASSES + 1)
            if truth is not None:
                true = read_label(truth[row.id])[inside].astype(np.int64)
                true = np.where(true >= NUM_CLASSES, BACKGROUND_CLASS, true)
                stats[:, 2] += np.bincount(candidate[kept & (candidate == true)], minlength=NUM_CLASSES + 1)
                stats[:, 3] += np.bincount(true, minlength=NUM_CLASSES + 1)
        ids, gt_paths = list(frame["id"]), [f"./labels/{id_}.png" for id_ in frame["id"]]
        image_paths = [os.path.relpath(p, out_dir.resolve()) for p in frame["img_path"]]  # as seen from out_dir
        write_csv(staging / CSV_NAME, pd.DataFrame({"id": ids, "img_path": image_paths, "gt_path": gt_paths}))
        table = pseudo_table(thresholds, stats, truth is not None)
        write_json(staging / "summary.json", {
            "data_dir": str(data_dir), "split": split, "quantile": quantile, "cap": cap, "background": background,
            "balanced": balanced, "threshold_images": threshold_images,
            "settings": {k: getattr(settings, k) for k in ("mode", "stride", "scales", "flip")},
            "weights": list(weights) if weights is not None else None,
            "thresholds": dict(zip(NAMES, thresholds.round(4).tolist())),
            "table": table.to_dict("records")})
        if out_dir.exists():  # it may have appeared, or changed, while this run predicted: check again
            _check_folder(out_dir, overwrite)
            shutil.rmtree(out_dir)
        os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp makes it owner-only
        os.rename(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    record_output(out_dir)
    return PseudoLabels(out_dir, out_dir / CSV_NAME, thresholds, table)


def pseudo_table(thresholds: np.ndarray, stats: np.ndarray, has_truth: bool) -> pd.DataFrame:
    """One row per class (background last): threshold, share of the disc predicted as the class (its
    candidate pixels), share of those pixels kept, and with truth, precision (kept pixels that are right) and recall
    (true pixels of the class that were kept with the right label)."""
    disc = max(int(stats[:, 0].sum()), 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = pd.DataFrame({
            "class": NAMES, "threshold": thresholds.round(4),
            "predicted_share": stats[:, 0] / disc,
            "kept": np.where(stats[:, 0] > 0, stats[:, 1] / np.maximum(stats[:, 0], 1), np.nan),
        })
        if has_truth:
            table["precision"] = np.where(stats[:, 1] > 0, stats[:, 2] / np.maximum(stats[:, 1], 1), np.nan)
            table["recall"] = np.where(stats[:, 3] > 0, stats[:, 2] / np.maximum(stats[:, 3], 1), np.nan)
            table["true_share"] = stats[:, 3] / disc
    return table


def is_pseudo_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` is a complete pseudo-label folder (its CSV is written last, in the staging folder)."""
    return (Path(folder) / CSV_NAME).is_file() and is_output_dir(folder)
