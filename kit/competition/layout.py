"""The competition's data layout: the split CSVs (``id,img_path[,gt_path]``, paths relative to the
dataset root) read and checked (empty cells, duplicate ids, empty splits are refused with the CSV and
line), images and label files read with errors that name the file, and :func:`evenly_spread`, the one
rule for picking a few images of a split.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from kit.competition.labels import VALID_LABEL_VALUES, check_label_values

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
    """A split CSV anywhere (e.g. pseudo-labels, ``kit.predict.pseudo``), checked as :func:`read_split` checks
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
