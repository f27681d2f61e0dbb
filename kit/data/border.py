"""The fisheye border: where the target camera's image circle ends. One home for training,
prediction, the notebooks and the benchmark.

The chain is solution B's (seed 001) with solution A's (seed 000) ellipse on top: the mean of many
target images (:func:`mean_image`) is bright inside the disc and dark outside; thresholding it gives
the disc (:func:`border_mask`), and an ellipse fitted to its outline (:func:`fit_ellipse`) can be
drawn exactly at any image size (:func:`ellipse_mask`). :func:`estimate_border` runs the chain on a
dataset with one rule for choosing images (``max_images`` spread evenly over the split) and one
threshold policy: **Otsu's threshold unless one is given**. Otsu adapts to data of any brightness
(the synthetic data's disc is darker than the real one's); on the real competition data solution B
thresholded at :data:`REAL_DATA_THRESHOLD` (108), which Otsu reproduces within a few pixels there.

Training (``kit.train.recipes.build_data``) and prediction (``kit.predict.splits.run_border``) call
:func:`estimate_border` with the same arguments (the run's target size and image count), so the
border a model was trained with is the border its predictions are cut with.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from kit.competition.layout import evenly_spread, read_image, read_split
from kit.competition.rle import resize_nearest

Ellipse = tuple[tuple[float, float], tuple[float, float], float]  # cv2.fitEllipse form
BORDERS = ("ellipse", "mask")  # the kinds of Border that make_border builds
REAL_DATA_THRESHOLD = 108.0  # solution B's mean-target threshold on the competition data
BORDER_IMAGES = 200  # target images averaged into the mean image (evenly spread over the split)


def mean_image(paths: Sequence[str | os.PathLike], size: tuple[int, int] | None = None) -> np.ndarray:
    """The pixel-wise mean of images as ``float32 (H, W, 3)`` RGB in 0..255 (resized to ``size = (W, H)``
    when given, else to the first image's size). Solution B's "mean target image"."""
    if len(paths) == 0:
        raise ValueError("mean_image needs at least one image path")
    total = None
    for path in paths:
        image = read_image(path)
        if size is None:
            size = (image.shape[1], image.shape[0])
        if (image.shape[1], image.shape[0]) != tuple(size):
            image = cv2.resize(image, tuple(size), interpolation=cv2.INTER_AREA)
        total = image.astype(np.float64) if total is None else total + image
    return (total / len(paths)).astype(np.float32)


def _levels(grey: np.ndarray) -> np.ndarray:
    """Whole grey levels 0..255 of a float image (the floor), as Otsu's histogram and the mask count them."""
    return np.clip(grey, 0, 255).astype(np.uint8)


def otsu_threshold(mean_target: np.ndarray) -> float:
    """Otsu's threshold of the channel mean of ``mean_target (H, W, 3)``, in 0..255: levels above it
    are the bright class."""
    grey = np.asarray(mean_target, dtype=np.float32).mean(axis=2)
    threshold, _ = cv2.threshold(_levels(grey), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(threshold)


def border_mask(
    mean_target: np.ndarray,
    threshold: float | None = None,
    centre_box: tuple[float, float, float, float] = (1 / 3, 2 / 3, 1 / 16, 15 / 16),
) -> np.ndarray:
    """The bright fisheye disc of a mean target image as ``bool (H, W)`` (True inside), as solution B.

    The channel mean, in whole grey levels (its floor, the levels Otsu's histogram counts), is
    thresholded (``None``: Otsu; solution B used 108 on the competition data): a level above the
    threshold is inside, so that Otsu's bright class is exactly the inside;
    the centre box (row and column fractions; solution B's rows 360:720, cols 120:1800 of
    1920×1080) is forced inside, and noise is removed: only the connected region holding the centre
    is kept and its holes are filled.
    """
    grey = np.asarray(mean_target, dtype=np.float32).mean(axis=2)
    if threshold is None:
        threshold = otsu_threshold(mean_target)
    mask = (_levels(grey) > threshold).astype(np.uint8)
    h, w = mask.shape
    r0, r1, c0, c1 = centre_box
    mask[int(round(r0 * h)) : int(round(r1 * h)), int(round(c0 * w)) : int(round(c1 * w))] = 1
    _, components = cv2.connectedComponents(mask, connectivity=4)
    mask = (components == components[h // 2, w // 2]).astype(np.uint8)
    # fill holes: everything not reachable from the frame's edge through background is inside
    outside = np.ones((h + 2, w + 2), np.uint8)  # a frame of background joins the corner regions
    outside[1:-1, 1:-1] = 1 - mask
    _, reach = cv2.connectedComponents(outside, connectivity=4)
    return reach[1:-1, 1:-1] != reach[0, 0]


def fit_ellipse(mask: np.ndarray) -> Ellipse:
    """An ellipse fitted to the outline of ``mask``'s largest region, in ``cv2.fitEllipse`` form:
    ``((cx, cy), (width, height), angle_deg)``. Solution A's border model."""
    contours, _ = cv2.findContours(np.asarray(mask, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        raise ValueError("fit_ellipse: the mask is empty")
    points = max(contours, key=cv2.contourArea).reshape(-1, 2)
    # where the frame cuts the disc (top and bottom on 16:9 fisheye frames) the outline runs along
    # the frame edge; those points are not on the ellipse
    h, w = mask.shape
    points = points[(points[:, 0] > 0) & (points[:, 0] < w - 1) & (points[:, 1] > 0) & (points[:, 1] < h - 1)]
    if len(points) < 5:
        raise ValueError(f"fit_ellipse: the mask's outline has {len(points)} points off the frame edge; need 5")
    (cx, cy), (a, b), angle = cv2.fitEllipse(points.astype(np.float32))
    return (float(cx), float(cy)), (float(a), float(b)), float(angle)


def ellipse_mask(size: tuple[int, int], ellipse: Ellipse, scale_from: tuple[int, int] | None = None) -> np.ndarray:
    """``bool (H, W)`` inside ``ellipse`` for a frame of ``size = (W, H)``; ``scale_from = (W, H)``
    is the frame the ellipse was fitted in, when it differs."""
    (cx, cy), (a, b), angle = ellipse
    if scale_from is not None:
        sx, sy = size[0] / scale_from[0], size[1] / scale_from[1]
        # pixel centres are at integer coordinates, so the frame spans -0.5 .. W - 0.5: the centre scales
        # about -0.5 (cx · sx shifted it by (sx - 1) / 2 pixels, 9.5 px from 96×54 to 1920×1080)
        cx, cy, a, b = (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5, a * sx, b * sy
    mask = np.zeros((size[1], size[0]), np.uint8)
    # cv2.ellipse draws at integer precision; shift=4 keeps 1/16-pixel precision
    s = 16
    cv2.ellipse(mask, (int(round(cx * s)), int(round(cy * s))), (int(round(a / 2 * s)), int(round(b / 2 * s))),
                angle, 0, 360, 1, -1, lineType=cv2.LINE_8, shift=4)
    return mask.astype(bool)


@dataclass(frozen=True, eq=False)
class Border:
    """The inside of the fisheye frame, estimated in a frame of ``frame_size = (W, H)`` and drawable
    at any size. Give ``ellipse`` (solution A: drawn exactly at every size) or ``inside`` (a
    ``bool (H, W)`` mask, e.g. solution B's thresholded disc, resized with nearest neighbour)."""

    frame_size: tuple[int, int]
    ellipse: Ellipse | None = None
    inside: np.ndarray | None = None

    def __post_init__(self) -> None:
        if (self.ellipse is None) == (self.inside is None):
            raise ValueError("Border needs exactly one of ellipse= or inside=")
        if self.inside is not None and self.inside.shape != (self.frame_size[1], self.frame_size[0]):
            raise ValueError(f"inside mask is {self.inside.shape[1]}x{self.inside.shape[0]}, "
                             f"frame_size is {self.frame_size[0]}x{self.frame_size[1]}")

    def mask(self, size: tuple[int, int]) -> np.ndarray:
        """``bool (H, W)``, True inside the fisheye disc, for a frame of ``size = (W, H)``."""
        if self.ellipse is not None:
            return ellipse_mask(tuple(size), self.ellipse, scale_from=tuple(self.frame_size))
        return resize_nearest(self.inside, tuple(size))


@dataclass(frozen=True, eq=False)
class BorderEstimate:
    """Everything :func:`estimate_border` derives from a dataset's target images."""

    mean: np.ndarray  # float32 (H, W, 3) mean target image, 0..255 (solution B pastes it outside the disc)
    inside: np.ndarray  # bool (H, W) thresholded disc (solution B)
    ellipse: Ellipse  # fitted to the disc's outline (solution A)
    threshold: float  # the threshold used (Otsu's when none was given)
    paths: tuple[str, ...]  # the images averaged (solution A's Mix Background pastes their borders)

    @property
    def frame_size(self) -> tuple[int, int]:
        return self.inside.shape[1], self.inside.shape[0]

    def border(self, kind: str) -> Border:
        """The :class:`Border` of ``kind``: ``"ellipse"`` (solution A) or ``"mask"`` (solution B)."""
        if kind not in BORDERS:
            raise ValueError(f"unknown border {kind!r}; expected one of {BORDERS} or None")
        if kind == "ellipse":
            return Border(self.frame_size, ellipse=self.ellipse)
        return Border(self.frame_size, inside=self.inside)


def estimate_border(
    root: str | os.PathLike,
    size: tuple[int, int] | None = None,
    threshold: float | None = None,
    max_images: int | None = BORDER_IMAGES,
    split: str = "train_target",
) -> BorderEstimate:
    """The fisheye border of a dataset's target camera from ``max_images`` images spread evenly
    over ``split`` (None: all), averaged at ``size = (W, H)`` (None: the first image's size) and
    thresholded at ``threshold`` (None: Otsu)."""
    paths = list(evenly_spread(read_split(root, split), max_images).img_path)
    mean = mean_image(paths, size=size)
    used = otsu_threshold(mean) if threshold is None else float(threshold)
    inside = border_mask(mean, threshold=used)
    return BorderEstimate(mean=mean, inside=inside, ellipse=fit_ellipse(inside), threshold=used, paths=tuple(paths))


def make_border(
    root: str | os.PathLike,
    kind: str | None,
    size: tuple[int, int] | None = None,
    threshold: float | None = None,
    max_images: int | None = BORDER_IMAGES,
    split: str = "train_target",
) -> Border | None:
    """The notebooks' ``BORDER`` choice: None (no post-processing), ``"ellipse"`` (solution A) or
    ``"mask"`` (solution B), estimated with :func:`estimate_border`."""
    if kind is None:
        return None
    if kind not in BORDERS:  # refused before the images are read
        raise ValueError(f"unknown border {kind!r}; expected one of {BORDERS} or None")
    return estimate_border(root, size, threshold, max_images, split).border(kind)
