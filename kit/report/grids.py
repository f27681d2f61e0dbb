"""Grids of predictions for the notebooks that predict: image | prediction | truth | errors
(``04_predict``) and each ensemble member next to the ensemble (``05_ensemble``), with their legends.

Built on ``kit.report.viz`` (panels, legends, atomic PNG); each ``save_*`` returns its (closed)
figure, so that its panel titles and legend can be read back (``viz.panel_titles``, ``viz.legend_names``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import TypedDict

import matplotlib.pyplot as plt
import numpy as np

from kit.report.palette import error_entries, error_map, error_share, legend_entries
from kit.report.viz import colorize, panel_figure, save_comparison, save_figure

TITLE_FONTSIZE = 8


class _Optional(TypedDict, total=False):  # typing.NotRequired needs Python 3.11; the kit runs on 3.10
    truth: np.ndarray | None  # uint8 (H, W), the prediction's shape; absent/None: no truth panels
    inside: np.ndarray | None  # bool (H, W), False outside the fisheye disc; absent/None: all inside


class PredictionRow(_Optional):
    """One row of :func:`save_prediction_grid`."""

    image: np.ndarray  # uint8 (H, W, 3)
    prediction: np.ndarray  # uint8 (H, W): 0..11, 255 background


def _title(axis: plt.Axes, text: str) -> None:
    axis.set_title(text, fontsize=TITLE_FONTSIZE, loc="left")


def _error_title(prediction: np.ndarray, truth: np.ndarray, inside: np.ndarray | None) -> str:
    share = error_share(prediction, truth, inside)
    where = "in the disc" if inside is not None else "of the image"
    return f"errors: {share:.1%} wrong {where}" if math.isfinite(share) else "errors: no scored pixel"


def save_prediction_grid(
    path: str | os.PathLike,
    rows: Sequence[PredictionRow],
    titles: Sequence[str] | None = None,
    width_inches: float = 10.0,
    dpi: int = 100,
    colours: int | None = None,
    legend: bool = True,
) -> plt.Figure:
    """One row per image: image | prediction | truth | errors (:func:`kit.report.palette.error_map`)
    when the row has a truth, image | prediction otherwise; rows may mix. Written atomically as PNG.

    ``rows``: :class:`PredictionRow` dicts (``image``, ``prediction``, optional ``truth`` and
    ``inside``). ``titles`` name the rows (on the image panel, else "image"); the errors panel's title
    gives the share of scored pixels that are wrong inside the disc. Under the grid, the legend of the
    classes shown and of the error colours. ``colours``: PNG palette size (None: full colour).
    Returns the (closed) figure.
    """
    if not rows:
        raise ValueError("save_prediction_grid needs at least one row")
    if titles is not None and len(titles) != len(rows):
        raise ValueError(f"{len(titles)} titles for {len(rows)} rows; expected one per row")
    truths = [row.get("truth") for row in rows]
    errors = [error_map(row["prediction"], truth, row.get("inside")) if truth is not None else None
              for row, truth in zip(rows, truths)]
    columns = 4 if any(truth is not None for truth in truths) else 2
    maps = [*(row["prediction"] for row in rows), *(truth for truth in truths if truth is not None)]
    groups = [legend_entries(maps), error_entries(e for e in errors if e is not None)] if legend else []
    figure, axes = panel_figure([row["image"].shape[0] / row["image"].shape[1] for row in rows], columns,
                                width_inches, groups)
    for r, (row, truth, wrong) in enumerate(zip(rows, truths, errors)):
        panels = [(titles[r] if titles is not None else "image", row["image"]),
                  ("prediction", colorize(row["prediction"]))]
        if truth is not None:
            panels += [("truth", colorize(truth)), (_error_title(row["prediction"], truth, row.get("inside")), wrong)]
        for axis, (title, picture) in zip(axes[r], panels):
            axis.imshow(picture)
            _title(axis, title)
        for axis in axes[r, len(panels):]:
            axis.remove()  # an image-only row has two panels, not two blank ones
        for axis in axes[r, : len(panels)]:
            axis.set_axis_off()
    save_figure(figure, path, dpi, colours)
    return figure


def save_members_grid(
    path: str | os.PathLike,
    images: Sequence[np.ndarray],
    members: Mapping[str, Sequence[np.ndarray]],
    titles: Sequence[str] | None = None,
    truths: Sequence[np.ndarray | None] | None = None,
    width_inches: float = 12.0,
    dpi: int = 100,
    colours: int | None = None,
    legend: bool = True,
) -> plt.Figure:
    """One row per image: image | each entry of ``members`` in order (the members, then the ensemble
    as the caller names it) | truth (when ``truths`` is given and the image's truth is not None), each
    label map coloured, the legend of the classes shown under the grid: :func:`kit.report.viz.save_comparison`
    with one panel per member. Written atomically as PNG.

    ``images``: ``uint8 (H, W, 3)`` each; ``members``: column title → one ``uint8 (H, W)`` label map per
    image; ``titles`` name the rows (on the image panel, else "image"). Returns the (closed) figure.
    """
    if not images or not members:
        raise ValueError("save_members_grid needs at least one image and one member")
    counts = {name: len(maps) for name, maps in members.items()}
    if truths is not None:
        counts["truths"] = len(truths)
    if titles is not None:
        counts["titles"] = len(titles)
    wrong = {name: n for name, n in counts.items() if n != len(images)}
    if wrong:
        raise ValueError(f"{len(images)} images but {wrong}; expected one per image for every member")
    truths = list(truths) if truths is not None else [None] * len(images)
    rows = [(image, {**{name: maps[r] for name, maps in members.items()},
                     **({"truth": truths[r]} if truths[r] is not None else {})}) for r, image in enumerate(images)]
    return save_comparison(path, rows, titles, width_inches, dpi, colours, legend)
