"""Radial camera projection models: the angle θ from the optical axis ↔ the image radius r.

Follows the usual lens taxonomy (REFERENCE.md §4): rectilinear r = f·tanθ (a pinhole camera),
equidistant r = f·θ, equisolid r = 2f·sin(θ/2), stereographic r = 2f·tan(θ/2), orthographic
r = f·sinθ, and Kannala–Brandt r = f·θ(1 + k1θ² + k2θ⁴ + k3θ⁶ + k4θ⁸), the polynomial model of
OpenCV's ``cv2.fisheye`` (Kannala & Brandt, 2006), inverted with Newton steps as OpenCV does.
``kit.data.fisheye`` turns a model into cameras and warp maps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RadialFn = Callable[[np.ndarray, float], np.ndarray]


def rectilinear(theta: np.ndarray, f: float = 1.0) -> np.ndarray:
    return f * np.tan(theta)


def rectilinear_inverse(r: np.ndarray, f: float = 1.0) -> np.ndarray:
    return np.arctan(np.asarray(r) / f)


def equidistant(theta: np.ndarray, f: float = 1.0) -> np.ndarray:
    return f * np.asarray(theta)


def equidistant_inverse(r: np.ndarray, f: float = 1.0) -> np.ndarray:
    return np.asarray(r) / f


def equisolid(theta: np.ndarray, f: float = 1.0) -> np.ndarray:
    return 2.0 * f * np.sin(np.asarray(theta) / 2.0)


def equisolid_inverse(r: np.ndarray, f: float = 1.0) -> np.ndarray:
    """NaN where r > 2f, the radius of θ = 180°."""
    with np.errstate(invalid="ignore"):
        return 2.0 * np.arcsin(np.asarray(r) / (2.0 * f))


def stereographic(theta: np.ndarray, f: float = 1.0) -> np.ndarray:
    return 2.0 * f * np.tan(np.asarray(theta) / 2.0)


def stereographic_inverse(r: np.ndarray, f: float = 1.0) -> np.ndarray:
    return 2.0 * np.arctan(np.asarray(r) / (2.0 * f))


def orthographic(theta: np.ndarray, f: float = 1.0) -> np.ndarray:
    return f * np.sin(theta)


def orthographic_inverse(r: np.ndarray, f: float = 1.0) -> np.ndarray:
    """NaN where r > f, the radius of θ = 90°."""
    with np.errstate(invalid="ignore"):
        return np.arcsin(np.asarray(r) / f)


def kannala_brandt(
    theta: np.ndarray,
    f: float = 1.0,
    k: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
) -> np.ndarray:
    theta = np.asarray(theta)
    t2 = theta * theta
    return f * theta * (1.0 + t2 * (k[0] + t2 * (k[1] + t2 * (k[2] + t2 * k[3]))))


def kannala_brandt_inverse(
    r: np.ndarray,
    f: float = 1.0,
    k: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
    iterations: int = 20,
) -> np.ndarray:
    """θ with kannala_brandt(θ) = r by Newton's method from θ = r/f (as cv2.fisheye.undistortPoints)."""
    target = np.asarray(r, dtype=np.float64) / f
    theta = target.copy()
    for _ in range(iterations):
        t2 = theta * theta
        value = theta * (1.0 + t2 * (k[0] + t2 * (k[1] + t2 * (k[2] + t2 * k[3]))))
        slope = 1.0 + t2 * (3 * k[0] + t2 * (5 * k[1] + t2 * (7 * k[2] + t2 * 9 * k[3])))
        theta = theta - (value - target) / slope
    return theta


@dataclass(frozen=True)
class ProjectionModel:
    """A radial model: ``forward(θ, f) → r``, ``inverse(r, f) → θ``; θ in radians.

    ``theta_max`` is the largest angle the model can image (exclusive where r grows without
    bound, as for rectilinear at 90° and stereographic at 180°).
    """

    name: str
    forward: RadialFn
    inverse: RadialFn
    theta_max: float


def kannala_brandt_model(k: tuple[float, float, float, float]) -> ProjectionModel:
    """The Kannala–Brandt model with distortion coefficients ``k`` (OpenCV's D)."""
    k = tuple(float(c) for c in k)
    if len(k) != 4:
        raise ValueError(f"Kannala-Brandt needs 4 coefficients (k1..k4), got {len(k)}: {k}")
    return ProjectionModel(
        name="kannala_brandt",
        forward=lambda theta, f=1.0: kannala_brandt(theta, f, k),
        inverse=lambda r, f=1.0: kannala_brandt_inverse(r, f, k),
        theta_max=np.pi,
    )


MODELS: dict[str, ProjectionModel] = {
    "rectilinear": ProjectionModel("rectilinear", rectilinear, rectilinear_inverse, np.pi / 2),
    "equidistant": ProjectionModel("equidistant", equidistant, equidistant_inverse, np.pi),
    "equisolid": ProjectionModel("equisolid", equisolid, equisolid_inverse, np.pi),
    "stereographic": ProjectionModel("stereographic", stereographic, stereographic_inverse, np.pi),
    "orthographic": ProjectionModel("orthographic", orthographic, orthographic_inverse, np.pi / 2),
    "kannala_brandt": kannala_brandt_model((0.0, 0.0, 0.0, 0.0)),
}


def get_model(name: str, k: tuple[float, float, float, float] | None = None) -> ProjectionModel:
    """Look a model up by name; ``k`` sets Kannala–Brandt coefficients (ignored otherwise)."""
    if name not in MODELS:
        raise ValueError(f"unknown projection model {name!r}; expected one of {sorted(MODELS)}")
    if name == "kannala_brandt" and k is not None:
        return kannala_brandt_model(k)
    return MODELS[name]
