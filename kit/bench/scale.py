"""The competition-scale dry run, on a CPU: ``python -m kit.bench scale [--out outputs/bench/scale]``.

A handful of synthetic images at the competition's own sizes (2048×1024 source, 1920×1080
fisheye), then the notebooks as a competitor runs them, each in a process of its own:

    01_eda → 02_labels_and_augment → 03_train solution_a → 03_train solution_b
           → 06_pseudo_label (the solution_a run) → 04_predict (the solution_b run: slide windows,
             5-scale flip TTA at full size) → 05_ensemble (both runs)

with the presets' recipes at their real sizes, models and heads, but a few steps, random weights
(no internet), Otsu's border (the real data's threshold does not fit the synthetic mean image) and
no data-loading workers. Per stage it prints the seconds per image or step, the peak resident memory
of the stage's process tree, and the submissions' validation; first, the data-loading samples per
second of one worker (``kit.bench.loading``). Expect about half an hour on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from kit.bench.loading import _config, _time
from kit.competition.submission import validate_submission
from kit.synth import generate
from kit.train.recipes import build_data

ROOT = Path(__file__).resolve().parents[2]
COUNTS = {"train_source": 4, "val_source": 2, "train_target": 4, "test": 1}
SMALL_RUN = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "warmup_steps": 1, "eval_limit": 1, "stats_limit": 4,
             "pretrained": False, "border_threshold": None, "num_workers": 0}


def stages(data: str, out: Path) -> list[tuple[str, str, dict, str, int]]:
    """``(label, notebook, parameters, unit, units)``: what one stage runs and what its time is per."""
    runs = str(out / "runs")
    common = {"DATA_DIR": data, "OVERWRITE": True}
    train = {**common, "RUNS_DIR": runs, "PREVIEW_COUNT": 1}
    return [
        ("01_eda", "01_eda", {**common, "OUTPUT_DIR": str(out / "eda"), "MAX_IMAGES": 4, "N_SAMPLES": 1}, "image", 10),
        ("02_labels_and_augment", "02_labels_and_augment", {**common, "OUTPUT_DIR": str(out / "labels"), "MAX_IMAGES": 4,
                                                           "PSEUDO_COUNT": 1}, "image", 5),
        ("03_train solution_a", "03_train", {**train, "PRESET": "solution_a", "RUN_NAME": "a",
                                             "OVERRIDES": SMALL_RUN}, "step", SMALL_RUN["steps_per_epoch"]),
        ("03_train solution_b", "03_train", {**train, "PRESET": "solution_b", "RUN_NAME": "b",
                                             "OVERRIDES": {**SMALL_RUN, "steps_per_epoch": 1}}, "step", 1),
        ("06_pseudo_label (a)", "06_pseudo_label", {**common, "RUNS_DIR": runs, "RUN_NAMES": ["a"], "THRESHOLD_IMAGES": 2,
                                                    "GRID_COUNT": 1, "OUTPUT_DIR": str(out / "pseudo")},
         "image", COUNTS["train_target"]),  # two passes: thresholds (on 2), labels (on all)
        ("04_predict (b: slide, 5-scale flip)", "04_predict", {**common, "RUNS_DIR": runs, "RUN_NAME": "b", "GRID_COUNT": 1,
                                                               "WORST_COUNT": 1, "OUTPUT_DIR": str(out / "predict")},
         "image", COUNTS["test"]),
        ("05_ensemble (a + b)", "05_ensemble", {**common, "RUNS_DIR": runs, "RUN_NAMES": ["a", "b"], "GRID_COUNT": 1,
                                                "OUTPUT_DIR": str(out / "ensemble")}, "image", COUNTS["test"]),
    ]


def run_stage(notebook: str, output: Path, parameters: dict) -> tuple[float, float]:
    """Run one notebook in a process of its own; (seconds, peak RSS in GiB of its process tree: the
    largest of the process and the kernel it started, as the kernel reports them when reaped)."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "kit.bench.scale", "--stage", notebook, str(output),
                                json.dumps(parameters)], cwd=ROOT)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{notebook} failed (exit {os.waitstatus_to_exitcode(status)}); see {output}")
    return time.perf_counter() - start, usage.ru_maxrss / 2**20  # KiB → GiB


def _stage(notebook: str, output: str, parameters: str) -> None:
    from kit.bench.demo import execute

    execute(ROOT / "notebooks" / f"{notebook}.ipynb", output, json.loads(parameters))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kit.bench scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/bench/scale")
    parser.add_argument("--stage", nargs=3, help=argparse.SUPPRESS)  # one stage, in its own process
    args = parser.parse_args(argv)
    if args.stage:
        _stage(*args.stage)
        return 0
    out = Path(args.out).resolve()
    data = out / "data"
    started = time.perf_counter()
    if not (data / "test.csv").is_file():
        generate(data, preset="full", seed=0, workers=2, counts=COUNTS, progress=False, overwrite=True)
    images = sum(COUNTS.values()) + COUNTS["train_target"] + COUNTS["test"]  # and the held-out labelled twins
    print(f"synthetic data at 2048×1024 / 1920×1080: {time.perf_counter() - started:.0f} s for {images} images", flush=True)
    loading = build_data(_config(data))
    per_sample = _time(lambda i: (loading.train[i], loading.target[i]), COUNTS["train_source"], 1)
    print(f"data loading, one worker, uda (solution_a): {1 / per_sample:.2f} samples/s", flush=True)
    rows = []
    for label, notebook, parameters, unit, units in stages(str(data), out):
        print(f"-- {label}", flush=True)
        seconds, peak = run_stage(notebook, out / f"{label.split()[0]}_{len(rows)}.ipynb", parameters)
        per = seconds / units
        if notebook == "03_train":
            metrics = pd.read_csv(out / "runs" / parameters["RUN_NAME"] / "metrics.csv")
            per = float(metrics["train_seconds"].iloc[-1]) / units
        rows.append((label, seconds, f"{per:.1f} s/{unit}", peak))
    submissions = {name: validate_submission(out / name / "submission.csv", data / "sample_submission.csv")
                   for name in ("predict", "ensemble")}
    print("\n| stage | seconds | per image / step | peak RSS GiB |\n|---|---|---|---|")
    for label, seconds, per, peak in rows:
        print(f"| {label} | {seconds:.0f} | {per} | {peak:.1f} |")
    print(f"\nsubmissions validated against sample_submission.csv: "
          f"{', '.join(f'{k} {v} rows' for k, v in submissions.items())}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
