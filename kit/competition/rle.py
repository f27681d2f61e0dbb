"""The competition's run-length encoding of per-class masks at 960×540 (the submission file that
holds them: :mod:`kit.competition.submission`).

Bit-exact with the DACON baseline: each predicted label map is resized to 960×540 with PIL's
nearest-neighbour rule, and for each class 0..11 the binary mask ``pred == c`` is flattened
row-major, padded with a 0 on both sides, and the indices where the value changes (+1) are
written as ``start length`` pairs with 1-based starts. An empty mask is ``-1``.

The baseline makes 12 full passes over the map (one per class). :func:`encode_label_map` makes
one: it finds the maximal runs of equal values once and hands every run to its class, which gives
the same strings because a maximal run of value ``c`` is exactly a run of ones in ``pred == c``.
"""

from __future__ import annotations

import numpy as np

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
