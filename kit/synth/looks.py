"""The camera looks of :mod:`kit.synth`, the appearance half of the domain gap: linear RGB from
:func:`kit.synth.raycast.render` to the ``uint8`` image of each domain's camera.

The knobs: the per-domain colour grades below; in each look function, its blur, sensor noise and,
for the fisheye, vignetting and the dark border's noise.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from kit.data.fisheye import CameraModel
from kit.synth.raycast import camera_rays

# ----------------------------------------------------------------------------------------------
# Per-domain camera looks (REFERENCE.md §2: the target is darker, contrastier and bluer)


# Per-channel gain and lift from the renderer's linear colours, fitted on 40 scenes per domain so
# the demo preset lands near the real statistics (target figures include the dark border).
SOURCE_GAIN, SOURCE_LIFT = (0.88, 0.82, 0.74), (0.27, 0.29, 0.295)
TARGET_GAIN, TARGET_LIFT = (0.95, 0.92, 0.85), (0.34, 0.34, 0.375)


def _grade(rgb: np.ndarray, gain: Sequence[float], lift: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Per-image exposure jitter around a domain's colour grade: ``lift + gain · rgb``."""
    g = np.array(gain, np.float32) * np.float32(rng.uniform(0.93, 1.07))
    return np.array(lift, np.float32) + np.float32(rng.uniform(-0.03, 0.03)) + g * rgb


def source_look(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A bright, low-contrast, warm dash camera: linear ``float32 (H, W, 3)`` → ``uint8``."""
    out = _grade(cv2.GaussianBlur(rgb, (0, 0), 0.6), SOURCE_GAIN, SOURCE_LIFT, rng)
    out += rng.normal(0, 0.006, out.shape).astype(np.float32)
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)


def target_look(rgb: np.ndarray, camera: CameraModel, rng: np.random.Generator) -> np.ndarray:
    """A fisheye sensor: contrastier and bluish, vignetted towards the circle's edge, noisy; dark border."""
    _, valid = camera_rays(camera)
    out = _grade(cv2.GaussianBlur(rgb, (0, 0), 0.7), TARGET_GAIN, TARGET_LIFT, rng)
    v, u = np.mgrid[0 : camera.height, 0 : camera.width].astype(np.float32)
    edge = float(camera.projection.forward(np.radians(camera.fov_deg) / 2, 1.0))
    radius = np.hypot((u - camera.cx) / camera.fx, (v - camera.cy) / camera.fy) / edge  # 1 on the circle
    out *= (1.0 - rng.uniform(0.25, 0.45) * radius**2)[..., None]
    out += rng.normal(0, rng.uniform(0.015, 0.03), out.shape).astype(np.float32)
    # the border is not pure black on real sensors: a little dark noise
    out = np.where(valid[..., None], out, rng.uniform(0.0, 0.02, out.shape).astype(np.float32))
    return np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8)
