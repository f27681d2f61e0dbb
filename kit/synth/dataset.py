"""The dataset of :mod:`kit.synth`: layout and presets, one image reproducible from (seed, split, index)
(:func:`render_sample`), the (parallel) generator with its CSVs and statistics, and the command line."""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from kit.common.files import is_output_dir, prepare_output_dir, write_csv, write_image, write_json
from kit.competition.labels import CLASSES, IGNORE_INDEX
from kit.data.fisheye import fisheye_camera, pinhole_camera
from kit.data.stats import STATS_FILE
from kit.synth.cameras import Cameras, source_rig, target_rig
from kit.synth.city import sample_scene
from kit.synth.looks import source_look, target_look
from kit.synth.raycast import render

# ----------------------------------------------------------------------------------------------
# Dataset layout and presets

SPLITS: tuple[str, ...] = ("train_source", "val_source", "train_target", "test")  # index seeds rng
SOURCE_SPLITS = ("train_source", "val_source")


@dataclass(frozen=True)
class SplitLayout:
    id_prefix: str
    digits: int  # zero padding of the competition's ids
    image_dir: str
    gt_dir: str
    gt_csv: str  # the CSV that names the labels: the split's own for source, held-out for target


LAYOUT: dict[str, SplitLayout] = {
    "train_source": SplitLayout("TRAIN_SOURCE", 4, "train_source_image", "train_source_gt", "train_source"),
    "val_source": SplitLayout("VALID_SOURCE", 3, "val_source_image", "val_source_gt", "val_source"),
    "train_target": SplitLayout("TRAIN_TARGET", 4, "train_target_image", "train_target_gt", "train_target_gt"),
    "test": SplitLayout("TEST", 4, "test_image", "test_gt", "test_gt"),
}


@dataclass(frozen=True)
class Preset:
    source_size: tuple[int, int]  # (W, H)
    target_size: tuple[int, int]  # (W, H)
    counts: dict[str, int]


PRESETS: dict[str, Preset] = {
    "tiny": Preset((128, 64), (160, 90), {"train_source": 3, "val_source": 2, "train_target": 3, "test": 2}),
    "demo": Preset(
        (512, 256), (480, 270), {"train_source": 400, "val_source": 100, "train_target": 400, "test": 100}
    ),
    "full": Preset(  # the competition's sizes and counts
        (2048, 1024), (1920, 1080), {"train_source": 2194, "val_source": 466, "train_target": 2923, "test": 1898}
    ),
}


# ----------------------------------------------------------------------------------------------
# One image, reproducible from (seed, split, index)


def render_sample(
    split: str,
    index: int,
    seed: int = 0,
    preset: str = "demo",
    cameras: Cameras = Cameras(),
) -> tuple[np.ndarray, np.ndarray]:
    """The image ``uint8 (H, W, 3)`` and label ``uint8 (H, W)`` of image ``index`` of ``split``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    scene = sample_scene(rng)
    if split in SOURCE_SPLITS:
        camera = pinhole_camera(*PRESETS[preset].source_size, cameras.source_hfov)
        pose, ego = source_rig(rng, cameras)
        rgb, label = render(scene, camera, pose, ego)
        return source_look(rgb, rng), label
    camera = fisheye_camera(
        *PRESETS[preset].target_size,
        fov_deg=cameras.fisheye_fov,
        projection=cameras.fisheye_projection,
        circle=cameras.fisheye_circle,
    )
    pose, ego = target_rig(rng, cameras)
    rgb, label = render(scene, camera, pose, ego)
    return target_look(rgb, camera, rng), label


def sample_id(split: str, index: int) -> str:
    layout = LAYOUT[split]
    return f"{layout.id_prefix}_{index:0{layout.digits}d}"


@dataclass(frozen=True)
class _Task:
    out: str
    split: str
    index: int
    seed: int
    preset: str
    cameras: Cameras


def _run_task(task: _Task) -> tuple[str, np.ndarray, np.ndarray, np.ndarray]:
    """Render and write one sample; return its split, label histogram (256,), RGB sum and sum of squares."""
    image, label = render_sample(task.split, task.index, task.seed, task.preset, task.cameras)
    layout, name = LAYOUT[task.split], sample_id(task.split, task.index) + ".png"
    write_image(Path(task.out) / layout.image_dir / name, image)
    write_image(Path(task.out) / layout.gt_dir / name, label)
    x = image.reshape(-1, 3).astype(np.float64) / 255.0
    return task.split, np.bincount(label.ravel(), minlength=256), x.sum(0), (x * x).sum(0)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core already


# ----------------------------------------------------------------------------------------------
# The dataset


CSVS = ("train_source", "val_source", "train_target", "test", "train_target_gt", "test_gt", "sample_submission")
OUTPUTS = [  # everything the generator writes, which --overwrite replaces
    *(LAYOUT[s].image_dir for s in SPLITS),
    *(LAYOUT[s].gt_dir for s in SPLITS),
    *(f"{name}.csv" for name in CSVS),
    "stats.json",
    "preview.png",
    STATS_FILE,  # training's statistics cache: measured on the images replaced (a new seed keeps the CSVs)
]


def _unfinished(out: str | os.PathLike) -> str | None:
    """What a dataset folder that a generation left unfinished lacks (``"no CSVs"``, as the CSVs are
    written last), or None for a finished dataset and any folder the kit did not make."""
    out = Path(out)
    dirs = [LAYOUT[s].image_dir for s in SPLITS] + [LAYOUT[s].gt_dir for s in SPLITS]
    if not is_output_dir(out) or not any((out / d).is_dir() for d in dirs):
        return None
    missing = [f"{name}.csv" for name in CSVS if not (out / f"{name}.csv").is_file()]
    if not missing:
        return None
    return "no CSVs" if len(missing) == len(CSVS) else f"no {', '.join(missing)}"


def write_csvs(out: Path, counts: dict[str, int]) -> None:
    """The competition's four CSVs, the held-out label CSVs and a sample submission of ``-1``."""
    for split in SPLITS:
        layout, ids = LAYOUT[split], [sample_id(split, i) for i in range(counts[split])]
        images = [f"./{layout.image_dir}/{i}.png" for i in ids]
        gts = [f"./{layout.gt_dir}/{i}.png" for i in ids]
        if split in SOURCE_SPLITS:
            write_csv(out / f"{split}.csv", pd.DataFrame({"id": ids, "img_path": images, "gt_path": gts}))
        else:
            write_csv(out / f"{split}.csv", pd.DataFrame({"id": ids, "img_path": images}))
            held_out = pd.DataFrame({"id": ids, "img_path": images, "gt_path": gts})
            write_csv(out / f"{layout.gt_csv}.csv", held_out)
    rows = [f"{sample_id('test', i)}_class_{c}" for i in range(counts["test"]) for c in range(len(CLASSES))]
    write_csv(out / "sample_submission.csv", pd.DataFrame({"id": rows, "mask_rle": "-1"}))


def generate(
    out: str | os.PathLike,
    preset: str = "demo",
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
    cameras: Cameras = Cameras(),
    counts: dict[str, int] | None = None,
    progress: bool = True,
) -> dict:
    """Write a dataset to ``out`` and return its statistics (also saved as ``stats.json``).

    ``counts`` overrides the preset's number of images per split. Refuses an ``out`` that
    holds files unless ``overwrite``; then only the files this generator writes are replaced, and
    the statistics cache of the replaced images. An interrupted generation (images, no CSVs) is
    refused with that diagnosis; ``overwrite`` replaces it by a complete dataset.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    lacking = _unfinished(out)
    if lacking and not overwrite:
        raise FileExistsError(
            f"{out} holds an unfinished synthetic dataset ({lacking}; an interrupted run?): generate it "
            "again with overwrite=True to replace it"
        )
    counts = dict(PRESETS[preset].counts, **(counts or {}))
    out = prepare_output_dir(out, overwrite)
    for name in OUTPUTS:  # an overwritten run leaves no images of the earlier one behind
        target = out / name
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    start = time.perf_counter()
    tasks = [_Task(str(out), s, i, seed, preset, cameras) for s in SPLITS for i in range(counts[s])]
    histograms = {s: np.zeros(256, np.int64) for s in SPLITS}
    moments = {d: [np.zeros(3), np.zeros(3), 0] for d in ("source", "target")}
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(multiprocessing.get_context().Pool(workers, initializer=_init_worker))
            results = pool.imap_unordered(_run_task, tasks, chunksize=4)
        else:  # in this process: easier to debug and profile
            _init_worker()
            results = map(_run_task, tasks)
        bar = tqdm(results, total=len(tasks), desc=f"synth {preset}", unit="img", disable=not progress)
        for split, hist, total, squares in bar:
            histograms[split] += hist
            m = moments["source" if split in SOURCE_SPLITS else "target"]
            m[0] += total
            m[1] += squares
            m[2] += int(hist.sum())
    write_csvs(out, counts)
    stats = _stats(preset, seed, counts, histograms, moments, time.perf_counter() - start)
    write_json(out / "stats.json", stats)
    return stats


def _stats(
    preset: str,
    seed: int,
    counts: dict[str, int],
    histograms: dict[str, np.ndarray],
    moments: dict[str, list],
    seconds: float,
) -> dict:
    """Per-class pixel share of all pixels per split (255 as "background") and per-domain mean/std."""
    share = {}
    for split, hist in histograms.items():
        total = max(int(hist.sum()), 1)
        share[split] = {name: round(float(hist[c]) / total, 6) for c, name in enumerate(CLASSES)}
        share[split]["background"] = round(float(hist[IGNORE_INDEX]) / total, 6)
    domains = {}
    for domain, (total, squares, pixels) in moments.items():
        mean = total / max(pixels, 1)
        std = np.sqrt(np.maximum(squares / max(pixels, 1) - mean**2, 0))
        domains[domain] = {"mean": [round(float(v), 4) for v in mean], "std": [round(float(v), 4) for v in std]}
    return {
        "preset": preset,
        "seed": seed,
        "counts": counts,
        "seconds": round(seconds, 1),
        "class_share": share,
        "domain_rgb": domains,
    }


def format_report(stats: dict) -> str:
    """The stats as a short text table (percent of pixels)."""
    splits = list(stats["class_share"])
    lines = [f"{'class':<14}" + "".join(f"{s:>14}" for s in splits)]
    for name in [*CLASSES, "background"]:
        lines.append(f"{name:<14}" + "".join(f"{100 * stats['class_share'][s][name]:>13.2f}%" for s in splits))
    for domain, values in stats["domain_rgb"].items():
        lines.append(f"{domain} RGB mean {values['mean']} std {values['std']}")
    lines.append(f"{sum(stats['counts'].values())} images in {stats['seconds']} s")
    return "\n".join(lines)


DESCRIPTION = 'Synthetic "fisheye city": ray-cast street scenes seen by a pinhole and a fisheye camera.'


def add_camera_arguments(parser: argparse.ArgumentParser) -> None:
    """The fisheye camera's options (``--fisheye-model``, ``--fisheye-fov``, ``--mounts``) of a command line."""
    parser.add_argument("--fisheye-model", default=Cameras.fisheye_projection)
    parser.add_argument("--fisheye-fov", type=float, default=Cameras.fisheye_fov)
    parser.add_argument("--mounts", default=",".join(Cameras.fisheye_mounts), help="comma-separated: front,rear")


def parsed_cameras(parser: argparse.ArgumentParser, args: argparse.Namespace, bonnet_as_sky: bool = True) -> Cameras:
    """The :class:`Cameras` of :func:`add_camera_arguments`' options, checked at ``args.preset``'s target size
    before any worker starts: a bad setting is the parser's error (exit 2)."""
    try:
        cameras = Cameras(bonnet_as_sky=bonnet_as_sky, fisheye_projection=args.fisheye_model,
                          fisheye_fov=args.fisheye_fov, fisheye_mounts=tuple(m.strip() for m in args.mounts.split(",")))
        fisheye_camera(*PRESETS[args.preset].target_size, cameras.fisheye_fov, cameras.fisheye_projection)
    except ValueError as error:
        parser.error(str(error))
    return cameras


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit.synth", description=DESCRIPTION)
    parser.add_argument("--out", required=True, help="dataset directory to create (must be empty or new)")
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--overwrite", action="store_true", help="replace this generator's files in --out")
    parser.add_argument("--bonnet-ignore", action="store_true", help="label the source bonnet 255, not Sky")
    add_camera_arguments(parser)
    parser.add_argument("--no-preview", action="store_true", help="skip preview.png")
    args = parser.parse_args(argv)
    cameras = parsed_cameras(parser, args, bonnet_as_sky=not args.bonnet_ignore)
    try:
        stats = generate(args.out, args.preset, args.seed, args.workers, args.overwrite, cameras)
    except FileExistsError as error:  # the message speaks to notebooks; say the flag too
        lacking = _unfinished(args.out)
        if lacking:
            parser.error(f"{args.out} holds an unfinished synthetic dataset ({lacking}): run again with "
                         "--overwrite to replace it")
        parser.error(f"{error} (here: --overwrite)")
    print(format_report(stats))
    if not args.no_preview:
        from kit.report.viz import save_dataset_preview

        save_dataset_preview(args.out, Path(args.out) / "preview.png")
        print(f"preview: {Path(args.out) / 'preview.png'}")
    return 0
