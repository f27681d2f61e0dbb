"""The competition's submission format: run-length encoding of per-class masks at 960×540.

Bit-exact with the DACON baseline: each predicted label map is resized to 960×540 with PIL's
nearest-neighbour rule, and for each class 0..11 the binary mask ``pred == c`` is flattened
row-major, padded with a 0 on both sides, and the indices where the value changes (+1) are
written as ``start length`` pairs with 1-based starts. An empty mask is ``-1``.

The baseline makes 12 full passes over the map (one per class). :func:`encode_label_map` makes
one: it finds the maximal runs of equal values once and hands every run to its class, which gives
the same strings because a maximal run of value ``c`` is exactly a run of ones in ``pred == c``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from kit.common.files import atomic_path
from kit.competition.labels import NUM_CLASSES

SUBMISSION_SIZE = (960, 540)  # (W, H)
EMPTY = "-1"


def resize_nearest(label_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of ``(H, W)`` to ``size = (W, H)`` with PIL's sampling rule.

    PIL samples source pixel ``floor((i + 0.5) * in / out)``, computed as a running sum in
    float64 (Pillow's ImagingScaleAffine); where that sum lands a hair under an integer it picks
    the pixel before, so the same running sum is reproduced here. OpenCV's INTER_NEAREST uses
    ``floor(i * in / out)`` and differs on many rows, which would change the RLE strings.
    """
    h_in, w_in = label_map.shape[:2]
    w_out, h_out = size
    if (h_in, w_in) == (h_out, w_out):
        return label_map
    return label_map[_pil_nearest_index(h_in, h_out)[:, None], _pil_nearest_index(w_in, w_out)[None, :]]


def _pil_nearest_index(n_in: int, n_out: int) -> np.ndarray:
    step = n_in / n_out
    steps = np.full(n_out, step)
    steps[0] = step * 0.5
    positions = np.cumsum(steps)  # sequential float64 additions, as Pillow's loop does them
    return np.minimum(positions.astype(np.int64), n_in - 1)


_TABLE_LIMIT = 4 * 1024 * 1024  # largest number whose decimal string is kept in the table
_number_strings = np.array([], dtype=object)


def _decimal_strings(numbers: np.ndarray) -> list[str]:
    """``str`` of each number, looked up in a table of precomputed strings.

    Formatting integers is most of the encoding time; indexing a table of the strings for
    0..H*W is about three times faster than ``map(str, ...)`` and gives the same text.
    """
    global _number_strings
    largest = int(numbers.max())
    if largest >= _number_strings.size:
        if largest >= _TABLE_LIMIT:
            return list(map(str, numbers.tolist()))
        size = max(largest + 1, SUBMISSION_SIZE[0] * SUBMISSION_SIZE[1] + 1)
        _number_strings = np.array([str(i) for i in range(size)], dtype=object)
    return _number_strings[numbers].tolist()


def _pairs_to_string(starts: np.ndarray, lengths: np.ndarray) -> str:
    if starts.size == 0:
        return EMPTY
    pairs = np.empty(2 * starts.size, dtype=np.int64)
    pairs[0::2] = starts
    pairs[1::2] = lengths
    return " ".join(_decimal_strings(pairs))


def rle_encode(mask: np.ndarray) -> str:
    """Encode a binary mask ``(H, W)`` (nonzero = 1) row-major as ``"start length ..."``; ``-1`` if empty."""
    flat = np.asarray(mask).astype(bool, copy=False).ravel()
    padded = np.concatenate(([False], flat, [False]))
    edges = np.flatnonzero(padded[1:] != padded[:-1]) + 1  # 1-based run starts and (end + 1)s
    return _pairs_to_string(edges[0::2], edges[1::2] - edges[0::2])


def _rle_numbers(text: str, num_pixels: int) -> np.ndarray:
    """The whitespace-separated numbers of ``text`` as int64, each ASCII digits only and at most
    ``num_pixels``.

    ``int`` alone would take ``1_0``, ``+5`` and non-ASCII digits such as ``٥``, and ``str.isdigit``
    takes ``²``; a number above ``num_pixels`` is no start or length in the mask and may not even
    fit in int64. The checks run over the whole text at once; tokens are looked at one by one only
    to name the culprit, or when one is longer than ``num_pixels`` has digits.
    """
    tokens = text.split()
    joined = "".join(tokens)
    if not (joined.isascii() and joined.isdigit()):
        bad = next((t for t in tokens if not (t.isascii() and t.isdigit())), None)
        if bad is not None:  # None: no tokens at all, which the caller reports
            raise ValueError(f"RLE token {bad!r} is not a non-negative integer (ASCII digits 0-9 only)")
    width = len(str(num_pixels))
    if max(map(len, tokens), default=0) > width:  # too large or zero-padded; int() refuses > 4300 digits
        tokens = [t.lstrip("0") or "0" for t in tokens]
        bad = next((t for t in tokens if len(t) > width), None)
        if bad is not None:
            raise ValueError(f"RLE number {bad} is larger than the mask's {num_pixels} pixels")
    values = np.array([int(t) for t in tokens], dtype=np.int64)
    if values.size and values.max() > num_pixels:
        bad = int(values[np.argmax(values > num_pixels)])
        raise ValueError(f"RLE number {bad} is larger than the mask's {num_pixels} pixels")
    return values


def parse_rle(rle: str | float, num_pixels: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse and check an RLE string: returns 0-based ``starts`` and ``lengths``.

    Raises ValueError saying what is wrong: a token that is not ASCII digits (only the whole string
    ``-1`` is the empty mask), a number larger than ``num_pixels``, an odd count, starts < 1 or
    lengths < 1, runs out of order or overlapping, or a run past ``num_pixels``.
    """
    if rle is None or (isinstance(rle, float) and np.isnan(rle)):
        raise ValueError("empty RLE cell (use -1 for an empty mask)")
    text = str(rle).strip()
    if text == EMPTY:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    values = _rle_numbers(text, num_pixels)
    if values.size == 0 or values.size % 2:
        raise ValueError(f"RLE has {values.size} numbers; expected a positive even count (start length pairs)")
    starts, lengths = values[0::2], values[1::2]
    if starts.min() < 1:
        raise ValueError(f"RLE start {int(starts.min())} < 1 (starts are 1-based)")
    if lengths.min() < 1:
        raise ValueError(f"RLE length {int(lengths.min())} < 1")
    ends = starts + lengths - 1  # 1-based, inclusive
    if np.any(starts[1:] <= ends[:-1]):
        i = int(np.flatnonzero(starts[1:] <= ends[:-1])[0])
        raise ValueError(f"RLE runs out of order or overlapping at pair {i + 1}: start {int(starts[i + 1])} <= {int(ends[i])}")
    if ends[-1] > num_pixels:
        raise ValueError(f"RLE run ends at pixel {int(ends[-1])} > {num_pixels} pixels in the mask")
    return starts - 1, lengths


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode an RLE string into a ``uint8 (H, W)`` 0/1 mask; ``shape = (H, W)``."""
    num_pixels = int(shape[0]) * int(shape[1])
    starts, lengths = parse_rle(rle, num_pixels)
    # +1 at each run start, -1 after each run end, then a running sum: one pass, no Python loop.
    delta = np.zeros(num_pixels + 1, dtype=np.int32)
    np.add.at(delta, starts, 1)
    np.add.at(delta, starts + lengths, -1)
    return np.cumsum(delta[:-1]).astype(np.uint8).reshape(shape)


def encode_label_map(label_map: np.ndarray, size: tuple[int, int] = SUBMISSION_SIZE) -> list[str]:
    """Resize ``(H, W)`` class ids to ``size = (W, H)`` and return the 12 class RLE strings in class order.

    Values ≥ 12 (background) are not submitted. One pass over the map finds every maximal run.
    Anything but a 2-D integer array (a float or bool map, an RGB image) is a ValueError: its
    values are no class ids, and encoding them would write RLE strings the competition rejects.
    """
    label_map = np.asarray(label_map)
    if label_map.ndim != 2 or not np.issubdtype(label_map.dtype, np.integer):
        raise ValueError(f"label map of dtype {label_map.dtype} and shape {label_map.shape}: "
                         "expected an integer (H, W) map of class ids")
    flat = np.ascontiguousarray(resize_nearest(label_map, size)).ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate(([0], changes))  # 0-based start of each maximal run
    lengths = np.diff(np.concatenate((starts, [flat.size])))
    values = flat[starts]
    order = np.argsort(values, kind="stable")  # group runs by class, keeping pixel order within a class
    bounds = np.searchsorted(values[order], np.arange(NUM_CLASSES + 1))
    strings = []
    for c in range(NUM_CLASSES):
        sel = order[bounds[c] : bounds[c + 1]]
        strings.append(_pairs_to_string(starts[sel] + 1, lengths[sel]))
    return strings


def _split_row_id(row_id: str) -> tuple[str, int]:
    """``TEST_0000_class_11`` → ``("TEST_0000", 11)``; a ValueError names the id and the form expected."""
    image_id, sep, c = row_id.rpartition("_class_")
    # ASCII digits written as the writer writes them ("class_01" or "class_²" would never match its rows)
    if not (image_id and sep and c.isascii() and c.isdigit() and str(int(c)) == c and int(c) < NUM_CLASSES):
        raise ValueError(f"row id {row_id!r} is not of the form <image id>_class_<k> with k in 0..{NUM_CLASSES - 1}")
    return image_id, int(c)


def read_sample_ids(sample_path: str | os.PathLike) -> list[str]:
    """The row ids of ``sample_submission.csv`` in file order, each ``<image id>_class_<k>``.

    A ValueError names the file, the line and what it found: a header not starting with ``id``, no
    rows, or an id of another form (a wrong file, or one edited by hand).
    """
    sample_path = Path(sample_path)
    if not sample_path.is_file():
        raise FileNotFoundError(f"sample submission not found: {sample_path}")
    with open(sample_path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or header[:1] != ["id"]:
            raise ValueError(f"{sample_path}: expected a header starting with 'id', found {header}")
        ids = []
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            try:
                _split_row_id(row[0])
            except ValueError as error:
                raise ValueError(f"{sample_path} line {line}: {error}") from None
            ids.append(row[0])
    if not ids:
        raise ValueError(f"{sample_path} has no rows after its header; expected <image id>_class_<k> rows")
    return ids


def image_ids_in_order(row_ids: list[str]) -> list[str]:
    """``TEST_0000_class_0 … TEST_0000_class_11, TEST_0001_class_0 …`` → ``[TEST_0000, TEST_0001, …]``."""
    images: list[str] = []
    for row_id in row_ids:
        image_id, _ = _split_row_id(row_id)
        if not images or images[-1] != image_id:
            images.append(image_id)
    return images


class SubmissionWriter:
    """Streams ``id,mask_rle`` rows to ``path`` one image at a time, in the sample's row order.

    Images may arrive in any order; rows go to a temporary file beside ``path`` as they come, with
    the byte offset of each image noted, so memory holds one label map at a time. ``close()`` checks
    that every image of the sample arrived exactly once, rewrites the file in sample order when
    images arrived out of order, checks it with :func:`validate_submission` and only then renames
    it into place. An existing ``path`` is an error unless ``overwrite=True``; on an exception
    (an invalid file included) nothing is written at ``path`` and an earlier file there stays.

    Usage::

        with SubmissionWriter("submission.csv", "sample_submission.csv") as writer:
            for image_id, label_map in predictions:
                writer.add(image_id, label_map)
    """

    def __init__(
        self,
        path: str | os.PathLike,
        sample_path: str | os.PathLike,
        size: tuple[int, int] = SUBMISSION_SIZE,
        overwrite: bool = False,
    ) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} exists; pass overwrite=True to replace it")
        self.size = size
        self.sample_path = Path(sample_path)
        self.sample_ids = read_sample_ids(sample_path)
        self.image_ids = image_ids_in_order(self.sample_ids)
        self._expected = set(self.image_ids)
        self._offsets: dict[str, tuple[int, int]] = {}  # image id → (byte offset, byte length)
        self._order: list[str] = []
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self._file = open(self._tmp, "w+b")
        self._file.write(b"id,mask_rle\n")

    def add(self, image_id: str, label_map: np.ndarray) -> None:
        """Encode one predicted ``(H, W)`` label map (class ids; ≥ 12 is background)."""
        if image_id not in self._expected:
            raise KeyError(f"image id {image_id!r} is not in the sample submission")
        if image_id in self._offsets:
            raise ValueError(f"image id {image_id!r} was added twice")
        try:
            strings = encode_label_map(label_map, self.size)
        except ValueError as error:
            raise ValueError(f"image {image_id!r}: {error}") from None
        block = "".join(f"{image_id}_class_{c},{s}\n" for c, s in enumerate(strings)).encode()
        self._offsets[image_id] = (self._file.tell(), len(block))
        self._order.append(image_id)
        self._file.write(block)

    def close(self) -> Path:
        """Check completeness, put rows in sample order, validate and move the file to ``path``.

        Raises ValueError for missing images and :class:`SubmissionError` for an invalid file; either
        way the temporary file is dropped and ``path`` is left as it was.
        """
        try:
            missing = [i for i in self.image_ids if i not in self._offsets]
            if missing:
                raise ValueError(
                    f"{len(missing)} image(s) of the sample submission were not predicted, e.g. {missing[:5]}"
                )
            if self._order != self.image_ids:
                self._rewrite_in_sample_order()
            self._file.close()
            try:
                validate_submission(self._tmp, self.sample_path, self.size)
            except SubmissionError as error:  # name the file it would have been, not the temporary one
                raise SubmissionError(self.path, error.problems, written=False) from None
            self._atomic.__exit__(None, None, None)
        except BaseException as error:
            self.abort(error)
            raise
        return self.path

    def abort(self, error: BaseException | None = None) -> None:
        """Drop the temporary file; ``path`` is left as it was."""
        if not self._file.closed:
            self._file.close()
        exc = error or RuntimeError("submission aborted")
        self._atomic.__exit__(type(exc), exc, None)

    def _rewrite_in_sample_order(self) -> None:
        self._file.flush()
        ordered = self._tmp.with_name(self._tmp.name + ".ordered")
        try:
            with open(ordered, "wb") as out:
                out.write(b"id,mask_rle\n")
                for image_id in self.image_ids:
                    offset, length = self._offsets[image_id]
                    self._file.seek(offset)
                    out.write(self._file.read(length))
            self._file.close()
            os.replace(ordered, self._tmp)
        finally:
            ordered.unlink(missing_ok=True)

    def __enter__(self) -> SubmissionWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
        else:
            self.abort(exc)


def write_submission(
    path: str | os.PathLike,
    predictions: Iterable[tuple[str, np.ndarray]],
    sample_path: str | os.PathLike,
    size: tuple[int, int] = SUBMISSION_SIZE,
    overwrite: bool = False,
) -> Path:
    """Write ``submission.csv`` from ``(image_id, label_map (H, W))`` pairs; see :class:`SubmissionWriter`."""
    with SubmissionWriter(path, sample_path, size=size, overwrite=overwrite) as writer:
        for image_id, label_map in predictions:
            writer.add(image_id, label_map)
    return writer.path


class SubmissionError(ValueError):
    """A submission file that the competition would reject; ``problems`` lists every finding."""

    def __init__(self, path: Path, problems: list[str], written: bool = True) -> None:
        self.problems = problems
        shown = "\n  ".join(problems[:20])
        more = f"\n  … and {len(problems) - 20} more" if len(problems) > 20 else ""
        state = "" if written else " was not written"  # SubmissionWriter refused to put it in place
        super().__init__(f"{path}{state}: {len(problems)} problem(s):\n  {shown}{more}")


def validate_submission(
    path: str | os.PathLike,
    sample_path: str | os.PathLike,
    size: tuple[int, int] = SUBMISSION_SIZE,
) -> int:
    """Check a submission against the sample; return its row count or raise :class:`SubmissionError`.

    Reports missing, extra and duplicate ids, a wrong header, every RLE string that does not
    parse or falls outside a ``size = (W, H)`` mask, each with its line number and id, and the
    first row out of the sample's order (the competition expects the sample's rows in its order;
    ids that are missing, extra or repeated are left out of that comparison, so that one missing
    row does not make every later row "out of order").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"submission not found: {path}")
    expected = read_sample_ids(sample_path)
    num_pixels = size[0] * size[1]
    problems: list[str] = []
    seen: dict[str, int] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != ["id", "mask_rle"]:
            problems.append(f"line 1: header {header}, expected ['id', 'mask_rle']")
        for line, row in enumerate(reader, start=2):
            if len(row) != 2:
                problems.append(f"line {line}: {len(row)} fields, expected 2 (id,mask_rle): {row[:3]}")
                continue
            row_id, rle = row
            if row_id in seen:
                problems.append(f"line {line}: duplicate id {row_id} (first on line {seen[row_id]})")
                continue
            seen[row_id] = line
            try:
                parse_rle(rle, num_pixels)
            except ValueError as error:
                problems.append(f"line {line} ({row_id}): {error}")
    expected_set = set(expected)
    missing = [i for i in expected if i not in seen]
    extra = [i for i in seen if i not in expected_set]
    if missing:
        problems.append(f"{len(missing)} id(s) of the sample are missing, e.g. {missing[:5]}")
    if extra:
        problems.append(f"{len(extra)} id(s) are not in the sample: " + ", ".join(f"line {seen[i]} ({i})" for i in extra[:5]))
    present = [i for i in seen if i in expected_set]  # file order
    wanted = [i for i in expected if i in seen]  # the sample's order
    if present != wanted:
        k = next(k for k, (got, want) in enumerate(zip(present, wanted)) if got != want)
        problems.append(f"line {seen[present[k]]}: id {present[k]}, expected {wanted[k]} "
                        "(rows must follow sample_submission.csv's order)")
    if problems:
        raise SubmissionError(path, problems)
    return len(seen)
