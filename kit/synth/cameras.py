"""The cameras of :mod:`kit.synth`, the geometric half of the domain gap: :class:`Cameras` (the knobs:
field of view, fisheye projection and circle, mounts, pitch and jitter) and the rigs that place a
pinhole dash camera (with its bonnet) or a fisheye (with the ego body) on the ego car."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from kit.competition.labels import IGNORE_INDEX
from kit.data.fisheye import DEFAULT_CIRCLE
from kit.synth.geometry import PAINT, PLAIN, SKY, Box, Material, Sphere, Thing
from kit.synth.things import CAR_COLOURS, grey, jitter


@dataclass(frozen=True)
class Cameras:
    """Camera parameters of both domains (angles in degrees, positions in metres)."""

    source_hfov: float = 80.0  # pinhole horizontal field of view
    bonnet_as_sky: bool = True  # reproduce the real labels' defect; False labels the bonnet 255
    fisheye_fov: float = 200.0
    fisheye_projection: str = "equidistant"  # any name in kit.data.projections.MODELS
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
    paint = Material(label, jitter(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))], 0.1), PAINT)
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
    paint = Material(IGNORE_INDEX, jitter(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))], 0.1), PAINT)
    bumpers = Material(IGNORE_INDEX, grey(0.12), PLAIN, (0.2, 4.0))
    body = Thing([
        (Box((0.0, -2.25, 0.85), (0.92, 2.25, 0.6)), paint),
        (Box((0.0, -2.25, 0.4), (0.95, 2.37, 0.18)), bumpers),
    ])  # fmt: skip
    return pose, body
