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
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
    prefetched,
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


def pseudo_label_map(classes, confidence, thresholds: np.ndarray, inside, background: bool = True):
    """The file's label map from the argmax ``classes (H, W)`` (0..12) and its ``confidence (H, W)``:
    kept pixels get their class (background 255), the rest 254; outside ``inside`` everything is 255.
    ``background`` False: background predicted inside the disc is never kept (254). Numpy arrays in,
    a numpy ``uint8`` array out; torch tensors (on any device) in, a ``uint8`` tensor there out."""
    if isinstance(classes, np.ndarray):
        inside = None if inside is None else torch.from_numpy(np.asarray(inside))
        return pseudo_label_map(torch.from_numpy(classes), torch.from_numpy(np.asarray(confidence)), thresholds,
                                inside, background).numpy()
    # a float32 confidence clears a float64 threshold exactly when it clears the threshold rounded up
    # to float32: the comparison numpy makes, in float32
    if confidence.dtype == torch.float64:
        limits = np.asarray(thresholds, np.float64)
    else:
        limits = np.asarray(thresholds, np.float64).astype(np.float32)
        limits = np.where(limits < thresholds, np.nextafter(limits, np.float32(np.inf)), limits)
        confidence = confidence.float()
    kept = confidence >= torch.from_numpy(limits).to(classes.device)[classes.long()]
    if not background:
        kept &= classes < NUM_CLASSES
    out = classes.to(torch.uint8, copy=True)
    out[out >= NUM_CLASSES] = IGNORE_INDEX
    out[~kept] = VOID_INDEX
    if inside is not None:
        out[~inside] = IGNORE_INDEX
    return out


def candidates(probs: torch.Tensor, thresholds: np.ndarray, balanced: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Each pixel's candidate class ``(H, W)`` uint8 and its probability ``(H, W)`` float32 from
    ``probs (C, H, W)``, on ``probs``' device: the argmax, or with ``balanced`` the argmax of
    ``probs / thresholds`` (CBST: Zou et al. 2018), which keeps a pixel exactly when some class clears
    its own threshold."""
    if balanced:
        classes = (probs / torch.as_tensor(thresholds, dtype=probs.dtype, device=probs.device)[:, None, None]).argmax(dim=0)
        confidence = probs.gather(0, classes[None])[0]
    else:
        confidence, classes = probs.max(dim=0)
    return classes.to(torch.uint8), confidence


def confidence_histograms(probs: torch.Tensor, inside: torch.Tensor) -> np.ndarray:
    """``(C, BINS)`` counts of the argmax confidences inside the disc, per argmax class, from ``probs
    (C, H, W)``; computed on ``probs``' device (``torch.bincount``), only the counts come back."""
    confidence, classes = probs.max(dim=0)
    if not torch.isfinite(confidence).all():
        raise FloatingPointError("the model's probabilities are not finite (NaN or inf): an fp16 overflow? "
                                 "predict in float32 (InferenceSettings(amp='none'))")
    index = (confidence[inside] * BINS).long().clamp_(max=BINS - 1)  # float32 product, truncated
    counts = torch.bincount(classes[inside] * BINS + index, minlength=probs.shape[0] * BINS)
    return counts.view(probs.shape[0], BINS).cpu().numpy()


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


THRESHOLD_IMAGES = 100  # images whose confidences set the class thresholds (the first of the two passes)


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
    threshold_images: int | None = THRESHOLD_IMAGES,
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

    discs: dict[tuple[int, int], torch.Tensor] = {}

    def predicted(image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Probabilities (C, H, W) at the image's own size and the disc there (all True without a
        border), both on the runs' device."""
        size = (image.shape[1], image.shape[0])
        with torch.no_grad():
            probs = resize_probs(ensemble(runs, image, weights, settings), size).float()
        if size not in discs:
            disc = border.mask(size) if border is not None else np.ones(probs.shape[1:], bool)
            discs[size] = torch.from_numpy(disc).to(probs.device)
        return probs, discs[size]

    ranks = Ranks.of_process_group()
    progress = progress and ranks.rank == 0
    staging = None
    if ranks.rank == 0:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        if ranks.rank == 0:
            prepare_output_dir(staging)  # a kit output folder: its manifest lists what is written below
            make_dirs(staging / "labels")
        staging = ranks.from_rank_0(staging)
        histograms = np.zeros((NUM_CLASSES + 1, BINS), np.int64)
        rows = ranks.share(list(evenly_spread(frame, threshold_images).itertuples()))
        images = prefetched(read_image, [row.img_path for row in rows])
        for image in tqdm(images, total=len(rows), desc="pseudo-label: thresholds", unit="img", disable=not progress):
            histograms += confidence_histograms(*predicted(image))
        thresholds = class_thresholds(ranks.summed(histograms), quantile, cap)
        stats = np.zeros((NUM_CLASSES + 1, 4), np.int64)  # candidates, kept, kept & correct, truth (inside the disc)
        labels = staging / "labels"
        rows = ranks.share(list(frame.itertuples()))
        images = prefetched(read_image, [row.img_path for row in rows])
        with ThreadPoolExecutor(max_workers=2) as writer:  # PNG encoding off the main thread
            pending: deque[Future] = deque()
            for row, image in tqdm(zip(rows, images), total=len(rows), desc="pseudo-label: write", unit="img",
                                   disable=not progress):
                probs, inside = predicted(image)
                classes, confidence = candidates(probs, thresholds, balanced)
                label = pseudo_label_map(classes, confidence, thresholds, inside, background)
                kept = label[inside] != VOID_INDEX
                candidate = classes[inside].long()
                stats[:, 0] += torch.bincount(candidate, minlength=NUM_CLASSES + 1).cpu().numpy()
                stats[:, 1] += torch.bincount(candidate[kept], minlength=NUM_CLASSES + 1).cpu().numpy()
                label = label.cpu().numpy()  # uint8: all that comes to the host
                pending.append(writer.submit(write_image, labels / f"{row.id}.png", label))
                while len(pending) > 4:
                    pending.popleft().result()
                if truth is not None:
                    disc = inside.cpu().numpy()
                    guess = classes.cpu().numpy()[disc].astype(np.int64)
                    true = read_label(truth[row.id])[disc].astype(np.int64)
                    true = np.where(true >= NUM_CLASSES, BACKGROUND_CLASS, true)
                    right = kept.cpu().numpy() & (guess == true)
                    stats[:, 2] += np.bincount(guess[right], minlength=NUM_CLASSES + 1)
                    stats[:, 3] += np.bincount(true, minlength=NUM_CLASSES + 1)
            for future in pending:
                future.result()
        stats = ranks.summed(stats)
        table = pseudo_table(thresholds, stats, truth is not None)
        ranks.barrier()  # every rank's labels are written
        if ranks.rank != 0:
            ranks.barrier()  # rank 0 moves the folder into place
            return PseudoLabels(out_dir, out_dir / CSV_NAME, thresholds, table)
        ids, gt_paths = list(frame["id"]), [f"./labels/{id_}.png" for id_ in frame["id"]]
        image_paths = [os.path.relpath(p, out_dir.resolve()) for p in frame["img_path"]]  # as seen from out_dir
        write_csv(staging / CSV_NAME, pd.DataFrame({"id": ids, "img_path": image_paths, "gt_path": gt_paths}))
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
        if ranks.rank == 0 and staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    record_output(out_dir)
    ranks.barrier()
    return PseudoLabels(out_dir, out_dir / CSV_NAME, thresholds, table)


@dataclass(frozen=True)
class Ranks:
    """The processes of a torchrun job (``torch.distributed``'s default group) labelling one split
    together: each predicts every ``world_size``-th image, the counts are summed, rank 0 writes the CSV
    and moves the folder into place. One process: rank 0 of 1, and every step is a no-op."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def of_process_group(cls) -> Ranks:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return cls(torch.distributed.get_rank(), torch.distributed.get_world_size())
        return cls()

    def share(self, items: list) -> list:
        return items[self.rank::self.world_size]

    def summed(self, counts: np.ndarray) -> np.ndarray:
        if self.world_size == 1:
            return counts
        nccl = torch.distributed.get_backend() == "nccl"
        total = torch.from_numpy(counts).to(f"cuda:{torch.cuda.current_device()}" if nccl else "cpu")
        torch.distributed.all_reduce(total)
        return total.cpu().numpy()

    def from_rank_0(self, value):
        if self.world_size == 1:
            return value
        shared = [value]
        torch.distributed.broadcast_object_list(shared, src=0)
        return shared[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            torch.distributed.barrier()


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
