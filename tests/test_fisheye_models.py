"""Radial projection models: textbook values, inverses, and OpenCV's cv2.fisheye as a reference."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from kit.data.fisheye import CameraModel, fisheye_camera, pinhole_camera
from kit.data.projections import MODELS, get_model, kannala_brandt_model


@pytest.mark.parametrize(
    "name, theta, radius",
    [
        ("rectilinear", math.pi / 4, 1.0),
        ("equidistant", math.pi / 2, math.pi / 2),
        ("equisolid", math.pi, 2.0),
        ("equisolid", math.pi / 3, 1.0),
        ("stereographic", math.pi / 2, 2.0),
        ("orthographic", math.pi / 6, 0.5),
        ("kannala_brandt", 1.0, 1.0),  # k = 0 is equidistant
    ],
)
def test_known_radius(name: str, theta: float, radius: float) -> None:
    model = MODELS[name]
    assert model.forward(np.array(theta), 1.0) == pytest.approx(radius, abs=1e-12)
    assert model.forward(np.array(theta), 300.0) == pytest.approx(300.0 * radius, abs=1e-9)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_inverse_round_trip(name: str) -> None:
    model = MODELS[name]
    theta = np.linspace(0.0, 0.97 * model.theta_max, 50)
    for f in (1.0, 412.5):
        assert np.allclose(model.inverse(model.forward(theta, f), f), theta, atol=1e-9)


def test_kannala_brandt_inverse_with_distortion() -> None:
    model = kannala_brandt_model((0.05, -0.01, 0.002, -0.0003))
    theta = np.linspace(0.0, 1.7, 40)
    assert np.allclose(model.inverse(model.forward(theta, 2.0), 2.0), theta, atol=1e-10)


def test_unproject_inverts_project() -> None:
    camera = fisheye_camera(480, 270, fov_deg=200.0, projection="equisolid")
    rng = np.random.default_rng(0)
    points = rng.normal(size=(200, 3)) * (1.0, 1.0, 0.5) + (0.0, 0.0, 0.3)  # some behind the lens plane
    uv, valid = camera.project(points)
    dirs, inside = camera.unproject(uv[:, 0], uv[:, 1])
    expected = points / np.linalg.norm(points, axis=1, keepdims=True)
    assert valid.sum() > 150 and inside[valid].all()
    assert np.allclose(dirs[valid], expected[valid], atol=1e-9)


def _view_grid() -> np.ndarray:
    """Points ``(N, 3)`` on a grid over the half-sphere in front of the lens (θ 0..89.5° by φ all round),
    at distances from 0.2 to 50: cv2.fisheye.projectPoints only takes θ < 90°."""
    theta, phi = np.meshgrid(np.radians(np.linspace(0.0, 89.5, 60)), np.linspace(-np.pi, np.pi, 73))
    directions = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=-1)
    return directions.reshape(-1, 3) * np.linspace(0.2, 50.0, theta.size)[:, None]


@pytest.mark.parametrize(
    "projection, k",
    [
        ("equidistant", (0.0, 0.0, 0.0, 0.0)),  # cv2.fisheye with D = 0 is the equidistant model
        ("kannala_brandt", (-0.02, 0.003, -0.001, 0.0002)),
        ("kannala_brandt", (0.05, -0.01, 0.002, -0.0003)),
    ],
)
def test_projection_matches_cv2_fisheye_over_the_field_of_view(projection: str, k: tuple[float, ...]) -> None:
    """Both compute in float64 with the same formula: agreement to rounding (~1e-14 relative) is expected."""
    camera = fisheye_camera(1920, 1080, fov_deg=200.0, projection=projection, circle=(1.0, 1.3),
                            k=k if projection == "kannala_brandt" else None)
    points = _view_grid()
    uv, valid = camera.project(points)
    K = np.array([[camera.fx, 0, camera.cx], [0, camera.fy, camera.cy], [0, 0, 1]])
    reference, _ = cv2.fisheye.projectPoints(points.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, np.array(k))
    centre = np.array([camera.cx, camera.cy])
    assert valid.all() and len(points) == 4380
    # offsets from the principal point (up to ~900 px), so that the tolerance is relative to the radius
    np.testing.assert_allclose(uv - centre, reference.reshape(-1, 2) - centre, rtol=1e-9, atol=1e-9)


def test_pinhole_rays_cover_the_frame_at_the_given_fov() -> None:
    camera = pinhole_camera(512, 256, hfov_deg=80.0)
    rays, valid = camera.pixel_rays()
    assert valid.all() and rays.shape == (256, 512, 3)
    # the frame's edges are at ±40°, W / 2 = 256 px from the centre; the outer pixel centres sit half a
    # pixel inside them, at 255.5 px: atan(255.5 / 256 · tan 40°) = 39.9449° (float32 rays: ~1e-5°)
    left, right = rays[128, 0], rays[128, -1]
    half_angle = math.degrees(math.atan2(abs(right[0]), right[2]))
    assert half_angle == pytest.approx(math.degrees(math.atan(255.5 / 256 * math.tan(math.radians(40.0)))), abs=1e-5)
    assert left[0] == pytest.approx(-right[0], abs=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: get_model("fisheye"), "unknown projection model 'fisheye'"),
        (lambda: fisheye_camera(100, 50, fov_deg=200.0, projection="orthographic"), "outside what the orthographic"),
        (lambda: kannala_brandt_model((0.1, 0.2)), "needs 4 coefficients"),
    ],
)
def test_errors_name_the_bad_value(make, message: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=message):
        make()


def test_camera_model_is_frozen() -> None:
    camera = pinhole_camera(64, 32, 60.0)
    assert isinstance(camera, CameraModel)
    with pytest.raises(AttributeError):
        camera.fx = 1.0  # type: ignore[misc]
