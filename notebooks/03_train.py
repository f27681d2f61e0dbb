# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 · Training
# One run of one method into `RUNS_DIR/RUN_NAME/` (`config.json`, `metrics.csv`, `last.pt`, `best.pt`,
# the figures below). `PRESET` names the recipe (`kit/train/presets.py`); the names below are what
# people change per run, `OVERRIDES` sets any other `kit.train.config.TrainConfig` field, and papermill's
# `-p NAME value` sets any field too (`-p LR_ENCODER 1e-4`; a misspelt name is an error).
#
# | PRESET | recipe |
# |---|---|
# | `cpu_demo` | the synthetic demo on a laptop CPU: `uda` with rare-class sampling, warm-started by `source_only` for half its 16,000 image passes (`WARM_START`), EfficientNet-Lite0 (offline weights) + DAFormer 64 |
# | `solution_a` | solution A on an A100: `uda` with its elastic copy, MiT-B4 (ImageNet, from the hub), 512×1024 images, 256×512 crops, slide prediction |
# | `segformer_cityscapes` | solution A's recipe on a whole Cityscapes SegFormer-B5 (encoder and head, classes mapped) |
# | `t4` | solution A on a 16 GB T4: 256×512 images, 128×256 crops, fp16 |
# | `solution_b` | solution B: `fisheye_tf`, InternImage-T + Mask2Former, 960×540 crops, multi-scale flip TTA (give `WEIGHTS`) |
# | `mask2former_cityscapes` | solution B's recipe on a whole Cityscapes Mask2Former (Swin-T, classes mapped) |
#
# | METHOD | what it trains on |
# |---|---|
# | `source_only` | labelled source crops (the lower bound) |
# | `fisheye_tf` | solution B: source images with the mean target image pasted outside the disc, Dice + CE |
# | `uda` | solution A's MIC-style UDA: source + masked target crops against EMA pseudo-labels; its elastic "distortion" copy with `DISTORTION_BRANCH` True (`solution_a`; the kit leaves it out: more steps for the same compute). The kit's `uda` first trains `source_only` for `WARM_START` (0.5) of the run's image passes, into `RUN_NAME/warm_start/`, and adapts from there for the rest (0: solution A's start from ImageNet weights) |
# | `uda_geo` | the kit's own: `uda` with the geometric pinhole → fisheye warp as the distortion |
# | `self_train` | the competition's winners: round 0 like `fisheye_tf`, then rounds on source + the model's own class-wise-thresholded pseudo-labels |
# | `oracle` | the held-out fisheye labels (synthetic data only; the upper bound) |
#
# The cell after the parameters prints the whole configuration and the `torchrun` command that trains
# this same run on many GPUs.

# %% tags=["parameters"]
DATA_DIR: str = "data/demo"  # dataset root in the competition layout (python -m kit.synth makes one)
RUNS_DIR: str = "outputs/runs"  # runs live in RUNS_DIR/RUN_NAME
RUN_NAME: str = "demo"  # this run's folder; 04_predict and 06_pseudo_label read "demo" by default
PRESET: str = "cpu_demo"  # the recipe: cpu_demo | solution_a | segformer_cityscapes | t4 | solution_b | mask2former_cityscapes (kit/train/presets.py)
METHOD: "Optional[str]" = None  # source_only | fisheye_tf | uda | uda_geo | self_train | oracle; None: the preset's
ENCODER: "Optional[str]" = None  # a timm encoder with features_only, mit_b0…b5, hf_swin_*, or internimage_t/s/b; None: the preset's
WEIGHTS: "Optional[str]" = None  # an encoder checkpoint (solution_b: ImageNet InternImage), or a hub id / folder of a MiT or Cityscapes model; None: the preset's
EPOCHS: "Optional[int]" = None  # epochs of STEPS_PER_EPOCH steps (self_train: of round 0); None: the preset's
INIT_FROM: "Optional[str]" = None  # a run folder or checkpoint whose weights start this run (same ARCH and ENCODER)
WARM_START: "Optional[float]" = None  # uda: share of the run's image passes trained first as source_only (0: none); None: the preset's (cpu_demo 0.5)
PSEUDO_SPLIT: "Optional[str]" = None  # self_train: round 1's pseudo-labels, 06_pseudo_label's OUTPUT_DIR; None: its own
OVERRIDES: dict = {}  # any other TrainConfig field in lower case, e.g. {"lr_encoder": 1e-4, "amp": "fp16"}
SEED: int = 0  # seed of everything random
DEVICE: str = "auto"  # auto (CUDA when torch sees it) | cpu | cuda | cuda:N
RESUME: bool = False  # continue RUN_NAME from its last.pt
OVERWRITE: bool = False  # replace an earlier run of the same RUN_NAME
PREVIEW_COUNT: int = 4  # samples in the step view and fisheye images in the prediction grid

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
print(f"preset {PRESET}; the same run on N GPUs (from the repository root; N processes, each "
      f"{config.batch_size} images per step):")
print(torchrun_command(config, preset=PRESET))
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
warm_csv = run_dir / "warm_start" / "metrics.csv"  # a warm-started run's source_only epochs come first
warm = pd.read_csv(warm_csv) if warm_csv.is_file() else metrics.iloc[:0]
if len(warm):
    print(f"warm start: {len(warm)} source_only epochs of {int(warm['step'].iloc[0])} steps in {warm_csv.parent}, "
          f"then {len(metrics)} {config.method} epochs of {int(metrics['step'].iloc[0])} steps")
history = pd.concat([warm, metrics.assign(epoch=metrics["epoch"] + len(warm))], ignore_index=True)
history

# %% [markdown]
# ## Curves
# Losses per epoch (left) and mIoU per epoch (right), the warm start's epochs first. With `uda`/`uda_geo`
# the `pseudo_weight` column is the mean share of confident teacher pixels: it climbs as the teacher grows sure.

# %%
save_training_curves(run_dir / "curves.png", history)
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
examples = predict_examples(run_dir, count=PREVIEW_COUNT, checkpoint="last.pt", device=DEVICE)
rows, titles = [], []
for example in examples:
    for name in ("teacher", "student", "truth"):
        if example[name] is not None:
            rows.append((example["image"], example[name]))
            titles.append(f"{example['id']} · {name}")
save_grid(run_dir / "predictions.png", rows, titles, width_inches=8, colours=64)
display(Image(str(run_dir / "predictions.png")))
print(f"run folder: {run_dir.resolve()}")
