"""The competition's classes and label values: 12 classes (0..11) and 255 for background, plus the
kit's own 254 (void: ignored in training) that only pseudo-label files hold.
"""

from __future__ import annotations

import numpy as np

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
# geometric warp, or (in pseudo-label files only, kit.predict.pseudo) a pixel too uncertain to label. Never a
# value of the competition's label files. Not background: the dataset turns it into 255 *after* 255
# became BACKGROUND_CLASS, so the losses ignore it.
VOID_INDEX = 254
VALID_LABEL_VALUES = frozenset(range(NUM_CLASSES)) | {IGNORE_INDEX}
# Pseudo-label files (kit.predict.pseudo) also hold VOID_INDEX: pixels too uncertain to label, ignored in training.
PSEUDO_LABEL_VALUES = VALID_LABEL_VALUES | {VOID_INDEX}


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
