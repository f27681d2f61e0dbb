"""Pictures of label maps: Cityscapes-coloured labels, image/label overlays and saved PNG grids.

Colours are ``kit.data.PALETTE`` (Cityscapes' colours for the 12 classes); background (255) is
black. Figures use matplotlib's Agg backend, so this works without a display.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import matplotlib.patches

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402  (installed with matplotlib)

from kit.data import (  # noqa: E402
    BACKGROUND_COLOUR,
    CLASSES,
    IGNORE_INDEX,
    PALETTE,
    VOID_COLOUR,
    VOID_INDEX,
    read_image,
    read_label,
    read_split,
)
from kit.files import atomic_path  # noqa: E402

# 256-entry lookup: class ids → palette, void (254: ignored) → grey, everything else (255 included) → background
_LUT = np.tile(BACKGROUND_COLOUR, (256, 1))
_LUT[: len(PALETTE)] = PALETTE
_LUT[VOID_INDEX] = VOID_COLOUR


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


def save_grid(
    path: str | os.PathLike,
    rows: Sequence[tuple[np.ndarray, np.ndarray]],
    titles: Sequence[str] | None = None,
    width_inches: float = 8.0,
    dpi: int = 100,
    colours: int | None = None,
) -> None:
    """Save one row per (image, label) pair: the image, then the overlay; written atomically as PNG.

    ``colours`` quantises the PNG to that many palette colours, which keeps figures committed to
    the repository small (noisy photos barely compress otherwise).
    """
    if not rows:
        raise ValueError("save_grid needs at least one (image, label) row")
    heights = [image.shape[0] / image.shape[1] for image, _ in rows]  # per-row aspect
    panel = width_inches / 2
    figure, axes = plt.subplots(
        len(rows),
        2,
        figsize=(width_inches, sum(h * panel for h in heights) + 0.25 * len(rows)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for r, (image, label) in enumerate(rows):
        axes[r, 0].imshow(image)
        axes[r, 1].imshow(overlay(image, label))
        if titles is not None:
            axes[r, 0].set_title(titles[r], fontsize=8, loc="left")
        for axis in axes[r]:
            axis.set_axis_off()
    save_figure(figure, path, dpi, colours)


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


def step_view_png(
    panels: dict[str, tuple[np.ndarray, np.ndarray | None]],
    count: int = 4,
    width_inches: float = 12.0,
    dpi: int = 100,
) -> bytes:
    """One training batch as the step sees it (``kit.train.preview_step``) as PNG bytes: a row per
    sample (at most ``count``), a column per panel; a panel with labels is drawn as an overlay.

    ``panels``: name → ``(images uint8 (B, H, W, 3), labels uint8 (B, H, W) or None)``.
    """
    if not panels:
        raise ValueError("step_view_png needs at least one panel")
    rows = min(count, *(len(images) for images, _ in panels.values()))
    first = next(iter(panels.values()))[0]
    aspect = first.shape[1] / first.shape[2]  # H / W of one panel
    panel = width_inches / len(panels)
    figure, axes = plt.subplots(rows, len(panels), figsize=(width_inches, rows * (panel * aspect + 0.25)),
                                squeeze=False)
    for c, (name, (images, labels)) in enumerate(panels.items()):
        axes[0, c].set_title(name, fontsize=9)
        for r in range(rows):
            axes[r, c].imshow(images[r] if labels is None else overlay(images[r], labels[r]))
            axes[r, c].set_axis_off()
    return figure_png(figure, dpi, colours=64)


def save_dataset_preview(
    root: str | os.PathLike,
    path: str | os.PathLike,
    indices: Sequence[int] = (0, 1, 2),
    width_inches: float = 8.0,
    dpi: int = 100,
    colours: int | None = None,
) -> None:
    """A grid of the train-source and held-out train-target images at ``indices``, with overlays."""
    rows, titles = [], []
    for split in ("train_source", "train_target_gt"):
        frame = read_split(root, split)
        for _, item in frame.iloc[list(indices)].iterrows():
            rows.append((read_image(item["img_path"]), read_label(item["gt_path"])))
            titles.append(f"{item['id']} ({Path(item['img_path']).parent.name})")
    save_grid(path, rows, titles, width_inches, dpi, colours)


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
    """Grouped bar chart of per-class IoU and mIoU for one or several named ``kit.metrics.iou_table``
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
            raise ValueError(f"IoU table {label!r} lacks {missing}; expected kit.metrics.iou_table's keys")
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
) -> None:
    """One row per ``(image uint8 (H, W, 3), {panel title: label map uint8 (h, w)})``: the image,
    then each label map coloured (background black) side by side, e.g. prediction | truth.
    ``titles`` name the rows (on the image panel); written atomically as PNG."""
    if not rows:
        raise ValueError("save_comparison needs at least one (image, label maps) row")
    columns = 1 + max(len(maps) for _, maps in rows)
    heights = [image.shape[0] / image.shape[1] for image, _ in rows]  # per-row aspect
    panel = width_inches / columns
    figure, axes = plt.subplots(
        len(rows),
        columns,
        figsize=(width_inches, sum(h * panel for h in heights) + 0.3 * len(rows)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for r, (image, maps) in enumerate(rows):
        axes[r, 0].imshow(image)
        axes[r, 0].set_title(titles[r] if titles is not None else "image", fontsize=8, loc="left")
        for c, (name, label) in enumerate(maps.items(), start=1):
            axes[r, c].imshow(colorize(label))
            axes[r, c].set_title(name, fontsize=8, loc="left")
        for axis in axes[r]:
            axis.set_axis_off()
    save_figure(figure, path, dpi, colours)
