"""Label colours: Cityscapes' colours for the 12 classes, black for background (255) and grey for
void (254), shared by every picture the kit draws.
"""

from __future__ import annotations

import numpy as np

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
