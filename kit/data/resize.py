"""A downscaled copy of a dataset in the same layout, to train from (``docs/real-data.md``).

    python -m kit.data.resize data/open data/open_1024 --source-size 1024x512 [--target-size 960x540]

At 2048×1024 decoding one source PNG costs about as much as the rest of a training sample (and the
kit resizes it to ``SOURCE_SIZE`` right after); a copy at the training size decodes several times
faster, in every epoch. Source splits (``train_source``, ``val_source``) are resized to
``--source-size``; fisheye training splits (``train_target``, ``train_target_gt``) to ``--target-size``
when given. Images are resized with area averaging, labels with nearest neighbours (label values are
kept exactly). Every other split (``test``: the submission is scored at the test images' own size) and
every other file at the root (``sample_submission.csv``) is linked (a hard link, or a copy); the
statistics caches the kit writes (``kit_stats.json``) and hidden files (the kit's ``.kit-outputs``
manifest) are left behind.
Every split CSV is written anew with paths relative to the copy. The copy is a kit output folder: it is
never written over unless ``--overwrite``.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import pandas as pd

from kit.common.device import usable_cores
from kit.common.files import link_file, prepare_output_dir, write_csv, write_image
from kit.competition.layout import read_image, read_label, read_split

SOURCE_SPLITS = ("train_source", "val_source")
TARGET_SPLITS = ("train_target", "train_target_gt")
CACHES = ("kit_stats.json",)  # per-dataset caches of the kit (kit.data.stats), measured at the other sizes


def parse_size(text: str) -> tuple[int, int]:
    """``"1024x512"`` → (W, H)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WIDTHxHEIGHT, e.g. 1024x512") from None
    if w < 1 or h < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a width and a height ≥ 1")
    return w, h


def _relative(root: Path, path: str) -> str:
    relative = os.path.relpath(path, root)
    if relative.startswith(".."):
        raise ValueError(f"{path} lies outside the dataset root {root}: the copy keeps paths relative to the root")
    return relative


def _resize_one(job: tuple[str, str, tuple[int, int], bool]) -> None:
    source, destination, size, is_label = job
    if is_label:
        array = cv2.resize(read_label(source), size, interpolation=cv2.INTER_NEAREST)
    else:
        array = cv2.resize(read_image(source), size, interpolation=cv2.INTER_AREA)
    write_image(destination, array)


def resize_dataset(src: str | os.PathLike, dst: str | os.PathLike, source_size: tuple[int, int],
                   target_size: tuple[int, int] | None = None, workers: int | None = None,
                   overwrite: bool = False) -> Path:
    """Write the copy of dataset ``src`` into ``dst`` (see the module docstring); sizes are (W, H).
    Returns ``dst``."""
    src, dst = Path(src).resolve(), Path(dst)
    if not (src / "train_source.csv").is_file():
        raise FileNotFoundError(f"{src} holds no train_source.csv: not a dataset in the competition's layout")
    target = dst.resolve()
    if target == src or src in target.parents or target in src.parents:
        raise ValueError(f"the copy {dst} would be inside the dataset {src}, or contain it: choose a folder beside it")
    sizes = {**dict.fromkeys(SOURCE_SPLITS, source_size), **(dict.fromkeys(TARGET_SPLITS, target_size) if target_size else {})}
    prepare_output_dir(dst, overwrite=overwrite)
    jobs, links = {}, {}
    for csv in sorted(src.glob("*.csv")):
        split = csv.stem
        frame = read_split(src, split) if "img_path" in pd.read_csv(csv, nrows=0).columns else None
        if frame is None:  # sample_submission.csv and other tables
            link_file(csv, dst / csv.name)
            continue
        for column in ("img_path", "gt_path"):
            if column not in frame.columns:
                continue
            relative = [_relative(src, p) for p in frame[column]]
            for path, rel in zip(frame[column], relative):
                if split in sizes:
                    jobs[rel] = (path, str(dst / rel), sizes[split], column == "gt_path")
                else:
                    links[rel] = path
            frame[column] = [f"./{rel}" for rel in relative]
        write_csv(dst / csv.name, frame)
    for rel in set(jobs) & set(links):
        raise ValueError(f"{rel} is named by a split that is resized and by one that is not")
    for rel, path in links.items():
        link_file(path, dst / rel)
    with ProcessPoolExecutor(max_workers=workers or usable_cores()) as pool:
        list(pool.map(_resize_one, jobs.values(), chunksize=8))
    for extra in sorted(src.iterdir()):
        if extra.is_file() and extra.suffix != ".csv" and extra.name not in CACHES and not extra.name.startswith("."):
            link_file(extra, dst / extra.name)
    return dst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kit.data.resize", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="the dataset root (competition layout)")
    parser.add_argument("dst", help="the copy's root (a new folder)")
    parser.add_argument("--source-size", "--to", type=parse_size, required=True, metavar="WxH",
                        help="size of the source images and labels, e.g. 1024x512")
    parser.add_argument("--target-size", type=parse_size, default=None, metavar="WxH",
                        help="size of the fisheye training images (train_target), e.g. 960x540; default: linked as they are")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: one per core)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier copy in dst")
    args = parser.parse_args(argv)
    out = resize_dataset(args.src, args.dst, args.source_size, args.target_size, args.workers, args.overwrite)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
