"""Per-domain statistics: channel mean/std and class pixel counts/shares, measured on a split and
cached in the dataset root (``kit_stats.json``; measured again when a split's CSV changes), and the
reference statistics of the real competition data.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kit.common.files import write_json
from kit.competition.labels import IGNORE_INDEX, NUM_CLASSES
from kit.competition.layout import evenly_spread, read_image, read_label, read_split

# Per-domain statistics measured on the competition data by reference solution A (RGB, 0..1).
SOURCE_MEAN = (0.5897, 0.5953, 0.5790)
SOURCE_STD = (0.1669, 0.1572, 0.1590)
TARGET_MEAN = (0.4715, 0.4714, 0.4973)
TARGET_STD = (0.2391, 0.2403, 0.2528)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def class_pixel_share(label_paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """Share of all pixels of ``label_paths`` per class: ``float64 (13,)``, classes 0..11 then background."""
    counts = np.zeros(256, np.int64)
    for path in label_paths:
        counts += np.bincount(read_label(path).ravel(), minlength=256)
    share = np.append(counts[:NUM_CLASSES], counts[IGNORE_INDEX]).astype(np.float64)
    return share / max(share.sum(), 1)


# --- Per-dataset statistics, measured once and cached in the dataset root -----------------------

STATS_FILE = "kit_stats.json"


def channel_stats(paths: Sequence[str | os.PathLike]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel RGB mean and std (0..1) over all pixels of ``paths``, for per-domain normalisation."""
    if len(paths) == 0:
        raise ValueError("channel_stats needs at least one image path")
    total = np.zeros(3)
    squares = np.zeros(3)
    count = 0
    for path in paths:
        pixels = read_image(path).reshape(-1, 3).astype(np.float64) / 255.0
        total += pixels.sum(axis=0)
        squares += (pixels * pixels).sum(axis=0)
        count += len(pixels)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _read_stats_cache(root: Path) -> dict:
    """The cache, or an empty one when it is missing or unreadable: it is only a cache, measured again."""
    try:
        cache = json.loads((root / STATS_FILE).read_text())
    except (OSError, ValueError):  # missing, or not JSON (a user's edit)
        return {}
    return cache if isinstance(cache, dict) else {}


def _write_stats_cache(root: Path, cache: dict) -> None:
    try:
        write_json(root / STATS_FILE, cache)
    except OSError:  # a read-only dataset: recompute next time
        pass


def _cached(root: Path, key: str, split: str, measure: Callable[[pd.DataFrame], dict]) -> dict:
    """Entry ``key`` of ``<root>/kit_stats.json``: ``measure(read_split(root, split))``, measured again
    whenever ``<split>.csv`` is not byte for byte the CSV it was measured on (sha1), since a regenerated
    or edited dataset would otherwise be normalised with stale statistics and rare-class sampling
    would pick images by stale row numbers. Images replaced under an unchanged CSV go unnoticed:
    :func:`kit.synth.generate` removes the cache when it overwrites a dataset."""
    frame = read_split(root, split)  # checks the CSV on every call, measured or cached
    fingerprint = hashlib.sha1((root / f"{split}.csv").read_bytes()).hexdigest()
    cache = _read_stats_cache(root)
    entry = cache.get(key)
    if not isinstance(entry, dict) or entry.get("csv_sha1") != fingerprint:
        entry = cache[key] = {"csv_sha1": fingerprint, **measure(frame)}
        _write_stats_cache(root, cache)
    return entry


def domain_stats(root: str | os.PathLike, split: str, limit: int | None = 200) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """RGB mean/std (0..1) of a split's images, measured once over ``limit`` evenly spread images
    and cached in ``<root>/kit_stats.json`` (per-domain normalisation, solution A)."""

    def measure(frame: pd.DataFrame) -> dict:
        mean, std = channel_stats(list(evenly_spread(frame, limit).img_path))
        return {"mean": mean, "std": std}

    entry = _cached(Path(root), f"{split}/{limit}", split, measure)
    return tuple(entry["mean"]), tuple(entry["std"])


def class_pixel_counts(root: str | os.PathLike, split: str) -> np.ndarray:
    """``int64 (N, 13)`` pixels of each class (background last) per image of a labelled split, cached."""

    def measure(frame: pd.DataFrame) -> dict:
        counts = []
        for path in frame.gt_path:
            label = read_label(path).ravel()
            counts.append(np.bincount(np.minimum(label, NUM_CLASSES), minlength=NUM_CLASSES + 1).tolist())
        return {"counts": counts}

    return np.asarray(_cached(Path(root), f"{split}/class_pixels", split, measure)["counts"], dtype=np.int64)
