import cv2
import numpy as np
import pytest

from kit.common.files import write_image
from kit.competition.labels import IGNORE_INDEX
from kit.competition.layout import read_split
from kit.data.border import border_mask, ellipse_mask, fit_ellipse, mean_image
from kit.data.fisheye import make_fisheye_split, pinhole_to_fisheye_maps, rotation_matrix, warp_pair
from kit.data.projections import get_model


@pytest.mark.parametrize("theta", [0.1, 0.5, 1.0, 1.5, 1.7])
def test_kannala_brandt_with_zero_coefficients_is_equidistant(theta):
    kb, eq = get_model("kannala_brandt", (0, 0, 0, 0)), get_model("equidistant")
    assert kb.forward(np.array(theta), 1.0) == pytest.approx(eq.forward(np.array(theta), 1.0))


# The maps are float32 pinhole pixels below 512: stored to within half a float32 step there (2⁻¹⁶ ≈ 1.5e-5 px),
# from float32 rays (relative error 6e-8, ~2e-5 px at a 160 px focal length); a fisheye pixel moves at most
# half as far as its pinhole pixel here. What comes back is ~1e-5 px; a convention error is ≥ 0.25 px.
MAP_TOLERANCE_PX = 1e-4


@pytest.mark.parametrize("k", [(0.0, 0.0, 0.0, 0.0), (-0.02, 0.003, -0.001, 0.0002), (0.05, -0.01, 0.0, 0.0)])
def test_maps_agree_with_cv2_fisheye_project_points(k):
    """Every valid fisheye pixel's map entry is a pinhole pixel; that pixel's ray, projected by
    cv2.fisheye.projectPoints, must land back on the fisheye pixel.

    Both cameras are rebuilt here from the conventions the kit documents, not from its functions:
    pixel centres at integer coordinates (OpenCV's, and cv2.remap's for map values), so a centred
    lens has its principal point at ((W - 1) / 2, (H - 1) / 2); the pinhole frame's edges, W / 2 from
    there, are at ± hfov / 2; the fisheye's θ = fov / 2 lies ``circle`` × (W / 2, H / 2) from it.
    """
    src, dst, hfov, fov, circle = (320, 160), (240, 136), 90.0, 170.0, (0.96, 1.25)
    maps = pinhole_to_fisheye_maps(src, hfov, dst, model="kannala_brandt", fov_deg=fov, circle=circle, k=k)
    v, u = np.nonzero(maps.valid)
    assert len(u) > 5000
    mx, my = maps.map_x[v, u].astype(np.float64), maps.map_y[v, u].astype(np.float64)
    f_src = (src[0] / 2) / np.tan(np.radians(hfov / 2))
    rays = np.stack([(mx - (src[0] - 1) / 2) / f_src, (my - (src[1] - 1) / 2) / f_src, np.ones_like(mx)], axis=1)
    t = np.radians(fov / 2)
    edge = t * (1 + k[0] * t**2 + k[1] * t**4 + k[2] * t**6 + k[3] * t**8)  # OpenCV's θ_d at the circle
    K = np.array([[circle[0] * (dst[0] / 2) / edge, 0, (dst[0] - 1) / 2],
                  [0, circle[1] * (dst[1] / 2) / edge, (dst[1] - 1) / 2],
                  [0, 0, 1]])
    projected, _ = cv2.fisheye.projectPoints(rays.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, np.array(k))
    np.testing.assert_allclose(projected.reshape(-1, 2), np.stack([u, v], axis=1), rtol=0, atol=MAP_TOLERANCE_PX)


def test_the_fisheye_centre_pixel_sees_the_pinhole_centre():
    """Odd frame sizes put a pixel centre on each optical axis: an unrotated fisheye's centre pixel maps
    exactly onto the pinhole's centre, whatever the model (a half-pixel principal point would move it)."""
    for model in ("equidistant", "equisolid", "stereographic"):
        maps = pinhole_to_fisheye_maps((321, 161), 90.0, (241, 137), model=model)
        assert (maps.map_x[68, 120], maps.map_y[68, 120]) == (160.0, 80.0)
        assert maps.valid[68, 120]


def test_maps_are_cached_and_read_only():
    a = pinhole_to_fisheye_maps((64, 32), 90.0, (48, 27))
    assert pinhole_to_fisheye_maps((64, 32), 90.0, (48, 27)) is a
    with pytest.raises(ValueError):
        a.map_x[0, 0] = 1.0


def test_rotation_yaw_moves_the_view_sideways():
    # a yawed fisheye sees the pinhole's centre to the left of its own centre
    maps = pinhole_to_fisheye_maps((101, 51), 90.0, (201, 201), fov_deg=180.0, circle=(1.0, 1.0), yaw_deg=20.0)
    row = maps.map_x[100]
    centre_col = np.nanargmin(np.where(maps.valid[100], np.abs(row - 50.0), np.inf))
    assert centre_col < 100
    assert np.allclose(rotation_matrix(0, 0, 0), np.eye(3))
    assert np.allclose(rotation_matrix(30, 10, 5) @ rotation_matrix(30, 10, 5).T, np.eye(3))


def test_warp_keeps_label_values_and_constant_images():
    rng = np.random.default_rng(0)
    label = rng.choice([1, 4, 9], size=(80, 160)).astype(np.uint8)
    image = np.full((80, 160, 3), 77, np.uint8)
    maps = pinhole_to_fisheye_maps((160, 80), 100.0, (120, 68), yaw_deg=5.0, pitch_deg=-3.0)
    fish_image, fish_label = warp_pair(image, label, maps)
    assert set(np.unique(fish_label)) <= {1, 4, 9, IGNORE_INDEX}
    assert set(np.unique(fish_label[maps.valid])) == {1, 4, 9}
    assert (fish_label[~maps.valid] == IGNORE_INDEX).all()
    assert (fish_image[maps.valid] == 77).all() and (fish_image[~maps.valid] == 0).all()
    # a 100° pinhole covers the central ~1/6 of a 200° fisheye frame; the rest of the circle is unseen
    assert 0.1 < maps.valid.mean() < 0.3 and (~maps.circle).any() and (maps.circle & ~maps.valid).any()


def _synthetic_mean_target(size=(192, 108)):
    w, h = size
    inside = ellipse_mask(size, (((w - 1) / 2, (h - 1) / 2), (0.92 * w, 1.2 * h), 0.0))
    image = np.where(inside[..., None], 140.0, 10.0).astype(np.float32) * np.ones(3, np.float32)
    image[5, 5] = 200.0  # a bright speck in the border: noise to be removed
    image[54, 96] = 20.0  # a dark speck inside: a hole to be filled
    return image, inside


def test_border_mask_and_ellipse_recover_the_disc():
    mean_target, inside = _synthetic_mean_target()
    mask = border_mask(mean_target)
    assert not mask[5, 5] and mask[54, 96]
    np.testing.assert_array_equal(mask, inside)  # a two-level image: nothing to get wrong
    (cx, cy), (a, b), _ = fit_ellipse(mask)
    # fitted to the outline's pixel centres: the centre is exact to a few hundredths of a pixel, the axes to
    # a fraction of one; a half-pixel slip of the centre fails
    assert cx == pytest.approx(95.5, abs=0.1) and cy == pytest.approx(53.5, abs=0.1)
    assert sorted([a, b]) == pytest.approx(sorted([0.92 * 192, 1.2 * 108]), abs=0.5)
    assert (ellipse_mask((192, 108), fit_ellipse(mask)) != inside).mean() < 0.003


def test_mean_image_and_make_fisheye_split(tmp_path):
    rng = np.random.default_rng(1)
    src = tmp_path / "src"
    rows = []
    for i in range(2):
        write_image(src / "val_source_image" / f"VALID_SOURCE_{i:03d}.png", rng.integers(0, 255, (40, 80, 3)).astype(np.uint8))
        write_image(src / "val_source_gt" / f"VALID_SOURCE_{i:03d}.png", rng.choice([0, 2, 8], (40, 80)).astype(np.uint8))
        rows.append(f"VALID_SOURCE_{i:03d},./val_source_image/VALID_SOURCE_{i:03d}.png,./val_source_gt/VALID_SOURCE_{i:03d}.png")
    (src / "val_source.csv").write_text("id,img_path,gt_path\n" + "\n".join(rows) + "\n")
    frame = read_split(src, "val_source")
    mean = mean_image(list(frame.img_path))
    assert mean.shape == (40, 80, 3)
    border = np.zeros((36, 64), bool)
    border[4:32, 8:56] = True
    out = make_fisheye_split(src / "val_source.csv", tmp_path / "out", dst_size=(64, 36), border=border, limit=2)
    assert list(out.id) == ["VALID_SOURCE_000", "VALID_SOURCE_001"]
    from kit.competition.layout import read_label
    label = read_label(out.gt_path[0])
    assert label.shape == (36, 64) and (label[~border] == IGNORE_INDEX).all()
    assert set(np.unique(label)) <= {0, 2, 8, IGNORE_INDEX} and (label != IGNORE_INDEX).sum() > 100
    with pytest.raises(FileExistsError, match="pseudo_fisheye.csv"):
        make_fisheye_split(src / "val_source.csv", tmp_path / "out", dst_size=(64, 36))
