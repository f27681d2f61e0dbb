# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Ensemble
# Solution A's last step (+0.006 mIoU on the leaderboard): several runs predict every image, their
# class probabilities are averaged with weights (MiT-B3/B4/B5: 0.9, 1.0, 0.8), and the argmax is
# submitted. Each run keeps its own image size, normalisation and crop; the mean is taken at the
# largest image size among them. On a labelled split (the synthetic data's `test_gt`) each member
# is scored alone as well, to show what the ensemble adds.

# %% tags=["parameters"]
DATA_DIR: str = "data/demo"  # dataset root in the competition layout
RUNS_DIR: str = "outputs/runs"  # runs live in RUNS_DIR/RUN_NAME (03_train writes them)
RUN_NAMES: list = ["demo", "demo_round"]  # the members: 03_train's first run and its self-training round (the chain)
WEIGHTS: "Optional[list]" = None  # one weight per member (solution A: 0.9, 1.0, 0.8); None: equal
CHECKPOINT: str = "last.pt"  # last.pt | best.pt, for every member
OUTPUT_DIR: str = "outputs/ensemble"  # submission.csv, metrics.json and iou.png are written here
SPLIT: str = "test"  # split to predict; its labelled twin SPLIT_gt is predicted and scored when present
MODE: "Optional[str]" = None  # whole: the resized image in one pass | slide: windows of each run's crop size; None: the first run's own
STRIDE: "Optional[list]" = None  # slide stride [h, w]; None: half the crop (solution A)
SCALES: "Optional[list]" = None  # test-time scales (solution B: 0.8, 0.9, 1.0, 1.1, 1.2); None: the first run's own
FLIP: "Optional[bool]" = None  # also predict the mirrored image and average; None: the first run's own
BORDER: "Optional[str]" = "ellipse"  # background outside the fisheye border: ellipse (A) | mask (B) | None
BORDER_THRESHOLD: "Optional[float]" = None  # mean-target threshold of the border (real data: 108); None: the run's own, as it trained
BATCH_SIZE: int = 8  # slide windows per forward pass
DEVICE: str = "auto"  # auto | cpu | cuda
CPU_THREADS: "Optional[int]" = None  # torch threads on the CPU; None: half the cores (1 on 2 cores), which a second busy process slows ≤ ~2×
GRID_COUNT: int = 3  # images in the members-and-ensemble grid
OVERWRITE: bool = False  # replace the outputs of an earlier run in OUTPUT_DIR

# %%
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from IPython.display import Image, display

from kit.common import files
from kit.common.checks import check_bool, check_choice, check_device, check_int, check_number
from kit.common.device import set_cpu_threads
from kit.competition import layout
from kit.competition.submission import validate_submission
from kit.data.border import BORDERS
from kit.predict.runs import load_run
from kit.predict.splits import predict_label_maps, predict_split, prediction_frame, run_border
from kit.predict.tta import run_settings
from kit.report import viz
from kit.report.grids import save_members_grid

check_choice("BORDER", BORDER, (*BORDERS, None))
check_number("BORDER_THRESHOLD", BORDER_THRESHOLD, low=0, high=255, optional=True)
check_device("DEVICE", DEVICE)
check_int("CPU_THREADS", CPU_THREADS, low=1, optional=True)
check_int("GRID_COUNT", GRID_COUNT, low=0)
if not RUN_NAMES or not all(isinstance(n, str) for n in RUN_NAMES):
    raise ValueError(f"RUN_NAMES = {RUN_NAMES!r}: expected a list of one or more run names")
if WEIGHTS is not None and len(WEIGHTS) != len(RUN_NAMES):
    raise ValueError(f"WEIGHTS = {WEIGHTS!r}: expected one weight per run of RUN_NAMES ({len(RUN_NAMES)}), or None")
check_bool("OVERWRITE", OVERWRITE)
set_cpu_threads(CPU_THREADS)

runs = [load_run(Path(RUNS_DIR) / name, CHECKPOINT, device=DEVICE) for name in RUN_NAMES]
settings = run_settings(runs, MODE, STRIDE, SCALES, FLIP, BATCH_SIZE)  # None: the first run's own
frame = prediction_frame(DATA_DIR, SPLIT)
out = files.prepare_output_dir(OUTPUT_DIR, overwrite=OVERWRITE)  # after every check: nothing written before
labelled = "gt_path" in frame.columns
border = run_border(runs, DATA_DIR, BORDER, threshold=BORDER_THRESHOLD)
sample = Path(DATA_DIR) / "sample_submission.csv"
for name, (_, config) in zip(RUN_NAMES, runs):
    print(f"{name}/{CHECKPOINT}: {config.arch} + {config.encoder} at {config.target_size} (H, W)")
print(f"{len(frame)} images of {SPLIT}; labels: {labelled}; weights: {WEIGHTS or 'equal'}; {settings}; border: {BORDER}")

# %% [markdown]
# ## Each member alone
# Only on a labelled split: the members' scores are what the ensemble is measured against.

# %%
tables = {}
if labelled:
    for name, run in zip(RUN_NAMES, runs):
        tables[name] = predict_split([run], frame, settings=settings, border=border, progress=False).scores
        print(f"{name}: mIoU {tables[name]['mIoU']:.4f}")
else:
    print(f"{SPLIT} has no labelled twin ({SPLIT}_gt.csv, synthetic data only): members are not scored")

# %% [markdown]
# ## The ensemble
# One pass writes the submission (test split only: the sample lists the test images) and, on a
# labelled split, scores the ensemble.

# %%
start = time.perf_counter()
result = predict_split(runs, frame, weights=WEIGHTS, settings=settings, border=border, sample=sample,
                       submission=out / "submission.csv" if SPLIT == "test" else None)
seconds_per_image = (time.perf_counter() - start) / len(frame)
print(f"{seconds_per_image:.3f} s per image for {len(runs)} runs")
if result.submission is not None:
    print(f"{result.submission}: {validate_submission(result.submission, sample)} rows, valid against {sample}")

# %%
if labelled:
    tables["ensemble"] = result.scores
    viz.save_iou_bars(out / "iou.png", tables)
    display(pd.DataFrame(tables).T.round(3))
    display(Image(str(out / "iou.png")))
files.write_json(out / "metrics.json", {
    "runs": RUN_NAMES, "weights": WEIGHTS, "checkpoint": CHECKPOINT, "split": SPLIT, "labelled": labelled,
    "images": len(frame), "settings": asdict(settings), "border": BORDER, "border_threshold": BORDER_THRESHOLD,
    "seconds_per_image": seconds_per_image, "mIoU": {name: table["mIoU"] for name, table in tables.items()},
    "iou": tables,
})

# %% [markdown]
# ## Members and ensemble side by side
# The first `GRID_COUNT` images: image | each member | the ensemble (| truth on a labelled split), with
# the class legend, so that what the ensemble takes from each member can be seen.

# %%
shown = frame.head(GRID_COUNT)
members = {name: [label for _, label in predict_label_maps([run], shown, settings=settings, border=border, progress=False)]
           for name, run in zip(RUN_NAMES, runs)}
members["ensemble"] = [label for _, label in predict_label_maps(runs, shown, weights=WEIGHTS, settings=settings,
                                                                  border=border, progress=False)]
truths = [layout.read_label(p) for p in shown.gt_path] if labelled else None
save_members_grid(out / "members.png", [layout.read_image(p) for p in shown.img_path], members, titles=list(shown.id),
                  truths=truths, colours=64)
display(Image(str(out / "members.png")))
print(f"outputs: {out.resolve()}")
