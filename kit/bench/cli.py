"""Benchmarks that print numbers: ``python -m kit.bench <name>``.

    rle   encode a test set's worth of 960×540 label maps with kit.competition.rle and with the baseline
          (one full pass per class), check the strings are identical, print both throughputs.
    warp  FisheyeWarp throughput at competition and demo sizes: the first call (building the
          remap maps) against calls that reuse the cached maps.
    models  InternImage-T's parameter count against the published one, and the CPU forward time
          per 512×512 image of the InternImage-T, PVTv2-b1 and ConvNeXt-T encoders.
    infer  kit.predict images/s on demo-sized fisheye frames: whole image, slide (windows batched and
          one at a time, with the largest difference between the two), flip + 3-scale TTA.
    quality  every training method (source_only, fisheye_tf, uda, uda_geo, self_train, oracle) with one
          encoder, crop and step budget, over seeds, on the synthetic demo data, scored on its labelled
          fisheye test split: mean ± std of per-class IoU, mIoU, gap closed, paired differences to
          fisheye_tf, source_only, uda and uda_elastic, training time (quality.md/.json; kit.bench.scoreboard).
    tune  variants of uda_geo and self_train (TUNE_VARIANTS) trained like quality and scored on the test split of a
          *validation* dataset (another synthetic seed or camera), so that no choice looks at the
          benchmark's test labels (tune.md/.json).
    tools  the small-class tools switched at equal budget: rare-class sampling off, Dice off or on where the method
          has it, multi-scale + flip TTA, paired with each method as the benchmark trains it (tools.md/.json;
          kit.bench.tools).
    ladder  the Car ablation ladder: source_only → uda_geo one component at a time (ladder.md/.json).
    adapt  adaptation round two (ADAPT_VARIANTS): uda with rare-class sampling, class mix, no distortion copy,
          Fourier domain adaptation, warm-started from source_only, each at the same image passes as
          source_only, on a *validation* dataset (adapt.md/.json; kit.bench.studies).

    gpu   the GPU check: uda in bf16/fp16/fp32, mask2former + InternImage in bf16, a pseudo-label round,
          2-GPU DDP (kit.bench.gpu; scripts/gpu_check.sh on a fresh machine).
    scale  the competition-scale dry run on a CPU: the notebooks at 2048×1024 / 1920×1080 (kit.bench.scale).
    classes  the synthetic city's class census: pixel shares per domain against Cityscapes', frames
          holding each class, object sizes (kit.synth.census).
    loading  one data-loading worker's uda samples at the competition's sizes, and the pseudo-labeller's
          work per 1080×1920 image (kit.bench.loading).

quality, tune and ladder reuse every (name, seed, steps) result already in --out.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time

import cv2
import numpy as np

from kit.bench.scoreboard import QUALITY_PASSES, QUALITY_ROWS, QUALITY_STEPS, bench_quality
from kit.bench.studies import bench_adapt, bench_encoders, bench_ladder, bench_tune
from kit.bench.tools import TOOLS, bench_tools
from kit.bench.variants import ADAPT_VARIANTS, LADDER, TUNE_VARIANTS
from kit.competition.labels import IGNORE_INDEX, NUM_CLASSES
from kit.competition.rle import SUBMISSION_SIZE, encode_label_map
from kit.train.config import METHODS


def baseline_rle_encode(mask: np.ndarray) -> str:
    """The competition baseline's encoder, kept verbatim in spirit as the reference."""
    pixels = mask.flatten()
    pixels = np.concatenate([[0], pixels, [0]])
    runs = np.where(pixels[1:] != pixels[:-1])[0] + 1
    runs[1::2] -= runs[::2]
    return " ".join(str(x) for x in runs)


def baseline_encode_label_map(label_map: np.ndarray) -> list[str]:
    """One full pass per class over an already 960×540 map, ``-1`` for empty masks (baseline)."""
    strings = []
    for class_id in range(NUM_CLASSES):
        class_mask = (label_map == class_id).astype(np.uint8)
        strings.append(baseline_rle_encode(class_mask) if class_mask.sum() > 0 else "-1")
    return strings


def fake_fisheye_label_map(rng: np.random.Generator, size: tuple[int, int] = SUBMISSION_SIZE) -> np.ndarray:
    """A piecewise-constant ``uint8 (H, W)`` street-like prediction: sky, buildings, road, objects,
    a dark border outside an ellipse. Realistic run counts, unlike per-pixel noise."""
    w, h = size
    label = np.full((h, w), 8, np.uint8)  # sky
    horizon = int(h * rng.uniform(0.35, 0.55))
    x = 0
    while x < w:  # buildings / trees of random widths and heights above the horizon
        bw = int(rng.integers(w // 30, w // 6))
        top = int(rng.integers(h // 10, horizon))
        label[top:horizon, x : x + bw] = rng.choice([2, 2, 7, 3])
        x += bw
    label[horizon:] = 0  # road
    for side in (-1, 1):  # sidewalks as triangles toward the horizon
        pts = np.array([[w // 2, horizon], [w // 2 + side * w, h], [w // 2 + side * w, horizon]], np.int32)
        cv2.fillPoly(label, [pts], 1)
    for _ in range(int(rng.integers(5, 25))):  # cars, people, poles, signs as boxes and ellipses
        cls = int(rng.choice([11, 11, 11, 9, 10, 4, 5, 6, 7, 3]))
        cx, cy = int(rng.integers(0, w)), int(rng.integers(h // 4, h))
        ax, ay = int(rng.integers(3, w // 12)), int(rng.integers(3, h // 8))
        if rng.random() < 0.5:
            cv2.rectangle(label, (cx - ax, cy - ay), (cx + ax, cy + ay), cls, -1)
        else:
            cv2.ellipse(label, (cx, cy), (ax, ay), float(rng.uniform(0, 180)), 0, 360, cls, -1)
    disc = np.zeros((h, w), np.uint8)
    cv2.ellipse(disc, (w // 2, h // 2), (int(w * 0.47), int(h * 0.62)), 0, 0, 360, 1, -1)
    label[disc == 0] = IGNORE_INDEX
    return label


def bench_rle(count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    maps = [fake_fisheye_label_map(rng) for _ in range(count)]
    runs = np.mean([np.count_nonzero(m.ravel()[1:] != m.ravel()[:-1]) + 1 for m in maps])
    print(f"{count} label maps at {SUBMISSION_SIZE[0]}x{SUBMISSION_SIZE[1]}, {runs:.0f} runs per map on average")
    start = time.perf_counter()
    base = [baseline_encode_label_map(m) for m in maps]
    t_base = time.perf_counter() - start
    start = time.perf_counter()
    kit = [encode_label_map(m) for m in maps]
    t_kit = time.perf_counter() - start
    identical = base == kit
    print(f"baseline (12 passes): {count / t_base:8.1f} maps/s  ({t_base:.2f} s)")
    print(f"kit.competition.rle  (1 pass):    {count / t_kit:8.1f} maps/s  ({t_kit:.2f} s)")
    print(f"speed-up: {t_base / t_kit:.1f}x   strings identical: {identical}")
    if not identical:
        raise SystemExit("kit.competition.rle output differs from the baseline")


def bench_warp(repeats: int) -> None:
    from kit.data.augment import FisheyeWarp
    from kit.data.fisheye import pinhole_to_fisheye_maps

    rng = np.random.default_rng(0)
    for name, src, dst in [("competition", (2048, 1024), (1920, 1080)), ("demo", (512, 256), (480, 270))]:
        image = rng.integers(0, 256, (src[1], src[0], 3)).astype(np.uint8)
        label = rng.integers(0, 12, (src[1], src[0])).astype(np.uint8)
        pinhole_to_fisheye_maps.cache_clear()
        warp = FisheyeWarp(size=dst, pool_size=1, p=1.0)
        start = time.perf_counter()
        warp(image=image, mask=label)
        first = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(repeats):
            warp(image=image, mask=label)
        cached = (time.perf_counter() - start) / repeats
        print(f"{name:12s} {src[0]}x{src[1]} -> {dst[0]}x{dst[1]}: first call {first * 1e3:7.1f} ms, "
              f"cached maps {cached * 1e3:6.1f} ms/pair ({1 / cached:6.1f} pairs/s)")


def bench_models(size: int, repeats: int) -> None:
    import timm
    import torch

    from kit.models.internimage import PUBLISHED_PARAMS, classification_head_params, create_internimage

    torch.manual_seed(0)
    internimage = create_internimage("internimage_t")
    params = sum(p.numel() for p in internimage.parameters())
    head = classification_head_params(internimage)
    published = PUBLISHED_PARAMS["internimage_t"]
    print(f"internimage_t: encoder {params / 1e6:.2f}M + ImageNet head {head / 1e6:.2f}M = "
          f"{(params + head) / 1e6:.2f}M, published 30M (OpenGVLab/InternImage README, InternImage-T "
          f"ImageNet-1K), {100 * ((params + head) / published - 1):+.1f}%")

    encoders = {
        "internimage_t": internimage,
        "pvt_v2_b1": timm.create_model("pvt_v2_b1", pretrained=False, features_only=True),
        "convnext_tiny": timm.create_model("convnext_tiny", pretrained=False, features_only=True),
    }
    x = torch.randn(1, 3, size, size)
    # A shared machine's load changes these timings a lot (threads wait for busy cores): print it.
    print(f"\nCPU forward, 1×3×{size}×{size}, eval, no grad, torch threads: {torch.get_num_threads()}, "
          f"load average: {os.getloadavg()[0]:.1f}, median of {repeats} after a warm-up")
    print(f"{'encoder':15s} {'params':>8s} {'ms/image':>9s}  feature channels")
    for name, model in encoders.items():
        model.eval()
        times = []
        with torch.no_grad():
            features = model(x)
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:15s} {params / 1e6:7.1f}M {1e3 * float(np.median(times)):9.0f}  "
              f"{[f.shape[1] for f in features]}")

    from kit.models.model import count_parameters, create_model

    # Solution B's two heads on InternImage-T at their defaults (256 channels; Mask2Former: 200 queries,
    # 9 decoder layers, 6 deformable-attention layers)
    print(f"\n{'model':28s} {'head params':>11s} {'ms/image':>9s}")
    for arch in ("upernet", "mask2former"):
        model = create_model(arch, "internimage_t").eval()
        times = []
        with torch.no_grad():
            model(x)
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
        head = count_parameters(model) - count_parameters(model.encoder)
        print(f"{arch + ' + internimage_t':28s} {head / 1e6:10.1f}M {1e3 * float(np.median(times)):9.0f}")


def bench_encoder_steps(repeats: int, names: tuple[str, ...] = ("tf_efficientnet_lite0", "pvt_v2_b0", "mit_b0")) -> None:
    """One training step (forward + backward) of the benchmark's model (DAFormer 64, batch 8 of 128×128
    crops) per encoder, the encoders taking turns in every repeat so that a change of load hits all alike."""
    import torch
    import torch.nn.functional as F

    from kit.models.model import create_model

    torch.manual_seed(0)
    models = {name: create_model("daformer", name, channels=64).train() for name in names}
    x, y = torch.randn(8, 3, 128, 128), torch.randint(0, 13, (8, 128, 128))
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats + 1):
        for name, model in models.items():
            start = time.perf_counter()
            F.cross_entropy(model(x), y).backward()
            model.zero_grad(set_to_none=True)
            if repeat:  # the first round warms up
                times[name].append(time.perf_counter() - start)
    first = float(np.median(times[names[0]]))
    print(f"\ntraining step (forward + backward), daformer 64, batch 8 × 3×128×128, torch threads: "
          f"{torch.get_num_threads()}, load average: {os.getloadavg()[0]:.1f}, median of {repeats}, taking turns")
    print(f"{'encoder':22s} {'params':>8s} {'s/step':>7s} {'× ' + names[0]:>28s}")
    for name, model in models.items():
        median = float(np.median(times[name]))
        params = sum(p.numel() for p in model.encoder.parameters())
        print(f"{name:22s} {params / 1e6:7.2f}M {median:7.3f} {median / first:28.2f}")


def bench_infer(
    image_size: tuple[int, int],
    window: tuple[int, int],
    stride: tuple[int, int],
    frame_size: tuple[int, int] = (480, 270),
    arch: str = "daformer",
    encoder: str = "pvt_v2_b0",
    channels: int = 256,
    count: int = 4,
    batch_size: int = 8,
) -> None:
    import torch

    from kit.data.stats import TARGET_MEAN, TARGET_STD
    from kit.models.model import create_model
    from kit.predict.runs import RunConfig
    from kit.predict.tta import InferenceSettings, predict_run

    torch.manual_seed(0)
    model = create_model(arch, encoder, channels=channels).eval()  # random weights: speed does not depend on them
    # predict_run reads a run's typed config (a dict here was an AttributeError on its first line)
    config = RunConfig(arch=arch, encoder=encoder, num_classes=NUM_CLASSES + 1, head_kwargs={"channels": channels},
                       target_size=tuple(image_size), target_mean=TARGET_MEAN, target_std=TARGET_STD,
                       crop_size=tuple(window))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (frame_size[1], frame_size[0], 3), dtype=np.uint8) for _ in range(count)]
    settings = {
        "whole": InferenceSettings(mode="whole"),
        f"slide, batch {batch_size}": InferenceSettings(mode="slide", stride=stride, batch_size=batch_size),
        "slide, 1 window at a time": InferenceSettings(mode="slide", stride=stride, batch_size=1),
        "tta whole (flip, 3 scales)": InferenceSettings(mode="whole", scales=(0.75, 1.0, 1.25), flip=True),
        "tta slide (flip, 3 scales)": InferenceSettings(mode="slide", stride=stride, scales=(0.75, 1.0, 1.25),
                                                        flip=True, batch_size=batch_size),
    }
    print(f"{arch} + {encoder} (head channels {channels}), frames {frame_size[0]}x{frame_size[1]} → image "
          f"{image_size[0]}x{image_size[1]} (H×W), window {window}, stride {stride}, CPU {torch.get_num_threads()} "
          f"threads, median of {count} frames after a warm-up")
    first = {name: predict_run((model, config), frames[0], setting) for name, setting in settings.items()}  # warm-up
    times: dict[str, list[float]] = {name: [] for name in settings}
    for frame in frames:  # settings interleaved, so a busy machine slows them all alike
        for name, setting in settings.items():
            start = time.perf_counter()
            predict_run((model, config), frame, setting)
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        seconds = float(np.median(values))
        print(f"{name:28s} {1 / seconds:7.2f} images/s  ({1e3 * seconds:7.0f} ms/image)")
    diff = (first[f"slide, batch {batch_size}"] - first["slide, 1 window at a time"]).abs().max().item()
    print(f"slide batched vs one window at a time: max abs probability difference {diff:.2e}")


# benchmarks with a module of their own and their own options: ``python -m kit.bench gpu --help``
MODULES = {"gpu": "kit.bench.gpu", "scale": "kit.bench.scale", "loading": "kit.bench.loading",
           "classes": "kit.synth.census"}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in MODULES:
        code = importlib.import_module(MODULES[argv[0]]).main(argv[1:])
        if code:
            raise SystemExit(code)
        return
    parser = argparse.ArgumentParser(prog="python -m kit.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="name", required=True)
    rle = sub.add_parser("rle", help="RLE encoding throughput against the baseline")
    rle.add_argument("--count", type=int, default=1898, help="number of label maps (test set: 1898)")
    rle.add_argument("--seed", type=int, default=0)
    warp = sub.add_parser("warp", help="FisheyeWarp throughput, first call against cached maps")
    warp.add_argument("--repeats", type=int, default=20)
    models = sub.add_parser("models", help="InternImage-T parameters, CPU forward time of three encoders and of "
                            "UPerNet / Mask2Former on InternImage-T; a training step of the demo's model on "
                            "tf_efficientnet_lite0, pvt_v2_b0 and mit_b0")
    models.add_argument("--size", type=int, default=512, help="square input side")
    models.add_argument("--repeats", type=int, default=5)
    infer = sub.add_parser("infer", help="kit.predict throughput: whole, slide (batched / one window), TTA")
    infer.add_argument("--image", type=int, nargs=2, default=(256, 512), metavar=("H", "W"), help="model input size")
    infer.add_argument("--window", type=int, nargs=2, default=(128, 256), metavar=("H", "W"), help="slide window (crop)")
    infer.add_argument("--stride", type=int, nargs=2, default=(64, 128), metavar=("H", "W"))
    infer.add_argument("--arch", default="daformer")
    infer.add_argument("--encoder", default="pvt_v2_b0")
    infer.add_argument("--channels", type=int, default=256, help="decoder width (the trainer's head_channels)")
    infer.add_argument("--count", type=int, default=4, help="frames per measurement")
    quality = sub.add_parser("quality", help="every method trained alike, scored on the labelled fisheye test split")
    quality.add_argument("--data", default="data/demo", help="synthetic dataset root (with test_gt.csv)")
    quality.add_argument("--out", default="outputs/bench_quality", help="runs/, results/, quality.md and quality.json")
    quality.add_argument("--method", nargs="+", default=list(QUALITY_ROWS), choices=list(QUALITY_ROWS),
                         help="rows to train and tabulate (default: all; uda_elastic: uda with solution A's elastic copy)")
    quality.add_argument("--curve", type=float, nargs="*", default=[], help="further budgets, every method trained "
                         "alike at each: quality_budget.md and quality_budget.png (mIoU against image passes)")
    tune = sub.add_parser("tune", help="uda_geo / self_train variants trained and scored on a validation dataset")
    adapt = sub.add_parser("adapt", help="adaptation round two: candidates at equal image passes on a validation dataset")
    for command, name, variants, reference, more in (
            (tune, "tune", TUNE_VARIANTS, "uda_geo_untuned", "; a warm-started one brings the run it starts from"),
            (adapt, "adapt", ADAPT_VARIANTS, "source_only_rcs", "")):
        command.add_argument("--data", default="data/demo_val",
                             help="a synthetic dataset of another seed or camera than --data of quality")
        command.add_argument("--out", default=f"outputs/{name}", help=f"runs/, results/, {name}.md and {name}.json")
        command.add_argument("--variant", nargs="+", default=list(variants), choices=list(variants),
                             help=f"variants to train (default: all{more})")
        command.add_argument("--reference", default=reference, help="variant the paired differences are taken against")
    ladder = sub.add_parser("ladder", help="the Car ablation ladder: source_only → uda_geo one component at a time")
    ladder.add_argument("--data", default="data/demo", help="synthetic dataset root (with test_gt.csv)")
    ladder.add_argument("--out", default="outputs/bench_quality", help="runs/, results/, ladder.md and ladder.json "
                        "(default: quality's, so that rungs equal to a method are trained once)")
    ladder.add_argument("--rung", nargs="+", default=list(LADDER), choices=list(LADDER), help="rungs (default: all)")
    tools = sub.add_parser("tools", help="rare-class sampling, Dice and TTA switched, at equal budget, paired")
    tools.add_argument("--data", default="data/demo", help="synthetic dataset root (with test_gt.csv)")
    tools.add_argument("--out", default="outputs/bench_quality", help="runs/, results/, tools.md and tools.json "
                       "(default: quality's, so that each method as trained there is reused)")
    tools.add_argument("--method", nargs="+", default=["source_only", "oracle"], choices=list(METHODS))
    tools.add_argument("--tool", nargs="+", default=list(TOOLS), choices=list(TOOLS), help="tools switched (TTA: always)")
    encoders = sub.add_parser("encoders", help="mit_b0 and pvt_v2_b0 from scratch, tf_efficientnet_lite0 bundled, trained alike")
    encoders.add_argument("--data", default="data/demo", help="synthetic dataset root (with test_gt.csv)")
    encoders.add_argument("--out", default="outputs/bench_encoders", help="runs/, results/, encoders.md and encoders.json")
    for command, budget, seeds in ((quality, 1.0, [0, 1, 2]), (tools, 0.5, [0, 1, 2]), (adapt, 0.5, [0]), (tune, 0.5, [0]),
                                   (ladder, 1.0, [0, 1, 2]), (encoders, 0.9, [0, 1, 2])):
        scaled = (f"the {QUALITY_PASSES:,} image passes per run (kit.train.budget: the same compute for every method)"
                  if command in (quality, tools, adapt) else f"the {QUALITY_STEPS} training steps per run")
        command.add_argument("--budget", type=float, default=budget, help=f"scales {scaled}")
        command.add_argument("--seeds", "--seed", type=int, nargs="+", default=seeds, help="one run per seed")
        command.add_argument("--threads", type=int, default=1, help="torch CPU threads per run (1 was fastest on 2 cores)")
        command.add_argument("--jobs", type=int, default=1, help="runs trained at once, one process each "
                             "(2 on 2 cores with --threads 1; training times then include the sharing)")
        command.add_argument("--overwrite", action="store_true", help="retrain runs that already have a result in --out")
        command.add_argument("--report-only", action="store_true", help="train nothing: tabulate the results already in --out")
    args = parser.parse_args(argv)
    if args.name == "rle":
        bench_rle(args.count, args.seed)
    elif args.name == "warp":
        bench_warp(args.repeats)
    elif args.name == "models":
        bench_models(args.size, args.repeats)
        bench_encoder_steps(args.repeats)
    elif args.name == "infer":
        bench_infer(tuple(args.image), tuple(args.window), tuple(args.stride), arch=args.arch,
                    encoder=args.encoder, channels=args.channels, count=args.count)
    elif args.name == "quality":
        bench_quality(args.data, args.out, args.budget, args.seeds, args.overwrite, args.threads, args.jobs,
                      train_missing=not args.report_only, curve=tuple(args.curve), rows=tuple(args.method))
    elif args.name == "tools":
        bench_tools(args.data, args.out, args.method, args.budget, args.seeds, args.overwrite, args.threads, args.jobs,
                    train_missing=not args.report_only, tools=tuple(args.tool))
    elif args.name == "tune":
        bench_tune(args.data, args.out, args.variant, args.budget, args.seeds, args.overwrite, args.threads, args.jobs,
                   reference=args.reference, train_missing=not args.report_only)
    elif args.name == "adapt":
        bench_adapt(args.data, args.out, args.variant, args.budget, args.seeds, args.overwrite, args.threads, args.jobs,
                    reference=args.reference, train_missing=not args.report_only)
    elif args.name == "encoders":
        bench_encoders(args.data, args.out, args.budget, args.seeds, args.overwrite, args.threads, args.jobs,
                       train_missing=not args.report_only)
    elif args.name == "ladder":
        bench_ladder(args.data, args.out, args.rung, args.budget, args.seeds, args.overwrite, args.threads, args.jobs,
                     train_missing=not args.report_only)


if __name__ == "__main__":
    main()
