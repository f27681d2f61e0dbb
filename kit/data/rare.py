"""Rare-class sampling for small crops: the crop holds a pixel of a rare class.

DAFormer's rare-class sampling (:class:`kit.data.datasets.RareClassSampler`) draws a class with
probability ∝ exp((1 - f_c) / T), then an *image* that holds it. Its crops are half the image
(512×512 of 1024×512), so the drawn class is usually inside them. The kit's benchmark crops 128×128
of 270×480, an eighth of the frame: an image-level draw hardly moves what the model sees (a traffic
light is in 79% of the benchmark's fisheye frames, and in few of their crops). :class:`RareClassCrop`
takes the last step too: among the classes in the (resized, flipped) label it draws one with the same
probabilities, then one of its pixels, and places the crop window uniformly among the windows that
hold that pixel.
"""

from __future__ import annotations

import albumentations as A
import numpy as np

from kit.competition.labels import NUM_CLASSES


def rare_class_probabilities(class_pixels: np.ndarray, temperature: float) -> np.ndarray:
    """``float64 (C,)`` DAFormer's class probabilities ∝ exp((1 - f_c) / T) from ``(N, C)`` pixel counts
    per image (or ``(C,)`` totals); a class with no pixel gets 0."""
    counts = np.asarray(class_pixels, dtype=np.float64)
    totals = counts.sum(axis=0) if counts.ndim == 2 else counts
    if totals.sum() <= 0:
        raise ValueError("rare-class sampling needs labelled pixels; every class count is 0")
    present = totals > 0
    logits = np.where(present, (1.0 - totals / totals.sum()) / temperature, -np.inf)
    prob = np.exp(logits - logits[present].max())
    return prob / prob.sum()


class RareClassCrop(A.DualTransform):
    """A ``height`` × ``width`` crop that holds a pixel of a class drawn with ``class_prob`` (``(C,)``,
    C = 12 trained classes) among those in the label; labels ≥ C (background, ignored) are never drawn.
    A label with none of them (or an image without a mask) gets a uniform random crop, as
    ``A.RandomCrop``. The image must be at least the crop's size."""

    def __init__(self, height: int, width: int, class_prob: np.ndarray, p: float = 1.0) -> None:
        super().__init__(p=p)
        prob = np.asarray(class_prob, dtype=np.float64)
        if prob.shape != (NUM_CLASSES,) or (prob < 0).any() or prob.sum() <= 0:
            raise ValueError(f"class_prob must be {NUM_CLASSES} non-negative numbers, not all 0; got {prob.tolist()}")
        self.height, self.width, self.class_prob = int(height), int(width), prob

    @property
    def targets_as_params(self) -> list[str]:
        return ["mask"]

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        h, w = params["shape"][:2]
        if h < self.height or w < self.width:
            raise ValueError(f"RareClassCrop of {self.height}×{self.width} from an image of {h}×{w}: crop it larger first")
        rng = self.random_generator
        mask = data.get("mask")
        weights = np.zeros(NUM_CLASSES)
        if mask is not None:
            counts = np.bincount(mask.ravel(), minlength=256)[:NUM_CLASSES]
            weights = np.where(counts > 0, self.class_prob, 0.0)
        if weights.sum() <= 0:
            return {"y0": int(rng.integers(h - self.height + 1)), "x0": int(rng.integers(w - self.width + 1))}
        c = int(rng.choice(NUM_CLASSES, p=weights / weights.sum()))
        ys, xs = np.nonzero(mask == c)
        k = int(rng.integers(len(ys)))
        # the windows holding (y, x) start in [y - height + 1, y], clipped to the image
        y0 = int(rng.integers(max(0, ys[k] - self.height + 1), min(ys[k], h - self.height) + 1))
        x0 = int(rng.integers(max(0, xs[k] - self.width + 1), min(xs[k], w - self.width) + 1))
        return {"y0": y0, "x0": x0}

    def apply(self, img: np.ndarray, y0: int, x0: int, **params) -> np.ndarray:
        return img[y0:y0 + self.height, x0:x0 + self.width]

    def apply_to_mask(self, mask: np.ndarray, y0: int, x0: int, **params) -> np.ndarray:
        return mask[y0:y0 + self.height, x0:x0 + self.width]

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "class_prob")
