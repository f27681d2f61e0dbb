"""The GPU check: every GPU path of the kit executed once, with numbers (``python -m kit.bench gpu``,
or ``bash scripts/gpu_check.sh`` on a fresh machine).

On a machine with an NVIDIA GPU, in about 8 minutes: synthetic data at the competition's sizes, then

    uda + pvt_v2_b3 (DAFormer 256) on 512×512 crops in bf16, fp16 (with the gradient scaler) and fp32
    mask2former + internimage_t on 512×512 crops in bf16 (DCNv3's float32 grid under autocast)
    one pseudo-label round on 50 fisheye images (whole image + flip, on the device)
    2-GPU DDP (torchrun, uda) when two GPUs are present

and a table of steps/s, images/s and peak GPU memory. It exits non-zero when any case fails or a
loss is not finite. ``--device cpu --size 64 --steps 1`` runs the same code on a CPU at toy sizes
(tests/test_bench.py does, so that the script cannot rot between GPU sessions); the numbers then say
nothing about a GPU. No test depends on a GPU.
"""

from __future__ import annotations

import argparse
import math
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from kit.common.device import describe_device, resolve_amp, resolve_device
from kit.predict.pseudo import make_pseudo_labels
from kit.predict.runs import load_run
from kit.predict.tta import InferenceSettings
from kit.synth import generate
from kit.train.cli import torchrun_command
from kit.train.config import TrainConfig
from kit.train.loop import train


@dataclass
class Row:
    case: str
    precision: str
    steps_per_s: float = math.nan
    images_per_s: float = math.nan
    peak_gib: float = math.nan
    status: str = "ok"


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def _peak(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan


def _train_case(row: Row, config: TrainConfig, device: torch.device) -> Path:
    """Train 2 epochs of ``config.steps_per_epoch`` steps; the second epoch's time gives the speed."""
    _peak_reset(device)
    run = train(config)
    metrics = pd.read_csv(run / "metrics.csv")
    losses = metrics[[c for c in metrics if c.startswith("loss_")]].to_numpy(float)
    if not np.isfinite(losses).all():
        raise FloatingPointError(f"a loss is not finite: {metrics.to_dict('records')}")
    seconds = float(metrics["train_seconds"].iloc[-1])
    row.steps_per_s = config.steps_per_epoch / seconds
    row.images_per_s = row.steps_per_s * config.batch_size
    row.peak_gib = _peak(device)
    return run


def run_checks(data_dir: Path, out: Path, device_name: str = "auto", size: int = 512, steps: int = 10,
               images: int = 50, batch_size: int = 4, uda_encoder: str = "pvt_v2_b3") -> list[Row]:
    device = resolve_device(device_name)
    base = dict(data_dir=str(data_dir), runs_dir=str(out / "runs"), device=device_name, epochs=2, steps_per_epoch=steps,
                batch_size=batch_size, crop_size=(size, size), source_size=(size, 2 * size), target_size=(size, size * 16 // 9),
                warmup_steps=1, eval_limit=2, stats_limit=8, border_threshold=None, pretrained=False, overwrite=True,
                progress=False, mask_block=max(size // 16, 1), warm_start=0.0)  # the speed of the method's own steps
    rows: list[Row] = []
    uda_run = None
    cases = [(f"uda {uda_encoder} {size}²", amp, dict(method="uda", arch="daformer", encoder=uda_encoder, head_channels=256,
                                                   amp=amp, run_name=f"uda_{amp}")) for amp in ("bf16", "fp16", "none")]
    cases.append((f"mask2former internimage_t {size}²", "bf16",
                  dict(method="fisheye_tf", arch="mask2former", encoder="internimage_t", head_channels=256, amp="bf16",
                       head_options={"queries": 100, "layers": 6}, batch_size=2, run_name="m2f_bf16")))
    for case, amp, values in cases:
        row = Row(f"{case} {amp}", resolve_amp(amp, device))
        rows.append(row)
        try:
            run = _train_case(row, TrainConfig(**{**base, **values}), device)
            uda_run = uda_run or run
        except Exception:  # noqa: BLE001 - every case runs; the table says which failed
            row.status = "FAILED: " + traceback.format_exc(limit=1).strip().splitlines()[-1][:80]
    row = Row(f"pseudo-label {images} images (whole + flip)", resolve_amp("bf16", device))
    rows.append(row)
    try:
        if uda_run is None:
            raise RuntimeError("no trained run to label with")
        model_run = load_run(uda_run, "last.pt", device=device_name)
        _peak_reset(device)
        start = time.perf_counter()
        made = make_pseudo_labels([model_run], data_dir, out / "pseudo", settings=InferenceSettings(mode="whole", flip=True),
                                  threshold_images=min(images, 20), overwrite=True, progress=False)
        seconds = time.perf_counter() - start
        count = len(pd.read_csv(made.csv))
        row.images_per_s, row.peak_gib = count / seconds, _peak(device)
    except Exception:  # noqa: BLE001
        row.status = "FAILED: " + traceback.format_exc(limit=1).strip().splitlines()[-1][:80]
    if device.type == "cuda" and torch.cuda.device_count() >= 2:
        row = Row(f"DDP 2 GPUs uda {uda_encoder} {size}²", resolve_amp("bf16", device))
        rows.append(row)
        config = TrainConfig(**{**base, **cases[0][2], "run_name": "ddp2", "device": "auto"})
        command = shlex.split(torchrun_command(config, nproc_per_node=2))
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "torch.distributed.run", *command[1:]], capture_output=True,
                              text=True)
        if done.returncode != 0:
            row.status = "FAILED: " + (done.stderr.strip().splitlines() or ["torchrun failed"])[-1][:80]
        else:
            seconds = float(pd.read_csv(out / "runs/ddp2/metrics.csv")["train_seconds"].iloc[-1])
            row.steps_per_s = steps / seconds
            row.images_per_s = row.steps_per_s * batch_size * 2
            row.peak_gib = math.nan  # in the ranks' processes
        print(f"(DDP run: {time.perf_counter() - start:.0f} s)")
    return rows


def table(rows: list[Row]) -> str:
    lines = ["| case | precision | steps/s | images/s | peak GiB | status |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.case} | {r.precision} | {r.steps_per_s:.2f} | {r.images_per_s:.1f} | {r.peak_gib:.1f} | "
                     f"{r.status} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit.bench gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu (cpu: the same code at toy sizes)")
    parser.add_argument("--data-dir", default=None, help="a dataset to use instead of writing a synthetic one")
    parser.add_argument("--out", default="outputs/bench/gpu")
    parser.add_argument("--size", type=int, default=512, help="training crops, size × size")
    parser.add_argument("--steps", type=int, default=10, help="steps per epoch (2 epochs; the second is timed)")
    parser.add_argument("--images", type=int, default=50, help="fisheye images to pseudo-label")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--uda-encoder", default="pvt_v2_b3", help="the uda cases' encoder (the CPU test: pvt_v2_b0)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    device = resolve_device(args.device)
    print(describe_device(device, resolve_amp("auto", device)), flush=True)
    if device.type != "cuda":
        print("no GPU: the GPU paths run on the CPU here, and the numbers say nothing about a GPU", flush=True)
    data_dir = Path(args.data_dir) if args.data_dir else out / "data"
    if args.data_dir is None and not (data_dir / "test.csv").is_file():
        counts = {"train_source": 16, "val_source": 2, "train_target": args.images, "test": 2}
        generate(data_dir, preset="full", seed=0, workers=8, counts=counts, progress=False, overwrite=True)
    started = time.perf_counter()
    rows = run_checks(data_dir, out, args.device, args.size, args.steps, args.images, args.batch_size, args.uda_encoder)
    print(table(rows))
    print(f"total {time.perf_counter() - started:.0f} s")
    failed = [r.case for r in rows if r.status != "ok"]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
