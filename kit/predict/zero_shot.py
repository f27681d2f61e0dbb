"""A Cityscapes model the kit never trained, written as a run folder, so that ``04_predict``,
``05_ensemble`` and ``06_pseudo_label`` predict with it like any run: a first submission, a baseline
and pseudo-labels for ``self_train`` before any training.

    python -m kit.predict.zero_shot nvidia/segformer-b5-finetuned-cityscapes-1024-1024 \\
        --data-dir data/real --run-name cityscapes_b5 --border-threshold 108
    # then 04_predict with RUN_NAME = "cityscapes_b5"

The model (a ``SegformerForSemanticSegmentation`` or ``Mask2FormerForUniversalSegmentation`` with
Cityscapes' 19 classes, from the hub or a ``save_pretrained`` folder) is wrapped in
:class:`kit.models.cityscapes.CityscapesModel`: each competition class's probability is the sum of its
Cityscapes classes' (``kit.competition.cityscapes``). The run's ``config.json`` holds the network's
configuration and ``best.pt`` (``last.pt`` the same file) its weights, so the run needs no internet afterwards. Images are
normalised with ImageNet statistics, as both families' image processors do. Licences: NVIDIA's
SegFormer checkpoints and the Mask2Former zoo are for non-commercial use.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from kit.common.files import atomic_path, check_output_dir, link_file, prepare_output_dir, write_json
from kit.competition.cityscapes import CITYSCAPES_ARCH, TWO_WHEELERS, cityscapes_class_map
from kit.competition.labels import NUM_CLASSES
from kit.competition.layout import read_image, read_split
from kit.data.stats import IMAGENET_MEAN, IMAGENET_STD
from kit.models.cityscapes import CityscapesModel, network_config, read_cityscapes_network

SLIDE_WINDOW = 1024  # the crop Cityscapes models train on (1024×1024): the slide window, where it fits


def dataset_image_size(data_dir: str | os.PathLike, split: str = "test") -> tuple[int, int]:
    """(H, W) of the first image of ``split`` in ``data_dir``."""
    rows = read_split(data_dir, split)
    image = read_image(rows.iloc[0]["img_path"])
    return int(image.shape[0]), int(image.shape[1])


def write_zero_shot_run(
    source: str,
    data_dir: str | os.PathLike,
    run_name: str,
    runs_dir: str | os.PathLike = "outputs/runs",
    size: tuple[int, int] | None = None,
    two_wheelers: str = "background",
    border_threshold: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``<runs_dir>/<run_name>/`` (``config.json``, ``best.pt`` = ``last.pt``) for the Cityscapes model ``source``.

    ``size``: the (H, W) fisheye images are resized to for prediction (None: the dataset's own test
    image size). ``border_threshold``: the fisheye border's (None: Otsu; the real data: 108). An
    existing run folder is refused unless ``overwrite``. Returns the run folder."""
    class_map = cityscapes_class_map(two_wheelers)
    size = tuple(size) if size is not None else dataset_image_size(data_dir)
    if len(size) != 2 or not all(isinstance(v, int) and v >= 32 for v in size):
        raise ValueError(f"size = {list(size)}: expected (H, W), two integers ≥ 32")
    run_dir = Path(runs_dir) / run_name
    check_output_dir(run_dir, overwrite)  # before a download that may take minutes
    network = read_cityscapes_network(source)
    model = CityscapesModel(network, class_map)
    config = {
        "arch": CITYSCAPES_ARCH, "encoder": source, "num_classes": NUM_CLASSES + 1, "method": "zero_shot",
        "head_kwargs": {"network": network_config(network), "class_map": list(class_map)},
        "target_size": list(size), "target_mean": list(IMAGENET_MEAN), "target_std": list(IMAGENET_STD),
        "crop_size": [min(SLIDE_WINDOW, size[0]), min(SLIDE_WINDOW, size[1])], "data_dir": str(data_dir),
        "border_threshold": border_threshold, "fisheye_eval_split": None, "two_wheelers": two_wheelers,
        "run_name": run_name, "runs_dir": str(runs_dir), "zero_shot_source": source,
    }
    prepare_output_dir(run_dir, overwrite=overwrite)
    with atomic_path(run_dir / "best.pt") as tmp:
        torch.save({"model": model.state_dict(), "zero_shot_source": source}, tmp)
    link_file(run_dir / "best.pt", run_dir / "last.pt")  # 06's default checkpoint; the same file
    write_json(run_dir / "config.json", config)
    return run_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m kit.predict.zero_shot",
        description="Write a Cityscapes SegFormer or Mask2Former as a run folder, so that 04_predict, 05_ensemble and "
                    "06_pseudo_label predict the competition's classes with it before any training.")
    parser.add_argument("source", help="a Cityscapes SegFormer / Mask2Former: Hugging Face id or save_pretrained folder")
    parser.add_argument("--data-dir", default="data/demo", help="the dataset it will predict: its test images give the "
                        "default --size (04/05/06 estimate the border on their own DATA_DIR, with --border-threshold)")
    parser.add_argument("--run-name", required=True, help="the run folder's name (04/05/06 RUN_NAME)")
    parser.add_argument("--runs-dir", default="outputs/runs", help="where run folders live (04/05/06 RUNS_DIR)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="prediction input size (default: the images')")
    parser.add_argument("--two-wheelers", default="background", choices=TWO_WHEELERS,
                        help="where Cityscapes' motorcycle and bicycle go")
    parser.add_argument("--border-threshold", type=float, help="the fisheye border's threshold on the mean fisheye image "
                        "(default: Otsu; the real data: 108)")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier run of that name")
    args = parser.parse_args(argv)
    run_dir = write_zero_shot_run(args.source, args.data_dir, args.run_name, args.runs_dir,
                                  tuple(args.size) if args.size else None, args.two_wheelers, args.border_threshold,
                                  args.overwrite)
    print(f"{run_dir}: {args.source} as a zero-shot run; predict it with 04_predict RUN_NAME = {args.run_name!r}")


if __name__ == "__main__":
    main()
