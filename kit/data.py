"""The competition's data layout: class names, CSV splits, image/label I/O, the torch datasets and
samplers training draws from, and the per-dataset statistics cache.

Layout of a dataset root (2023 Samsung AI Challenge, camera-invariant domain adaptation):

    train_source.csv  val_source.csv      id,img_path,gt_path
    train_target.csv  test.csv            id,img_path
    train_source_image/TRAIN_SOURCE_0000.png  train_source_gt/TRAIN_SOURCE_0000.png ...

Paths inside the CSVs are relative to the root (``./train_source_image/...``). The kit's synthetic
datasets add held-out fisheye labels as ``train_target_gt.csv`` / ``test_gt.csv`` (id,img_path,gt_path).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from kit.files import write_json

CLASSES: tuple[str, ...] = (
    "Road",
    "Sidewalk",
    "Construction",
    "Fence",
    "Pole",
    "Traffic Light",
    "Traffic Sign",
    "Nature",
    "Sky",
    "Person",
    "Rider",
    "Car",
)
NUM_CLASSES = len(CLASSES)
IGNORE_INDEX = 255  # background: outside the fisheye circle, ego vehicle, unlabelled
BACKGROUND_CLASS = NUM_CLASSES  # 255 remapped to this index when a model has a background output
# "No information here": inside the fisheye circle but outside what the source camera saw after a
# geometric warp, or (in pseudo-label files only, kit.pseudo) a pixel too uncertain to label. Never a
# value of the competition's label files. Not background: the dataset turns it into 255 *after* 255
# became BACKGROUND_CLASS, so the losses ignore it.
VOID_INDEX = 254

# Cityscapes colours for the matching classes; background is black.
PALETTE = np.array(
    [
        (128, 64, 128),  # Road
        (244, 35, 232),  # Sidewalk
        (70, 70, 70),  # Construction
        (190, 153, 153),  # Fence
        (153, 153, 153),  # Pole
        (250, 170, 30),  # Traffic Light
        (220, 220, 0),  # Traffic Sign
        (107, 142, 35),  # Nature
        (70, 130, 180),  # Sky
        (220, 20, 60),  # Person
        (255, 0, 0),  # Rider
        (0, 0, 142),  # Car
    ],
    dtype=np.uint8,
)
BACKGROUND_COLOUR = np.array((0, 0, 0), dtype=np.uint8)
VOID_COLOUR = np.array((128, 128, 128), dtype=np.uint8)  # VOID_INDEX in figures: ignored, not background

# Per-domain statistics measured on the competition data by reference solution A (RGB, 0..1).
SOURCE_MEAN = (0.5897, 0.5953, 0.5790)
SOURCE_STD = (0.1669, 0.1572, 0.1590)
TARGET_MEAN = (0.4715, 0.4714, 0.4973)
TARGET_STD = (0.2391, 0.2403, 0.2528)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Columns of each split's CSV; "id" plus the path columns.
SPLIT_COLUMNS: dict[str, tuple[str, ...]] = {
    "train_source": ("id", "img_path", "gt_path"),
    "val_source": ("id", "img_path", "gt_path"),
    "train_target": ("id", "img_path"),
    "test": ("id", "img_path"),
    # held-out fisheye labels: only in the kit's synthetic datasets
    "train_target_gt": ("id", "img_path", "gt_path"),
    "test_gt": ("id", "img_path", "gt_path"),
}
VALID_LABEL_VALUES = frozenset(range(NUM_CLASSES)) | {IGNORE_INDEX}
# Pseudo-label files (kit.pseudo) also hold VOID_INDEX: pixels too uncertain to label, ignored in training.
PSEUDO_LABEL_VALUES = VALID_LABEL_VALUES | {VOID_INDEX}


def read_split(root: str | os.PathLike, split: str) -> pd.DataFrame:
    """Read ``<root>/<split>.csv`` into a DataFrame whose ``*_path`` columns are absolute paths.

    What would otherwise fail far from its cause (an empty path deep in a training run, an empty
    split in the sampler) is refused here, naming the CSV, the line (the header is line 1) and the
    value: FileNotFoundError when the CSV is missing; ValueError when it is empty or not UTF-8, a row
    has more or fewer fields than the header, a required column is absent or repeated, it has no
    rows, an id or path cell is empty or an id repeats. Files named in the CSV are not opened here.
    Every cell is text: an id such as ``NA`` stays ``"NA"``.
    """
    root = Path(root)
    path = root / f"{split}.csv"
    if not path.is_file():
        present = sorted(p.name for p in root.glob("*.csv")) if root.is_dir() else []
        raise FileNotFoundError(f"split CSV not found: {path} (dataset root {root} has: {present or 'no CSV files'})")
    return read_split_file(path, SPLIT_COLUMNS.get(split, ("id", "img_path")))


def read_split_file(path: str | os.PathLike, required: Sequence[str] = ("id", "img_path", "gt_path")) -> pd.DataFrame:
    """A split CSV anywhere (e.g. pseudo-labels, ``kit.pseudo``), checked as :func:`read_split` checks
    one; relative paths in it are relative to the CSV's own folder, as the dataset root's are."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split CSV not found: {path}")
    (_, header), *records = _csv_records(path, required)
    missing = [c for c in required if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected columns {list(required)}, found {header}")
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise ValueError(f"{path}: column(s) {repeated} twice in the header {header}; expected each once")
    if not records:
        raise ValueError(f"{path} has no rows; expected at least one image")
    frame = pd.DataFrame([row for _, row in records], columns=header, dtype=str)
    extra_paths = [c for c in header if c.endswith("_path") and c not in required]
    _check_cells(path, frame, [line for line, _ in records], [*required, *extra_paths])
    for column in [c for c in frame.columns if c.endswith("_path")]:
        frame[column] = [str((path.parent / p).resolve()) for p in frame[column]]
    return frame


def _csv_records(path: Path, required: Sequence[str]) -> list[tuple[int, list[str]]]:
    """The CSV's records with their line numbers, header first, blank lines skipped; each record has
    as many fields as the header (pandas would fill in NaN or take an extra field as the index)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            records = [(reader.line_num, row) for row in reader if row]
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path} is not a UTF-8 CSV file ({error}); expected columns {list(required)}") from None
    if not records:
        raise ValueError(f"{path} is empty; expected a header line {','.join(required)} and one row per image")
    header = records[0][1]
    for line, row in records[1:]:
        if len(row) != len(header):
            raise ValueError(
                f"{path} line {line}: {len(row)} fields {row}; expected {len(header)}, as in the header {header}"
            )
    return records


def _check_cells(path: Path, frame: pd.DataFrame, lines: list[int], columns: Sequence[str]) -> None:
    """Raise ValueError naming the lines of empty (or blank) ``columns`` cells and of repeated ids."""
    empty = sorted((lines[i], k) for k, c in enumerate(columns) for i in np.flatnonzero(frame[c].str.strip().eq("")))
    if empty:
        shown = ", ".join(f"line {line}: empty {columns[k]}" for line, k in empty[:6])
        more = f" and {len(empty) - 6} more" if len(empty) > 6 else ""
        raise ValueError(f"{path} {shown}{more}; expected a value in every cell of {list(columns)}")
    lines_of: dict[str, list[int]] = {}
    for line, value in zip(lines, frame["id"]):
        lines_of.setdefault(value, []).append(line)
    repeats = [f"{value!r} (lines {', '.join(map(str, n))})" for value, n in lines_of.items() if len(n) > 1]
    if repeats:
        more = f" and {len(repeats) - 5} more" if len(repeats) > 5 else ""
        raise ValueError(f"{path}: duplicate id {', '.join(repeats[:5])}{more}; expected each id once")


def has_split(root: str | os.PathLike, split: str) -> bool:
    return (Path(root) / f"{split}.csv").is_file()


def evenly_spread(frame: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """At most ``limit`` rows spread evenly over ``frame`` (all rows for None): the kit's one rule for
    choosing the images that statistics, the fisheye border and previews are computed from."""
    if limit is None or len(frame) <= limit:
        return frame
    return frame.iloc[np.linspace(0, len(frame) - 1, limit).round().astype(int)].reset_index(drop=True)


def _imread(path: str | os.PathLike, flags: int, kind: str) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file not found: {path}")
    array = cv2.imread(str(path), flags)
    if array is None:
        raise ValueError(f"could not decode {kind} file {path} (corrupt or not an image)")
    return array


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as ``uint8 (H, W, 3) RGB``."""
    return cv2.cvtColor(_imread(path, cv2.IMREAD_COLOR, "image"), cv2.COLOR_BGR2RGB)


def read_label(path: str | os.PathLike, allowed: frozenset[int] = VALID_LABEL_VALUES) -> np.ndarray:
    """Read a label PNG as ``uint8 (H, W)`` with values in ``allowed`` (0..11 and 255; pseudo-labels:
    :data:`PSEUDO_LABEL_VALUES`, also 254).

    A 3-channel file whose channels are identical is accepted (grey saved as RGB).
    """
    label = _imread(path, cv2.IMREAD_UNCHANGED, "label")
    if label.ndim == 3:
        if not all(np.array_equal(label[..., 0], label[..., c]) for c in range(1, label.shape[2])):
            raise ValueError(
                f"label file {path} has {label.shape[2]} differing channels; expected a "
                "single-channel map of class ids"
            )
        label = label[..., 0]
    if label.dtype != np.uint8:
        raise ValueError(f"label file {path} has dtype {label.dtype}; expected 8-bit class ids")
    check_label_values(label, source=str(path), allowed=allowed)
    return np.ascontiguousarray(label)


def check_label_values(label: np.ndarray, source: str = "label", allowed: frozenset[int] = VALID_LABEL_VALUES) -> None:
    """Raise ValueError listing the values of ``label`` outside ``allowed`` ({0..11, 255})."""
    counts = np.bincount(np.asarray(label, dtype=np.uint8).ravel(), minlength=256)
    bad = [v for v in np.flatnonzero(counts) if int(v) not in allowed]
    if bad:
        detail = ", ".join(f"{int(v)} ({int(counts[v])} px)" for v in bad)
        extra = sorted(allowed - VALID_LABEL_VALUES)
        raise ValueError(
            f"{source}: label values outside 0..{NUM_CLASSES - 1} and {IGNORE_INDEX}"
            f"{''.join(f' and {v}' for v in extra)}: {detail}"
        )


def class_pixel_share(label_paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """Share of all pixels of ``label_paths`` per class: ``float64 (13,)``, classes 0..11 then background."""
    counts = np.zeros(256, np.int64)
    for path in label_paths:
        counts += np.bincount(read_label(path).ravel(), minlength=256)
    share = np.append(counts[:NUM_CLASSES], counts[IGNORE_INDEX]).astype(np.float64)
    return share / max(share.sum(), 1)


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``uint8 (H, W, 3)`` → normalised ``float32 (3, H, W)`` tensor: (x/255 - mean) / std."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (x - mean_t) / std_t


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The inverse of :func:`normalize`: ``float32 (3, H, W)`` → ``uint8 (H, W, 3)`` (rounded, clipped)."""
    x = x.detach().float().cpu() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return (x.permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)


class SegmentationDataset(Dataset):
    """Images (and labels, when the frame has ``gt_path``) with an albumentations pipeline.

    Each item is a dict: ``image`` float32 (3, H, W) normalised with this domain's mean/std,
    ``id`` str, and for labelled frames ``label`` int64 (H, W) where 255 becomes ``background``.

    Args:
        frame: a split from :func:`read_split` (``gt_path`` present → labelled).
        transform: an ``A.Compose`` (or any callable taking ``image=``, ``mask=`` and returning a
            dict with the same keys); applied to uint8 arrays before normalisation.
        mean, std: this domain's RGB statistics in 0..1 (e.g. SOURCE_MEAN / TARGET_MEAN).
        background: the value 255 label pixels take (255 to ignore them, 12 for a background class);
            ``VOID_INDEX`` pixels always become 255 (ignored).
        label_fn: optional ``uint8 (H, W) → uint8 (H, W)`` applied on load (e.g. the sky-bonnet fix).
        label_values: the values label files may hold (pseudo-labels: :data:`PSEUDO_LABEL_VALUES`).
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        transform: Callable | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        background: int = IGNORE_INDEX,
        label_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        label_values: frozenset[int] = VALID_LABEL_VALUES,
    ) -> None:
        self.frame = frame.reset_index(drop=True)
        self.labelled = "gt_path" in self.frame.columns
        self.transform = transform
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.background = background
        self.label_fn = label_fn
        self.label_values = label_values

    def __len__(self) -> int:
        return len(self.frame)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The raw ``uint8`` image and label (None when unlabelled), before any transform."""
        row = self.frame.iloc[index]
        image = read_image(row["img_path"])
        label = read_label(row["gt_path"], self.label_values) if self.labelled else None
        if label is not None and label.shape != image.shape[:2]:
            raise ValueError(
                f"label {row['gt_path']} is {label.shape[1]}x{label.shape[0]} but image "
                f"{row['img_path']} is {image.shape[1]}x{image.shape[0]}"
            )
        if label is not None and self.label_fn is not None:
            label = self.label_fn(label)
        return image, label

    def __getitem__(self, index: int) -> dict:
        image, label = self.load(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=label) if label is not None else self.transform(image=image)
            image, label = out["image"], out.get("mask", label)
        item = {"image": normalize(image, self.mean, self.std), "id": self.frame.at[index, "id"]}
        if label is not None:
            target = torch.from_numpy(np.ascontiguousarray(label)).long()  # (H, W)
            if self.background != IGNORE_INDEX:
                target[target == IGNORE_INDEX] = self.background
            target[target == VOID_INDEX] = IGNORE_INDEX
            item["label"] = target
        return item


class ZipDataset(Dataset):
    """Items of several datasets over the same rows, keys prefixed: ``{"source": ..., "distorted": ...}``."""

    def __init__(self, **datasets: Dataset) -> None:
        self.datasets = datasets
        self.length = len(next(iter(datasets.values())))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        out = {}
        for name, dataset in self.datasets.items():
            item = dataset[index]
            out[name] = item["image"]
            if "label" in item:
                out[f"{name}_label"] = item["label"]
        return out


class RareClassSampler(Sampler[int]):
    """DAFormer's rare-class sampling: draw a class with probability ∝ exp((1 - f_c) / T), where
    f_c is its share of labelled pixels, then an image that contains it.

    ``class_pixels``: ``(N, C)`` pixel counts per image (background column excluded by the caller).
    """

    def __init__(self, class_pixels: np.ndarray, temperature: float, num_samples: int, generator: torch.Generator) -> None:
        counts = np.asarray(class_pixels, dtype=np.float64)
        present = counts.sum(axis=0) > 0
        freq = counts.sum(axis=0) / counts.sum()
        logits = np.where(present, (1.0 - freq) / temperature, -np.inf)
        prob = np.exp(logits - logits[present].max())
        self.class_prob = torch.tensor(prob / prob.sum())
        self.images_of = [torch.nonzero(torch.tensor(counts[:, c] > 0)).flatten() for c in range(counts.shape[1])]
        self.num_samples = num_samples
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        classes = torch.multinomial(self.class_prob, self.num_samples, replacement=True, generator=self.generator)
        for c in classes.tolist():
            images = self.images_of[c]
            yield int(images[torch.randint(len(images), (1,), generator=self.generator)])

    def __len__(self) -> int:
        return self.num_samples


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
