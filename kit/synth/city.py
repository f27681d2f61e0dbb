"""Scene sampling for :mod:`kit.synth`: a random street of road, sidewalks, buildings, poles, signals,
signs, trees, fences and traffic (:func:`sample_scene`), built from :mod:`kit.synth.things`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kit.synth.geometry import (
    CONSTRUCTION,
    FACADE,
    FENCE,
    FENCE_BARS,
    FOLIAGE,
    GROUND,
    NATURE,
    PAVING,
    PLAIN,
    POLE,
    ROAD,
    SIDEWALK,
    Box,
    Cylinder,
    Material,
    Scene,
    Shape,
    Thing,
)
from kit.synth.things import (
    FACADE_COLOURS,
    car,
    grey,
    jitter,
    person,
    rider,
    sign_material,
    signal_post,
    street_light,
    traffic_light,
    tree,
)

# ----------------------------------------------------------------------------------------------
# Scene sampling: a straight street along +y, ego car at the origin in a right-hand lane


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
    verge: tuple[float, float] = (0.0, 0.0)  # grass strip between curb and paving, left and right (0: none)

    def curb(self, side: int) -> float:
        return self.centre + side * self.half_road

    def lane_x(self, lane: int) -> float:
        """Centre of ``lane``: 0.. on the ego's side of the centre line, negative for oncoming lanes."""
        offset = (lane + 0.5) * self.lane_w
        return self.centre + (self.median + offset if lane >= 0 else -self.median + offset)


# Along the street (y): where each camera sees things large. The fisheyes sit on the grille (y ≈ 0.1,
# looking ahead) or the tailgate (y ≈ -4.6, looking back) and see 10° behind their sides; the dash camera
# (y = -2, 80° wide) sees nothing at the ego's side. Things "beside" the ego are the fisheye's own.
BESIDE = ((-10.0, -5.0), (-0.5, 1.0))


def _near(rng: np.random.Generator, far: tuple[float, float], ahead: tuple[float, float],
          p: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)) -> float:
    """A y along the street: anywhere in ``far``, in ``ahead`` (where the dash camera sees things large)
    or :data:`BESIDE` the ego, with probabilities ``p``."""
    where = int(rng.choice(3, p=p))
    lo, hi = (far, ahead, BESIDE[int(rng.integers(2))])[where]
    return float(rng.uniform(lo, hi))


def _box_thing(lo: Sequence[float], hi: Sequence[float], material: Material) -> Thing:
    """An axis-aligned box from corner ``lo`` to corner ``hi``."""
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    return Thing([(Box(tuple((lo + hi) / 2), tuple((hi - lo) / 2)), material)])


def _facade_material(rng: np.random.Generator, far: bool = False) -> Material:
    """Wall colour and a window grid: floor height, column width, window width/height share, glass, phase."""
    colour = jitter(rng, FACADE_COLOURS[rng.integers(len(FACADE_COLOURS))], 0.1)
    if far:  # distant skyline blocks: any regular grid will do
        return Material(CONSTRUCTION, colour, FACADE, (3.2, 3.0, 0.5, 0.5, 1.0, 0.0))
    grid = (rng.uniform(2.8, 3.6), rng.uniform(2.0, 4.0), rng.uniform(0.35, 0.75), rng.uniform(0.4, 0.7))
    return Material(CONSTRUCTION, colour, FACADE, (*grid, float(rng.integers(3)), rng.uniform(0, 3)))


def _roadside(rng: np.random.Generator, street: Street, side: int) -> list[Thing]:
    """One side of the street: buildings and empty lots (grass, trees, fences), a far skyline,
    street lights, standalone signs and sidewalk trees."""
    things: list[Thing] = []
    width = street.sidewalk[(side + 1) // 2]
    line = street.curb(side) + side * (width + rng.uniform(0.0, 0.5))  # building line
    curb = street.curb(side) + side * 0.6  # where poles stand
    y = rng.uniform(-190, -160)
    while y < 260:
        span = rng.uniform(8, 32)
        if rng.random() < 0.15:  # an empty lot: a fence or a hedge, trees
            if rng.random() < 0.2:
                bars = (rng.uniform(0.1, 0.3), 0.5)
                fence = Material(FENCE, jitter(rng, (0.5, 0.5, 0.48), 0.2), FENCE_BARS, bars)
                height = rng.uniform(0.9, 1.6)
                things.append(_box_thing((line - 0.03, y, 0), (line + 0.03, y + span, height), fence))
            else:
                hedge = Material(NATURE, jitter(rng, (0.18, 0.32, 0.1), 0.2), FOLIAGE, (rng.uniform(4, 7),))
                things.append(_box_thing((line, y, 0), (line + side * 0.8, y + span, rng.uniform(0.8, 1.8)), hedge))
            for _ in range(int(rng.integers(1, 5))):
                things.append(tree(rng, line + side * rng.uniform(2, 8), y + rng.uniform(0, span), 0.0, (2.0, 4.0)))
        else:
            storeys = rng.choice(3, p=[0.05, 0.45, 0.5])
            height = (rng.uniform(8, 16), rng.uniform(25, 50), rng.uniform(40, 100))[storeys]
            depth = rng.uniform(10, 25)
            facade = _facade_material(rng)
            things.append(_box_thing((line, y, 0), (line + side * depth, y + span, height), facade))
        y += span + (rng.uniform(0.5, 6) if rng.random() < 0.25 else 0.0)
    if side > 0:  # the street turns far ahead and/or behind: a row of buildings across it
        for direction in [d for d in (-1, 1) if rng.random() < 0.5]:
            y_end = direction * rng.uniform(140, 220)
            x0 = street.centre - 80.0
            while x0 < street.centre + 80.0:
                span = rng.uniform(15, 40)
                things.append(_box_thing((x0, y_end, 0), (x0 + span, y_end + direction * 20, rng.uniform(5, 25)),
                                         _facade_material(rng)))
                x0 += span
    for direction in (-1, 1):  # far skyline, so the street does not end in open sky
        y_far = 280.0 * direction
        for _ in range(3):
            span, height = rng.uniform(60, 150), rng.uniform(20, 70)
            far = _facade_material(rng, far=True)
            corner = (line + side * 40, y_far + direction * span, height)
            things.append(_box_thing((line, y_far, 0), corner, far))
            y_far += direction * span

    y = rng.uniform(-110, -80)
    while y < 160:
        things.append(street_light(rng, curb, y, -side, rng.random() < 0.2))
        y += rng.uniform(22, 34)
    for _ in range(int(rng.integers(2, 7))):  # standalone signs, most of them beside the ego
        y = _near(rng, (-60, 90), (0, 20), (0.3, 0.05, 0.65))
        h, half, round_ = rng.uniform(2.0, 2.8), rng.uniform(0.3, 0.45), rng.random() < 0.5
        across = rng.random() < 0.5  # facing the street (seen side-on by the cameras), not the traffic
        plate = sign_material(rng, (y if across else curb, h), half, round_, across)
        axis = (1, 0, 0) if across else (0, 1, 0)
        centre = (curb - side * 0.08, y, h) if across else (curb, y - 0.08, h)
        if round_:
            face: Shape = Cylinder(centre, axis, half, 0.04)
        else:
            face = Box(centre, (0.02, half, half) if across else (half, 0.02, half))
        post = Material(POLE, grey(0.55), PLAIN, (0.1, 3.0))
        things.append(Thing([(Cylinder((curb, y, 0.0), (0, 0, 1), 0.05, h + 0.3), post), (face, plate)]))
    verge = street.verge[(side + 1) // 2]
    at_kerb = verge or rng.random() < 0.75  # tall crowns over the road, or at the back of the sidewalk
    tree_x = street.curb(side) + side * ((verge / 2 or 0.7) if at_kerb else width - 0.9)
    if rng.random() < 0.9:  # an avenue: a row of large street trees along the curb
        y, gap = rng.uniform(-70, -50), rng.uniform(5, 9)
        while y < 110:
            if rng.random() < 0.85:
                things.append(tree(rng, tree_x, y, 0.15, *(((3.0, 5.5), (4.0, 6.0)) if at_kerb else ((2.5, 4.5), (2.0, 3.5)))))
            y += gap * rng.uniform(0.8, 1.2)
    else:
        for _ in range(int(rng.integers(1, 8))):
            things.append(tree(rng, tree_x, rng.uniform(-80, 120), 0.15))
    return things


def _free(taken: list[tuple[float, float]], x: float, y: float, dx: float, dy: float) -> bool:
    return all(abs(x - tx) > dx or abs(y - ty) > dy for tx, ty in taken)


def _traffic(rng: np.random.Generator, street: Street) -> list[Thing]:
    """Cars in the lanes and parked at the curbs, pedestrians on the sidewalks and crossings, riders
    along the road edges and in the lanes; many of them close to the ego, where both cameras see
    them large (a fisheye close to the kerb sees a passer-by at a few metres)."""
    things: list[Thing] = []
    taken: list[tuple[float, float]] = [(0.0, 0.0), (0.0, -2.3)]  # the ego's own place
    for side in (-1, 1):  # rows of parked cars along the curbs
        if rng.random() < 0.4:
            x, y = street.curb(side) - side * 1.1, rng.uniform(-40, -25)
            while y < 70:
                if rng.random() < 0.7 and _free(taken, x, y, 2.5, 5.5):
                    taken.append((x, y))
                    things.append(car(rng, x, y, (0.0 if side > 0 else math.pi) + rng.normal(0, 0.03)))
                y += rng.uniform(5.5, 8.0)
    for _ in range(int(rng.integers(10, 21))):
        lane = int(rng.integers(-street.lanes, street.lanes))
        # half of them close by, where the fisheye sees them large
        x, y = street.lane_x(lane), _near(rng, (-60, 80), (-25, 30), (0.25, 0.25, 0.5))
        if not _free(taken, x, y, 2.5, 7.5):
            continue
        taken.append((x, y))
        heading = 0.0 if lane >= 0 else math.pi  # right-hand traffic
        things.append(car(rng, x, y, heading + rng.normal(0, 0.03)))
    for _ in range(int(rng.integers(12, 29))):  # far, ahead and (half of them) beside the ego
        side = int(rng.choice([-1, 1]))
        x = street.curb(side) + side * rng.uniform(0.5, street.sidewalk[(side + 1) // 2] - 0.4)
        y = _near(rng, (-50, 70), (0, 14), (0.3, 0.2, 0.5))
        things.append(Thing(person(rng, x, y, 0.15)))
    if abs(street.crosswalk) < 100:
        for _ in range(int(rng.integers(1, 6))):
            x = street.centre + rng.uniform(-street.half_road, street.half_road)
            things.append(Thing(person(rng, x, street.crosswalk + rng.uniform(0.5, 3.5), 0.0)))
    for _ in range(int(rng.integers(6, 15))):
        if rng.random() < 0.7:  # along a road edge
            side = int(rng.choice([-1, 1]))
            x = street.curb(side) - side * rng.uniform(0.7, 1.5)
        else:  # in a lane, among the cars
            side, x = 1, street.lane_x(int(rng.integers(-street.lanes, street.lanes)))
        y = _near(rng, (-30, 45), (0, 20), (0.2, 0.35, 0.45))
        if _free(taken, x, y, 1.8, 4.0):
            taken.append((x, y))
            things.append(rider(rng, x, y, float(side)))
    return things


def sample_scene(rng: np.random.Generator) -> Scene:
    """A random street: road, sidewalks, buildings, poles, signals, signs, trees, fences, traffic."""
    lanes, lane_w = int(rng.choice([2, 3, 4], p=[0.25, 0.4, 0.35])), rng.uniform(3.1, 3.6)
    median_fence = rng.random() < 0.2
    median = 0.15 if median_fence else 0.0
    ego_lane = lanes - 1 if rng.random() < 0.6 else int(rng.integers(lanes))  # often the kerb lane
    sidewalks = (rng.uniform(3.0, 6.0), rng.uniform(3.0, 6.0))
    street = Street(
        centre=-median - (ego_lane + 0.5) * lane_w,
        half_road=median + lanes * lane_w,
        lane_w=lane_w,
        lanes=lanes,
        median=median,
        sidewalk=sidewalks,
        crosswalk=rng.uniform(10, 35) * rng.choice([-1, 1]) if rng.random() < 0.5 else 1e4,
        verge=tuple(rng.uniform(0.8, 1.6) if w >= 3.0 and rng.random() < 0.15 else 0.0 for w in sidewalks),
    )
    dash_phase = rng.uniform(0, 12)
    ground = Material(
        ROAD,
        jitter(rng, (0.36, 0.36, 0.37), 0.12),
        GROUND,
        (street.centre, street.half_road, lane_w, median, float(median_fence), street.crosswalk, dash_phase, lanes),
    )
    paving_colour = [(0.6, 0.58, 0.55), (0.62, 0.5, 0.45), (0.55, 0.56, 0.58)][rng.integers(3)]
    paving = Material(SIDEWALK, jitter(rng, paving_colour, 0.08), PAVING, (rng.uniform(0.3, 0.6),))
    things = [
        _box_thing((street.curb(side) + side * verge, -1500.0, 0.0), (street.curb(side) + side * width, 1500.0, 0.15),
                   paving)
        for side, width, verge in ((-1, street.sidewalk[0], street.verge[0]), (1, street.sidewalk[1], street.verge[1]))
    ]
    grass = Material(NATURE, jitter(rng, (0.25, 0.38, 0.14), 0.15), PLAIN, (0.35, 9.0))
    things += [_box_thing((street.curb(side), -1500.0, 0.0), (street.curb(side) + side * verge, 1500.0, 0.12), grass)
               for side, verge in ((-1, street.verge[0]), (1, street.verge[1])) if verge]
    if median_fence:  # Korean median fences: white-yellow posts, open at the crossing
        rail = Material(FENCE, jitter(rng, (0.85, 0.8, 0.55), 0.1), FENCE_BARS, (0.25, 1.0))
        height = rng.uniform(0.8, 1.2)
        gap = street.crosswalk if abs(street.crosswalk) < 100 else rng.uniform(60, 150)
        for y0, y1 in ((-400.0, gap - 2.0), (gap + 6.0, 600.0)):
            things.append(_box_thing((street.centre - 0.04, y0, 0.0), (street.centre + 0.04, y1, height), rail))
    for side in (-1, 1):  # pedestrian railings along the kerb, past the ego
        if rng.random() < 0.12:
            rail = Material(FENCE, jitter(rng, (0.75, 0.75, 0.72), 0.15), FENCE_BARS, (rng.uniform(0.12, 0.25), 1.0))
            y0 = rng.uniform(-20, -10)
            x = street.curb(side) + side * 0.3
            things.append(_box_thing((x - 0.03, y0, 0.15), (x + 0.03, y0 + rng.uniform(10, 20), 1.1), rail))
    things += _roadside(rng, street, -1) + _roadside(rng, street, 1)
    if rng.random() < 0.85:  # signal gantries over the ego's direction of travel and/or the opposite one
        for _ in range(int(rng.integers(1, 3))):
            y, side = rng.uniform(6, 30) * rng.choice([-1, 1]), int(rng.choice([-1, 1]))
            end = street.centre + side * (median + 0.5)
            things.append(traffic_light(rng, street.curb(side) + side * 0.5, y, end))
            for kerb in (-1, 1):  # kerbside signals at the stop line, facing the traffic that stops there
                if rng.random() < 0.85:
                    things.append(signal_post(rng, street.curb(kerb) + kerb * 0.4, y + rng.uniform(-2, 2),
                                               -1.0 if y > 0 else 1.0))
    if rng.random() < 0.75:  # the ego waits at a stop line: kerbside signals beside it
        for kerb in (-1, 1):
            lo, hi = BESIDE[int(rng.integers(2))]
            things.append(signal_post(rng, street.curb(kerb) + kerb * 0.4, rng.uniform(lo, hi), -1.0))
    if abs(street.crosswalk) < 100:  # signals for both directions at the crossing
        for kerb in (-1, 1):
            for facing in (-1.0, 1.0):
                if rng.random() < 0.6:
                    things.append(signal_post(rng, street.curb(kerb) + kerb * 0.5,
                                               street.crosswalk + (4.5 if facing > 0 else -0.5), facing))
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
        sky_zenith=np.array(jitter(rng, zenith, 0.1), np.float32),
        sky_horizon=np.array(jitter(rng, horizon, 0.05), np.float32),
        cloud_cover=rng.uniform(0.5, 0.9) if overcast else rng.uniform(0.0, 0.5),
        visibility=rng.uniform(150, 400),
    )
