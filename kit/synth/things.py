"""The things of :mod:`kit.synth`'s streets: cars, people, riders, trees, street lights, signs and
signals, each a :class:`kit.synth.geometry.Thing` of shapes and materials, with the colours they draw from."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from kit.synth.geometry import (
    CABIN,
    CAR,
    FOLIAGE,
    LAMPS,
    LIGHT,
    NATURE,
    PAINT,
    PERSON,
    PLAIN,
    POLE,
    RIDER,
    SIGN,
    SIGN_FACE,
    Box,
    Cylinder,
    Material,
    Shape,
    Sphere,
    Thing,
)


def grey(value: float) -> tuple[float, float, float]:
    return (value, value, value)


def jitter(rng: np.random.Generator, colour: Sequence[float], amount: float) -> tuple[float, float, float]:
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
HOUSINGS = [(0.08, 0.08, 0.08), (0.75, 0.6, 0.1), (0.1, 0.2, 0.12)]  # signal heads: black, yellow, dark green
SKIN = [(0.85, 0.68, 0.55), (0.62, 0.45, 0.33), (0.4, 0.28, 0.2)]


def car(rng: np.random.Generator, x: float, y: float, yaw: float) -> Thing:
    """Body, cabin and four wheels; sizes from small hatchback to SUV/van."""
    length, width = rng.uniform(4.0, 5.0), rng.uniform(1.7, 1.95)
    body_top, cabin_top = rng.uniform(0.9, 1.15), rng.uniform(1.4, 1.9)
    paint = Material(CAR, jitter(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))], 0.1), PAINT)
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
    tyre = Material(CAR, grey(0.06), PLAIN, (0.3, 4.0))
    for forward in (-0.32 * length, 0.32 * length):
        for side in (-1, 1):
            base = at(forward, side * width / 2, 0.33)
            parts.append((Cylinder(base, (-side * c, -side * s, 0.0), 0.33, 0.22), tyre))
    return Thing(parts)


def person(
    rng: np.random.Generator, x: float, y: float, z: float, label: int = PERSON
) -> list[tuple[Shape, Material]]:
    """Legs, torso and head standing on height ``z``; riders reuse it sitting higher."""
    scale = rng.uniform(0.85, 1.08)
    legs = Material(label, jitter(rng, CLOTHES[rng.integers(3)], 0.2), PLAIN, (0.2, 6.0))
    shirt = Material(label, jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 0.2), PLAIN, (0.2, 6.0))
    skin = Material(label, SKIN[rng.integers(len(SKIN))], PLAIN, (0.1, 6.0))
    return [
        (Box((x, y, z + 0.42 * scale), (0.17 * scale, 0.11 * scale, 0.42 * scale)), legs),
        (Cylinder((x, y, z + 0.8 * scale), (0, 0, 1), 0.2 * scale, 0.66 * scale), shirt),
        (Sphere((x, y, z + 1.58 * scale), 0.12 * scale), skin),
    ]


def rider(rng: np.random.Generator, x: float, y: float, heading: float) -> Thing:
    """A bicycle or motorbike along ±y with a person on it; all of it is Rider (as Cityscapes)."""
    motor = rng.random() < 0.5
    frame = Material(RIDER, jitter(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))], 0.2), PAINT)
    tyre = Material(RIDER, grey(0.07), PLAIN, (0.3, 4.0))
    radius, half_width = (0.3, 0.07) if motor else (0.34, 0.025)
    parts: list[tuple[Shape, Material]] = [
        (Cylinder((x - half_width, y + sign * 0.6, radius), (1, 0, 0), radius, 2 * half_width), tyre)
        for sign in (-1, 1)
    ]
    body = (0.2, 0.55, 0.2) if motor else (0.03, 0.5, 0.05)
    parts.append((Box((x, y, radius + body[2] + 0.05), body), frame))
    parts += person(rng, x, y - 0.1 * heading, 0.45, RIDER)
    return Thing(parts)


def tree(rng: np.random.Generator, x: float, y: float, z: float, crown: tuple[float, float] = (1.3, 3.0),
          trunk: tuple[float, float] = (1.8, 3.5)) -> Thing:
    """A trunk of height drawn from ``trunk`` and a round crown of radius drawn from ``crown`` (metres)."""
    trunk_h, crown = rng.uniform(*trunk), rng.uniform(*crown)
    bark = Material(NATURE, jitter(rng, (0.3, 0.22, 0.15), 0.2), PLAIN, (0.35, 8.0))
    leaves = Material(NATURE, jitter(rng, (0.2, 0.36, 0.12), 0.25), FOLIAGE, (rng.uniform(3, 6),))
    return Thing([
        (Cylinder((x, y, z), (0, 0, 1), rng.uniform(0.1, 0.2), trunk_h + crown * 0.5), bark),
        (Sphere((x, y, z + trunk_h + crown * 0.8), crown), leaves),
    ])  # fmt: skip


def street_light(rng: np.random.Generator, x: float, y: float, towards: float, with_sign: bool) -> Thing:
    """Pole at the curb with an arm over the road (``towards`` = ±1 in x) and a lamp head."""
    height = rng.uniform(7.0, 9.5)
    metal = Material(POLE, grey(rng.uniform(0.4, 0.62)), PLAIN, (0.15, 3.0))
    arm = rng.uniform(1.2, 2.5)
    parts: list[tuple[Shape, Material]] = [
        (Cylinder((x, y, 0.0), (0, 0, 1), rng.uniform(0.08, 0.13), height), metal),
        (Box((x + towards * arm / 2, y, height - 0.1), (arm / 2, 0.05, 0.05)), metal),
        (Box((x + towards * arm, y, height - 0.2), (0.3, 0.15, 0.1)), metal),
    ]
    if with_sign:
        centre = (x + towards * 0.1, 2.8)
        plate = sign_material(rng, centre, 0.3, False)
        parts.append((Box((centre[0], y - 0.12, centre[1]), (0.3, 0.02, 0.3)), plate))
    return Thing(parts)


def sign_material(
    rng: np.random.Generator, centre: tuple[float, float], half: float, round_: bool, across: bool = False
) -> Material:
    """A plate centred at ``centre`` (x, z) facing ±y, or (y, z) facing ±x when ``across``: face colour
    with a border ring."""
    colour, border = SIGN_COLOURS[rng.integers(len(SIGN_COLOURS))]
    return Material(SIGN, colour, SIGN_FACE, (*border, *centre, half, float(round_), float(across)))


def signal_housing(rng: np.random.Generator, params: tuple[float, ...]) -> Material:
    """A signal head's housing: black most often, else yellow or dark green, with its lamps; ``params``
    are the head's centre (x, z), its lit lamp (0 red, 1 amber, 2 green), its centre y, 1 for a vertical
    head, and the half sizes of the faces with lamps: along the lamps, across them on ±y, across on ±x."""
    colour = HOUSINGS[int(rng.choice(len(HOUSINGS), p=[0.5, 0.3, 0.2]))]
    return Material(LIGHT, jitter(rng, colour, 0.1), LAMPS, params)


def traffic_light(rng: np.random.Generator, x_pole: float, y: float, x_end: float) -> Thing:
    """Korean-style gantry: pole, arm over the lanes, horizontal signal heads with lamps on both faces
    (±y: heads back to back, as over a two-way street)."""
    height = rng.uniform(5.5, 7.0)
    metal = Material(POLE, grey(rng.uniform(0.45, 0.6)), PLAIN, (0.15, 3.0))
    parts: list[tuple[Shape, Material]] = [
        (Cylinder((x_pole, y, 0.0), (0, 0, 1), 0.15, height + 0.3), metal),
        (Box(((x_pole + x_end) / 2, y, height), (abs(x_end - x_pole) / 2, 0.07, 0.08)), metal),
    ]
    heads = int(rng.integers(1, 4))
    for k in range(heads):
        cx = x_end + (x_pole - x_end) * (0.1 + 0.35 * k)
        lit = float(rng.integers(3))
        half = (0.65, 0.2, 0.24)  # the lamps' row along x, the faces with lamps ±y
        housing = signal_housing(rng, (cx, height - 0.35, lit, y, 0.0, half[0], half[2], 0.0))
        parts.append((Box((cx, y, height - 0.35), half), housing))
    if rng.random() < 0.4:
        centre = (x_pole + (x_end - x_pole) * 0.75, height + 0.05)
        sign = Material(SIGN, (0.1, 0.3, 0.72), SIGN_FACE, (0.95, 0.95, 0.95, *centre, 0.3, 0.0))
        parts.append((Box((centre[0], y, centre[1]), (0.9, 0.03, 0.3)), sign))
    return Thing(parts)


def signal_post(rng: np.random.Generator, x: float, y: float, facing: float) -> Thing:
    """A kerbside signal: a 3 m post with a vertical three-lamp head facing ``facing`` (±1 y), lamps on all
    four sides (the crossing's heads too), as at crossings, sometimes with a sign under it; close to the
    kerb, so near cameras see it large."""
    height = rng.uniform(2.6, 3.4)
    metal = Material(POLE, grey(rng.uniform(0.35, 0.6)), PLAIN, (0.15, 3.0))
    centre = height + 0.55
    half = (0.22, 0.18, 0.65)  # the lamps' column along z, on all four sides
    housing = signal_housing(rng, (x, centre, float(rng.integers(3)), y + facing * 0.2, 1.0, half[2], half[0], half[1]))
    parts: list[tuple[Shape, Material]] = [
        (Cylinder((x, y, 0.0), (0, 0, 1), rng.uniform(0.07, 0.1), height + 1.1), metal),
        (Box((x, y + facing * 0.2, centre), half), housing),
    ]
    if rng.random() < 0.4:
        plate = sign_material(rng, (x, height - 0.5), 0.35, bool(rng.random() < 0.5))
        parts.append((Box((x, y + facing * 0.1, height - 0.5), (0.35, 0.02, 0.35)), plate))
    return Thing(parts)
