"""Where the cars go: what trained runs predict on the labelled fisheye test pixels whose truth is Car,
and a picture of the test images with the most Car pixels, truth beside each run's prediction.

    .venv/bin/python scripts/car_pictures.py --runs source_only=outputs/bench_quality/runs/source_only_seed0_300 \
        before=outputs/bench_quality/runs/target_branch_seed0_300 after=outputs/bench_quality/runs/bn_fix_seed0_300 \
        --recalibrate before --out docs/car_ladder.png

``--recalibrate NAME`` adds NAME's model with its BatchNorm running statistics measured afresh on
unmasked target training images (AdaBN): if that alone brings the cars back, the statistics were
what lost them. Prints one markdown table: per run, mIoU, Car IoU and the shares of the true Car
pixels predicted as each of the most frequent classes.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kit.common.device import set_cpu_threads  # noqa: E402
from kit.competition.labels import CLASSES  # noqa: E402
from kit.competition.layout import read_label, read_split  # noqa: E402
from kit.competition.metrics import iou_table  # noqa: E402
from kit.data.datasets import SegmentationDataset  # noqa: E402
from kit.predict.runs import load_run  # noqa: E402
from kit.predict.splits import predict_label_maps, predict_split, run_border  # noqa: E402
from kit.predict.tta import InferenceSettings  # noqa: E402
from kit.report.viz import save_comparison  # noqa: E402

NAMES = [*CLASSES, "background"]
CAR = CLASSES.index("Car")


@torch.no_grad()
def recalibrated(run, data_dir: str, images: int = 200, batch: int = 8):
    """A copy of ``run`` whose BatchNorm running statistics are the plain average over ``images``
    unmasked target training images at the run's size (the weights are untouched)."""
    model, config = run
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    th, tw = config.target_size
    frame = read_split(data_dir, "train_target").iloc[:images].reset_index(drop=True)
    dataset = SegmentationDataset(frame, A.Compose([A.Resize(th, tw)]), config.target_mean, config.target_std)
    model.train()
    for start in range(0, len(dataset), batch):
        model(torch.stack([dataset[i]["image"] for i in range(start, min(start + batch, len(dataset)))]))
    return model.eval(), config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--runs", nargs="+", required=True, metavar="NAME=RUN_DIR")
    parser.add_argument("--recalibrate", nargs="*", default=[], metavar="NAME")
    parser.add_argument("--split", default="test_gt", help="labelled fisheye split (train_target_gt: not the test labels)")
    parser.add_argument("--rows", type=int, default=3, help="test images in the picture")
    parser.add_argument("--out", default="outputs/car_pictures.png")
    args = parser.parse_args(argv)
    set_cpu_threads(None)
    runs = {}
    for item in args.runs:
        name, _, path = item.partition("=")
        if not path:
            raise SystemExit(f"--runs {item!r}: expected NAME=RUN_DIR")
        runs[name] = load_run(path, "last.pt", device="cpu")
    for name in args.recalibrate:
        if name not in runs:
            raise SystemExit(f"--recalibrate {name!r}: not one of --runs ({', '.join(runs)})")
        runs[f"{name}, BN recalibrated"] = recalibrated(runs[name], args.data)

    test = read_split(args.data, args.split)
    border = run_border([next(iter(runs.values()))], args.data, "ellipse")
    settings = InferenceSettings(mode="whole")
    print("| run | mIoU | Car IoU | true Car pixels predicted as |\n|---|---|---|---|")
    for name, run in runs.items():
        confusion = predict_split([run], test, settings=settings, border=border, progress=False).confusion
        row = confusion[CAR] / max(confusion[CAR].sum(), 1)  # rows: truth, columns: prediction
        shares = ", ".join(f"{NAMES[c]} {100 * row[c]:.0f}%" for c in np.argsort(row)[::-1][:4] if row[c] >= 0.01)
        table = iou_table(confusion)
        print(f"| {name} | {table['mIoU']:.4f} | {table['Car']:.3f} | {shares} |", flush=True)

    car_pixels = [int((read_label(p) == CAR).sum()) for p in test["gt_path"]]
    chosen = test.iloc[np.argsort(car_pixels)[::-1][: args.rows]].reset_index(drop=True)
    predictions = {name: dict(predict_label_maps([run], chosen, settings=settings, border=border, progress=False))
                   for name, run in runs.items()}
    rows = []
    for _, item in chosen.iterrows():
        image = cv2.cvtColor(cv2.imread(str(item["img_path"])), cv2.COLOR_BGR2RGB)
        maps = {"truth": read_label(item["gt_path"]), **{name: predictions[name][item["id"]] for name in runs}}
        rows.append((image, maps))
    save_comparison(args.out, rows, titles=list(chosen["id"]), width_inches=3.0 * (2 + len(runs)))
    print(f"picture: {args.out}")


if __name__ == "__main__":
    main()
