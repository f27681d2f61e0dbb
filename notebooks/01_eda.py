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
# # 01 · Exploratory data analysis
# What the two domains look like: class pixel shares, per-domain colour statistics (solution A
# normalises each domain with its own), the mean target image and its fisheye border (solution B's
# mask, solution A's ellipse), and samples with their labels. Works on the competition layout and
# on the kit's synthetic data (which adds held-out fisheye labels, so the target column of the
# class-share chart exists only there).

# %% tags=["parameters"]
DATA_DIR: str = "data/demo"  # dataset root in the competition layout
OUTPUT_DIR: str = "outputs/eda"  # figures and stats.json are written here
MAX_IMAGES: "Optional[int]" = 200  # images per split used for statistics, spread evenly (None: all)
N_SAMPLES: int = 3  # samples per domain in the preview grid
BORDER_THRESHOLD: "Optional[float]" = None  # channel-mean threshold of the border mask (real data: 108, solution B); None: Otsu
OVERWRITE: bool = False  # replace figures of an earlier run in OUTPUT_DIR

# %%
import json

from IPython.display import Image, display

from kit.common import files
from kit.common.checks import check_bool, check_int, check_number
from kit.competition import labels, layout
from kit.data import border, stats
from kit.report import viz

check_int("MAX_IMAGES", MAX_IMAGES, low=1, optional=True)
check_int("N_SAMPLES", N_SAMPLES, low=0)
check_number("BORDER_THRESHOLD", BORDER_THRESHOLD, low=0, high=255, optional=True)
check_bool("OVERWRITE", OVERWRITE)
out = files.prepare_output_dir(OUTPUT_DIR, overwrite=OVERWRITE)
source = layout.evenly_spread(layout.read_split(DATA_DIR, "train_source"), MAX_IMAGES)
target = layout.evenly_spread(layout.read_split(DATA_DIR, "train_target"), MAX_IMAGES)
target_gt = None
if layout.has_split(DATA_DIR, "train_target_gt"):
    target_gt = layout.evenly_spread(layout.read_split(DATA_DIR, "train_target_gt"), MAX_IMAGES)
print(f"{len(source)} source and {len(target)} target images; held-out target labels: {target_gt is not None}")

# %% [markdown]
# ## Class pixel share per domain

# %%
shares = {"source": stats.class_pixel_share(source.gt_path)}
if target_gt is not None:
    shares["target (held-out labels)"] = stats.class_pixel_share(target_gt.gt_path)
viz.save_class_share(out / "class_share.png", shares)
display(Image(str(out / "class_share.png")))

# %% [markdown]
# ## Per-domain colour statistics
# Reference solution A measured source mean (0.590, 0.595, 0.579) / std (0.167, 0.157, 0.159) and
# target mean (0.472, 0.471, 0.497) / std (0.239, 0.240, 0.253) on the competition data.

# %%
domain_stats = {}
for name, frame in [("source", source), ("target", target)]:
    mean, std = stats.channel_stats(list(frame.img_path))
    domain_stats[name] = {"mean": mean, "std": std}
    print(f"{name:7s} mean {tuple(round(m, 4) for m in mean)}  std {tuple(round(s, 4) for s in std)}")

# %% [markdown]
# ## The mean target image and its fisheye border

# %%
estimate = border.estimate_border(DATA_DIR, threshold=BORDER_THRESHOLD, max_images=MAX_IMAGES)
inside, ellipse = estimate.inside, estimate.ellipse
print(f"threshold {estimate.threshold:.1f}; disc covers {inside.mean():.1%} of the frame; ellipse centre {ellipse[0]}, "
      f"axes {ellipse[1]}, angle {ellipse[2]:.1f}")
viz.save_border(out / "border.png", estimate.mean, inside, ellipse)
display(Image(str(out / "border.png")))

# %% [markdown]
# ## Samples with label overlays

# %%
rows, titles = [], []
labelled = [("source", source)] + ([("target", target_gt)] if target_gt is not None else [])
for name, frame in labelled:
    for item in frame.head(N_SAMPLES).itertuples():
        rows.append((layout.read_image(item.img_path), layout.read_label(item.gt_path)))
        titles.append(f"{name}: {item.id}")
viz.save_grid(out / "samples.png", rows, titles)
display(Image(str(out / "samples.png")))

# %%
summary = {
    "class_share": {k: dict(zip([*labels.CLASSES, "background"], v.round(5).tolist())) for k, v in shares.items()},
    "channel_stats": domain_stats,
    "border": {"disc_share": float(inside.mean()), "ellipse": ellipse, "threshold": estimate.threshold},
}
files.write_json(out / "stats.json", summary)
print(json.dumps(summary["border"], indent=1))
