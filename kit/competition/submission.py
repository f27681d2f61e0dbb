"""The competition's submission file: ``id,mask_rle`` rows (run-length encoded masks,
:mod:`kit.competition.rle`), one per image and class, in ``sample_submission.csv``'s order;
written image by image and put in place only once it validates."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from kit.common.files import atomic_path
from kit.competition.labels import NUM_CLASSES
from kit.competition.rle import SUBMISSION_SIZE, encode_label_map, parse_rle


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
