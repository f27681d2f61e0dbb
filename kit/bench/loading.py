"""How fast one data-loading worker makes ``uda`` training samples at the competition's sizes.

    python -m kit.bench loading [--images 8] [--repeats 2] [--out outputs/bench/loading]

Writes a few synthetic images at 2048×1024 (source) and 1920×1080 (fisheye), and a copy of them at
1024×512 / 960×540 (``kit.data.resize``), then times, side by side in one process on one thread, the
samples of ``solution_a``'s ``uda`` recipe (source crop + distortion copy with labels, and a target
crop) three ways: each branch reading its row itself (how the kit read them before, twice per
source row), the row read once for both branches, and the row read once from the resized copy.
Prints samples per second of one worker and the ratios to the first way.

Then the pseudo-labeller's own work per 1080×1920 image on the CPU (after the model's probabilities):
its threshold histogram and its label map, as ``kit.predict.pseudo`` computed them before (numpy,
``np.add.at``) and now (torch, ``torch.bincount``; on a GPU the same code runs on the device).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from kit.competition.labels import IGNORE_INDEX, NUM_CLASSES, VOID_INDEX
from kit.data.resize import resize_dataset
from kit.predict.pseudo import BINS, candidates, confidence_histograms, pseudo_label_map
from kit.synth import generate
from kit.train.config import TrainConfig
from kit.train.presets import preset_diff
from kit.train.recipes import build_data


def _config(data_dir: Path) -> TrainConfig:
    values = {**preset_diff("solution_a"), "data_dir": str(data_dir), "pretrained": False, "border_threshold": None,
              "stats_limit": 4}
    return TrainConfig(**values)


def _time(make, count: int, repeats: int) -> float:
    """Best of ``repeats`` of the seconds per sample for ``count`` samples."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(count):
            make(i)
        best = min(best, (time.perf_counter() - start) / count)
    return best


def _pseudo_before(probs: torch.Tensor, inside: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """kit.predict.pseudo's work per image before issue 25, both passes (thresholds, then the label
    file): host arrays, np.add.at."""
    confidence, classes = (t.numpy() for t in probs.max(dim=0))  # the thresholds pass
    histogram = np.zeros((NUM_CLASSES + 1, BINS), np.int64)
    index = np.minimum((confidence[inside] * BINS).astype(np.int64), BINS - 1)
    np.add.at(histogram, (classes[inside].astype(np.int64), index), 1)
    confidence, classes = probs.max(dim=0)  # the write pass
    classes, confidence = classes.to(torch.uint8).numpy(), confidence.numpy()
    kept = confidence >= thresholds[classes]
    label = np.where(classes >= NUM_CLASSES, IGNORE_INDEX, classes).astype(np.uint8)
    label[~kept] = VOID_INDEX
    label[~inside] = IGNORE_INDEX
    candidate = classes[inside].astype(np.int64)
    np.bincount(candidate, minlength=NUM_CLASSES + 1), np.bincount(candidate[label[inside] != VOID_INDEX])
    return label


def _pseudo_now(probs: torch.Tensor, inside: torch.Tensor, thresholds: np.ndarray) -> np.ndarray:
    confidence_histograms(probs, inside)  # the thresholds pass
    classes, confidence = candidates(probs, thresholds, balanced=False)  # the write pass
    label = pseudo_label_map(classes, confidence, thresholds, inside)
    candidate = classes[inside].long()
    torch.bincount(candidate, minlength=NUM_CLASSES + 1), torch.bincount(candidate[label[inside] != VOID_INDEX])
    return label.cpu().numpy()


def pseudo_rows(repeats: int) -> list[tuple[str, float]]:
    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(NUM_CLASSES + 1, 1080, 1920, generator=generator).softmax(dim=0)
    inside = np.zeros((1080, 1920), bool)
    cv2.ellipse(inside.view(np.uint8), (960, 540), (900, 530), 0, 0, 360, 1, -1)
    thresholds = np.linspace(0.05, 0.1, NUM_CLASSES + 1)
    before = _pseudo_before(probs, inside, thresholds)
    np.testing.assert_array_equal(before, _pseudo_now(probs, torch.from_numpy(inside), thresholds))  # the same labels
    return [("pseudo-label work, before (numpy, np.add.at)", _time(lambda i: _pseudo_before(probs, inside, thresholds), 2, repeats)),
            ("pseudo-label work, now (torch.bincount)", _time(lambda i: _pseudo_now(probs, torch.from_numpy(inside), thresholds), 2, repeats))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kit.bench loading", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=8, help="source and fisheye training images to write")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="outputs/bench/loading")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)  # one data-loading worker
    out = Path(args.out)
    full, small = out / "full", out / "resized"
    if not (full / "test.csv").is_file():
        counts = {"train_source": args.images, "val_source": 2, "train_target": args.images, "test": 1}
        generate(full, preset="full", seed=0, workers=2, counts=counts, progress=False)
    if not (small / "test.csv").is_file():
        resize_dataset(full, small, (1024, 512), (960, 540), workers=2)
    rows = []
    for name, root in (("full size", full), ("resized copy", small)):
        data = build_data(_config(root))
        zipped, target = data.train, data.target
        n = min(len(zipped), len(target))
        if name == "full size":
            def each_reads(i: int) -> None:  # the kit before: every branch decodes the row again
                for dataset in zipped.datasets.values():
                    dataset[i]
                target[i]
            rows.append(("each branch reads its row (before)", _time(each_reads, n, args.repeats)))
        rows.append((f"row read once, {name}", _time(lambda i: (zipped[i], target[i]), n, args.repeats)))
    before = rows[0][1]
    print(f"uda samples (source + distortion copy + target) per worker, solution_a sizes, {args.images} images")
    print(f"{'':40s} {'s/sample':>9s} {'samples/s':>10s} {'× before':>9s}")
    for label, seconds in rows:
        print(f"{label:40s} {seconds:9.3f} {1 / seconds:10.2f} {before / seconds:9.2f}")
    pseudo = pseudo_rows(args.repeats)
    print("\npseudo-labelling per 1080×1920 image on the CPU, after the model (histogram + label map + counts)")
    print(f"{'':48s} {'s/image':>9s} {'× before':>9s}")
    for label, seconds in pseudo:
        print(f"{label:48s} {seconds:9.3f} {pseudo[0][1] / seconds:9.2f}")


if __name__ == "__main__":
    main()
