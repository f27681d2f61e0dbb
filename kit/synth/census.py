"""A census of the synthetic city's classes: per-class pixel shares of each domain against Cityscapes',
how often each class is in a frame, and how large its objects are at the render size.

    python -m kit.bench classes --preset demo --images 200 [--seed N] [--fisheye-model M --fisheye-fov F]

Renders ``images`` source frames (``train_source``) and as many fisheye frames (``test``, the split
the benchmark scores) without writing them. Source labels are counted after the label fix that
training applies (the bonnet is background, not Sky). Shares are of the pixels labelled with one of
the 12 classes in both the synthetic frames and Cityscapes (:func:`kit.competition.cityscapes.cityscapes_class_shares`),
so a domain's border, ego body and bonnet do not dilute them. An object is a connected component
(8-neighbour) of one class.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import os
import time
from collections.abc import Sequence

import cv2
import numpy as np

from kit.common.files import write_json, write_text
from kit.competition.cityscapes import cityscapes_class_shares
from kit.competition.labels import CLASSES, NUM_CLASSES
from kit.synth.cameras import Cameras
from kit.synth.dataset import PRESETS, add_camera_arguments, parsed_cameras, render_sample

DOMAINS = {"source": "train_source", "fisheye": "test"}
WITHIN = 2.0  # the generator's goal: every class's share within this factor of Cityscapes', in both domains


def frame_census(label: np.ndarray) -> dict:
    """One frame's pixel counts per class (0..11) and the pixel areas of its objects per class."""
    counts = np.bincount(label.ravel(), minlength=256)[:NUM_CLASSES]
    objects = {}
    for c in np.flatnonzero(counts):
        n, _, stats, _ = cv2.connectedComponentsWithStats((label == c).astype(np.uint8), connectivity=8)
        objects[int(c)] = stats[1:n, cv2.CC_STAT_AREA].tolist()
    return {"counts": counts, "objects": objects}


def _one(job: tuple[str, int, int, str, Cameras]) -> tuple[str, dict]:
    domain, index, seed, preset, cameras = job
    _, label = render_sample(DOMAINS[domain], index, seed, preset, cameras)
    return domain, frame_census(label)


def class_census(preset: str = "demo", images: int = 200, seed: int = 0, cameras: Cameras = Cameras(),
                 workers: int = 1) -> dict:
    """Per domain and class: share of labelled pixels, its ratio to Cityscapes', the share of frames
    holding the class, the median / 90th-percentile / largest object in pixels; and whether every
    ratio is within :data:`WITHIN`."""
    cameras = dataclasses.replace(cameras, bonnet_as_sky=False)  # the source as training sees it
    jobs = [(d, i, seed, preset, cameras) for d in DOMAINS for i in range(images)]
    start = time.perf_counter()
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            frames = pool.map(_one, jobs, chunksize=4)
    else:
        frames = [_one(job) for job in jobs]
    reference = cityscapes_class_shares()
    result: dict = {"preset": preset, "seed": seed, "images": images, "cameras": dataclasses.asdict(cameras),
                    "seconds": round(time.perf_counter() - start, 1), "cityscapes": reference, "domains": {}}
    for domain in DOMAINS:
        mine = [f for d, f in frames if d == domain]
        counts = np.sum([f["counts"] for f in mine], axis=0)
        total = max(int(counts.sum()), 1)
        classes = {}
        for c, name in enumerate(CLASSES):
            areas = np.array([a for f in mine for a in f["objects"].get(c, [])], np.int64)
            share = float(counts[c]) / total
            classes[name] = {
                "share": share, "ratio": share / reference[name],
                "frames": float(np.mean([c in f["objects"] for f in mine])),
                "objects_per_frame": len(areas) / len(mine),
                "median_object": float(np.median(areas)) if len(areas) else 0.0,
                "p90_object": float(np.percentile(areas, 90)) if len(areas) else 0.0,
                "largest_object": int(areas.max()) if len(areas) else 0,
            }
        result["domains"][domain] = classes
    ratios = [v["ratio"] for d in result["domains"].values() for v in d.values()]
    result["within"] = bool(all(1 / WITHIN <= r <= WITHIN for r in ratios))
    return result


def format_census(census: dict) -> str:
    """Markdown: the share table against Cityscapes (✗ marks a ratio outside :data:`WITHIN`), then the
    object sizes per domain."""
    size = PRESETS[census["preset"]]
    lines = ["| class | Cityscapes | source | × | fisheye | × |", "|---|---|---|---|---|---|"]
    for name in CLASSES:
        cells = [f"{100 * census['cityscapes'][name]:.2f}%"]
        for domain in DOMAINS:
            v = census["domains"][domain][name]
            mark = "" if 1 / WITHIN <= v["ratio"] <= WITHIN else " ✗"
            cells += [f"{100 * v['share']:.2f}%", f"{v['ratio']:.2f}{mark}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for domain, (w, h) in zip(DOMAINS, (size.source_size, size.target_size)):
        lines += ["", f"| {domain} ({w}×{h}) | in frames | objects per frame | median object | 90th pct | largest |",
                  "|---|---|---|---|---|---|"]
        for name in CLASSES:
            v = census["domains"][domain][name]
            lines.append(f"| {name} | {100 * v['frames']:.0f}% | {v['objects_per_frame']:.1f} | "
                         f"{v['median_object']:.0f} px | {v['p90_object']:.0f} px | {v['largest_object']} px |")
    lines += ["", f"{census['images']} frames per domain, preset {census['preset']}, seed {census['seed']}, "
              f"{census['seconds']} s; every share within {WITHIN:g}× of Cityscapes': "
              f"{'yes' if census['within'] else 'no'}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit.bench classes", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    parser.add_argument("--images", type=int, default=200, help="frames per domain")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    add_camera_arguments(parser)
    parser.add_argument("--out", help="also write classes.md and classes.json into this folder")
    args = parser.parse_args(argv)
    if args.images < 1:
        parser.error(f"--images {args.images}: expected at least 1")
    cameras = parsed_cameras(parser, args)  # the bonnet: as training sees it, whatever this says (class_census)
    census = class_census(args.preset, args.images, args.seed, cameras, args.workers)
    text = format_census(census)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        write_text(os.path.join(args.out, "classes.md"), text + "\n")
        write_json(os.path.join(args.out, "classes.json"), census)
    return 0 if census["within"] else 1
