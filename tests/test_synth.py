"""The synthetic dataset: reproducibility, label values, fisheye border, geometry and the layout."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kit.synth.dataset as synth_dataset
from kit.common.files import MANIFEST
from kit.competition.labels import CLASSES, IGNORE_INDEX, VALID_LABEL_VALUES
from kit.competition.layout import read_image, read_label, read_split
from kit.data.fisheye import fisheye_camera, pinhole_camera
from kit.data.stats import STATS_FILE, domain_stats
from kit.report.palette import PALETTE
from kit.report.viz import colorize, overlay
from kit.synth import (
    LAMPS,
    LAYOUT,
    PERSON,
    PRESETS,
    SKY,
    Cameras,
    Material,
    Pose,
    Sphere,
    Thing,
    generate,
    main,
    render,
    render_sample,
    sample_scene,
)

TINY = PRESETS["tiny"]


def _files(root: Path) -> dict[str, bytes]:
    """The generated files; not stats.json (holds timings), the statistics cache training adds, nor the
    output manifests (they list files in the order the workers finished them)."""
    skip = {"stats.json", STATS_FILE, MANIFEST}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name not in skip}


def test_same_seed_gives_identical_files_whatever_the_workers(tiny: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate(again, preset="tiny", seed=0, workers=2, progress=False)
    first, second = _files(tiny), _files(again)
    assert len(first) > 20 and first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []


def test_different_seed_gives_different_scenes() -> None:
    for split in ("train_source", "train_target"):
        a, label_a = render_sample(split, 0, seed=0, preset="tiny")
        b, label_b = render_sample(split, 0, seed=1, preset="tiny")
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 5
        assert (label_a != label_b).mean() > 0.05


def test_labels_only_hold_class_ids_and_background(tiny: Path) -> None:
    seen: set[int] = set()
    for split in ("train_source", "val_source", "train_target_gt", "test_gt"):
        for path in read_split(tiny, split)["gt_path"]:
            seen |= set(np.unique(read_label(path)).tolist())
    assert seen <= VALID_LABEL_VALUES
    assert {0, 2, SKY, IGNORE_INDEX} <= seen  # road, buildings, sky and the fisheye border at least


def test_outside_the_fisheye_circle_is_background_and_dark(tiny: Path) -> None:
    camera = fisheye_camera(*TINY.target_size, circle=Cameras().fisheye_circle)
    _, inside = camera.pixel_rays()
    assert 0.05 < (~inside).mean() < 0.3
    for _, row in read_split(tiny, "train_target_gt").iterrows():
        image, label = read_image(row["img_path"]), read_label(row["gt_path"])
        assert (label[~inside] == IGNORE_INDEX).all()
        assert image[~inside].max() <= 8
        assert image[inside].mean() > 60  # the scene itself is not dark


@pytest.mark.parametrize("kind", ["fisheye", "pinhole"])
def test_a_known_point_lands_where_the_camera_model_says(kind: str) -> None:
    """A small sphere at a known 3-D point is drawn at the pixel that CameraModel.project gives."""
    if kind == "fisheye":
        camera = fisheye_camera(480, 270, fov_deg=200.0, circle=(1.0, 1.3))
        angles = [(5.0, -90.0), (60.0, -120.0), (95.0, 200.0), (80.0, -60.0)]  # (θ, φ); φ < 0 is up
    else:
        camera = pinhole_camera(512, 256, 80.0)
        angles = [(5.0, -90.0), (30.0, -160.0), (20.0, -20.0)]
    pose = Pose((0.0, 0.0, 1.5), yaw=30.0, pitch=-10.0, roll=5.0)
    rotation = pose.rotation()
    empty = dataclasses.replace(sample_scene(np.random.default_rng(0)), things=[])
    for theta, phi in angles:
        t, p = np.radians(theta), np.radians(phi)
        direction = np.array([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)])  # camera frame
        point = np.array(pose.position) + 6.0 * rotation @ direction
        assert point[2] > 0.5, "test point must be above the ground"
        marker = Thing([(Sphere(tuple(point), 0.25), Material(PERSON, (1.0, 0.0, 0.0)))])
        _, label = render(dataclasses.replace(empty, things=[marker]), camera, pose)
        uv, valid = camera.project((rotation.T @ (point - pose.position))[None])
        u, v = uv[0]
        assert valid[0]
        rows, cols = np.nonzero(label == PERSON)
        assert len(rows) > 10
        assert label[int(round(v)), int(round(u))] == PERSON
        assert abs(cols.mean() - u) < 1.0 and abs(rows.mean() - v) < 1.0


def test_bonnet_is_sky_by_default_and_background_when_asked() -> None:
    _, label = render_sample("train_source", 0, seed=3, preset="demo")
    _, fixed = render_sample("train_source", 0, seed=3, preset="demo", cameras=Cameras(bonnet_as_sky=False))
    h = label.shape[0]
    bottom = slice(int(h * 0.94), h)  # the bonnet edge is lowest in the corners, at ~0.92 H
    assert (label[bottom] == SKY).mean() > 0.95
    assert (fixed[bottom] == IGNORE_INDEX).mean() > 0.95
    assert (label[: h // 2] == fixed[: h // 2]).all()  # the rest of the frame is untouched
    assert (fixed == IGNORE_INDEX).mean() < 0.3


def test_layout_follows_the_competition(tiny: Path) -> None:
    expected = {
        "train_source": ("TRAIN_SOURCE_0000", "./train_source_image/TRAIN_SOURCE_0000.png", TINY.source_size),
        "val_source": ("VALID_SOURCE_000", "./val_source_image/VALID_SOURCE_000.png", TINY.source_size),
        "train_target": ("TRAIN_TARGET_0000", "./train_target_image/TRAIN_TARGET_0000.png", TINY.target_size),
        "test": ("TEST_0000", "./test_image/TEST_0000.png", TINY.target_size),
    }
    for split, (first_id, first_path, (width, height)) in expected.items():
        raw = pd.read_csv(tiny / f"{split}.csv", dtype=str)
        columns = ["id", "img_path", "gt_path"] if split.endswith("source") else ["id", "img_path"]
        assert list(raw.columns) == columns
        assert len(raw) == TINY.counts[split]
        assert (raw.iloc[0]["id"], raw.iloc[0]["img_path"]) == (first_id, first_path)
        frame = read_split(tiny, split)
        assert read_image(frame.iloc[-1]["img_path"]).shape == (height, width, 3)
    for split in ("train_target", "test"):
        held_out = pd.read_csv(tiny / f"{LAYOUT[split].gt_csv}.csv", dtype=str)
        assert list(held_out.columns) == ["id", "img_path", "gt_path"]
        assert held_out.iloc[0]["gt_path"] == f"./{LAYOUT[split].gt_dir}/{held_out.iloc[0]['id']}.png"
        label = read_label(read_split(tiny, LAYOUT[split].gt_csv).iloc[0]["gt_path"])
        assert label.shape == TINY.target_size[::-1]
    submission = pd.read_csv(tiny / "sample_submission.csv", dtype=str)
    assert list(submission.columns) == ["id", "mask_rle"]
    assert len(submission) == TINY.counts["test"] * len(CLASSES)
    assert submission["id"].iloc[[0, 11, 12, -1]].tolist() == [
        "TEST_0000_class_0",
        "TEST_0000_class_11",
        "TEST_0001_class_0",
        f"TEST_{TINY.counts['test'] - 1:04d}_class_11",
    ]
    assert (submission["mask_rle"] == "-1").all()


def test_stats_match_the_written_labels(tiny: Path) -> None:
    stats = json.loads((tiny / "stats.json").read_text())
    labels = [read_label(p) for p in read_split(tiny, "val_source")["gt_path"]]
    counts = np.bincount(np.concatenate([label.ravel() for label in labels]), minlength=256)
    share = stats["class_share"]["val_source"]
    assert share["Road"] == pytest.approx(counts[0] / counts.sum(), abs=1e-6)
    assert sum(share.values()) == pytest.approx(1.0, abs=1e-4)
    target, source = stats["domain_rgb"]["target"], stats["domain_rgb"]["source"]
    assert np.mean(target["mean"]) < np.mean(source["mean"])  # the target is darker
    assert np.mean(target["std"]) > np.mean(source["std"])  # and contrastier


def test_refuses_to_overwrite_without_being_asked(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="already holds"):
        generate(out, preset="tiny", progress=False)
    with pytest.raises(FileExistsError, match="not one of the kit's output folders"):  # notes.txt is no dataset
        generate(out, preset="tiny", progress=False, overwrite=True)
    assert not (out / "train_source.csv").exists() and (out / "notes.txt").read_text() == "keep me"
    small = {"train_source": 1, "val_source": 1, "train_target": 1, "test": 1}
    generate(out / "kit", preset="tiny", progress=False)
    (out / "kit" / "notes.txt").write_text("keep me too")
    generate(out / "kit", preset="tiny", progress=False, overwrite=True, counts=small)
    assert (out / "kit" / "notes.txt").read_text() == "keep me too"
    assert len([p for p in (out / "kit" / "train_source_image").iterdir() if p.suffix == ".png"]) == 1


@pytest.mark.slow
def test_cli_writes_a_dataset_and_a_preview_then_refuses_to_write_again(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--preset", "tiny", "--workers", "1"]) == 0
    preview = read_image(out / "preview.png")
    assert preview.shape[0] > 200 and preview.std() > 20  # six rows of pictures, not a blank figure
    assert json.loads((out / "stats.json").read_text())["counts"] == TINY.counts
    with pytest.raises(SystemExit) as refused:
        main(["--out", str(out), "--preset", "tiny", "--workers", "1"])
    assert refused.value.code == 2


def test_an_interrupted_generation_is_diagnosed_and_replaced_on_overwrite(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "interrupted"

    def killed(*args: object) -> None:
        raise RuntimeError("killed before the CSVs")

    monkeypatch.setattr(synth_dataset, "write_csvs", killed)
    with pytest.raises(RuntimeError, match="killed"):
        generate(out, preset="tiny", progress=False)
    monkeypatch.undo()
    (out / "train_source_image" / ".TRAIN_SOURCE_0001.k1ll3d.png.tmp").write_bytes(b"half a PNG")  # cut short
    assert (out / "train_source_image").is_dir() and not list(out.glob("*.csv"))
    with pytest.raises(FileExistsError, match=r"interrupted holds an unfinished synthetic dataset \(no CSVs; "
                       r"an interrupted run\?\): generate it again with overwrite=True to replace it"):
        generate(out, preset="tiny", progress=False)
    with pytest.raises(SystemExit) as refused:
        main(["--out", str(out), "--preset", "tiny", "--workers", "1", "--no-preview"])
    assert refused.value.code == 2
    message = f"{out} holds an unfinished synthetic dataset (no CSVs): run again with --overwrite to replace it"
    assert message in capsys.readouterr().err
    generate(out, preset="tiny", progress=False, overwrite=True)
    assert _files(out) == _files(tiny)  # complete, and nothing of the interrupted run is left


def test_overwrite_removes_the_statistics_cache_of_the_replaced_images(tmp_path: Path) -> None:
    out = tmp_path / "data"
    small = {"train_source": 2, "val_source": 1, "train_target": 1, "test": 1}
    generate(out, preset="tiny", progress=False, counts=small)
    (out / STATS_FILE).write_text("{}")  # a cache its manifest does not name (an earlier kit's, a copied dataset)
    generate(out, preset="tiny", progress=False, overwrite=True, counts=small)
    assert not (out / STATS_FILE).exists()
    mean = domain_stats(out, "train_source", limit=None)[0]
    generate(out, preset="tiny", seed=1, progress=False, overwrite=True, counts=small)  # same CSVs, other images
    assert not (out / STATS_FILE).exists()
    assert domain_stats(out, "train_source", limit=None)[0] != mean


def test_colorize_and_overlay_use_the_palette_and_keep_background() -> None:
    label = np.array([[0, 11, IGNORE_INDEX], [8, 9, 3]], np.uint8)
    colours = colorize(label)
    assert (colours[0, 0] == PALETTE[0]).all() and (colours[0, 1] == PALETTE[11]).all()
    assert (colours[0, 2] == 0).all()  # background is black
    image = np.full((2, 3, 3), 100, np.uint8)
    blended = overlay(image, label, alpha=0.5)
    assert (blended[0, 2] == 100).all()  # background keeps the image
    assert blended[1, 0].tolist() == [round(50 + p / 2) for p in PALETTE[8].tolist()]


def test_cli_camera_options_reach_the_written_images_and_labels(tmp_path: Path) -> None:
    """Each camera option of ``python -m kit.synth`` changes the dataset as the Cameras field it names:
    the files are those rendered with all four set, and leaving any one at its default renders others."""
    out = tmp_path / "cameras"
    assert main(["--out", str(out), "--preset", "tiny", "--workers", "1", "--no-preview", "--bonnet-ignore",
                 "--fisheye-model", "equisolid", "--fisheye-fov", "180", "--mounts", "rear"]) == 0
    asked = Cameras(bonnet_as_sky=False, fisheye_projection="equisolid", fisheye_fov=180.0, fisheye_mounts=("rear",))
    written = {}
    for split in ("train_source", "val_source", "train_target", "test"):
        row = read_split(out, LAYOUT[split].gt_csv).iloc[0]
        written[split] = read_image(row["img_path"]), read_label(row["gt_path"])
        image, label = render_sample(split, 0, seed=0, preset="tiny", cameras=asked)
        np.testing.assert_array_equal(written[split][0], image)
        np.testing.assert_array_equal(written[split][1], label)
    bottom = written["train_source"][1][-3:]  # the bonnet edge is lowest in the corners, at ~0.92 H
    assert (bottom == IGNORE_INDEX).all()  # --bonnet-ignore: background, not the real labels' Sky
    defaults = Cameras()
    for field in ("bonnet_as_sky", "fisheye_projection", "fisheye_fov", "fisheye_mounts"):
        split = "train_source" if field == "bonnet_as_sky" else "train_target"
        _, label = render_sample(split, 0, seed=0, preset="tiny",
                                 cameras=dataclasses.replace(asked, **{field: getattr(defaults, field)}))
        assert (label != written[split][1]).mean() > 0.01, field


@pytest.mark.parametrize(
    "options, message",
    [
        (["--fisheye-model", "fisheye"], "unknown projection model 'fisheye'; expected one of"),
        (["--fisheye-model", "orthographic"], "field of view 200.0° is outside what the orthographic model can image; "
                                              "expected 0 < fov < 180°"),
        (["--fisheye-fov", "0"], "the equidistant model's radius at θ = fov / 2 = 0.0° is 0; expected a finite "
                                 "positive radius (0 < fov < 360°)"),
        (["--mounts", "front,side"], "fisheye mounts ('front', 'side'); expected one or more of 'front', 'rear'"),
    ],
)
def test_cli_refuses_bad_camera_options_before_writing_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture, options: list[str], message: str
) -> None:
    out = tmp_path / "refused"
    with pytest.raises(SystemExit) as refused:
        main(["--out", str(out), "--preset", "tiny", "--workers", "1", *options])
    assert refused.value.code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_signal_heads_show_their_lamps_from_behind_and_a_post_head_from_the_side() -> None:
    """Lamps: a row of three on both large faces of every head (heads hang back to back), and on a post's
    vertical head on its narrow faces too; the lit one bright, none on the top or on a gantry head's ends;
    a light border round each face with lamps."""
    from kit.synth.raycast import _albedo

    housing = np.array([0.08, 0.08, 0.08], np.float32)
    rim = np.full(3, 0.85, np.float32)  # the backplate's light border round a face with lamps
    red, green = np.array([1.4, 0.21, 0.14]), np.array([0.14, 1.26, 0.7])
    # a post's vertical head: centre x 0, y 0.2, z 3.0, red lit (the top lamp: z = 3.4); half sizes 0.22, 0.18, 0.65
    post = (0.0, 3.0, 0.0, 0.2, 1.0, 0.65, 0.22, 0.18)
    # a gantry's horizontal head: centre x 1, z 6, green lit (the lamp at x = 1.4); half sizes 0.65, 0.2, 0.24
    gantry = (1.0, 6.0, 2.0, 0.0, 0.0, 0.65, 0.24, 0.0)
    cases = [  # (params, point, normal, expected albedo)
        (post, (0.0, 0.02, 3.4), (0, -1, 0), red),  # front
        (post, (0.0, 0.38, 3.4), (0, 1, 0), red),  # back
        (post, (0.22, 0.2, 3.4), (1, 0, 0), red),  # side, as a camera beside the kerb sees it
        (post, (-0.22, 0.25, 3.4), (-1, 0, 0), red),  # the other side, 5 cm off the lamp's centre
        (post, (0.22, 0.2, 3.2), (1, 0, 0), housing),  # side, between two lamps
        (post, (0.0, 0.2, 3.65), (0, 0, 1), housing),  # top
        (post, (0.2, 0.02, 3.0), (0, -1, 0), rim),  # front, 2 cm from its edge
        (post, (0.22, 0.35, 3.0), (1, 0, 0), rim),  # side, 3 cm from its edge
        (post, (0.22, 0.2, 2.4), (1, 0, 0), rim),  # side, 5 cm above its bottom
        (post, (0.0, 0.02, 2.6), (0, -1, 0), 0.25 / 1.4 * green),  # front, the unlit green lamp at the bottom
        (gantry, (1.4, -0.2, 6.0), (0, -1, 0), green),  # front
        (gantry, (1.4, 0.2, 6.0), (0, 1, 0), green),  # back
        (gantry, (1.0, -0.2, 6.22), (0, -1, 0), rim),  # front, 2 cm below its top
        (gantry, (1.65, 0.0, 6.0), (1, 0, 0), housing),  # an end
        (gantry, (1.4, 0.0, 5.76), (0, 0, -1), housing),  # bottom
    ]
    p = np.array([c[1] for c in cases], np.float32)
    n = np.array([c[2] for c in cases], np.float32)
    params = np.array([c[0] for c in cases], np.float32)
    albedo = _albedo(LAMPS, p, n, np.tile(housing, (len(cases), 1)), params)
    grain_free = np.array([c[3] for c in cases], np.float32)
    lamp = np.array([c[3] is not housing and c[3] is not rim for c in cases])
    np.testing.assert_allclose(albedo[lamp], grain_free[lamp], rtol=1e-5)
    np.testing.assert_allclose(albedo[~lamp], grain_free[~lamp], rtol=0.2)  # the housing: ±10% grain
