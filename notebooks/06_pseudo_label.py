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
# # 06 · Pseudo-labels
# The competition's winners labelled the unlabelled fisheye images with their best model (or an
# ensemble) and trained on those labels. This notebook does that step: one run or an ensemble
# predicts `SPLIT` (whole image or sliding windows, multi-scale/flip test-time augmentation), each
# class keeps only its more confident pixels (threshold = the `QUANTILE` of the confidences of the
# pixels predicted as that class, at most `CAP`: CRST / Trans4PASS), pixels below their class's
# threshold become 254 (ignored in training), the fisheye border becomes background (255).
#
# `OUTPUT_DIR` then holds `pseudo.csv` (`id,img_path,gt_path`, the competition's layout, paths
# relative to the folder), `labels/<id>.png` and `summary.json`, written in a staging folder and
# renamed into place when complete; an earlier round's folder is never replaced unless `OVERWRITE`.
# Train on it with `03_train`: `METHOD = "self_train"`, `PSEUDO_SPLIT = OUTPUT_DIR`,
# `INIT_FROM = <the run that labelled it>`. Labels from a zero-shot Cityscapes run
# (`python -m kit.predict.zero_shot`) train a model of the kit's own instead: no `INIT_FROM`, or
# `PRESET = "segformer_cityscapes"` / `"mask2former_cityscapes"` to start from that same model.

# %% tags=["parameters"]
DATA_DIR: str = "data/demo"  # dataset root in the competition layout
RUNS_DIR: str = "outputs/runs"  # runs live in RUNS_DIR/RUN_NAME (03_train writes them)
RUN_NAMES: list = ["demo"]  # one run (03_train's default RUN_NAME), or the members of an ensemble
WEIGHTS: "Optional[list]" = None  # one weight per member; None: equal
CHECKPOINT: str = "last.pt"  # last.pt | best.pt, for every member
SPLIT: str = "train_target"  # the unlabelled split to pseudo-label
OUTPUT_DIR: str = "outputs/pseudo/demo"  # the pseudo-label folder (a new one per round); 03_train's PSEUDO_SPLIT
MODE: "Optional[str]" = None  # whole: the resized image in one pass | slide: windows of each run's crop size; None: the first run's own
STRIDE: "Optional[list]" = None  # slide stride [h, w]; None: half the crop
SCALES: "Optional[list]" = None  # test-time scales (solution B: 0.8, 0.9, 1.0, 1.1, 1.2); None: the first run's own
FLIP: "Optional[bool]" = True  # also predict the mirrored image and average
QUANTILE: float = 0.5  # each class keeps its pixels above this quantile of its confidences (0.5: the more confident half)
CAP: float = 0.9  # ...but a pixel at or above CAP is always kept (Trans4PASS: 0.9)
THRESHOLD_IMAGES: "Optional[int]" = 100  # images (spread evenly over SPLIT) whose confidences set the thresholds; None: all
BALANCED: bool = False  # class-balanced labels (CBST): each pixel takes the class with the largest probability / threshold
BACKGROUND: bool = True  # background predicted inside the disc may be a pseudo-label (False: ignored)
BORDER: "Optional[str]" = "ellipse"  # background outside the fisheye border: ellipse (A) | mask (B) | None
BORDER_THRESHOLD: "Optional[float]" = None  # mean-target threshold of the border (real data: 108); None: the run's own
BATCH_SIZE: int = 8  # slide windows per forward pass
GRID_COUNT: int = 4  # images in the image | pseudo-label | truth grid
DEVICE: str = "auto"  # auto | cpu | cuda
CPU_THREADS: "Optional[int]" = None  # torch threads on the CPU; None: half the cores
OVERWRITE: bool = False  # replace an earlier pseudo-label folder at OUTPUT_DIR

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

from kit.common.checks import check_bool, check_choice, check_device, check_int, check_number
from kit.common.device import set_cpu_threads
from kit.competition.labels import PSEUDO_LABEL_VALUES
from kit.competition.layout import evenly_spread, has_split, read_image, read_label, read_split, read_split_file
from kit.data.border import BORDERS
from kit.predict.pseudo import make_pseudo_labels
from kit.predict.runs import load_run
from kit.predict.splits import run_border
from kit.predict.tta import run_settings
from kit.report import viz

check_choice("BORDER", BORDER, (*BORDERS, None))
check_number("BORDER_THRESHOLD", BORDER_THRESHOLD, low=0, high=255, optional=True)
check_number("QUANTILE", QUANTILE, low=0, high=1)
check_number("CAP", CAP, low=0, high=1, low_open=True)
check_int("GRID_COUNT", GRID_COUNT, low=0)
check_device("DEVICE", DEVICE)
check_int("CPU_THREADS", CPU_THREADS, low=1, optional=True)
check_int("THRESHOLD_IMAGES", THRESHOLD_IMAGES, low=1, optional=True)
check_bool("BALANCED", BALANCED)
check_bool("BACKGROUND", BACKGROUND)
check_bool("OVERWRITE", OVERWRITE)
if not RUN_NAMES or not all(isinstance(n, str) for n in RUN_NAMES):
    raise ValueError(f"RUN_NAMES = {RUN_NAMES!r}: expected a list of one or more run names")
if WEIGHTS is not None and len(WEIGHTS) != len(RUN_NAMES):
    raise ValueError(f"WEIGHTS = {WEIGHTS!r}: expected one weight per run of RUN_NAMES ({len(RUN_NAMES)}), or None")
if Path(OUTPUT_DIR).exists() and not OVERWRITE:
    raise FileExistsError(f"OUTPUT_DIR {OUTPUT_DIR} already exists (an earlier round's pseudo-labels); choose a new "
                          f"folder for this round or set OVERWRITE = True")
set_cpu_threads(CPU_THREADS)

runs = [load_run(Path(RUNS_DIR) / name, CHECKPOINT, device=DEVICE) for name in RUN_NAMES]
settings = run_settings(runs, MODE, STRIDE, SCALES, FLIP, BATCH_SIZE)  # None: the first run's own
border = run_border(runs, DATA_DIR, BORDER, threshold=BORDER_THRESHOLD)
for name, (_, config) in zip(RUN_NAMES, runs):
    print(f"{name}/{CHECKPOINT}: {config.method}, {config.arch} + {config.encoder} at {config.target_size}")
print(f"{SPLIT}: {settings}; border: {BORDER}; thresholds: quantile {QUANTILE}, cap {CAP}")

# %% [markdown]
# ## Predict, threshold per class, write
# The table has one row per class (background last): its threshold, its share of the disc in the
# prediction, the share of those pixels kept. On the kit's synthetic data (which holds the split's
# labels as `<SPLIT>_gt`) also the pseudo-labels' own **precision** (kept pixels that are right)
# and **recall** (true pixels of the class kept with the right label), and the class's true share.

# %%
made = make_pseudo_labels(runs, DATA_DIR, OUTPUT_DIR, split=SPLIT, weights=WEIGHTS, settings=settings,
                          quantile=QUANTILE, cap=CAP, border=border, background=BACKGROUND, balanced=BALANCED,
                          threshold_images=THRESHOLD_IMAGES, overwrite=OVERWRITE)
table = made.table.set_index("class")
kept = float((table["kept"].fillna(0) * table["predicted_share"]).sum())
print(f"{made.csv}: {len(read_split_file(made.csv))} images; {kept:.1%} of the disc labelled, the rest ignored")
display(table.round(3))

# %% [markdown]
# ## Coverage per class
# Share of the disc predicted as each class (light) and kept as its pseudo-label (dark); with truth,
# the class's true share (outline). A class the model never predicts cannot be learnt from its own
# pseudo-labels.

# %%
figure, axis = plt.subplots(figsize=(10, 3.2))
x = np.arange(len(table))
axis.bar(x, table["predicted_share"], color="#9ecae1", label="predicted")
axis.bar(x, table["predicted_share"] * table["kept"].fillna(0), color="#08519c", label="kept")
if "true_share" in table:
    axis.bar(x, table["true_share"], fill=False, edgecolor="black", lw=0.8, label="truth")
axis.set_xticks(x, table.index, rotation=40, ha="right")
axis.set(ylabel="share of the disc", yscale="log", ylim=(1e-5, 1))
axis.legend(fontsize=8)
viz.save_figure(figure, made.folder / "coverage.png")
display(Image(str(made.folder / "coverage.png")))

# %% [markdown]
# ## Image | pseudo-label | truth
# Grey: ignored (below the class's threshold); black: background.

# %%
if GRID_COUNT:
    pseudo = evenly_spread(read_split_file(made.csv), GRID_COUNT)
    truth = read_split(DATA_DIR, f"{SPLIT}_gt").set_index("id")["gt_path"] if has_split(DATA_DIR, f"{SPLIT}_gt") \
        else None
    rows = []
    for row in pseudo.itertuples():
        maps = {"pseudo-label": read_label(row.gt_path, allowed=PSEUDO_LABEL_VALUES)}
        if truth is not None:
            maps["truth"] = read_label(truth[row.id])
        rows.append((read_image(row.img_path), maps))
    viz.save_comparison(made.folder / "grid.png", rows, titles=list(pseudo.id), colours=64)
    display(Image(str(made.folder / "grid.png")))
print(f"pseudo-labels: {made.folder.resolve()}  →  03_train: METHOD = 'self_train', PSEUDO_SPLIT = '{made.folder}'")
