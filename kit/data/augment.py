"""Augmentations of both reference solutions and the kit's geometric fisheye warp (albumentations 2.x).

- :class:`FisheyeWarp`: the kit's own, a true pinhole → fisheye warp (``kit.data.fisheye``) with random
  camera jitter; label-exact.
- :class:`MixBackground`: solution A's (seed 000) "Mix Background": a target image's dark border
  pasted onto a source image through an ellipse, label 255 there.
- :class:`FourierStyle`: Fourier domain adaptation (FDA) of a source image towards a random fisheye
  frame's lowest spatial frequencies.
- :class:`FisheyeTransform`: solution B's (seed 001) "fisheye transformation": the source resized
  to the target size and the mean target image pasted outside the thresholded disc.
- ready-made pipelines and :func:`fix_sky_bonnet` (solution A's label fix).

Each transform is a ``DualTransform``: inside ``A.Compose`` it moves image and mask together.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
from albumentations.augmentations.mixing.domain_adaptation_functional import fourier_domain_adaptation

from kit.competition.labels import IGNORE_INDEX, VOID_INDEX
from kit.competition.layout import read_image
from kit.data.border import Ellipse, ellipse_mask
from kit.data.fisheye import DEFAULT_CIRCLE, pinhole_to_fisheye_maps, warp_image, warp_label

SKY = 8


class FisheyeWarp(A.DualTransform):
    """Warp a pinhole image and its label into a fisheye frame of ``size = (W, H)``.

    Label pixels outside the image circle are 255 (background); inside it but outside the source
    camera's view they are ``VOID_INDEX`` (no information: ignored in training, not background).

    Each call draws one camera from a pool of ``pool_size`` cameras, drawn once from the jitter
    ranges with ``seed``; the pool keeps the remap maps cached (``pinhole_to_fisheye_maps``), so
    only the first use of each camera pays for building them.

    Args:
        size: output frame (W, H).
        src_hfov_deg: horizontal field of view of the source (pinhole) camera.
        model: fisheye projection model name (``kit.data.projections.MODELS``).
        fov_deg: range of the fisheye's full field of view.
        circle_scale: range of a factor on the image circle's size (the focal length).
        circle: image circle semi-axes as fractions of (W/2, H/2) before scaling.
        center_shift: largest optical-centre offset, as a fraction of (W, H).
        yaw_deg, pitch_deg, roll_deg: ranges of the camera rotation.
    """

    def __init__(
        self,
        size: tuple[int, int] = (480, 270),
        src_hfov_deg: float = 90.0,
        model: str = "equidistant",
        fov_deg: tuple[float, float] = (190.0, 210.0),
        circle_scale: tuple[float, float] = (0.9, 1.1),
        circle: tuple[float, float] = DEFAULT_CIRCLE,
        center_shift: float = 0.03,
        yaw_deg: tuple[float, float] = (-10.0, 10.0),
        pitch_deg: tuple[float, float] = (-10.0, 5.0),
        roll_deg: tuple[float, float] = (-5.0, 5.0),
        pool_size: int = 16,
        seed: int = 0,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        self.size = tuple(size)
        self.src_hfov_deg = float(src_hfov_deg)
        self.model = model
        self.fov_deg = fov_deg
        self.circle_scale = circle_scale
        self.circle = circle
        self.center_shift = center_shift
        self.yaw_deg, self.pitch_deg, self.roll_deg = yaw_deg, pitch_deg, roll_deg
        self.pool_size = pool_size
        self.seed = seed
        rng = np.random.default_rng(seed)
        w, h = self.size
        self.cameras = []
        for _ in range(pool_size):
            scale = rng.uniform(*circle_scale)
            self.cameras.append(
                dict(
                    model=model,
                    fov_deg=round(float(rng.uniform(*fov_deg)), 2),
                    circle=(round(circle[0] * scale, 4), round(circle[1] * scale, 4)),
                    center=(round((w - 1) / 2 + rng.uniform(-1, 1) * center_shift * w, 2),
                            round((h - 1) / 2 + rng.uniform(-1, 1) * center_shift * h, 2)),
                    yaw_deg=round(float(rng.uniform(*yaw_deg)), 2),
                    pitch_deg=round(float(rng.uniform(*pitch_deg)), 2),
                    roll_deg=round(float(rng.uniform(*roll_deg)), 2),
                )
            )

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        h, w = params["shape"][:2]
        camera = self.cameras[int(self.random_generator.integers(len(self.cameras)))]
        return {"maps": pinhole_to_fisheye_maps((w, h), self.src_hfov_deg, self.size, **camera)}

    def apply(self, img: np.ndarray, maps, **params) -> np.ndarray:
        return warp_image(img, maps)

    def apply_to_mask(self, mask: np.ndarray, maps, **params) -> np.ndarray:
        # outside the circle: background (255); inside it but unseen by the source camera: VOID,
        # which training ignores (labelling it background taught the model that the fisheye's
        # periphery is background)
        out = warp_label(mask, maps)
        out[maps.circle & ~maps.valid] = VOID_INDEX
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("size", "src_hfov_deg", "model", "fov_deg", "circle_scale", "circle", "center_shift",
                "yaw_deg", "pitch_deg", "roll_deg", "pool_size", "seed")


@functools.lru_cache(maxsize=8)
def _ellipse_mask_cached(size: tuple[int, int], ellipse: Ellipse, frame: tuple[int, int]) -> np.ndarray:
    mask = ellipse_mask(size, ellipse, scale_from=frame)
    mask.setflags(write=False)
    return mask


class _TargetFrames:
    """What :class:`MixBackground` and :class:`FourierStyle` share: the fisheye frames they draw one of
    per image, and the disc's ``ellipse`` fitted in a frame of ``frame_size = (W, H)``."""

    def _set_frames(self, target_paths: Sequence[str | os.PathLike], ellipse: Ellipse,
                    frame_size: tuple[int, int]) -> None:
        if len(target_paths) == 0:
            raise ValueError(f"{type(self).__name__} needs at least one target image path")
        self.target_paths = [str(t) for t in target_paths]
        self.ellipse = (tuple(map(float, ellipse[0])), tuple(map(float, ellipse[1])), float(ellipse[2]))
        self.frame_size = tuple(frame_size)

    def _draw_path(self) -> str:  # from the pipeline's generator (kit.data.datasets.Reseeded)
        return self.target_paths[int(self.random_generator.integers(len(self.target_paths)))]


class MixBackground(_TargetFrames, A.DualTransform):
    """Solution A's Mix Background: outside an ellipse, the pixels of a random target image.

    ``ellipse`` is the target border fitted in a frame of ``frame_size = (W, H)`` (see
    ``kit.data.border.fit_ellipse``); it is scaled to each image. The label is 255 outside the ellipse.
    """

    def __init__(
        self,
        target_paths: Sequence[str | os.PathLike],
        ellipse: Ellipse,
        frame_size: tuple[int, int],
        p: float = 0.25,
    ) -> None:
        super().__init__(p=p)
        self._set_frames(target_paths, ellipse, frame_size)

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        h, w = params["shape"][:2]
        outside = ~_ellipse_mask_cached((w, h), self.ellipse, self.frame_size)
        return {"outside": outside, "target_path": self._draw_path()}

    def apply(self, img: np.ndarray, outside: np.ndarray, target_path: str, **params) -> np.ndarray:
        target = read_image(target_path)
        if target.shape[:2] != img.shape[:2]:
            target = cv2.resize(target, (img.shape[1], img.shape[0]), interpolation=cv2.INTER_LINEAR)
        out = img.copy()
        out[outside] = target[outside]
        return out

    def apply_to_mask(self, mask: np.ndarray, outside: np.ndarray, **params) -> np.ndarray:
        out = mask.copy()
        out[outside] = IGNORE_INDEX
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("target_paths", "ellipse", "frame_size")


def inscribed_box(ellipse: Ellipse, frame_size: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(x0, y0, x1, y1)``: the axis-aligned box inside the disc ``ellipse`` (fitted in ``frame_size = (W, H)``)
    scaled to an image of ``size = (W, H)``, clipped to it: half-sides of semi-axis / √2 (the box of a
    circle; a conservative one for a rotated ellipse, whose smaller semi-axis both sides take)."""
    (cx, cy), (a, b), _ = ellipse
    sx, sy = size[0] / frame_size[0], size[1] / frame_size[1]
    half = min(a, b) / 2 / np.sqrt(2)  # axes are full lengths (cv2.fitEllipse)
    x0, x1 = max(int(np.ceil(((cx + 0.5) - half) * sx)), 0), min(int(np.floor(((cx + 0.5) + half) * sx)), size[0])
    y0, y1 = max(int(np.ceil(((cy + 0.5) - half) * sy)), 0), min(int(np.floor(((cy + 0.5) + half) * sy)), size[1])
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"the fisheye disc {ellipse} holds no box of at least 2×2 px in a {size[0]}×{size[1]} image")
    return x0, y0, x1, y1


class FourierStyle(_TargetFrames, A.ImageOnlyTransform):
    """Fourier domain adaptation (FDA; Yang & Soatto, CVPR 2020): the lowest frequencies of the image's
    amplitude spectrum (a square of half-side ``beta`` × the shorter side around zero frequency) are
    replaced by those of a random fisheye frame, and the phase, which carries the scene, is kept
    (albumentations' ``fourier_domain_adaptation``).

    The fisheye frame is cut to the box inside its disc (``ellipse``, fitted in ``frame_size = (W, H)``)
    before it is resized to the image, so that the dark border is no part of its style. Afterwards each
    channel gets back its own mean and standard deviation: the kit normalises each domain with that
    domain's statistics, so FDA here carries what normalisation cannot, the spectrum's shape (the
    fisheye's contrast across scales, its vignetting-like fall-off), not the colour mean. For uint8
    images, as the kit's pipelines read them.
    """

    def __init__(self, target_paths: Sequence[str | os.PathLike], ellipse: Ellipse, frame_size: tuple[int, int],
                 beta: float = 0.01, p: float = 1.0) -> None:
        super().__init__(p=p)
        self._set_frames(target_paths, ellipse, frame_size)
        if not 0.0 < beta <= 0.5:
            raise ValueError(f"FDA beta = {beta!r}: expected a share of the shorter side in (0, 0.5]")
        self.beta = float(beta)

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        return {"target_path": self._draw_path()}

    def apply(self, img: np.ndarray, target_path: str, **params) -> np.ndarray:
        target = read_image(target_path)
        x0, y0, x1, y1 = inscribed_box(self.ellipse, self.frame_size, (target.shape[1], target.shape[0]))
        target = cv2.resize(target[y0:y1, x0:x1], (img.shape[1], img.shape[0]), interpolation=cv2.INTER_AREA)
        source = img.astype(np.float32)
        # albumentations clips a float image to [0, 1]: the spectra are taken of images in that range
        styled = fourier_domain_adaptation(source / 255, target.astype(np.float32) / 255, self.beta) * 255
        mean, std = source.mean(axis=(0, 1)), source.std(axis=(0, 1))
        styled = (styled - styled.mean(axis=(0, 1))) / np.maximum(styled.std(axis=(0, 1)), 1e-6) * std + mean
        return np.clip(styled + 0.5, 0, 255).astype(np.uint8)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("target_paths", "ellipse", "frame_size", "beta")


class FisheyeTransform(A.DualTransform):
    """Solution B's fisheye transformation: resize to the mean target image's size, paste the mean
    target image where ``inside`` (the thresholded disc, ``kit.data.border.border_mask``) is False, and
    label those pixels 255. Solution B then shifted labels by +1 (background 0); the kit keeps 255."""

    def __init__(self, mean_target: np.ndarray, inside: np.ndarray, p: float = 1.0) -> None:
        super().__init__(p=p)
        if mean_target.shape[:2] != inside.shape:
            raise ValueError(f"mean target image {mean_target.shape[:2]} and mask {inside.shape} differ in size")
        self.mean_target = np.clip(np.asarray(mean_target), 0, 255).astype(np.uint8)
        self.inside = np.asarray(inside, bool)

    def apply(self, img: np.ndarray, **params) -> np.ndarray:
        h, w = self.inside.shape
        out = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
        out[~self.inside] = self.mean_target[~self.inside]
        return out

    def apply_to_mask(self, mask: np.ndarray, **params) -> np.ndarray:
        h, w = self.inside.shape
        out = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        out[~self.inside] = IGNORE_INDEX
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("mean_target", "inside")


def crop_step(crop: tuple[int, int] | A.BasicTransform) -> A.BasicTransform:
    """A pipeline's last step: ``A.RandomCrop`` of ``crop = (H, W)``, or the crop transform given
    (``kit.data.rare.RareClassCrop`` under rare-class sampling)."""
    return crop if isinstance(crop, A.BasicTransform) else A.RandomCrop(*crop)


def random_scale(scale: tuple[float, float], crop_size: tuple[int, int]) -> list[A.BasicTransform]:
    """Rescale an image by a factor drawn uniformly from ``scale = (low, high)`` (image bilinear,
    label nearest), then pad it to at least ``crop_size = (H, W)`` at the bottom and right: image 0,
    label :data:`VOID_INDEX` (ignored in training, never background). ``(1, 1)``: no steps."""
    low, high = scale
    if (low, high) == (1.0, 1.0):
        return []
    return [A.RandomScale(scale_limit=(low - 1.0, high - 1.0), interpolation=cv2.INTER_LINEAR,
                          mask_interpolation=cv2.INTER_NEAREST, p=1.0),
            A.PadIfNeeded(min_height=crop_size[0], min_width=crop_size[1], position="top_left",
                          border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=VOID_INDEX)]


def solution_a_pipeline(
    image_size: tuple[int, int],
    crop_size: tuple[int, int] | A.BasicTransform,
    mix_background: MixBackground | None = None,
    style: FourierStyle | None = None,
    scale: tuple[float, float] = (1.0, 1.0),
) -> A.Compose:
    """Solution A's source pipeline: resize to ``image_size = (H, W)``, (the kit's option) Fourier style
    of a fisheye frame, Mix Background (p=0.25 when given), horizontal flip p=0.5, ColorJitter p=0.25,
    (the kit's option) :func:`random_scale` by ``scale``, random crop ``crop_size = (H, W)``."""
    steps = [A.Resize(*image_size)]
    if style is not None:
        steps.append(style)
    if mix_background is not None:
        steps.append(mix_background)
    crop_hw = (crop_size.height, crop_size.width) if isinstance(crop_size, A.BasicTransform) else crop_size
    steps += [A.HorizontalFlip(p=0.5), A.ColorJitter(p=0.25), *random_scale(scale, crop_hw), crop_step(crop_size)]
    return A.Compose(steps)


def solution_a_distortion(alpha: float = 100.0, sigma: float = 10.0, alpha_affine: float = 25.0) -> A.Compose:
    """Solution A's "distortion" copy: ``ElasticTransform(alpha=100, sigma=10, alpha_affine=25)``.

    Albumentations 2.x dropped ``alpha_affine`` (a random affine moving three anchor points by up
    to ``alpha_affine`` pixels); an ``Affine`` of similar size stands in for it: shifts up to
    ``alpha_affine`` px, ±5% scale, ±3° rotation and shear. Label pixels shifted in from outside are 255.
    """
    return A.Compose([
        A.Affine(translate_px=(-int(alpha_affine), int(alpha_affine)), scale=(0.95, 1.05), rotate=(-3, 3),
                 shear=(-3, 3), fill=0, fill_mask=IGNORE_INDEX, p=1.0),
        A.ElasticTransform(alpha=alpha, sigma=sigma, fill=0, fill_mask=IGNORE_INDEX, p=1.0),
    ])


def solution_b_pipeline(fisheye_transform: FisheyeTransform, crop_size: tuple[int, int] | A.BasicTransform) -> A.Compose:
    """Solution B's pipeline: fisheye transformation, flip p=0.5, photometric jitter, random crop
    ``crop_size = (H, W)`` (theirs: 1920×1080 frames, 960×540 crops)."""
    return A.Compose([fisheye_transform, A.HorizontalFlip(p=0.5), A.ColorJitter(p=0.5), crop_step(crop_size)])


def kit_pipeline(fisheye_warp: FisheyeWarp, crop_size: tuple[int, int] | A.BasicTransform) -> A.Compose:
    """The kit's default: geometric fisheye warp, flip p=0.5, ColorJitter p=0.25, random crop."""
    return A.Compose([fisheye_warp, A.HorizontalFlip(p=0.5), A.ColorJitter(p=0.25), crop_step(crop_size)])


def fix_sky_bonnet(label: np.ndarray, start: float = 2 / 3, value: int = IGNORE_INDEX) -> np.ndarray:
    """Solution A's label fix: Sky pixels in rows ≥ ``start``·H (the ego car's bonnet) become ``value``.

    ``value`` 255 (solution A) makes the bonnet background; ``VOID_INDEX`` makes training ignore it.
    Returns a new ``uint8 (H, W)`` label; the input is not changed.
    """
    out = np.array(label, dtype=np.uint8, copy=True)
    lower = out[int(start * out.shape[0]) :]
    lower[lower == SKY] = value
    return out
