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
# # 02 · Label fixing and augmentation previews
# 1. Solution A's sky-bonnet fix: Sky in the bottom third of a source label is the ego car's bonnet.
# 2. Every transform of the kit applied to the same source image and label: the kit's geometric
#    `FisheyeWarp`, solution A's `MixBackground` and elastic "distortion" copy, solution B's
#    `FisheyeTransform`, and the three ready-made pipelines.
# 3. A labelled pseudo-fisheye split warped from the source validation split and matched to the
#    target border, next to real target images: the kit's answer to "no labelled fisheye validation".

# %% tags=["parameters"]
DATA_DIR: str = "data/demo"  # dataset root in the competition layout
OUTPUT_DIR: str = "outputs/labels_and_augment"  # figures and the pseudo-fisheye split go here
MAX_IMAGES: "Optional[int]" = 200  # images per split, spread evenly, for the label fix and the mean target image (None: all)
SKY_START: float = 2 / 3  # Sky below this fraction of the height becomes background
SRC_HFOV_DEG: float = 80.0  # horizontal FOV of the source camera (the synthetic data's pinhole: 80°)
FISHEYE_FOV_DEG: float = 200.0  # target fisheye field of view
BORDER_THRESHOLD: "Optional[float]" = None  # channel-mean threshold of the border mask (real data: 108, solution B); None: Otsu
PSEUDO_SPLIT: str = "val_source"  # labelled split to warp into a pseudo-fisheye split
PSEUDO_COUNT: "Optional[int]" = 20  # images of that split to warp (None: all)
SAMPLE_INDEX: int = 0  # which source image the previews use
SEED: int = 0  # seed of the random transforms
OVERWRITE: bool = False  # replace outputs of an earlier run in OUTPUT_DIR

# %%
import albumentations as A
import numpy as np
from IPython.display import Image, display

from kit.common import files
from kit.common.checks import check_bool, check_int, check_number
from kit.competition import labels, layout
from kit.data import augment, border, fisheye
from kit.report import viz

check_int("MAX_IMAGES", MAX_IMAGES, low=1, optional=True)
check_number("SKY_START", SKY_START, low=0, high=1)
check_number("SRC_HFOV_DEG", SRC_HFOV_DEG, low=0, high=180, low_open=True, high_open=True)
check_number("FISHEYE_FOV_DEG", FISHEYE_FOV_DEG, low=0, high=360, low_open=True, high_open=True)
check_number("BORDER_THRESHOLD", BORDER_THRESHOLD, low=0, high=255, optional=True)
check_int("PSEUDO_COUNT", PSEUDO_COUNT, low=1, optional=True)
check_int("SEED", SEED, low=0)
check_bool("OVERWRITE", OVERWRITE)
source_all = layout.read_split(DATA_DIR, "train_source")
layout.read_split(DATA_DIR, PSEUDO_SPLIT)  # the split to warp exists and reads
check_int("SAMPLE_INDEX", SAMPLE_INDEX, low=0, high=min(len(source_all), MAX_IMAGES or len(source_all)) - 1)
out = files.prepare_output_dir(OUTPUT_DIR, overwrite=OVERWRITE)
source = layout.evenly_spread(source_all, MAX_IMAGES)
target = layout.evenly_spread(layout.read_split(DATA_DIR, "train_target"), MAX_IMAGES)
target_size = layout.read_image(target.img_path[0]).shape[1::-1]  # (W, H)

# %% [markdown]
# ## 1. Sky-bonnet fix

# %%
changed_pixels, changed_images = 0, 0
for path in source.gt_path:
    label = layout.read_label(path)
    n = int((augment.fix_sky_bonnet(label, SKY_START) != label).sum())
    changed_pixels += n
    changed_images += n > 0
print(f"fix_sky_bonnet changes {changed_pixels} pixels in {changed_images} of {len(source)} source labels")

image, label = layout.read_image(source.img_path[SAMPLE_INDEX]), layout.read_label(source.gt_path[SAMPLE_INDEX])
viz.save_grid(out / "sky_fix.png", [(image, label), (image, augment.fix_sky_bonnet(label, SKY_START))],
              ["before: bonnet labelled Sky", "after: bonnet is background"])
display(Image(str(out / "sky_fix.png")))

# %% [markdown]
# ## 2. Every transform on the same image

# %%
estimate = border.estimate_border(DATA_DIR, threshold=BORDER_THRESHOLD, max_images=MAX_IMAGES)
inside, ellipse = estimate.inside, estimate.ellipse
warp = augment.FisheyeWarp(size=target_size, src_hfov_deg=SRC_HFOV_DEG, fov_deg=(FISHEYE_FOV_DEG - 10, FISHEYE_FOV_DEG + 10), seed=SEED)
mix = augment.MixBackground(list(estimate.paths), ellipse, frame_size=target_size, p=1.0)
fisheye_tf = augment.FisheyeTransform(estimate.mean, inside)
crop = (target_size[1] // 2, target_size[0] // 2)  # (H, W): half the frame, as both solutions
transforms = {
    "FisheyeWarp (kit)": A.Compose([warp]),
    "MixBackground (A)": A.Compose([mix]),
    "distortion copy (A)": augment.solution_a_distortion(),
    "FisheyeTransform (B)": A.Compose([fisheye_tf]),
    "pipeline A": augment.solution_a_pipeline(image.shape[:2], (image.shape[0] // 2, image.shape[1] // 2), mix),
    "pipeline B": augment.solution_b_pipeline(fisheye_tf, crop),
    "pipeline kit": augment.kit_pipeline(warp, crop),
}
rows, titles = [(image, label)], ["original"]
for name, transform in transforms.items():
    transform.set_random_seed(SEED)
    result = transform(image=image, mask=label)
    rows.append((result["image"], result["mask"]))
    titles.append(name)
viz.save_grid(out / "transforms.png", rows, titles)
display(Image(str(out / "transforms.png")))

# %% [markdown]
# ## 3. A labelled pseudo-fisheye split next to real target images

# %%
pseudo_root = out / "pseudo_fisheye_data"
pseudo = fisheye.make_fisheye_split(f"{DATA_DIR}/{PSEUDO_SPLIT}.csv", pseudo_root, src_hfov_deg=SRC_HFOV_DEG,
                                    dst_size=target_size, fov_deg=FISHEYE_FOV_DEG, border=inside, limit=PSEUDO_COUNT)
print(f"{len(pseudo)} labelled pseudo-fisheye images in {pseudo_root}")
rows, titles = [], []
for i in range(min(3, len(pseudo))):
    rows.append((layout.read_image(pseudo.img_path[i]), layout.read_label(pseudo.gt_path[i])))
    titles.append(f"pseudo-fisheye {pseudo.id[i]}")
    real = layout.read_image(target.img_path[i])
    rows.append((real, np.full(real.shape[:2], labels.IGNORE_INDEX, np.uint8)))
    titles.append(f"real target {target.id[i]} (no label)")
viz.save_grid(out / "pseudo_fisheye.png", rows, titles)
display(Image(str(out / "pseudo_fisheye.png")))
