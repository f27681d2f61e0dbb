"""Named training recipes, each a small diff on another (as mmsegmentation's configs: a B5 config
states only how it differs from B0). ``cpu_demo`` is :class:`kit.train.config.TrainConfig`'s own
defaults, so there is one set of default values and every other recipe names its differences.

    cpu_demo     the synthetic demo on a laptop CPU: uda with rare-class sampling, no distortion copy and a quarter
                 of the target blocks masked, warm-started by source_only for half its budget, EfficientNet-Lite0 (offline weights) +
                 DAFormer 64, 270×480 fisheye frames, 128×128 crops, 16,000 image passes (the benchmark's
                 budget: 330 source_only steps, then 125 uda steps)
    solution_a   solution A (seed 000) on an A100: uda (MIC-style) with its elastic distortion copy, no
                 warm start and no rare-class sampling (dropped for time), MiT-B4 (ImageNet), 512×1024 source, 256×512 crops,
                 EMA per epoch, border threshold 108; slide prediction
    segformer_cityscapes
                 solution A's recipe on a whole Cityscapes SegFormer-B5: encoder and head start
                 trained on road scenes, the head's classes mapped onto the competition's
    t4           solution A on a 16 GB T4, as its write-up ran there: 256×512 images, 128×256 crops
    solution_b   solution B (seed 001): fisheye transformation, InternImage + Mask2Former, 960×540
                 crops at 1920×1080, AdamW 2e-5 / wd 0.05; slide prediction with 5-scale flip TTA
    mask2former_cityscapes
                 solution B's recipe on a whole Cityscapes Mask2Former (Swin-T), classes mapped

``03_train`` picks one with ``PRESET``; ``python -m kit.train --preset NAME``; any field can still be
set on top (``OVERRIDES``, ``-p NAME value``, ``--set NAME=VALUE``). Presets never set a run's
identity (data folder, run name, seed, device, resume): those belong to the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# solution A's real data: 2,194 + 466 source images at batch 8 → 333 steps per epoch
_SOLUTION_A_STEPS_PER_EPOCH = 333


@dataclass(frozen=True)
class Preset:
    """A recipe: ``values`` (TrainConfig fields, lower case) over the recipe ``base``."""

    name: str
    about: str  # one line: what the recipe is and what it expects (weights, GPU)
    base: str | None = None
    values: Mapping[str, object] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("cpu_demo", "the synthetic demo on a laptop CPU (TrainConfig's own defaults); offline EfficientNet-Lite0 weights"),
    Preset("solution_a", "solution A on one A100 (32 GB at batch 8): uda, MiT-B4 with ImageNet weights (nvidia/mit-b4; "
           "WEIGHTS = a Cityscapes SegFormer-B4 id starts its encoder from Cityscapes, as solution A found better), "
           "slide prediction; border threshold 108 is the real data's", base="cpu_demo", values=dict(
               arch="daformer_up2", encoder="mit_b4", pretrained=True, head_channels=256,
               source_size=(512, 1024), target_size=(540, 960), crop_size=(256, 512), epochs=100, steps_per_epoch=None,
               lr_encoder=1e-4, lr_decoder=1e-3, warmup_steps=50 * _SOLUTION_A_STEPS_PER_EPOCH,
               ema_per="epoch", mask_ratio=0.75, mask_block=32, src_hfov_deg=90.0, distortion_branch=True, warm_start=0.0,
               rare_class_sampling=False,
               border_threshold=108.0, predict_mode="slide")),
    Preset("segformer_cityscapes", "solution A's recipe on a whole Cityscapes SegFormer-B5 (nvidia/segformer-b5-finetuned-"
           "cityscapes-1024-1024, non-commercial licence): encoder and all-MLP head start trained, classes mapped; "
           "ImageNet normalisation as it was trained", base="solution_a", values=dict(
               arch="segformer", encoder="mit_b5", pretrained=False, head_channels=768,
               weights="nvidia/segformer-b5-finetuned-cityscapes-1024-1024", normalization="encoder")),
    Preset("t4", "solution A on a 16 GB T4 (8 GB at batch 8, as its write-up measured): 256×512 images, 128×256 crops, "
           "fp16 (a T4 has no bf16)", base="solution_a", values=dict(
               source_size=(256, 512), target_size=(270, 480), crop_size=(128, 256), mask_block=16, amp="fp16")),
    Preset("solution_b", "solution B: fisheye transformation, InternImage-T + Mask2Former (200 queries, 9 layers); "
           "pass an ImageNet InternImage checkpoint as WEIGHTS", base="solution_a", values=dict(
               method="fisheye_tf", arch="mask2former", encoder="internimage_t", pretrained=False,
               source_size=(1080, 1920), target_size=(1080, 1920), crop_size=(540, 960), batch_size=2, epochs=40,
               steps_per_epoch=500, warmup_steps=1500, lr_encoder=2e-5, lr_decoder=2e-4, weight_decay=0.05,
               ema_per="step", predict_scales=(0.8, 0.9, 1.0, 1.1, 1.2), predict_flip=True)),
    Preset("mask2former_cityscapes", "solution B's recipe on a whole Cityscapes Mask2Former with its Swin-T backbone "
           "(facebook/mask2former-swin-tiny-cityscapes-semantic, CC BY-NC 4.0): backbone, decoders and class rows "
           "start trained; ImageNet normalisation as it was trained", base="solution_b", values=dict(
               encoder="hf_swin_tiny", weights="facebook/mask2former-swin-tiny-cityscapes-semantic",
               head_options={"queries": 100}, normalization="encoder")),
)}
# what a preset may not set: the run's identity and where it runs
RUN_FIELDS = ("data_dir", "run_name", "runs_dir", "init_from", "pseudo_split", "seed", "device", "resume", "overwrite")


def check_preset(name: object) -> Preset:
    if not isinstance(name, str) or name not in PRESETS:
        raise ValueError(f"preset = {name!r} is not one of {', '.join(map(repr, PRESETS))}")
    return PRESETS[name]


def preset_diff(name: str) -> dict[str, object]:
    """Every value ``name`` sets over ``cpu_demo`` (TrainConfig's defaults), bases first."""
    preset = check_preset(name)
    values = preset_diff(preset.base) if preset.base else {}
    return {**values, **preset.values}

