"""Synthetic "fisheye city": ray-cast street scenes seen by a pinhole and a fisheye camera.

Writes a dataset in the 2023 Samsung AI Challenge layout (REFERENCE.md §1, via ``kit.data``) plus
held-out fisheye labels (``train_target_gt``, ``test_gt``), so adaptation methods can be scored on
labelled fisheye images, which the competition never had. Every scene is a random 3-D street
built from planes, boxes, cylinders and spheres; each pixel's ray is intersected with them in
vectorised NumPy, so labels are exact and both cameras see the same kind of world. The domain gap
follows the competition's: geometry (pinhole 2:1 front camera vs ~200° equidistant fisheye, 16:9,
mounted front or rear, dark border labelled 255) and appearance (the target is darker, has more
contrast, vignetting and sensor noise; REFERENCE.md §2 gives the real statistics). The source
frames reproduce the real data's label defect: the ego bonnet is labelled Sky unless turned off.

    python -m kit.synth --out data/demo --preset demo [--seed N] [--workers N]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from kit.data import CLASSES, IGNORE_INDEX, prepare_output_dir, write_csv, write_image, write_json
from kit.fisheye import DEFAULT_CIRCLE, CameraModel, fisheye_camera, pinhole_camera

ROAD, SIDEWALK, CONSTRUCTION, FENCE, POLE, LIGHT, SIGN, NATURE, SKY, PERSON, RIDER, CAR = range(12)

# ----------------------------------------------------------------------------------------------
# Dataset layout and presets

SPLITS: tuple[str, ...] = ("train_source", "val_source", "train_target", "test")  # index seeds rng
SOURCE_SPLITS = ("train_source", "val_source")


@dataclass(frozen=True)
class SplitLayout:
    id_prefix: str
    digits: int  # zero padding of the competition's ids
    image_dir: str
    gt_dir: str
    gt_csv: str  # the CSV that names the labels: the split's own for source, held-out for target


LAYOUT: dict[str, SplitLayout] = {
    "train_source": SplitLayout("TRAIN_SOURCE", 4, "train_source_image", "train_source_gt", "train_source"),
    "val_source": SplitLayout("VALID_SOURCE", 3, "val_source_image", "val_source_gt", "val_source"),
    "train_target": SplitLayout("TRAIN_TARGET", 4, "train_target_image", "train_target_gt", "train_target_gt"),
    "test": SplitLayout("TEST", 4, "test_image", "test_gt", "test_gt"),
}


@dataclass(frozen=True)
class Preset:
    source_size: tuple[int, int]  # (W, H)
    target_size: tuple[int, int]  # (W, H)
    counts: dict[str, int]


PRESETS: dict[str, Preset] = {
    "tiny": Preset((128, 64), (160, 90), {"train_source": 3, "val_source": 2, "train_target": 3, "test": 2}),
    "demo": Preset(
        (512, 256), (480, 270), {"train_source": 400, "val_source": 100, "train_target": 400, "test": 100}
    ),
    "full": Preset(  # the competition's sizes and counts
        (2048, 1024), (1920, 1080), {"train_source": 2194, "val_source": 466, "train_target": 2923, "test": 1898}
    ),
}


@dataclass(frozen=True)
class Cameras:
    """Camera parameters of both domains (angles in degrees, positions in metres)."""

    source_hfov: float = 80.0  # pinhole horizontal field of view
    bonnet_as_sky: bool = True  # reproduce the real labels' defect; False labels the bonnet 255
    fisheye_fov: float = 200.0
    fisheye_projection: str = "equidistant"  # any name in kit.fisheye.MODELS
    fisheye_circle: tuple[float, float] = DEFAULT_CIRCLE  # circle semi-axes / (W/2, H/2)
    fisheye_mounts: tuple[str, ...] = ("front", "rear")  # drawn uniformly per image
    fisheye_pitch: float = -10.0  # mean pitch (negative looks down)
    pitch_jitter: float = 6.0
    yaw_jitter: float = 8.0
    roll_jitter: float = 2.0

    def __post_init__(self) -> None:
        unknown = [m for m in self.fisheye_mounts if m not in ("front", "rear")]
        if unknown or not self.fisheye_mounts:
            raise ValueError(f"fisheye mounts {self.fisheye_mounts}; expected one or more of 'front', 'rear'")


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

# Texture kinds: how a surface's albedo varies over it (see _albedo).
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


# ----------------------------------------------------------------------------------------------
# Scene sampling: a straight street along +y, ego car at the origin in a right-hand lane


def _grey(value: float) -> tuple[float, float, float]:
    return (value, value, value)


def _jitter(rng: np.random.Generator, colour: Sequence[float], amount: float) -> tuple[float, float, float]:
    c = np.clip(np.asarray(colour) * rng.uniform(1 - amount, 1 + amount, 3), 0.0, 1.0)
    return (float(c[0]), float(c[1]), float(c[2]))


FACADE_COLOURS = [(0.78, 0.74, 0.66), (0.62, 0.6, 0.58), (0.66, 0.42, 0.34), (0.85, 0.84, 0.8), (0.5, 0.56, 0.6),
                  (0.74, 0.64, 0.5), (0.42, 0.44, 0.46)]  # fmt: skip
CAR_COLOURS = [(0.9, 0.9, 0.9), (0.08, 0.08, 0.09), (0.6, 0.62, 0.64), (0.7, 0.1, 0.1), (0.12, 0.22, 0.5),
               (0.35, 0.36, 0.38), (0.85, 0.85, 0.82), (0.2, 0.3, 0.25)]  # fmt: skip
CLOTHES = [(0.1, 0.1, 0.12), (0.2, 0.25, 0.45), (0.7, 0.15, 0.15), (0.85, 0.85, 0.8), (0.35, 0.3, 0.25),
           (0.2, 0.45, 0.3), (0.9, 0.7, 0.2)]  # fmt: skip
SIGN_COLOURS = [((0.1, 0.3, 0.72), (0.95, 0.95, 0.95)), ((0.92, 0.92, 0.9), (0.8, 0.08, 0.08)),
                ((0.95, 0.78, 0.1), (0.1, 0.1, 0.1)), ((0.05, 0.45, 0.25), (0.95, 0.95, 0.95))]  # face, border
SKIN = [(0.85, 0.68, 0.55), (0.62, 0.45, 0.33), (0.4, 0.28, 0.2)]


def _car(rng: np.random.Generator, x: float, y: float, yaw: float) -> Thing:
    """Body, cabin and four wheels; sizes from small hatchback to SUV/van."""
    length, width = rng.uniform(4.0, 5.0), rng.uniform(1.7, 1.95)
    body_top, cabin_top = rng.uniform(0.9, 1.15), rng.uniform(1.4, 1.9)
    paint = Material(CAR, _jitter(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))], 0.1), PAINT)
    glass = Material(CAR, paint.colour, CABIN, (body_top, cabin_top))
    c, s = math.cos(yaw), math.sin(yaw)

    def at(forward: float, side: float, z: float) -> tuple[float, float, float]:
        return (x + side * c - forward * s, y + side * s + forward * c, z)

    cabin_len = length * rng.uniform(0.45, 0.7)
    parts: list[tuple[Shape, Material]] = [
        (Box(at(0, 0, (0.3 + body_top) / 2), (width / 2, length / 2, (body_top - 0.3) / 2), yaw), paint),
        (Box(at(-0.15 * length + cabin_len / 2 * 0.3, 0, (body_top + cabin_top) / 2),
             (width / 2 - 0.08, cabin_len / 2, (cabin_top - body_top) / 2), yaw), glass),
    ]  # fmt: skip
    tyre = Material(CAR, _grey(0.06), PLAIN, (0.3, 4.0))
    for forward in (-0.32 * length, 0.32 * length):
        for side in (-1, 1):
            base = at(forward, side * width / 2, 0.33)
            parts.append((Cylinder(base, (-side * c, -side * s, 0.0), 0.33, 0.22), tyre))
    return Thing(parts)


def _person(
    rng: np.random.Generator, x: float, y: float, z: float, label: int = PERSON
) -> list[tuple[Shape, Material]]:
    """Legs, torso and head standing on height ``z``; riders reuse it sitting higher."""
    scale = rng.uniform(0.85, 1.08)
    legs = Material(label, _jitter(rng, CLOTHES[rng.integers(3)], 0.2), PLAIN, (0.2, 6.0))
    shirt = Material(label, _jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 0.2), PLAIN, (0.2, 6.0))
    skin = Material(label, SKIN[rng.integers(len(SKIN))], PLAIN, (0.1, 6.0))
    return [
        (Box((x, y, z + 0.42 * scale), (0.17 * scale, 0.11 * scale, 0.42 * scale)), legs),
        (Cylinder((x, y, z + 0.8 * scale), (0, 0, 1), 0.2 * scale, 0.66 * scale), shirt),
        (Sphere((x, y, z + 1.58 * scale), 0.12 * scale), skin),
    ]


def _rider(rng: np.random.Generator, x: float, y: float, heading: float) -> Thing:
    """A bicycle or motorbike along ±y with a person on it; all of it is Rider (as Cityscapes)."""
    motor = rng.random() < 0.5
    frame = Material(RIDER, _jitter(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))], 0.2), PAINT)
    tyre = Material(RIDER, _grey(0.07), PLAIN, (0.3, 4.0))
    radius, half_width = (0.3, 0.07) if motor else (0.34, 0.025)
    parts: list[tuple[Shape, Material]] = [
        (Cylinder((x - half_width, y + sign * 0.6, radius), (1, 0, 0), radius, 2 * half_width), tyre)
        for sign in (-1, 1)
    ]
    body = (0.2, 0.55, 0.2) if motor else (0.03, 0.5, 0.05)
    parts.append((Box((x, y, radius + body[2] + 0.05), body), frame))
    parts += _person(rng, x, y - 0.1 * heading, 0.45, RIDER)
    return Thing(parts)


def _tree(rng: np.random.Generator, x: float, y: float, z: float) -> Thing:
    trunk_h, crown = rng.uniform(1.8, 3.5), rng.uniform(1.3, 3.0)
    bark = Material(NATURE, _jitter(rng, (0.3, 0.22, 0.15), 0.2), PLAIN, (0.35, 8.0))
    leaves = Material(NATURE, _jitter(rng, (0.2, 0.36, 0.12), 0.25), FOLIAGE, (rng.uniform(3, 6),))
    return Thing([
        (Cylinder((x, y, z), (0, 0, 1), rng.uniform(0.1, 0.2), trunk_h + crown * 0.5), bark),
        (Sphere((x, y, z + trunk_h + crown * 0.8), crown), leaves),
    ])  # fmt: skip


def _street_light(rng: np.random.Generator, x: float, y: float, towards: float, with_sign: bool) -> Thing:
    """Pole at the curb with an arm over the road (``towards`` = ±1 in x) and a lamp head."""
    height = rng.uniform(7.0, 9.5)
    metal = Material(POLE, _grey(rng.uniform(0.4, 0.62)), PLAIN, (0.15, 3.0))
    arm = rng.uniform(1.2, 2.5)
    parts: list[tuple[Shape, Material]] = [
        (Cylinder((x, y, 0.0), (0, 0, 1), rng.uniform(0.08, 0.13), height), metal),
        (Box((x + towards * arm / 2, y, height - 0.1), (arm / 2, 0.05, 0.05)), metal),
        (Box((x + towards * arm, y, height - 0.2), (0.3, 0.15, 0.1)), metal),
    ]
    if with_sign:
        centre = (x + towards * 0.1, 2.8)
        plate = _sign_material(rng, centre, 0.3, False)
        parts.append((Box((centre[0], y - 0.12, centre[1]), (0.3, 0.02, 0.3)), plate))
    return Thing(parts)


def _sign_material(rng: np.random.Generator, centre: tuple[float, float], half: float, round_: bool) -> Material:
    """A plate centred at ``centre`` (x, z) facing ±y: face colour with a border ring."""
    colour, border = SIGN_COLOURS[rng.integers(len(SIGN_COLOURS))]
    return Material(SIGN, colour, SIGN_FACE, (*border, *centre, half, float(round_)))


def _traffic_light(rng: np.random.Generator, x_pole: float, y: float, x_end: float, facing: float) -> Thing:
    """Korean-style gantry: pole, arm over the lanes, horizontal signal heads facing ``facing`` (±1 y)."""
    height = rng.uniform(5.5, 7.0)
    metal = Material(POLE, _grey(rng.uniform(0.45, 0.6)), PLAIN, (0.15, 3.0))
    parts: list[tuple[Shape, Material]] = [
        (Cylinder((x_pole, y, 0.0), (0, 0, 1), 0.15, height + 0.3), metal),
        (Box(((x_pole + x_end) / 2, y, height), (abs(x_end - x_pole) / 2, 0.07, 0.08)), metal),
    ]
    heads = int(rng.integers(1, 3))
    for k in range(heads):
        cx = x_end + (x_pole - x_end) * (0.1 + 0.35 * k)
        lit = float(rng.integers(3))
        housing = Material(LIGHT, _grey(0.08), LAMPS, (cx, height - 0.35, lit, facing))
        parts.append((Box((cx, y, height - 0.35), (0.6, 0.18, 0.2)), housing))
    if rng.random() < 0.6:
        centre = (x_pole + (x_end - x_pole) * 0.75, height + 0.05)
        sign = Material(SIGN, (0.1, 0.3, 0.72), SIGN_FACE, (0.95, 0.95, 0.95, *centre, 0.3, 0.0))
        parts.append((Box((centre[0], y, centre[1]), (0.9, 0.03, 0.3)), sign))
    return Thing(parts)


@dataclass(frozen=True)
class Street:
    """The road's cross-section in world x (metres); the ego drives along +y at x = 0."""

    centre: float  # x of the centre line
    half_road: float  # centre line to curb
    lane_w: float
    lanes: int  # per direction
    median: float  # half width of the median strip (0 without a median fence)
    sidewalk: tuple[float, float]  # widths, left and right
    crosswalk: float  # y of a zebra crossing; far away when there is none

    def curb(self, side: int) -> float:
        return self.centre + side * self.half_road

    def lane_x(self, lane: int) -> float:
        """Centre of ``lane``: 0.. on the ego's side of the centre line, negative for oncoming lanes."""
        offset = (lane + 0.5) * self.lane_w
        return self.centre + (self.median + offset if lane >= 0 else -self.median + offset)


def _box_thing(lo: Sequence[float], hi: Sequence[float], material: Material) -> Thing:
    """An axis-aligned box from corner ``lo`` to corner ``hi``."""
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    return Thing([(Box(tuple((lo + hi) / 2), tuple((hi - lo) / 2)), material)])


def _facade_material(rng: np.random.Generator, far: bool = False) -> Material:
    """Wall colour and a window grid: floor height, column width, window width/height share, glass, phase."""
    colour = _jitter(rng, FACADE_COLOURS[rng.integers(len(FACADE_COLOURS))], 0.1)
    if far:  # distant skyline blocks: any regular grid will do
        return Material(CONSTRUCTION, colour, FACADE, (3.2, 3.0, 0.5, 0.5, 1.0, 0.0))
    grid = (rng.uniform(2.8, 3.6), rng.uniform(2.0, 4.0), rng.uniform(0.35, 0.75), rng.uniform(0.4, 0.7))
    return Material(CONSTRUCTION, colour, FACADE, (*grid, float(rng.integers(3)), rng.uniform(0, 3)))


def _roadside(rng: np.random.Generator, street: Street, side: int) -> list[Thing]:
    """One side of the street: buildings and empty lots (grass, trees, fences), a far skyline,
    street lights, standalone signs and sidewalk trees."""
    things: list[Thing] = []
    width = street.sidewalk[(side + 1) // 2]
    line = street.curb(side) + side * (width + rng.uniform(0.0, 4.0))  # building line
    curb = street.curb(side) + side * 0.6  # where poles stand
    y = rng.uniform(-190, -160)
    while y < 260:
        span = rng.uniform(8, 32)
        if rng.random() < 0.25:  # an empty lot
            if rng.random() < 0.6:
                bars = (rng.uniform(0.1, 0.3), 0.5)
                fence = Material(FENCE, _jitter(rng, (0.5, 0.5, 0.48), 0.2), FENCE_BARS, bars)
                height = rng.uniform(1.0, 2.0)
                things.append(_box_thing((line - 0.03, y, 0), (line + 0.03, y + span, height), fence))
            for _ in range(int(rng.integers(0, 3))):
                things.append(_tree(rng, line + side * rng.uniform(2, 8), y + rng.uniform(0, span), 0.0))
        else:
            storeys = rng.choice(3, p=[0.4, 0.4, 0.2])
            height = (rng.uniform(4, 12), rng.uniform(10, 30), rng.uniform(25, 70))[storeys]
            depth = rng.uniform(10, 25)
            facade = _facade_material(rng)
            things.append(_box_thing((line, y, 0), (line + side * depth, y + span, height), facade))
        y += span + (rng.uniform(0.5, 12) if rng.random() < 0.4 else 0.0)
    for direction in (-1, 1):  # far skyline, so the street does not end in open sky
        y_far = 280.0 * direction
        for _ in range(3):
            span, height = rng.uniform(60, 150), rng.uniform(15, 60)
            far = _facade_material(rng, far=True)
            corner = (line + side * 40, y_far + direction * span, height)
            things.append(_box_thing((line, y_far, 0), corner, far))
            y_far += direction * span

    y = rng.uniform(-110, -80)
    while y < 160:
        things.append(_street_light(rng, curb, y, -side, rng.random() < 0.25))
        y += rng.uniform(25, 45)
    for _ in range(int(rng.integers(0, 3))):
        y, h = rng.uniform(-60, 90), rng.uniform(2.2, 3.2)
        half, round_ = rng.uniform(0.3, 0.45), rng.random() < 0.5
        plate = _sign_material(rng, (curb, h), half, round_)
        if round_:
            face: Shape = Cylinder((curb, y - 0.08, h), (0, 1, 0), half, 0.04)
        else:
            face = Box((curb, y - 0.08, h), (half, 0.02, half))
        post = Material(POLE, _grey(0.55), PLAIN, (0.1, 3.0))
        things.append(Thing([(Cylinder((curb, y, 0.0), (0, 0, 1), 0.05, h + 0.3), post), (face, plate)]))
    for _ in range(int(rng.integers(1, 8))):
        things.append(_tree(rng, street.curb(side) + side * (width - 0.9), rng.uniform(-80, 120), 0.15))
    return things


def _traffic(rng: np.random.Generator, street: Street) -> list[Thing]:
    """Cars in the lanes and parked at the curbs, pedestrians, riders near the road edges."""
    things: list[Thing] = []
    taken: list[tuple[float, float]] = [(0.0, 0.0)]  # the ego's own place
    for _ in range(int(rng.integers(4, 15))):
        lane = int(rng.integers(-street.lanes, street.lanes))
        # half of them close by, where the fisheye sees them large
        x, y = street.lane_x(lane), rng.uniform(-60, 80) if rng.random() < 0.5 else rng.uniform(-25, 30)
        if rng.random() < 0.2:  # parked
            x = street.curb(1 if lane >= 0 else -1) - (1 if lane >= 0 else -1) * 1.1
        if any(abs(x - tx) < 2.5 and abs(y - ty) < 7.5 for tx, ty in taken):
            continue
        taken.append((x, y))
        heading = 0.0 if lane >= 0 else math.pi  # right-hand traffic
        things.append(_car(rng, x, y, heading + rng.normal(0, 0.03)))
    for _ in range(int(rng.integers(1, 9))):
        side = int(rng.choice([-1, 1]))
        x = street.curb(side) + side * rng.uniform(0.5, street.sidewalk[(side + 1) // 2] - 0.4)
        y = rng.uniform(-50, 70) if rng.random() < 0.5 else rng.uniform(-20, 25)
        things.append(Thing(_person(rng, x, y, 0.15)))
    if abs(street.crosswalk) < 100:
        for _ in range(int(rng.integers(0, 4))):
            x = street.centre + rng.uniform(-street.half_road, street.half_road)
            things.append(Thing(_person(rng, x, street.crosswalk + rng.uniform(0.5, 3.5), 0.0)))
    if rng.random() < 0.6:
        for _ in range(int(rng.integers(1, 4))):
            side = int(rng.choice([-1, 1]))
            x, y = street.curb(side) - side * rng.uniform(0.7, 1.5), rng.uniform(-30, 45)
            if all(abs(x - tx) > 2.5 or abs(y - ty) > 4 for tx, ty in taken):
                things.append(_rider(rng, x, y, float(side)))
    return things


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random street: road, sidewalks, buildings, poles, signals, signs, trees, fences, traffic."""
    lanes, lane_w = int(rng.integers(1, 4)), rng.uniform(3.1, 3.6)
    median_fence = rng.random() < 0.6
    median = 0.15 if median_fence else 0.0
    ego_lane = int(rng.integers(lanes))
    street = Street(
        centre=-median - (ego_lane + 0.5) * lane_w,
        half_road=median + lanes * lane_w,
        lane_w=lane_w,
        lanes=lanes,
        median=median,
        sidewalk=(rng.uniform(2.0, 5.0), rng.uniform(2.0, 5.0)),
        crosswalk=rng.uniform(12, 45) * rng.choice([-1, 1]) if rng.random() < 0.4 else 1e4,
    )
    dash_phase = rng.uniform(0, 12)
    ground = Material(
        ROAD,
        _jitter(rng, (0.36, 0.36, 0.37), 0.12),
        GROUND,
        (street.centre, street.half_road, lane_w, median, float(median_fence), street.crosswalk, dash_phase, lanes),
    )
    paving_colour = [(0.6, 0.58, 0.55), (0.62, 0.5, 0.45), (0.55, 0.56, 0.58)][rng.integers(3)]
    paving = Material(SIDEWALK, _jitter(rng, paving_colour, 0.08), PAVING, (rng.uniform(0.3, 0.6),))
    things = [
        _box_thing((street.curb(side), -1500.0, 0.0), (street.curb(side) + side * width, 1500.0, 0.15), paving)
        for side, width in ((-1, street.sidewalk[0]), (1, street.sidewalk[1]))
    ]
    if median_fence:  # Korean median fences: white-yellow posts, open at the crossing
        rail = Material(FENCE, _jitter(rng, (0.85, 0.8, 0.55), 0.1), FENCE_BARS, (0.25, 1.0))
        height = rng.uniform(0.8, 1.2)
        gap = street.crosswalk if abs(street.crosswalk) < 100 else rng.uniform(60, 150)
        for y0, y1 in ((-400.0, gap - 2.0), (gap + 6.0, 600.0)):
            things.append(_box_thing((street.centre - 0.04, y0, 0.0), (street.centre + 0.04, y1, height), rail))
    things += _roadside(rng, street, -1) + _roadside(rng, street, 1)
    if rng.random() < 0.75:  # signal gantries over the ego's direction of travel and/or the opposite one
        for _ in range(int(rng.integers(1, 3))):
            y, side = rng.uniform(12, 70) * rng.choice([-1, 1]), int(rng.choice([-1, 1]))
            end = street.centre + side * (median + 0.5)
            things.append(_traffic_light(rng, street.curb(side) + side * 0.5, y, end, -side))
    things += _traffic(rng, street)

    overcast = rng.random() < 0.3
    elevation, azimuth = rng.uniform(0.35, 1.1), rng.uniform(0, 2 * np.pi)
    sun = (math.cos(elevation) * math.cos(azimuth), math.cos(elevation) * math.sin(azimuth), math.sin(elevation))
    zenith, horizon = ((0.62, 0.65, 0.68), (0.78, 0.8, 0.82)) if overcast else ((0.25, 0.45, 0.8), (0.75, 0.83, 0.9))
    return Scene(
        things=things,
        ground=ground,
        sun=np.array(sun, np.float32),
        sun_strength=rng.uniform(0.15, 0.3) if overcast else rng.uniform(0.5, 0.75),
        ambient=rng.uniform(0.55, 0.7) if overcast else rng.uniform(0.35, 0.5),
        sky_zenith=np.array(_jitter(rng, zenith, 0.1), np.float32),
        sky_horizon=np.array(_jitter(rng, horizon, 0.05), np.float32),
        cloud_cover=rng.uniform(0.5, 0.9) if overcast else rng.uniform(0.0, 0.5),
        visibility=rng.uniform(150, 400),
    )


# ----------------------------------------------------------------------------------------------
# Cameras on the ego car


@dataclass(frozen=True)
class Pose:
    """Camera position (world metres: x right, y forward, z up) and yaw/pitch/roll in degrees.

    Yaw 0 looks along +y, 180 backwards; positive pitch looks up.
    """

    position: tuple[float, float, float]
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0

    def rotation(self) -> np.ndarray:
        """``(3, 3)`` matrix taking OpenCV camera axes (x right, y down, z forward) to world axes."""
        y, p, r = (math.radians(a) for a in (self.yaw, self.pitch, self.roll))
        base = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])  # columns: cam x, y, z in the world
        # yaw turns clockwise seen from above (to the right), pitch about the camera's x axis
        yaw = np.array([[math.cos(y), math.sin(y), 0], [-math.sin(y), math.cos(y), 0], [0, 0, 1]])
        pitch = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
        roll = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
        return yaw @ base @ pitch @ roll


def source_rig(rng: np.random.Generator, cameras: Cameras) -> tuple[Pose, Thing]:
    """Dash camera behind the windscreen and the bonnet in front of it (a flattened sphere cap)."""
    height = rng.uniform(1.3, 1.5)
    pose = Pose((0.0, -2.0, height), rng.normal(0, 1.0), rng.normal(-1.0, 1.0), rng.normal(0, 0.7))
    label = SKY if cameras.bonnet_as_sky else IGNORE_INDEX
    paint = Material(label, _jitter(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))], 0.1), PAINT)
    # a 10 m sphere whose top is just below the camera: its curved edge covers the bottom ~15-20 %
    radius = 10.0
    top = height - rng.uniform(0.42, 0.5)
    return pose, Thing([(Sphere((0.0, -1.8, top - radius), radius), paint)])


def target_rig(rng: np.random.Generator, cameras: Cameras) -> tuple[Pose, Thing]:
    """Fisheye on the front grille or the tailgate; the ego body (label 255) fills what it sees of the car."""
    front = cameras.fisheye_mounts[int(rng.integers(len(cameras.fisheye_mounts)))] == "front"
    pose = Pose(
        (0.0, 0.12 if front else -4.62, rng.uniform(0.6, 0.8) if front else rng.uniform(0.9, 1.1)),
        (0.0 if front else 180.0) + rng.uniform(-cameras.yaw_jitter, cameras.yaw_jitter),
        cameras.fisheye_pitch + rng.uniform(-cameras.pitch_jitter, cameras.pitch_jitter),
        rng.uniform(-cameras.roll_jitter, cameras.roll_jitter),
    )
    paint = Material(IGNORE_INDEX, _jitter(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))], 0.1), PAINT)
    bumpers = Material(IGNORE_INDEX, _grey(0.12), PLAIN, (0.2, 4.0))
    body = Thing([
        (Box((0.0, -2.25, 0.85), (0.92, 2.25, 0.6)), paint),
        (Box((0.0, -2.25, 0.4), (0.95, 2.37, 0.18)), bumpers),
    ])  # fmt: skip
    return pose, body


# ----------------------------------------------------------------------------------------------
# Ray casting and shading

RAY_CHUNK = 1 << 17  # rays per pass; bounds memory at the full preset's 2 Mpx


@functools.lru_cache(maxsize=4)
def camera_rays(camera: CameraModel) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`CameraModel.pixel_rays`, computed once per camera and process (read-only arrays)."""
    rays, valid = camera.pixel_rays()
    rays.flags.writeable = valid.flags.writeable = False
    return rays, valid


def cast(
    things: Sequence[Thing], origin: np.ndarray, dirs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest hit of each ray ``dirs (N, 3)`` from ``origin``: distance ``(N,)``, part ``(N,)``, normal ``(N, 3)``.

    Part index -1 is the ground plane z = 0, -2 a miss (sky). Parts are numbered in the order of
    ``things`` then their ``parts``. Each thing is culled by the cone its bounding sphere subtends.
    """
    n = len(dirs)
    t_best = np.full(n, FAR, np.float32)
    part = np.full(n, -2, np.int32)
    normal = np.zeros((n, 3), np.float32)
    with np.errstate(divide="ignore"):
        t_ground = np.where(dirs[:, 2] < 0, -float(origin[2]) / dirs[:, 2], FAR).astype(np.float32)
    down = t_ground < FAR
    t_best[down], part[down], normal[down] = t_ground[down], -1, (0.0, 0.0, 1.0)

    order, spheres = [], []
    for thing in things:
        centre, radius = thing.bounding_sphere()
        spheres.append((centre, radius))
        order.append(np.linalg.norm(centre - origin) - radius)
    first_part = np.cumsum([0] + [len(t.parts) for t in things])
    for k in np.argsort(order, kind="stable"):  # near things first, so far ones are occluded early
        centre, radius = spheres[k]
        to_centre = centre - origin
        distance = float(np.linalg.norm(to_centre))
        if distance > radius:
            axis = (to_centre / distance).astype(np.float32)
            cos_cone = math.sqrt(1.0 - (radius / distance) ** 2)
            cand = np.flatnonzero((dirs @ axis >= cos_cone) & (t_best > distance - radius))
        else:
            cand = np.arange(n)
        if len(cand) == 0:
            continue
        sub = dirs[cand]
        for j, (shape, _) in enumerate(things[k].parts):
            t, nrm = shape.intersect(origin, sub)
            closer = t < t_best[cand]
            idx = cand[closer]
            t_best[idx], part[idx], normal[idx] = t[closer], first_part[k] + j, nrm[closer]
    return t_best, part, normal


def _albedo(texture: int, p: np.ndarray, n: np.ndarray, colour: np.ndarray, params: np.ndarray) -> np.ndarray:
    """Surface colour ``(M, 3)`` of hits ``p (M, 3)`` with normals ``n`` for one texture kind."""
    u, v = _surface_uv(p, n)
    grain = noise(u * 8.0, v * 8.0)[:, None]  # ~12 cm features
    blotch = noise(u * 0.7 + 31.0, v * 0.7 + 17.0)[:, None]  # ~1.5 m features
    if texture == PLAIN:
        amount, scale = params[:, 0:1], params[:, 1]
        return colour * (1.0 + amount * noise(u * scale, v * scale)[:, None])
    if texture == PAVING:
        tile = params[:, 0:1]
        joint = (np.minimum((u[:, None] / tile) % 1.0, (v[:, None] / tile) % 1.0) < 0.06) & (n[:, 2:3] > 0.5)
        curb = n[:, 2:3] < 0.5
        base = np.where(curb, np.float32(0.72), colour)
        return base * (1.0 + 0.08 * grain + 0.06 * blotch) * np.where(joint, np.float32(0.75), np.float32(1.0))
    if texture == FOLIAGE:
        # two projections summed: each alone smears into streaks where the crown turns edge-on to it
        scale = params[:, 0] * 3
        leaf = 0.7 * (noise(p[:, 0] * scale, p[:, 2] * scale) + noise(p[:, 1] * scale + 37.0, p[:, 2] * scale))
        return colour * np.clip(1.0 + 0.35 * leaf[:, None] + 0.2 * blotch, 0.3, 2.0)
    if texture == FENCE_BARS:
        spacing, open_ = params[:, 0:1], params[:, 1:2]
        along = np.where(np.abs(n[:, 0:1]) > 0.5, p[:, 1:2], p[:, 0:1])
        bar = (along / spacing) % 1.0 < 0.35
        rail = (p[:, 2:3] % 1.2) > 1.05
        gapcol = np.float32(0.55) * open_ + (1 - open_) * np.float32(0.9)
        return colour * (1.0 + 0.05 * grain) * np.where(bar | rail, np.float32(1.0), gapcol)
    if texture == FACADE:
        return _facade(p, n, colour, params, grain, blotch)
    if texture == CABIN:
        low, high = params[:, 0], params[:, 1]
        side = np.abs(n[:, 2]) < 0.5
        glass = side & (p[:, 2] > low + 0.06) & (p[:, 2] < high - 0.06)
        out = colour * (1.0 + 0.03 * grain)
        tinted = np.float32(0.12) + 0.12 * np.clip(n[:, 2:3] + 0.5, 0, 1) + 0.02 * blotch  # dark, sky-lit glass
        return np.where(glass[:, None], tinted, out)
    if texture == LAMPS:
        cx, cz, lit, facing = params[:, 0], params[:, 1], params[:, 2], params[:, 3]
        offset = (p[:, 0] - cx) / 0.4  # lamp slots at offsets -1, 0, 1
        slot = np.clip(np.round(offset), -1, 1)
        in_lamp = (np.hypot((offset - slot) * 0.4, p[:, 2] - cz) < 0.13) & (n[:, 1] * facing > 0.5)
        lamp_colours = np.array([(1.0, 0.15, 0.1), (1.0, 0.7, 0.1), (0.1, 0.9, 0.5)], np.float32)
        brightness = np.where(slot + 1 == lit, np.float32(1.4), np.float32(0.25))  # one lamp lit
        lamp = lamp_colours[(slot + 1).astype(int)] * brightness[:, None]
        return np.where(in_lamp[:, None], lamp, colour * (1.0 + 0.1 * grain))
    if texture == SIGN_FACE:
        border, cx, cz, half, round_ = params[:, 0:3], params[:, 3], params[:, 4], params[:, 5], params[:, 6]
        dx, dz = np.abs(p[:, 0] - cx), np.abs(p[:, 2] - cz)
        reach = np.where(round_ > 0.5, np.hypot(dx, dz), np.maximum(dx, dz)) / half
        front = np.abs(n[:, 1:2]) > 0.5
        ring = (reach > 0.75)[:, None]
        return np.where(front, np.where(ring, border, colour), np.float32(0.5)) * (1.0 + 0.04 * grain)
    if texture == PAINT:
        # a glossy coat: brighter where the surface faces up (sky reflection), faint grain
        return colour * (0.85 + 0.25 * np.clip(n[:, 2:3], 0, 1)) * (1.0 + 0.02 * grain) + 0.04
    raise ValueError(f"unknown texture kind {texture}")


GLASS_COLOURS = np.array([(0.16, 0.2, 0.26), (0.3, 0.36, 0.42), (0.12, 0.12, 0.13)], np.float32)


def _facade(
    p: np.ndarray, n: np.ndarray, colour: np.ndarray, params: np.ndarray, grain: np.ndarray, blotch: np.ndarray
) -> np.ndarray:
    """Walls with a grid of windows per floor; a dark shop front on the ground floor; plain roofs."""
    floor_h, column_w, win_w, win_h, glass_kind, phase = (params[:, i] for i in range(6))
    along = np.where(np.abs(n[:, 0]) > 0.5, p[:, 1], p[:, 0]) + phase
    fu = (along / column_w) % 1.0
    fv = (p[:, 2] / floor_h) % 1.0
    wall = n[:, 2] < 0.5
    window = wall & (np.abs(fu - 0.5) < win_w / 2) & (np.abs(fv - 0.55) < win_h / 2) & (p[:, 2] > floor_h)
    shop = wall & (p[:, 2] < floor_h * 0.8) & (np.abs(fu - 0.5) < 0.42)
    glass = GLASS_COLOURS[glass_kind.astype(int)]
    glass = glass * (1.0 + 0.25 * blotch)
    wall_colour = colour * (1.0 + 0.06 * grain + 0.1 * blotch)
    roof = colour * np.float32(0.7) * (1.0 + 0.1 * grain)
    out = np.where((window | shop)[:, None], glass, wall_colour)
    return np.where(wall[:, None], out, roof)


def _ground(p: np.ndarray, params: np.ndarray, colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Road with lane markings and crosswalk inside the road's width, grass outside: albedo, label."""
    xc, half_road, lane_w, median, fence, crosswalk, dash_phase, lanes = params
    x, y = p[:, 0] - xc, p[:, 1]
    ax = np.abs(x)
    road = ax <= half_road
    grain = noise(p[:, 0] * 10, p[:, 1] * 10)
    blotch = noise(p[:, 0] * 0.3 + 50, p[:, 1] * 0.3)
    asphalt = colour[None, :] * (1.0 + 0.07 * grain + 0.12 * blotch)[:, None]
    lane_pos = (ax - median) / lane_w
    dashed = (np.abs(lane_pos - np.round(lane_pos)) * lane_w < 0.08) & (np.round(lane_pos) >= 1)
    dashed &= np.round(lane_pos) < lanes
    dashed &= ((y + dash_phase) % 12.0) < 4.0
    edge = np.abs(ax - (half_road - 0.3)) < 0.08
    zebra = ((x % 1.2) < 0.6) & (y > crosswalk) & (y < crosswalk + 4.0) & (ax < half_road - 0.5)
    white = dashed | edge | zebra
    yellow = (fence < 0.5) & (np.abs(ax - 0.15) < 0.06)
    grass_colour = np.array([0.25, 0.38, 0.14], np.float32) * (1.0 + 0.3 * grain + 0.25 * blotch)[:, None]
    albedo = np.where(road[:, None], asphalt, grass_colour)
    albedo = np.where(white[:, None], np.float32(0.85) * (1 + 0.05 * grain[:, None]), albedo)
    albedo = np.where(yellow[:, None], np.array([0.85, 0.65, 0.1], np.float32), albedo)
    return albedo, np.where(road, ROAD, NATURE).astype(np.uint8)


def _sky(scene: Scene, d: np.ndarray) -> np.ndarray:
    """Gradient from horizon to zenith with clouds on a virtual plane high above."""
    up = np.clip(d[:, 2], 0.0, 1.0)[:, None]
    colour = scene.sky_horizon + (scene.sky_zenith - scene.sky_horizon) * np.sqrt(up)
    height = np.maximum(d[:, 2], 0.02)
    cu, cv = d[:, 0] / height, d[:, 1] / height  # where the ray meets the cloud plane
    cloud = noise(cu * 20.0, cv * 20.0) * 0.5 + noise(cu * 60.0, cv * 60.0) * 0.25
    cover = np.clip((cloud + 1.2 * scene.cloud_cover - 0.6) * 1.5, 0.0, 1.0) * np.clip(up[:, 0] * 8, 0, 1)
    cloud_colour = np.float32(0.92) - 0.15 * np.clip(cloud, 0, 1)
    return colour * (1 - cover[:, None]) + cloud_colour[:, None] * cover[:, None]


def render(
    scene: Scene, camera: CameraModel, pose: Pose, ego: Thing | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast ``scene`` (+ the ego car) through ``camera`` at ``pose``.

    Returns linear RGB ``float32 (H, W, 3)`` (before the camera's look) and labels ``uint8 (H, W)``;
    pixels outside the camera's field of view are 0 and 255.
    """
    things = list(scene.things) + ([ego] if ego is not None else [])
    materials = [m for thing in things for _, m in thing.parts]
    labels_of = np.array([m.label for m in materials] + [0], np.uint8)
    rays, valid = camera_rays(camera)  # (H, W, 3), (H, W)
    dirs = (rays[valid] @ pose.rotation().T.astype(np.float32)).astype(np.float32)  # (N, 3) world
    origin = np.array(pose.position, np.float64)
    rgb = np.zeros((len(dirs), 3), np.float32)
    label = np.full(len(dirs), IGNORE_INDEX, np.uint8)
    for start in range(0, len(dirs), RAY_CHUNK):
        d = dirs[start : start + RAY_CHUNK]
        t, part, normal = cast(things, origin, d)
        colour, lab = _shade(scene, materials, labels_of, origin, d, t, part, normal)
        rgb[start : start + RAY_CHUNK], label[start : start + RAY_CHUNK] = colour, lab
    image = np.zeros((camera.height, camera.width, 3), np.float32)
    label_map = np.full((camera.height, camera.width), IGNORE_INDEX, np.uint8)
    image[valid], label_map[valid] = rgb, label
    return image, label_map


def _shade(
    scene: Scene,
    materials: Sequence[Material],
    labels_of: np.ndarray,
    origin: np.ndarray,
    d: np.ndarray,
    t: np.ndarray,
    part: np.ndarray,
    normal: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Colours ``(N, 3)`` and labels ``(N,)`` of the hits from :func:`cast`."""
    n = len(d)
    rgb = np.zeros((n, 3), np.float32)
    label = np.full(n, SKY, np.uint8)
    sky = part == -2
    rgb[sky] = _sky(scene, d[sky])
    hit = ~sky
    p = origin.astype(np.float32) + t[hit, None] * d[hit]  # (M, 3)
    nrm, which = normal[hit], part[hit]
    albedo = np.zeros((len(p), 3), np.float32)
    lab = labels_of[which]
    on_ground = which == -1
    ground_params = np.array(scene.ground.params, np.float32)
    albedo[on_ground], lab[on_ground] = _ground(p[on_ground], ground_params, np.array(scene.ground.colour, np.float32))
    colours = np.array([m.colour for m in materials] + [(0, 0, 0)], np.float32)
    params = np.zeros((len(materials) + 1, 8), np.float32)
    for i, m in enumerate(materials):
        params[i, : len(m.params)] = m.params
    kinds = np.array([m.texture for m in materials] + [-1], np.int32)[which]
    for kind in np.unique(kinds[~on_ground]):
        sel = (kinds == kind) & ~on_ground
        albedo[sel] = _albedo(int(kind), p[sel], nrm[sel], colours[which[sel]], params[which[sel]])
    # Lambert + hemispherical ambient; back faces (seen from inside thin parts) take the flipped normal
    facing = np.where((np.einsum("ij,ij->i", nrm, d[hit]) > 0)[:, None], -nrm, nrm)
    sunlit = np.clip(facing @ scene.sun, 0, 1)[:, None]
    light = scene.ambient * (0.8 + 0.2 * facing[:, 2:3]) + scene.sun_strength * sunlit
    colour = np.clip(albedo, 0, 1.2) * light
    haze = 1.0 - np.exp(-t[hit] / scene.visibility)[:, None]
    rgb[hit] = colour * (1 - haze) + scene.sky_horizon * haze
    label[hit] = lab
    return rgb, label


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


# ----------------------------------------------------------------------------------------------
# One image, reproducible from (seed, split, index)


def render_sample(
    split: str,
    index: int,
    seed: int = 0,
    preset: str = "demo",
    cameras: Cameras = Cameras(),
) -> tuple[np.ndarray, np.ndarray]:
    """The image ``uint8 (H, W, 3)`` and label ``uint8 (H, W)`` of image ``index`` of ``split``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    scene = sample_scene(rng)
    if split in SOURCE_SPLITS:
        camera = pinhole_camera(*PRESETS[preset].source_size, cameras.source_hfov)
        pose, ego = source_rig(rng, cameras)
        rgb, label = render(scene, camera, pose, ego)
        return source_look(rgb, rng), label
    camera = fisheye_camera(
        *PRESETS[preset].target_size,
        fov_deg=cameras.fisheye_fov,
        projection=cameras.fisheye_projection,
        circle=cameras.fisheye_circle,
    )
    pose, ego = target_rig(rng, cameras)
    rgb, label = render(scene, camera, pose, ego)
    return target_look(rgb, camera, rng), label


def sample_id(split: str, index: int) -> str:
    layout = LAYOUT[split]
    return f"{layout.id_prefix}_{index:0{layout.digits}d}"


@dataclass(frozen=True)
class _Task:
    out: str
    split: str
    index: int
    seed: int
    preset: str
    cameras: Cameras


def _run_task(task: _Task) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """Render and write one sample; return its split, label histogram (256,), RGB sum and sum of squares."""
    image, label = render_sample(task.split, task.index, task.seed, task.preset, task.cameras)
    layout, name = LAYOUT[task.split], sample_id(task.split, task.index) + ".png"
    write_image(Path(task.out) / layout.image_dir / name, image)
    write_image(Path(task.out) / layout.gt_dir / name, label)
    x = image.reshape(-1, 3).astype(np.float64) / 255.0
    return task.split, np.bincount(label.ravel(), minlength=256), x.sum(0), (x * x).sum(0)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


# ----------------------------------------------------------------------------------------------
# The dataset


CSVS = ("train_source", "val_source", "train_target", "test", "train_target_gt", "test_gt", "sample_submission")
OUTPUTS = [  # everything the generator writes, which --overwrite replaces
    *(LAYOUT[s].image_dir for s in SPLITS),
    *(LAYOUT[s].gt_dir for s in SPLITS),
    *(f"{name}.csv" for name in CSVS),
    "stats.json",
    "preview.png",
]


def write_csvs(out: Path, counts: dict[str, int]) -> None:
    """The competition's four CSVs, the held-out label CSVs and a sample submission of ``-1``."""
    for split in SPLITS:
        layout, ids = LAYOUT[split], [sample_id(split, i) for i in range(counts[split])]
        images = [f"./{layout.image_dir}/{i}.png" for i in ids]
        gts = [f"./{layout.gt_dir}/{i}.png" for i in ids]
        if split in SOURCE_SPLITS:
            write_csv(out / f"{split}.csv", pd.DataFrame({"id": ids, "img_path": images, "gt_path": gts}))
        else:
            write_csv(out / f"{split}.csv", pd.DataFrame({"id": ids, "img_path": images}))
            held_out = pd.DataFrame({"id": ids, "img_path": images, "gt_path": gts})
            write_csv(out / f"{layout.gt_csv}.csv", held_out)
    rows = [f"{sample_id('test', i)}_class_{c}" for i in range(counts["test"]) for c in range(len(CLASSES))]
    write_csv(out / "sample_submission.csv", pd.DataFrame({"id": rows, "mask_rle": "-1"}))


def generate(
    out: str | os.PathLike,
    preset: str = "demo",
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    cameras: Cameras = Cameras(),
    counts: dict[str, int] | None = None,
    progress: bool = True,
) -> dict:
    """Write a dataset to ``out`` and return its statistics (also saved as ``stats.json``).

    ``counts`` overrides the preset's number of images per split. Refuses an ``out`` that
    holds files unless ``overwrite``; then only the files this generator writes are replaced.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    counts = dict(PRESETS[preset].counts, **(counts or {}))
    out = prepare_output_dir(out, overwrite)
    for name in OUTPUTS:  # an overwritten run leaves no images of the earlier one behind
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    start = time.perf_counter()
    tasks = [_Task(str(out), s, i, seed, preset, cameras) for s in SPLITS for i in range(counts[s])]
    histograms = {s: np.zeros(256, np.int64) for s in SPLITS}
    moments = {d: [np.zeros(3), np.zeros(3), 0] for d in ("source", "target")}
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(multiprocessing.get_context().Pool(workers, initializer=_init_worker))
            results = pool.imap_unordered(_run_task, tasks, chunksize=4)
        else:  # in this process: easier to debug and profile
            _init_worker()
            results = map(_run_task, tasks)
        bar = tqdm(results, total=len(tasks), desc=f"synth {preset}", unit="img", disable=not progress)
        for split, hist, total, squares in bar:
            histograms[split] += hist
            m = moments["source" if split in SOURCE_SPLITS else "target"]
            m[0] += total
            m[1] += squares
            m[2] += int(hist.sum())
    write_csvs(out, counts)
    stats = _stats(preset, seed, counts, histograms, moments, time.perf_counter() - start)
    write_json(out / "stats.json", stats)
    return stats


def _stats(
    preset: str,
    seed: int,
    counts: dict[str, int],
    histograms: dict[str, np.ndarray],
    moments: dict[str, list],
    seconds: float,
) -> dict:
    """Per-class pixel share of all pixels per split (255 as "background") and per-domain mean/std."""
    share = {}
    for split, hist in histograms.items():
        total = max(int(hist.sum()), 1)
        share[split] = {name: round(float(hist[c]) / total, 6) for c, name in enumerate(CLASSES)}
        share[split]["background"] = round(float(hist[IGNORE_INDEX]) / total, 6)
    domains = {}
    for domain, (total, squares, pixels) in moments.items():
        mean = total / max(pixels, 1)
        std = np.sqrt(np.maximum(squares / max(pixels, 1) - mean**2, 0))
        domains[domain] = {"mean": [round(float(v), 4) for v in mean], "std": [round(float(v), 4) for v in std]}
    return {
        "preset": preset,
        "seed": seed,
        "counts": counts,
        "seconds": round(seconds, 1),
        "class_share": share,
        "domain_rgb": domains,
    }


def format_report(stats: dict) -> str:
    """The stats as a short text table (percent of pixels)."""
    splits = list(stats["class_share"])
    lines = [f"{'class':<14}" + "".join(f"{s:>14}" for s in splits)]
    for name in [*CLASSES, "background"]:
        lines.append(f"{name:<14}" + "".join(f"{100 * stats['class_share'][s][name]:>13.2f}%" for s in splits))
    for domain, values in stats["domain_rgb"].items():
        lines.append(f"{domain} RGB mean {values['mean']} std {values['std']}")
    lines.append(f"{sum(stats['counts'].values())} images in {stats['seconds']} s")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit.synth", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="dataset directory to create (must be empty or new)")
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--overwrite", action="store_true", help="replace this generator's files in --out")
    parser.add_argument("--bonnet-ignore", action="store_true", help="label the source bonnet 255, not Sky")
    parser.add_argument("--fisheye-model", default=Cameras.fisheye_projection)
    parser.add_argument("--fisheye-fov", type=float, default=Cameras.fisheye_fov)
    parser.add_argument("--mounts", default=",".join(Cameras.fisheye_mounts), help="comma-separated: front,rear")
    parser.add_argument("--no-preview", action="store_true", help="skip preview.png")
    args = parser.parse_args(argv)
    try:  # fail on bad camera settings before starting workers
        cameras = Cameras(
            bonnet_as_sky=not args.bonnet_ignore,
            fisheye_projection=args.fisheye_model,
            fisheye_fov=args.fisheye_fov,
            fisheye_mounts=tuple(m.strip() for m in args.mounts.split(",")),
        )
        fisheye_camera(*PRESETS[args.preset].target_size, cameras.fisheye_fov, cameras.fisheye_projection)
    except ValueError as error:
        parser.error(str(error))
    try:
        stats = generate(args.out, args.preset, args.seed, args.workers, args.overwrite, cameras)
    except FileExistsError as error:  # the message speaks to notebooks; say the flag too
        parser.error(f"{error} (here: --overwrite)")
    print(format_report(stats))
    if not args.no_preview:
        from kit.viz import save_dataset_preview

        save_dataset_preview(args.out, Path(args.out) / "preview.png")
        print(f"preview: {Path(args.out) / 'preview.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
