"""What the rays of :mod:`kit.synth` hit: label ids, shapes, materials, things and scenes, and textures' noise.

Boxes, spheres and closed cylinders intersect a bundle of rays from one origin in vectorised NumPy;
a :class:`Material` gives a shape its label, colour and texture kind; a :class:`Thing` culls its
parts by one bounding sphere; a :class:`Scene` holds the things, the ground plane, sun and sky.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# label ids, in the order of kit.competition.labels.CLASSES
ROAD, SIDEWALK, CONSTRUCTION, FENCE, POLE, LIGHT, SIGN, NATURE, SKY, PERSON, RIDER, CAR = range(12)

# ----------------------------------------------------------------------------------------------
# Geometry: shapes that intersect a bundle of rays from one origin

EPS = 1e-3  # metres: ignore hits at the ray origin
FAR = np.float32(np.inf)


@dataclass(frozen=True)
class Box:
    """Box with half sizes ``half`` around ``centre``, turned by ``yaw`` (radians) about +z."""

    centre: tuple[float, float, float]
    half: tuple[float, float, float]
    yaw: float = 0.0

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        return np.array(self.centre), float(np.linalg.norm(self.half))

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slab test in the box frame: ``d (M, 3)`` → distance ``(M,)`` (inf = miss), normal ``(M, 3)``."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        ox, oy, oz = (float(v) for v in o - np.array(self.centre))
        lo = (c * ox + s * oy, -s * ox + c * oy, oz)
        ld = (c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2])
        near, far = [], []
        with np.errstate(divide="ignore", invalid="ignore"):
            for axis in range(3):
                inv = 1.0 / ld[axis]
                t1 = (-self.half[axis] - lo[axis]) * inv
                t2 = (self.half[axis] - lo[axis]) * inv
                near.append(np.minimum(t1, t2))
                far.append(np.maximum(t1, t2))
        near_stack = np.stack(near)  # (3, M)
        t_near = near_stack.max(axis=0)
        hit = (t_near <= np.minimum(np.minimum(far[0], far[1]), far[2])) & (t_near > EPS)
        axis = near_stack.argmax(axis=0)
        rows = np.arange(len(axis))
        local = np.zeros((len(axis), 3), np.float32)
        local[rows, axis] = -np.sign(np.stack(ld, axis=1)[rows, axis])
        normal = np.stack(
            [c * local[:, 0] - s * local[:, 1], s * local[:, 0] + c * local[:, 1], local[:, 2]], axis=1
        )  # (M, 3) back in the world
        return np.where(hit, t_near, FAR).astype(np.float32), normal


@dataclass(frozen=True)
class Sphere:
    """Solid sphere; rays start outside it (hits nearer than EPS are ignored)."""

    centre: tuple[float, float, float]
    radius: float

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        return np.array(self.centre), self.radius

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        oc = (o - np.array(self.centre)).astype(np.float32)
        b = d @ oc
        disc = b * b - (float(oc @ oc) - self.radius**2)
        t = -b - np.sqrt(np.maximum(disc, 0.0))
        hit = (disc >= 0) & (t > EPS)
        normal = (oc + t[:, None] * d) / self.radius
        return np.where(hit, t, FAR).astype(np.float32), normal


@dataclass(frozen=True)
class Cylinder:
    """Closed cylinder from ``base`` along the unit vector ``axis`` for ``length``."""

    base: tuple[float, float, float]
    axis: tuple[float, float, float]
    radius: float
    length: float

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        centre = np.array(self.base) + np.array(self.axis) * self.length / 2
        return centre, math.hypot(self.radius, self.length / 2)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = np.array(self.axis, np.float32)
        oc = (o - np.array(self.base)).astype(np.float32)
        oa = float(oc @ a)
        oc_p = oc - oa * a
        da = d @ a  # (M,)
        d_p = d - da[:, None] * a  # (M, 3)
        qa = np.einsum("ij,ij->i", d_p, d_p)
        qb = d_p @ oc_p
        disc = qb * qb - qa * (float(oc_p @ oc_p) - self.radius**2)
        with np.errstate(divide="ignore", invalid="ignore"):
            t_side = (-qb - np.sqrt(np.maximum(disc, 0.0))) / qa
            h = oa + t_side * da
            side = (disc >= 0) & (t_side > EPS) & (h >= 0) & (h <= self.length)
            t = np.where(side, t_side, FAR)
            normal = (oc_p + t_side[:, None] * d_p) / self.radius
            for level, sign in ((0.0, -1.0), (self.length, 1.0)):
                t_cap = (level - oa) / da
                p_p = oc_p + t_cap[:, None] * d_p
                cap = (t_cap > EPS) & (np.einsum("ij,ij->i", p_p, p_p) <= self.radius**2) & (t_cap < t)
                t = np.where(cap, t_cap, t)
                normal[cap] = sign * a
        return t.astype(np.float32), normal.astype(np.float32)


Shape = Box | Sphere | Cylinder

# Texture kinds: how a surface's albedo varies over it (see kit.synth.raycast._albedo).
PLAIN, GROUND, PAVING, FACADE, FOLIAGE, CABIN, LAMPS, SIGN_FACE, FENCE_BARS, PAINT = range(10)


@dataclass(frozen=True)
class Material:
    label: int
    colour: tuple[float, float, float]
    texture: int = PLAIN
    params: tuple[float, ...] = ()  # texture-specific, at most 8


@dataclass
class Thing:
    """An object: shapes culled together by one bounding sphere."""

    parts: list[tuple[Shape, Material]]

    def bounding_sphere(self) -> tuple[np.ndarray, float]:
        spheres = [shape.bounding_sphere() for shape, _ in self.parts]
        lo = np.min([c - r for c, r in spheres], axis=0)
        hi = np.max([c + r for c, r in spheres], axis=0)
        return (lo + hi) / 2, float(np.linalg.norm(hi - lo) / 2)


@dataclass
class Scene:
    things: list[Thing]
    ground: Material  # the plane z = 0; its GROUND params describe the road
    sun: np.ndarray  # (3,) unit vector towards the sun
    sun_strength: float
    ambient: float
    sky_zenith: np.ndarray  # (3,) RGB 0..1
    sky_horizon: np.ndarray
    cloud_cover: float  # 0 clear .. 1 overcast
    visibility: float  # metres; haze blends distant surfaces into the horizon colour


# ----------------------------------------------------------------------------------------------
# Procedural noise: one tileable 1/f field, sampled at material-specific scales


def _make_noise(size: int = 256) -> np.ndarray:
    """Zero-mean unit-variance tileable noise with a 1/f^1.2 spectrum (fractal-looking), float32."""
    rng = np.random.default_rng(12345)  # fixed: textures are part of the generator, not the scene
    freq = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.fftfreq(size)[None, :])
    freq[0, 0] = 1.0
    spectrum = np.fft.fft2(rng.standard_normal((size, size))) / freq**1.2
    spectrum[0, 0] = 0.0
    field_ = np.real(np.fft.ifft2(spectrum))
    return ((field_ - field_.mean()) / field_.std()).astype(np.float32)


NOISE = _make_noise()


def noise(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup of the tileable noise at texel coordinates ``(u, v)``; ≈ N(0, 1)."""
    size = NOISE.shape[0]
    u0, v0 = np.floor(u), np.floor(v)
    fu, fv = (u - u0).astype(np.float32), (v - v0).astype(np.float32)
    iu, iv = u0.astype(np.int64) % size, v0.astype(np.int64) % size
    iu1, iv1 = (iu + 1) % size, (iv + 1) % size
    top = NOISE[iv, iu] * (1 - fu) + NOISE[iv, iu1] * fu
    bottom = NOISE[iv1, iu] * (1 - fu) + NOISE[iv1, iu1] * fu
    return top * (1 - fv) + bottom * fv


def _surface_uv(p: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Planar texture coordinates: the two world axes across the normal's dominant axis."""
    an = np.abs(n)
    on_z = (an[:, 2] >= an[:, 0]) & (an[:, 2] >= an[:, 1])
    on_x = ~on_z & (an[:, 0] >= an[:, 1])
    u = np.where(on_x, p[:, 1], p[:, 0])
    v = np.where(on_z, p[:, 1], p[:, 2])
    return u, v
