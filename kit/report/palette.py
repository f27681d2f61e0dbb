"""Label colours: Cityscapes' colours for the 12 classes, black for background (255) and grey for
void (254), shared by every picture the kit draws; what a legend lists; the colours of error maps.

Pure numpy, no matplotlib: the legends and error maps are computed (and tested) here and drawn by
``kit.report.viz``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from kit.competition.labels import CLASSES, NUM_CLASSES, VOID_INDEX

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

BACKGROUND_NAME = "background"
VOID_NAME = "void (ignored)"

# Error maps (:func:`error_map`) are their own panel, so their colours only need to differ from each
# other: bright red errors on a dim disc read at a glance; pale blue outside the disc marks the border
# (not white: it would vanish into the figure's white background).
WRONG_COLOUR = np.array((255, 0, 0), dtype=np.uint8)
RIGHT_COLOUR = np.array((48, 48, 48), dtype=np.uint8)
UNSCORED_COLOUR = VOID_COLOUR  # truth is void: neither right nor wrong
OUTSIDE_COLOUR = np.array((160, 190, 230), dtype=np.uint8)  # outside the fisheye disc, whatever the values
ERROR_NAMES = {"wrong": "wrong", "right": "right", "void": "void (not scored)", "outside": "outside the disc"}

Entry = tuple[str, tuple[int, int, int]]  # (legend name, RGB)


def _rgb(colour: np.ndarray) -> tuple[int, int, int]:
    return int(colour[0]), int(colour[1]), int(colour[2])


def legend_entries(label_maps: Iterable[np.ndarray]) -> list[Entry]:
    """``(name, (r, g, b))`` of the values present in any of ``label_maps`` (each ``uint8 (H, W)``):
    the classes in ``CLASSES`` order, then ``"background"`` and ``"void (ignored)"`` when present.

    Values outside 0..11 and 254 are drawn black like 255 (``kit.report.viz.colorize``), so they
    count as background here too: the legend names every colour the picture shows.
    """
    present = np.zeros(256, dtype=bool)
    for label in label_maps:
        present |= np.bincount(np.asarray(label, dtype=np.uint8).ravel(), minlength=256) > 0
    entries = [(name, _rgb(PALETTE[i])) for i, name in enumerate(CLASSES) if present[i]]
    drawn_black = present.copy()
    drawn_black[:NUM_CLASSES] = False
    drawn_black[VOID_INDEX] = False
    if drawn_black.any():
        entries.append((BACKGROUND_NAME, _rgb(BACKGROUND_COLOUR)))
    if present[VOID_INDEX]:
        entries.append((VOID_NAME, _rgb(VOID_COLOUR)))
    return entries


def _check_pair(prediction: np.ndarray, truth: np.ndarray, inside: np.ndarray | None) -> np.ndarray:
    """``inside`` as a bool array of the label maps' shape (all True when None), after checking shapes."""
    if prediction.shape != truth.shape or prediction.ndim != 2:
        raise ValueError(f"prediction is {prediction.shape} and truth {truth.shape}; expected the same (H, W)")
    if inside is None:
        return np.ones(truth.shape, dtype=bool)
    inside = np.asarray(inside, dtype=bool)
    if inside.shape != truth.shape:
        raise ValueError(f"inside is {inside.shape} but the label maps are {truth.shape}; expected the same (H, W)")
    return inside


def error_map(prediction: np.ndarray, truth: np.ndarray, inside: np.ndarray | None = None) -> np.ndarray:
    """Where ``prediction`` and ``truth`` (``uint8 (H, W)``) disagree, as ``uint8 (H, W, 3)`` RGB.

    Scored as the competition does: background (255) is a class, so a class predicted where truth
    is 255 (or 255 predicted on a class) is wrong (:data:`WRONG_COLOUR`); agreement is
    :data:`RIGHT_COLOUR`; truth void (254) is neither (:data:`UNSCORED_COLOUR`). ``inside``
    (``bool (H, W)``, False outside the fisheye disc; None: everything inside) sets the pixels
    outside apart (:data:`OUTSIDE_COLOUR`) whatever their values, so the border reads at a glance.
    """
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    inside = _check_pair(prediction, truth, inside)
    out = np.where((prediction != truth)[..., None], WRONG_COLOUR, RIGHT_COLOUR)
    out[truth == VOID_INDEX] = UNSCORED_COLOUR
    out[~inside] = OUTSIDE_COLOUR  # last: the border wins over every other colour
    return out.astype(np.uint8)


def error_share(prediction: np.ndarray, truth: np.ndarray, inside: np.ndarray | None = None) -> float:
    """Share of the scored pixels inside the disc that :func:`error_map` marks wrong (truth void and
    pixels outside ``inside`` not counted); NaN when no pixel is scored."""
    prediction, truth = np.asarray(prediction), np.asarray(truth)
    scored = _check_pair(prediction, truth, inside) & (truth != VOID_INDEX)
    total = int(scored.sum())
    return float(((prediction != truth) & scored).sum() / total) if total else float("nan")


def error_entries(maps: Iterable[np.ndarray]) -> list[Entry]:
    """The legend of error maps (each ``uint8 (H, W, 3)`` from :func:`error_map`): wrong, right, void
    and outside the disc, each only when one of ``maps`` shows it."""
    named = [("wrong", WRONG_COLOUR), ("right", RIGHT_COLOUR), ("void", UNSCORED_COLOUR), ("outside", OUTSIDE_COLOUR)]
    seen = [False] * len(named)
    for rgb in maps:
        rgb = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
        for i, (_, colour) in enumerate(named):
            seen[i] = seen[i] or bool((rgb == colour).all(axis=1).any())
    return [(ERROR_NAMES[key], _rgb(colour)) for (key, colour), shown in zip(named, seen) if shown]

