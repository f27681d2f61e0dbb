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
# # 04 · Prediction
# One trained run (from `03_train`) predicts a split image by image and writes `submission.csv`
# (960×540, run-length encoded, checked against `sample_submission.csv`). Where the dataset has the
# split's labelled twin (the synthetic data's `test_gt`: the same images plus labels) the same pass
# also scores the predictions the competition's way, so the figures below show per-class IoU and
# the worst images beside their truth. On the real data those parts are skipped.
#
# Inference options follow the two solutions: `MODE = "slide"` with the run's crop as the window
# and half of it as the stride (solution A), multi-scale + flip test-time augmentation (solution B:
# scales 0.8…1.2), and background outside the fisheye border (`"ellipse"`: solution A, `"mask"`:
# solution B's thresholded mean target image).

# %% tags=["parameters"]
DATA_DIR: str = "data/demo"  # dataset root in the competition layout
RUNS_DIR: str = "outputs/runs"  # runs live in RUNS_DIR/RUN_NAME (03_train writes them)
RUN_NAME: str = "demo"  # the run that predicts (03_train's default RUN_NAME)
CHECKPOINT: str = "last.pt"  # last.pt | best.pt
OUTPUT_DIR: str = "outputs/predict"  # submission.csv, metrics.json and the figures are written here
SPLIT: str = "test"  # split to predict; its labelled twin SPLIT_gt is predicted and scored when present
MODE: "Optional[str]" = None  # whole: the resized image in one pass | slide: windows of the run's crop size; None: the run's own
STRIDE: "Optional[list]" = None  # slide stride [h, w]; None: half the crop (solution A)
SCALES: "Optional[list]" = None  # test-time scales (solution B: 0.8, 0.9, 1.0, 1.1, 1.2); None: the run's own
FLIP: "Optional[bool]" = None  # also predict the mirrored image and average; None: the run's own
BORDER: "Optional[str]" = "ellipse"  # background outside the fisheye border: ellipse (A) | mask (B) | None
BORDER_THRESHOLD: "Optional[float]" = None  # mean-target threshold of the border (real data: 108); None: the run's own, as it trained
BATCH_SIZE: int = 8  # slide windows per forward pass
DEVICE: str = "auto"  # auto | cpu | cuda
CPU_THREADS: "Optional[int]" = None  # torch threads on the CPU; None: half the cores (1 on 2 cores), which a second busy process slows ≤ ~2×
GRID_COUNT: int = 4  # images in the prediction grid
WORST_COUNT: int = 3  # lowest-mIoU images shown beside their truth (labelled splits only)
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
from kit.competition.submission import validate_submission
from kit.data.border import BORDERS
from kit.predict.examples import prediction_rows
from kit.predict.runs import load_run
from kit.predict.splits import predict_split, prediction_frame, run_border
from kit.predict.tta import run_settings
from kit.report import viz
from kit.report.grids import save_prediction_grid

check_choice("BORDER", BORDER, (*BORDERS, None))
check_number("BORDER_THRESHOLD", BORDER_THRESHOLD, low=0, high=255, optional=True)
check_device("DEVICE", DEVICE)
check_int("CPU_THREADS", CPU_THREADS, low=1, optional=True)
check_int("GRID_COUNT", GRID_COUNT, low=0)
check_int("WORST_COUNT", WORST_COUNT, low=0)
check_bool("OVERWRITE", OVERWRITE)
set_cpu_threads(CPU_THREADS)

run_dir = Path(RUNS_DIR) / RUN_NAME
run = load_run(run_dir, CHECKPOINT, device=DEVICE)
settings = run_settings([run], MODE, STRIDE, SCALES, FLIP, BATCH_SIZE)  # None: the run's own
frame = prediction_frame(DATA_DIR, SPLIT)
out = files.prepare_output_dir(OUTPUT_DIR, overwrite=OVERWRITE)  # after every check: nothing written before
labelled = "gt_path" in frame.columns
border = run_border([run], DATA_DIR, BORDER, threshold=BORDER_THRESHOLD)
sample = Path(DATA_DIR) / "sample_submission.csv"
print(f"{RUN_NAME}/{CHECKPOINT}: {run[1].arch} + {run[1].encoder} at {run[1].target_size} (H, W)")
print(f"{len(frame)} images of {SPLIT}; labels: {labelled}; {settings}; border: {BORDER}")

# %% [markdown]
# ## Predict
# One pass over the split: each image's probabilities are resized to 960×540 for the submission
# and, on a labelled split, to the label's size for scoring. The sample submission lists the test
# images only, so other splits are scored without a submission.

# %%
start = time.perf_counter()
result = predict_split([run], frame, settings=settings, border=border, sample=sample,
                       submission=out / "submission.csv" if SPLIT == "test" else None,
                       keep=GRID_COUNT, keep_worst=WORST_COUNT)  # the figures' label maps, kept
seconds_per_image = (time.perf_counter() - start) / len(frame)
print(f"{seconds_per_image:.3f} s per image")
if result.submission is not None:
    print(f"{result.submission}: {validate_submission(result.submission, sample)} rows, valid against {sample}")

# %% [markdown]
# ## Per-class IoU
# Scored as the competition does: background pixels are not ignored, so a class predicted outside
# the fisheye disc is a false positive (which the border post-processing prevents).

# %%
scores = result.scores if labelled else None
if labelled:
    viz.save_iou_bars(out / "iou.png", {RUN_NAME: scores})
    display(pd.DataFrame({RUN_NAME: scores}).T.round(3))
    display(Image(str(out / "iou.png")))
else:
    print(f"{SPLIT} has no labelled twin ({SPLIT}_gt.csv, synthetic data only): no scores")
files.write_json(out / "metrics.json", {
    "run": RUN_NAME, "run_dir": str(run_dir.resolve()), "checkpoint": CHECKPOINT, "split": SPLIT,
    "labelled": labelled, "images": len(frame), "settings": asdict(settings), "border": BORDER,
    "border_threshold": BORDER_THRESHOLD, "seconds_per_image": seconds_per_image,
    "mIoU": scores["mIoU"] if labelled else None, "iou": scores,
})

# %% [markdown]
# ## Predictions on fisheye images
# The first `GRID_COUNT` images, and on a labelled split the `WORST_COUNT` images with the lowest
# mIoU: image | prediction | truth | errors (wrong pixels red, the area outside the fisheye border
# apart in blue), each with its class legend. Unlabelled splits show image | prediction.

# %%
grid = frame.head(GRID_COUNT)
worst = result.per_image.nsmallest(WORST_COUNT, "mIoU").merge(frame, on="id") if labelled else frame.head(0)
predictions = result.label_maps  # kept by predict_split: nothing is predicted twice
save_prediction_grid(out / "predictions.png", prediction_rows(grid, predictions, border), titles=list(grid.id),
                     colours=64)
display(Image(str(out / "predictions.png")))

# %%
if labelled:
    save_prediction_grid(out / "worst.png", prediction_rows(worst, predictions, border),
                         titles=[f"{item.id} · mIoU {item.mIoU:.3f}" for item in worst.itertuples()], colours=64)
    display(Image(str(out / "worst.png")))
else:
    print("no labels: the worst images cannot be ranked")
print(f"outputs: {out.resolve()}")
