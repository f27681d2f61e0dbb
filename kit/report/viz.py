"""Pictures of label maps: Cityscapes-coloured labels, image/label overlays and saved PNG grids, each
grid with its class legend (swatch → name of the classes it shows).

Colours are ``kit.report.palette.PALETTE`` (Cityscapes' colours for the 12 classes); background (255) is
black. Figures use matplotlib's Agg backend, so this works without a display. The ``save_*`` grids
return their (closed) Figure, so that tests and notebooks can read its panel titles and legend.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: figures need no display
import matplotlib.legend  # noqa: E402
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.textpath import TextPath  # noqa: E402
from PIL import Image  # noqa: E402  (installed with matplotlib)

from kit.common.files import atomic_path  # noqa: E402
from kit.competition.labels import CLASSES, IGNORE_INDEX, VOID_INDEX  # noqa: E402
from kit.competition.layout import read_image, read_label, read_split  # noqa: E402
# error_map, error_share: re-exported, so that notebooks find them next to the figures
from kit.report.palette import (BACKGROUND_COLOUR, BACKGROUND_NAME, PALETTE, VOID_COLOUR, Entry,  # noqa: E402, F401
                                error_map, error_share, legend_entries)

# 256-entry lookup: class ids → palette, void (254: ignored) → grey, everything else (255 included) → background
_LUT = np.tile(BACKGROUND_COLOUR, (256, 1))
_LUT[: len(PALETTE)] = PALETTE
_LUT[VOID_INDEX] = VOID_COLOUR

LEGEND_FONTSIZE = 8  # points: ~11 px at 100 dpi, as large as the panel titles
TITLE_INCHES = 0.25  # room above each row of panels for its titles
# Legend geometry in units of the font size (matplotlib's own parameters, reused to size the legend row)
_HANDLE, _TEXTPAD, _COLSPACE, _ROW = 1.4, 0.5, 1.2, 1.8


def colorize(label: np.ndarray) -> np.ndarray:
    """``uint8 (H, W)`` class ids → ``uint8 (H, W, 3)`` RGB; 255 is black, 254 (void, ignored) grey."""
    return _LUT[np.asarray(label, dtype=np.uint8)]


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the label colours over ``image`` (``uint8 (H, W, 3)``); background pixels keep the image."""
    if image.shape[:2] != label.shape:
        raise ValueError(f"image is {image.shape[:2]} but label is {label.shape}; expected the same (H, W)")
    blend = (1 - alpha) * image.astype(np.float32) + alpha * colorize(label).astype(np.float32)
    blend = np.where((label == IGNORE_INDEX)[..., None], image, blend)
    return np.clip(blend + 0.5, 0, 255).astype(np.uint8)


# --- Legends -------------------------------------------------------------------------------------


def _legend_shape(entries: Sequence[Entry], width_inches: float, fontsize: float) -> tuple[int, int]:
    """``(columns, rows)`` of the legend of ``entries`` in ``width_inches``: one row when it fits, else
    the fewest rows that fit. Columns fill top to bottom, as matplotlib fills them."""
    widths = [TextPath((0, 0), name, size=fontsize).get_extents().width + (_HANDLE + _TEXTPAD) * fontsize
              for name, _ in entries]
    room = (width_inches - 0.2) * 72 * 0.95  # points, less the figure's margins and a safety margin
    for columns in range(len(entries), 1, -1):
        rows, large = divmod(len(entries), columns)
        sizes = [rows + 1] * large + [rows] * (columns - large)
        starts = np.cumsum([0, *sizes])
        total = sum(max(widths[a:b]) for a, b in zip(starts[:-1], starts[1:])) + (columns - 1) * _COLSPACE * fontsize
        if total <= room:
            rows = math.ceil(len(entries) / columns)
            # wrapped: as many rows, evenly filled (12 entries in 2 rows of 6, not 11 + 1)
            return math.ceil(len(entries) / rows), rows
    return 1, len(entries)


def legend_inches(groups: Sequence[Sequence[Entry]], width_inches: float, overlaid: bool = False,
                  fontsize: float = LEGEND_FONTSIZE) -> float:
    """Height of the legend row that :func:`draw_legend` draws for ``groups`` in ``width_inches``."""
    rows = sum(_legend_shape(_overlaid(group) if overlaid else group, width_inches, fontsize)[1]
               for group in groups if group)
    return rows * _ROW * fontsize / 72 + 0.1


OVERLAID_BACKGROUND = "background (not coloured)"


def _overlaid(entries: Sequence[Entry]) -> list[Entry]:
    """Overlays leave background pixels as the image: name it so (drawn as an empty box)."""
    return [(OVERLAID_BACKGROUND if name == BACKGROUND_NAME else name, rgb) for name, rgb in entries]


def _swatch(name: str, rgb: tuple[int, int, int]) -> matplotlib.patches.Patch:
    # a thin dark edge keeps white and black swatches visible on the white figure
    face = "none" if name == OVERLAID_BACKGROUND else np.array(rgb) / 255
    return matplotlib.patches.Patch(facecolor=face, edgecolor="0.3", lw=0.6, label=name)


def draw_legend(
    axis: plt.Axes,
    groups: Sequence[Sequence[Entry]],
    width_inches: float,
    overlaid: bool = False,
    fontsize: float = LEGEND_FONTSIZE,
) -> None:
    """Draw each group of ``(name, rgb)`` entries (``kit.report.palette.legend_entries``) as rows of
    swatches centred in ``axis`` (the figure's own legend row: no picture under it), one group under
    the other. ``overlaid``: the pictures are overlays, where background is not coloured."""
    axis.set_axis_off()
    groups = [_overlaid(group) if overlaid else list(group) for group in groups if group]
    shapes = [_legend_shape(group, width_inches, fontsize) for group in groups]
    top, total = 1.0, sum(rows for _, rows in shapes)
    for group, (columns, rows) in zip(groups, shapes):
        handles = [_swatch(name, rgb) for name, rgb in group]
        # Legend artists added directly: axis.legend() would replace the group drawn before
        legend = matplotlib.legend.Legend(
            axis, handles, [h.get_label() for h in handles], loc="upper center", bbox_to_anchor=(0.5, top),
            ncols=columns, fontsize=fontsize, frameon=False, handlelength=_HANDLE, handleheight=1.0,
            handletextpad=_TEXTPAD, columnspacing=_COLSPACE, borderaxespad=0.0, borderpad=0.1,
        )
        axis.add_artist(legend)
        top -= rows / total


def legend_names(figure: plt.Figure) -> list[str]:
    """The names the legends of ``figure`` list, in order (for tests and notebooks' checks)."""
    return [text.get_text() for legend in figure.findobj(matplotlib.legend.Legend) for text in legend.get_texts()]


def panel_titles(figure: plt.Figure) -> list[list[str]]:
    """The titles of the picture panels of ``figure``, row by row (panels left to right; the legend
    row left out), each a panel's left title or, when it has none, its centre title."""
    rows: dict[int, list[tuple[int, str]]] = {}
    for axis in figure.axes:
        if axis.get_label() == "legend" or not axis.images:
            continue
        spec = axis.get_subplotspec()
        rows.setdefault(spec.rowspan.start, []).append((spec.colspan.start, axis.get_title("left") or axis.get_title()))
    return [[title for _, title in sorted(row)] for _, row in sorted(rows.items())]


def panel_figure(
    aspects: Sequence[float],
    columns: int,
    width_inches: float,
    legend: Sequence[Sequence[Entry]] = (),
    overlaid: bool = False,
) -> tuple[plt.Figure, np.ndarray]:
    """A figure of ``len(aspects)`` rows of ``columns`` panels, each row as tall as its aspect (H / W)
    asks, and under them a legend row for ``legend`` (groups of entries; none: no row).

    Returns the figure and its panel axes, ``(rows, columns)``; the legend axes is labelled ``"legend"``.
    """
    panel = width_inches / columns
    heights = [aspect * panel + TITLE_INCHES for aspect in aspects]
    groups = [group for group in legend if group]
    key = legend_inches(groups, width_inches, overlaid) if groups else 0.0
    figure = plt.figure(figsize=(width_inches, sum(heights) + key))
    ratios = [*heights, key] if groups else heights
    grid = figure.add_gridspec(len(ratios), columns, height_ratios=ratios)
    axes = np.array([[figure.add_subplot(grid[r, c]) for c in range(columns)] for r in range(len(heights))])
    if groups:
        axis = figure.add_subplot(grid[-1, :], label="legend")
        draw_legend(axis, groups, width_inches, overlaid)
    return figure, axes


def _entries(maps: Iterable[np.ndarray | None], legend: bool) -> list[Entry]:
    return legend_entries(m for m in maps if m is not None) if legend else []


# --- Grids ---------------------------------------------------------------------------------------


def save_grid(
    path: str | os.PathLike,
    rows: Sequence[tuple[np.ndarray, np.ndarray]],
    titles: Sequence[str] | None = None,
    width_inches: float = 8.0,
    dpi: int = 100,
    colours: int | None = None,
    legend: bool = True,
) -> plt.Figure:
    """Save one row per (image, label) pair: the image, then the overlay, and under them the legend of
    the classes shown (``legend``); written atomically as PNG. Returns the (closed) figure.

    ``colours`` quantises the PNG to that many palette colours, which keeps figures committed to
    the repository small (noisy photos barely compress otherwise).
    """
    if not rows:
        raise ValueError("save_grid needs at least one (image, label) row")
    figure, axes = panel_figure([image.shape[0] / image.shape[1] for image, _ in rows], 2, width_inches,
                                [_entries((label for _, label in rows), legend)], overlaid=True)
    for r, (image, label) in enumerate(rows):
        axes[r, 0].imshow(image)
        axes[r, 1].imshow(overlay(image, label))
        if titles is not None:
            axes[r, 0].set_title(titles[r], fontsize=8, loc="left")
        for axis in axes[r]:
            axis.set_axis_off()
    save_figure(figure, path, dpi, colours)
    return figure


def figure_png(figure: plt.Figure, dpi: int = 100, colours: int | None = None) -> bytes:
    """A matplotlib figure as PNG bytes, the figure closed; ``colours`` quantises the PNG to that
    many palette colours, which keeps figures committed to the repository small."""
    figure.tight_layout(pad=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    picture = Image.open(buffer).convert("RGB")
    if colours is not None:
        picture = picture.quantize(colours, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    out = io.BytesIO()
    picture.save(out, format="PNG", optimize=True)
    return out.getvalue()


def save_figure(figure: plt.Figure, path: str | os.PathLike, dpi: int = 100, colours: int | None = None) -> None:
    """Write a matplotlib figure as PNG (:func:`figure_png`) atomically and close it."""
    png = figure_png(figure, dpi, colours)
    with atomic_path(path) as tmp:
        tmp.write_bytes(png)


def step_view_figure(
    panels: dict[str, tuple[np.ndarray, np.ndarray | None]],
    count: int = 4,
    width_inches: float = 12.0,
    legend: bool = True,
) -> plt.Figure:
    """The figure of :func:`step_view_png`, open (not yet drawn to PNG)."""
    if not panels:
        raise ValueError("step_view_png needs at least one panel")
    rows = min(count, *(len(images) for images, _ in panels.values()))
    first = next(iter(panels.values()))[0]
    shown = [labels[r] for _, labels in panels.values() if labels is not None for r in range(rows)]
    figure, axes = panel_figure([first.shape[1] / first.shape[2]] * rows, len(panels), width_inches,
                                [_entries(shown, legend)], overlaid=True)
    for c, (name, (images, labels)) in enumerate(panels.items()):
        axes[0, c].set_title(name, fontsize=9)
        for r in range(rows):
            axes[r, c].imshow(images[r] if labels is None else overlay(images[r], labels[r]))
            axes[r, c].set_axis_off()
    return figure


def step_view_png(
    panels: dict[str, tuple[np.ndarray, np.ndarray | None]],
    count: int = 4,
    width_inches: float = 12.0,
    dpi: int = 100,
    legend: bool = True,
) -> bytes:
    """One training batch as the step sees it (``kit.train.preview.preview_step``) as PNG bytes: a row per
    sample (at most ``count``), a column per panel; a panel with labels is drawn as an overlay, and the
    legend of their classes is under the grid.

    ``panels``: name → ``(images uint8 (B, H, W, 3), labels uint8 (B, H, W) or None)``.
    """
    return figure_png(step_view_figure(panels, count, width_inches, legend), dpi, colours=64)


def save_dataset_preview(
    root: str | os.PathLike,
    path: str | os.PathLike,
    indices: Sequence[int] = (0, 1, 2),
    width_inches: float = 8.0,
    dpi: int = 100,
    colours: int | None = None,
    legend: bool = True,
) -> plt.Figure:
    """A grid of the train-source and held-out train-target images at ``indices``, with overlays and
    their legend (:func:`save_grid`); returns the (closed) figure."""
    rows, titles = [], []
    for split in ("train_source", "train_target_gt"):
        frame = read_split(root, split)
        for _, item in frame.iloc[list(indices)].iterrows():
            rows.append((read_image(item["img_path"]), read_label(item["gt_path"])))
            titles.append(f"{item['id']} ({Path(item['img_path']).parent.name})")
    return save_grid(path, rows, titles, width_inches, dpi, colours, legend)


def save_class_share(path: str | os.PathLike, shares: dict[str, np.ndarray], dpi: int = 100) -> None:
    """Grouped bar chart of per-class pixel shares (``(13,)``: 12 classes + background) per domain,
    log-scaled so rare classes stay visible; written atomically as PNG."""
    names = [*CLASSES, "background"]
    figure, axis = plt.subplots(figsize=(10, 3.5))
    width = 0.8 / len(shares)
    for i, (domain, share) in enumerate(shares.items()):
        axis.bar(np.arange(len(names)) + i * width, np.maximum(share, 1e-6), width, label=domain)
    axis.set_xticks(np.arange(len(names)) + width * (len(shares) - 1) / 2, names, rotation=40, ha="right")
    axis.set_yscale("log")
    axis.set_ylabel("share of pixels")
    axis.legend()
    save_figure(figure, path, dpi)


def save_border(path: str | os.PathLike, mean_target: np.ndarray, inside: np.ndarray,
                ellipse: tuple[tuple[float, float], tuple[float, float], float], dpi: int = 100) -> None:
    """The mean target image, its thresholded disc (solution B) and the fitted ellipse (solution A)."""
    figure, axes = plt.subplots(1, 2, figsize=(10, 3))
    axes[0].imshow(np.clip(mean_target, 0, 255).astype(np.uint8))
    axes[0].set_title("mean target image", fontsize=9)
    axes[1].imshow(inside, cmap="gray")
    (cx, cy), (a, b), angle = ellipse
    axes[1].add_patch(matplotlib.patches.Ellipse((cx, cy), a, b, angle=angle, fill=False, color="red", lw=1.5))
    axes[1].set_title("border mask (white = inside) and fitted ellipse (red)", fontsize=9)
    for axis in axes:
        axis.set_axis_off()
    save_figure(figure, path, dpi)


def save_training_curves(path: str | os.PathLike, metrics, dpi: int = 100) -> None:
    """Losses (left) and mIoU columns (right) of a run's ``metrics.csv`` (a DataFrame) against the epoch."""
    epochs = metrics["epoch"] + 1
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
    for column in metrics.columns:
        if column.startswith("loss_") or column == "pseudo_weight":
            left.plot(epochs, metrics[column], marker="o", label=column.removeprefix("loss_"))
        elif column.endswith("_miou"):
            right.plot(epochs, metrics[column], marker="o", label=column.removesuffix("_miou"))
    left.set(xlabel="epoch", ylabel="loss (pseudo_weight: share)", title="training losses")
    right.set(xlabel="epoch", ylabel="mIoU", title="mIoU at model input size", ylim=(0, None))
    for axis in (left, right):
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    save_figure(figure, path, dpi)


def save_iou_bars(path: str | os.PathLike, tables: dict[str, dict[str, float]], dpi: int = 100) -> None:
    """Grouped bar chart of per-class IoU and mIoU for one or several named ``kit.competition.metrics.iou_table``
    dicts (e.g. ensemble members and the ensemble), side by side; written atomically as PNG.

    A class that is NaN in a table (absent from truth and prediction) gets no bar.
    """
    if not tables:
        raise ValueError("save_iou_bars needs at least one named IoU table")
    names = [*CLASSES, "mIoU"]
    figure, axis = plt.subplots(figsize=(10, 3.5))
    width = 0.8 / len(tables)
    for i, (label, table) in enumerate(tables.items()):
        missing = [k for k in names if k not in table]
        if missing:
            raise ValueError(f"IoU table {label!r} lacks {missing}; expected kit.competition.metrics.iou_table's keys")
        values = np.array([table[k] for k in names], dtype=np.float64)
        shown = np.where(np.isfinite(values), values, 0.0)
        bars = axis.bar(np.arange(len(names)) + i * width, shown, width, label=f"{label} (mIoU {table['mIoU']:.3f})")
        for bar, value in zip(bars, values):
            bar.set_visible(bool(np.isfinite(value)))
    centres = np.arange(len(names)) + width * (len(tables) - 1) / 2
    axis.set_xticks(centres, names, rotation=40, ha="right")
    axis.axvline(centres[-1] - 0.5, color="grey", lw=0.8)  # the classes | their mean
    axis.set(ylabel="IoU", ylim=(0, 1))
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8)
    save_figure(figure, path, dpi)


def save_comparison(
    path: str | os.PathLike,
    rows: Sequence[tuple[np.ndarray, dict[str, np.ndarray]]],
    titles: Sequence[str] | None = None,
    width_inches: float = 10.0,
    dpi: int = 100,
    colours: int | None = None,
    legend: bool = True,
) -> plt.Figure:
    """One row per ``(image uint8 (H, W, 3), {panel title: label map uint8 (h, w)})``: the image,
    then each label map coloured (background black) side by side, e.g. prediction | truth, and under
    them the legend of the classes shown. ``titles`` name the rows (on the image panel); written
    atomically as PNG. Returns the (closed) figure."""
    if not rows:
        raise ValueError("save_comparison needs at least one (image, label maps) row")
    columns = 1 + max(len(maps) for _, maps in rows)
    figure, axes = panel_figure([image.shape[0] / image.shape[1] for image, _ in rows], columns, width_inches,
                                [_entries((m for _, maps in rows for m in maps.values()), legend)])
    for r, (image, maps) in enumerate(rows):
        axes[r, 0].imshow(image)
        axes[r, 0].set_title(titles[r] if titles is not None else "image", fontsize=8, loc="left")
        for c, (name, label) in enumerate(maps.items(), start=1):
            axes[r, c].imshow(colorize(label))
            axes[r, c].set_title(name, fontsize=8, loc="left")
        for axis in axes[r]:
            axis.set_axis_off()
    save_figure(figure, path, dpi, colours)
    return figure
