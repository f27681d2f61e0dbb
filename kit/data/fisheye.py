"""Cameras and warps: :class:`CameraModel` turns a radial projection model (``kit.data.projections``)
into pixel ↔ ray-direction maps in the OpenCV camera frame (x right, y down, z forward), which is what
the synthetic-data ray caster needs; cached pinhole → fisheye ``cv2.remap`` maps
(:func:`pinhole_to_fisheye_maps`) and a labelled pseudo-fisheye split warped from a source split
(:func:`make_fisheye_split`). The fisheye border of real target images lives in ``kit.data.border``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from kit.common.files import write_csv, write_image
from kit.common.progress import tqdm
from kit.competition.labels import IGNORE_INDEX
from kit.competition.layout import read_image, read_label, read_split
from kit.data.projections import MODELS, ProjectionModel, get_model

# Image-circle semi-axes as fractions of (W/2, H/2) in a 16:9 frame: the frame cuts the circle at
# top and bottom, as in the competition's fisheye frames.
DEFAULT_CIRCLE = (0.96, 1.25)


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics of a radial camera; pixel coordinates follow OpenCV (pixel (col, row) centre = (u, v)).

    ``fx``/``fy`` scale the model's radius (at f = 1) to pixels, so fx ≠ fy gives the elliptical
    image circle seen in the competition's fisheye frames. Pixels whose angle exceeds
    ``fov_deg / 2`` are outside the image circle.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    projection: ProjectionModel
    fov_deg: float

    def __post_init__(self) -> None:
        limit = np.degrees(2 * self.projection.theta_max)
        if not 0 < self.fov_deg < limit:
            raise ValueError(
                f"field of view {self.fov_deg}° is outside what the {self.projection.name} model "
                f"can image; expected 0 < fov < {limit:g}°"
            )

    def unproject(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixels → unit ray directions ``(..., 3)`` and a mask of pixels inside the field of view."""
        x = (np.asarray(u, dtype=np.float64) - self.cx) / self.fx
        y = (np.asarray(v, dtype=np.float64) - self.cy) / self.fy
        r = np.hypot(x, y)
        theta = self.projection.inverse(r, 1.0)
        valid = np.isfinite(theta) & (theta <= np.radians(self.fov_deg) / 2)
        theta = np.where(valid, theta, 0.0)
        # at r = 0 the azimuth is undefined; any value gives the optical axis
        scale = np.divide(np.sin(theta), r, out=np.ones_like(r), where=r > 0)
        dirs = np.stack([x * scale, y * scale, np.cos(theta)], axis=-1)  # (..., 3)
        return dirs, valid

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Camera-frame points ``(N, 3)`` → pixels ``(N, 2)`` (u, v) and a mask of points inside the FOV."""
        points = np.asarray(points, dtype=np.float64)
        rho = np.hypot(points[:, 0], points[:, 1])
        theta = np.arctan2(rho, points[:, 2])
        valid = theta <= np.radians(self.fov_deg) / 2
        r = self.projection.forward(np.where(valid, theta, 0.0), 1.0)
        cos_phi = np.divide(points[:, 0], rho, out=np.zeros_like(rho), where=rho > 0)
        sin_phi = np.divide(points[:, 1], rho, out=np.zeros_like(rho), where=rho > 0)
        uv = np.stack([self.cx + self.fx * r * cos_phi, self.cy + self.fy * r * sin_phi], axis=1)
        return uv, valid

    def pixel_rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Ray directions ``float32 (H, W, 3)`` for every pixel centre and the ``(H, W)`` in-FOV mask."""
        v, u = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64)
        dirs, valid = self.unproject(u, v)
        return dirs.astype(np.float32), valid


def pinhole_camera(width: int, height: int, hfov_deg: float) -> CameraModel:
    """A rectilinear camera with square pixels and horizontal field of view ``hfov_deg``."""
    if not 0 < hfov_deg < 180:
        raise ValueError(f"pinhole horizontal FOV {hfov_deg}° must be in (0, 180)")
    f = (width / 2) / np.tan(np.radians(hfov_deg) / 2)
    # the field of view is the frame's diagonal, so every pixel is inside it
    diagonal = 2 * np.degrees(np.arctan(np.hypot(width / 2, height / 2) / f))
    return CameraModel(
        width=width,
        height=height,
        fx=f,
        fy=f,
        cx=(width - 1) / 2,
        cy=(height - 1) / 2,
        projection=MODELS["rectilinear"],
        fov_deg=float(diagonal) + 1e-6,
    )


def fisheye_camera(
    width: int,
    height: int,
    fov_deg: float = 200.0,
    projection: str = "equidistant",
    circle: tuple[float, float] = DEFAULT_CIRCLE,
    k: tuple[float, float, float, float] | None = None,
) -> CameraModel:
    """A fisheye whose image circle (θ = fov/2) has semi-axes ``circle`` × (W/2, H/2) pixels.

    A semi-axis above 1 lets the frame cut the circle, as in the competition's 16:9 fisheye
    frames, whose dark border is widest in the corners.
    """
    model = get_model(projection, k)
    edge = float(model.forward(np.radians(fov_deg) / 2, 1.0))
    if not np.isfinite(edge) or edge <= 0:  # a field of view ≤ 0, or coefficients k that fold the circle back
        raise ValueError(f"the {projection} model's radius at θ = fov / 2 = {fov_deg / 2}° is {edge:g}; expected a "
                         f"finite positive radius (0 < fov < {np.degrees(2 * model.theta_max):g}°)")
    return CameraModel(
        width=width,
        height=height,
        fx=circle[0] * (width / 2) / edge,
        fy=circle[1] * (height / 2) / edge,
        cx=(width - 1) / 2,
        cy=(height - 1) / 2,
        projection=model,
        fov_deg=fov_deg,
    )


# --- Pinhole → fisheye warping -------------------------------------------------------------------
# Inverse mapping (REFERENCE.md §4): for every fisheye pixel, its ray, rotated into the pinhole
# camera's frame, is projected with the pinhole model; cv2.remap then samples the source there.


def rotation_matrix(yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0) -> np.ndarray:
    """``(3, 3)`` rotation from the fisheye camera frame to the pinhole frame (x right, y down, z forward).

    Positive yaw turns the fisheye to the right, positive pitch tilts it up, positive roll turns the
    image clockwise; applied roll, then pitch, then yaw.
    """
    y, p, r = np.radians([yaw_deg, pitch_deg, roll_deg])
    yaw = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    pitch = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    roll = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return yaw @ pitch @ roll


@dataclass(frozen=True)
class WarpMaps:
    """``cv2.remap`` maps ``float32 (H, W)`` into the source image, and ``valid (H, W)``: pixels
    inside the fisheye circle whose ray lands inside the pinhole image. Arrays are read-only
    because the maps are cached and shared."""

    map_x: np.ndarray
    map_y: np.ndarray
    valid: np.ndarray
    circle: np.ndarray  # inside the fisheye image circle, whether or not the source covers it

    @property
    def size(self) -> tuple[int, int]:
        return self.valid.shape[1], self.valid.shape[0]


@functools.lru_cache(maxsize=32)
def pinhole_to_fisheye_maps(
    src_size: tuple[int, int],
    src_hfov_deg: float,
    dst_size: tuple[int, int],
    model: str = "equidistant",
    fov_deg: float = 200.0,
    circle: tuple[float, float] = DEFAULT_CIRCLE,
    center: tuple[float, float] | None = None,
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
    roll_deg: float = 0.0,
    k: tuple[float, float, float, float] | None = None,
) -> WarpMaps:
    """Maps that warp a pinhole image of ``src_size = (W, H)`` and horizontal FOV ``src_hfov_deg``
    into a fisheye frame of ``dst_size = (W, H)``.

    The fisheye follows ``model`` (a name of :data:`MODELS`, ``k`` for Kannala–Brandt) with full
    field of view ``fov_deg``; its image circle has semi-axes ``circle`` × (W/2, H/2) and its optical
    centre is at ``center`` (pixels, default the frame centre). Cached: the same arguments return the
    same object at no cost, so pass tuples and floats.
    """
    camera = fisheye_camera(dst_size[0], dst_size[1], fov_deg=fov_deg, projection=model, circle=circle, k=k)
    if center is not None:
        camera = dataclasses.replace(camera, cx=float(center[0]), cy=float(center[1]))
    pinhole = pinhole_camera(src_size[0], src_size[1], src_hfov_deg)
    rays, circle_mask = camera.pixel_rays()  # (H, W, 3), (H, W)
    rays = rays.reshape(-1, 3).astype(np.float64) @ rotation_matrix(yaw_deg, pitch_deg, roll_deg).T
    uv, ahead = pinhole.project(rays)  # (N, 2); ahead: within the pinhole's field of view
    u, v = uv[:, 0], uv[:, 1]
    h, w = dst_size[1], dst_size[0]
    inside = ahead & (u >= -0.5) & (u <= src_size[0] - 0.5) & (v >= -0.5) & (v <= src_size[1] - 0.5)
    valid = circle_mask & inside.reshape(h, w)
    map_x = np.where(valid, u.reshape(h, w), -1.0).astype(np.float32)
    map_y = np.where(valid, v.reshape(h, w), -1.0).astype(np.float32)
    for array in (map_x, map_y, valid, circle_mask):
        array.setflags(write=False)
    return WarpMaps(map_x=map_x, map_y=map_y, valid=valid, circle=circle_mask)


def warp_image(image: np.ndarray, maps: WarpMaps) -> np.ndarray:
    """Bilinear warp of ``uint8 (H, W, 3)``; black outside ``maps.valid``."""
    out = cv2.remap(image, maps.map_x, maps.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out[~maps.valid] = 0
    return out


def warp_label(label: np.ndarray, maps: WarpMaps) -> np.ndarray:
    """Nearest-neighbour warp of ``uint8 (H, W)`` class ids; 255 outside ``maps.valid``."""
    out = cv2.remap(label, maps.map_x, maps.map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    out[~maps.valid] = IGNORE_INDEX
    return out


def warp_pair(image: np.ndarray, label: np.ndarray, maps: WarpMaps) -> tuple[np.ndarray, np.ndarray]:
    """Warp an image and its label together. Pixels outside ``maps.valid`` (outside the fisheye
    circle, or seeing what the pinhole did not) become black in the image and 255 in the label."""
    return warp_image(image, maps), warp_label(label, maps)


# --- A labelled pseudo-fisheye split -------------------------------------------------------------


def make_fisheye_split(
    src_csv: str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str = "pseudo_fisheye",
    src_hfov_deg: float = 90.0,
    dst_size: tuple[int, int] = (1920, 1080),
    model: str = "equidistant",
    fov_deg: float = 200.0,
    circle: tuple[float, float] = DEFAULT_CIRCLE,
    border: np.ndarray | None = None,
    limit: int | None = None,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Warp a labelled split (``src_csv``, e.g. ``<root>/val_source.csv``) into a labelled fisheye
    split in the competition layout: ``<out_dir>/<name>_image/``, ``<name>_gt/`` and ``<name>.csv``
    (id,img_path,gt_path), keeping the source ids. ``limit`` warps only the first images.

    ``border`` (``bool (H, W)`` at ``dst_size``, e.g. ``kit.data.border.estimate_border(...).inside`` of
    the real target images) matches the result to the target camera: pixels outside it become black / 255.
    Returns the new split as :func:`kit.competition.layout.read_split` reads it.
    """
    src_csv, out_dir = Path(src_csv), Path(out_dir)
    csv_path = out_dir / f"{name}.csv"
    if csv_path.exists() and not overwrite:
        raise FileExistsError(f"{csv_path} exists; pass overwrite=True to replace that split")
    frame = read_split(src_csv.parent, src_csv.stem).head(limit)
    if "gt_path" not in frame.columns:
        raise ValueError(f"{src_csv} has no gt_path column; a labelled source split is needed")
    if border is not None and border.shape != (dst_size[1], dst_size[0]):
        raise ValueError(f"border mask is {border.shape[1]}x{border.shape[0]}, expected {dst_size[0]}x{dst_size[1]}")
    rows = []
    for row in tqdm(frame.itertuples(), total=len(frame), desc=f"warp {src_csv.stem} → {name}"):
        image, label = read_image(row.img_path), read_label(row.gt_path)
        maps = pinhole_to_fisheye_maps((image.shape[1], image.shape[0]), float(src_hfov_deg), tuple(dst_size),
                                       model=model, fov_deg=float(fov_deg), circle=tuple(circle))
        fish_image, fish_label = warp_pair(image, label, maps)
        if border is not None:
            fish_image[~border] = 0
            fish_label[~border] = IGNORE_INDEX
        rel_image, rel_gt = f"./{name}_image/{row.id}.png", f"./{name}_gt/{row.id}.png"
        write_image(out_dir / rel_image, fish_image)
        write_image(out_dir / rel_gt, fish_label)
        rows.append((row.id, rel_image, rel_gt))
    write_csv(csv_path, pd.DataFrame(rows, columns=["id", "img_path", "gt_path"]))
    return read_split(out_dir, name)
