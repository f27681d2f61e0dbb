"""Scene sampling for :mod:`kit.synth`: a random street of road, sidewalks, buildings, poles, signals,
signs, trees, fences and traffic (:func:`sample_scene`), with the colours it draws from."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kit.synth.geometry import (
    CABIN,
    CAR,
    CONSTRUCTION,
    FACADE,
    FENCE,
    FENCE_BARS,
    FOLIAGE,
    GROUND,
    LAMPS,
    LIGHT,
    NATURE,
    PAINT,
    PAVING,
    PERSON,
    PLAIN,
    POLE,
    RIDER,
    ROAD,
    SIDEWALK,
    SIGN,
    SIGN_FACE,
    Box,
    Cylinder,
    Material,
    Scene,
    Shape,
    Sphere,
    Thing,
)

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
