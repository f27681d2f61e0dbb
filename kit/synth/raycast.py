"""Ray casting and shading for :mod:`kit.synth`: :func:`render` turns a scene, a camera and a pose into
linear RGB and exact labels (textures, ground markings, sky with clouds, sun and ambient light, haze)."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

from kit.competition.labels import IGNORE_INDEX
from kit.data.fisheye import CameraModel
from kit.synth.cameras import Pose
from kit.synth.geometry import (
    CABIN,
    FACADE,
    FAR,
    FENCE_BARS,
    FOLIAGE,
    LAMPS,
    NATURE,
    PAINT,
    PAVING,
    PLAIN,
    ROAD,
    SIGN_FACE,
    SKY,
    Material,
    Scene,
    Thing,
    _surface_uv,
    noise,
)

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
        cx, cz, lit, cy, vertical = params[:, 0], params[:, 1], params[:, 2], params[:, 3], params[:, 4] > 0.5
        half_along, half_front, half_side = params[:, 5], params[:, 6], params[:, 7]
        # a row of three lamps on both large faces (±y) of a head: heads hang back to back, one for each
        # direction of the traffic, so a camera behind a head sees lamps, not a dark box like a window;
        # a post's vertical head also carries them on its ±x faces (the crossing's heads), as a fisheye
        # camera beside the kerb sees it side-on
        side = vertical & (np.abs(n[:, 0]) > 0.5)
        face = (np.abs(n[:, 1]) > 0.5) | side
        along = np.where(vertical, cz - p[:, 2], p[:, 0] - cx)
        across = np.where(side, p[:, 1] - cy, np.where(vertical, p[:, 0] - cx, p[:, 2] - cz))
        offset = along / 0.4  # lamp slots at offsets -1, 0, 1: along x, or top to bottom on a vertical head
        slot = np.clip(np.round(offset), -1, 1)
        in_lamp = (np.hypot((offset - slot) * 0.4, across) < 0.13) & face
        # and round the lamps' face a backplate's light border, which sets a dark head off dark foliage
        half_across = np.where(side, half_side, half_front)
        rim = face & ((np.abs(along) > half_along - 0.1) | (np.abs(across) > half_across - 0.1))
        lamp_colours = np.array([(1.0, 0.15, 0.1), (1.0, 0.7, 0.1), (0.1, 0.9, 0.5)], np.float32)
        brightness = np.where(slot + 1 == lit, np.float32(1.4), np.float32(0.25))  # one lamp lit
        lamp = lamp_colours[(slot + 1).astype(int)] * brightness[:, None]
        housing = np.where(rim[:, None], np.float32(0.85), colour) * (1.0 + 0.1 * grain)
        return np.where(in_lamp[:, None], lamp, housing)
    if texture == SIGN_FACE:
        border, cx, cz, half, round_ = params[:, 0:3], params[:, 3], params[:, 4], params[:, 5], params[:, 6]
        across = params[:, 7] > 0.5  # the plate faces ±x; cx is then its centre in y
        dx, dz = np.abs(np.where(across, p[:, 1], p[:, 0]) - cx), np.abs(p[:, 2] - cz)
        reach = np.where(round_ > 0.5, np.hypot(dx, dz), np.maximum(dx, dz)) / half
        front = (np.abs(np.where(across, n[:, 0], n[:, 1])) > 0.5)[:, None]
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
