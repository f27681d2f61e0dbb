"""What each training method trains on: its datasets and augmentations (:func:`build_data`), and the
per-epoch batches drawn from them (:func:`epoch_batches`).

    source_only  source crops, solution A's pipeline (the lower bound)
    fisheye_tf   reference solution B (seed 001): source images through the "fisheye
                 transformation" (mean target image pasted outside the disc); no target images
    uda          reference solution A (seed 000): source crops with Mix Background + an elastic
                 "distortion" copy, and unlabelled target crops for the EMA teacher
    uda_geo      the kit's own: ``uda`` with the geometric pinhole → fisheye warp as the distortion
    self_train   offline self-training (the competition's winners): source images through the fisheye
                 transformation (or the warp) and, from round 1 on, the target images with the
                 pseudo-labels of the round before (``kit.predict.pseudo``, :func:`pseudo_dataset`)
    oracle       the held-out fisheye labels (synthetic data only; the upper bound)

Every epoch restarts all random streams from (seed, epoch), so a resumed run draws the batches an
uninterrupted run would have drawn; every item is augmented from a seed of its own, so the batches
are the same for any number of data-loading workers (:class:`Batches`).
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Sampler

from kit.common.device import data_workers, one_thread_worker
from kit.competition.labels import BACKGROUND_CLASS, IGNORE_INDEX, NUM_CLASSES, PSEUDO_LABEL_VALUES, VOID_INDEX
from kit.competition.layout import evenly_spread, has_split, read_split, read_split_file
from kit.data.augment import (
    FisheyeTransform,
    FisheyeWarp,
    FourierStyle,
    MixBackground,
    crop_step,
    fix_sky_bonnet,
    kit_pipeline,
    solution_a_distortion,
    solution_a_pipeline,
    solution_b_pipeline,
)
from kit.data.border import BorderEstimate, estimate_border
from kit.data.datasets import RareClassSampler, Reseeded, SeededDraws, SegmentationDataset, ZipDataset
from kit.data.rare import RareClassCrop, rare_class_probabilities
from kit.data.stats import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SOURCE_MEAN,
    SOURCE_STD,
    TARGET_MEAN,
    TARGET_STD,
    class_pixel_counts,
    domain_stats,
)
from kit.models.encoders import encoder_normalisation
from kit.models.model import create_model
from kit.train.config import OUTPUTS, UDA_METHODS, TrainConfig

Stats = tuple[tuple[float, ...], tuple[float, ...]]  # RGB (mean, std) in 0..1


@dataclass
class TrainData:
    """Datasets of one method and what was derived while building them."""

    train: Dataset  # items: source (+ source_label, distorted, ...) or the supervised pair
    target: Dataset | None  # unlabelled target crops (uda methods)
    evals: dict[str, Dataset]  # name → labelled dataset at model input size
    source_stats: Stats
    target_stats: Stats
    monitor: str | None  # the metric picking best.pt (monitor_of); None: best.pt follows last.pt
    border: BorderEstimate | None = None  # at the target size (methods that use target images)
    class_pixels: np.ndarray | None = None


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def normalisation(config: TrainConfig) -> tuple[Stats, Stats]:
    """The (source, target) statistics images are normalised with, as ``config.normalization`` says."""
    if config.normalization == "reference":
        return (SOURCE_MEAN, SOURCE_STD), (TARGET_MEAN, TARGET_STD)
    if config.normalization == "imagenet":
        return (IMAGENET_MEAN, IMAGENET_STD), (IMAGENET_MEAN, IMAGENET_STD)
    if config.normalization == "encoder":  # what the pretrained weights expect (bundled: 0.5, 0.5)
        stats = encoder_normalisation(config.encoder, config.pretrained)
        return stats, stats
    root = Path(config.data_dir)
    return domain_stats(root, "train_source", config.stats_limit), domain_stats(root, "train_target", config.stats_limit)


def target_border(config: TrainConfig) -> BorderEstimate:
    """The fisheye border at the run's target size, as training and prediction both estimate it."""
    th, tw = config.target_size
    return estimate_border(config.data_dir, size=(tw, th), threshold=config.border_threshold,
                           max_images=config.stats_limit)


def build_data(config: TrainConfig) -> TrainData:
    """Datasets for ``config.method``; see the module docstring for what each method trains on."""
    root = Path(config.data_dir)
    (smean, sstd), (tmean, tstd) = normalisation(config)
    label_fn = None
    if config.fix_sky_bonnet:
        label_fn = functools.partial(fix_sky_bonnet, value=VOID_INDEX if config.bonnet == "void" else IGNORE_INDEX)
    th, tw = config.target_size

    def compose(steps) -> A.Compose:
        return steps if isinstance(steps, A.Compose) else A.Compose(steps)

    every, trained_rows, monitored = _source_rows(config)
    trained = every[trained_rows].reset_index(drop=True)

    def source(transform) -> SegmentationDataset:
        return SegmentationDataset(trained, compose(transform), smean, sstd, BACKGROUND_CLASS, label_fn)

    class_pixels, crop_prob = None, None  # rare-class sampling: labelled pixels per trained image, class probabilities
    if config.rare_class_sampling:
        if config.method == "oracle":
            counts = class_pixel_counts(root, "train_target_gt") if has_split(root, "train_target_gt") else None
        else:  # the rows trained on, as source_splits chose them
            counts = np.concatenate([class_pixel_counts(root, s) for s in config.train_splits])[trained_rows]
        if counts is not None:
            class_pixels = counts[:, :NUM_CLASSES]
            crop_prob = rare_class_probabilities(class_pixels, config.rcs_temperature)

    def crop():  # a crop step of its own for each pipeline: Reseeded gives each pipeline its own generator
        return config.crop_size if crop_prob is None else RareClassCrop(*config.crop_size, crop_prob)

    uses_border = config.method in ("fisheye_tf", "self_train", *UDA_METHODS) or config.fda_beta > 0
    border = target_border(config) if uses_border else None
    target = None

    def style() -> FourierStyle | None:  # one of its own per pipeline, as crop()
        return FourierStyle(list(border.paths), border.ellipse, (tw, th), config.fda_beta) if config.fda_beta > 0 else None

    def warp_pipeline() -> A.Compose:
        warp = FisheyeWarp(size=(tw, th), src_hfov_deg=config.src_hfov_deg, fov_deg=config.fisheye_fov_deg,
                           seed=config.seed)
        return A.Compose([A.Resize(*config.source_size), *kit_pipeline(warp, crop()).transforms])

    if config.method == "source_only":
        train = source(solution_a_pipeline(config.source_size, crop(), style=style(), scale=config.source_scale))
    elif config.method == "fisheye_tf" or (config.method == "self_train" and config.self_train_source == "fisheye_tf"):
        train = source(solution_b_pipeline(FisheyeTransform(border.mean, border.inside), crop()))
    elif config.method == "self_train":
        train = source(warp_pipeline())
    elif config.method == "oracle":
        if not has_split(root, "train_target_gt"):
            raise FileNotFoundError(
                f"METHOD 'oracle' trains on held-out fisheye labels (train_target_gt.csv), which only the "
                f"kit's synthetic datasets have; {root} has none"
            )
        frame = read_split(root, "train_target_gt")
        steps = [A.Resize(th, tw), A.HorizontalFlip(p=0.5), A.ColorJitter(p=0.25), crop_step(crop())]
        train = SegmentationDataset(frame, compose(steps), tmean, tstd, BACKGROUND_CLASS)
    else:
        mix = MixBackground(list(border.paths), border.ellipse, (tw, th), p=config.mix_background)
        source_pipeline = solution_a_pipeline(config.source_size, crop(), mix if config.mix_background > 0 else None,
                                              style(), config.source_scale)
        if config.method == "uda":
            distortion = A.Compose([*solution_a_pipeline(config.source_size, crop(), style=style(),
                                                         scale=config.source_scale).transforms,
                                    *solution_a_distortion().transforms])
        else:
            distortion = warp_pipeline()
        branches = {"distorted": source(distortion)} if config.distortion_branch else {}
        train = ZipDataset(source=source(source_pipeline), **branches)
        target_steps = [A.Resize(th, tw), A.HorizontalFlip(p=0.5), A.RandomCrop(*config.crop_size)]
        target = SegmentationDataset(read_split(root, "train_target"), compose(target_steps), tmean, tstd)

    evals = {}
    split = config.fisheye_eval_split
    if split and split != "train_target_gt" and not has_split(root, split):  # only the default may be absent
        raise FileNotFoundError(f"fisheye_eval_split = {split!r}, but {root} has no {split}.csv (CSV files there: "
                                f"{', '.join(sorted(p.name for p in root.glob('*.csv'))) or 'none'})")
    if monitored is not None and len(monitored):
        frame = evenly_spread(monitored, config.eval_limit)
        evals["source_val"] = SegmentationDataset(frame, A.Compose([A.Resize(*config.source_size)]), smean, sstd,
                                                  BACKGROUND_CLASS, label_fn)
    if config.fisheye_eval_split and has_split(root, config.fisheye_eval_split):
        frame = evenly_spread(read_split(root, config.fisheye_eval_split), config.eval_limit)
        evals["fisheye"] = SegmentationDataset(frame, A.Compose([A.Resize(th, tw)]), tmean, tstd, BACKGROUND_CLASS)

    return TrainData(train, target, evals, (smean, sstd), (tmean, tstd), monitor_of(config, evals), border,
                     class_pixels)


def source_splits(config: TrainConfig) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The labelled source rows a run trains on (``config.train_splits``), and the ``val_source`` rows it
    evaluates on (None without that split): never an image it trains on. When ``train_splits`` holds
    ``val_source`` (solution A trained on it), ``config.val_holdout`` of it, evenly spread, is kept out
    of training to be the source monitor (0: all of it is trained on, and there is no source monitor)."""
    every, trained_rows, monitored = _source_rows(config)
    return every[trained_rows].reset_index(drop=True), monitored


def _source_rows(config: TrainConfig) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame | None]:
    """:func:`source_splits` as every row of ``train_splits`` (concatenated), a mask of those trained
    on, and the monitored rows."""
    root = Path(config.data_dir)
    monitored = read_split(root, "val_source") if has_split(root, "val_source") else None
    frames, masks = [], []
    for split in config.train_splits:
        frame = read_split(root, split)
        trained = np.ones(len(frame), bool)
        if split == "val_source" and config.method != "oracle":  # the oracle trains on no source image
            count = math.ceil(config.val_holdout * len(frame))
            monitored = evenly_spread(frame, count) if count else frame.iloc[:0]
            trained = ~frame["id"].isin(monitored["id"]).to_numpy()
        frames.append(frame)
        masks.append(trained)
    return pd.concat(frames, ignore_index=True), np.concatenate(masks), monitored


def pseudo_dataset(config: TrainConfig, data: TrainData, csv: str | Path) -> SegmentationDataset:
    """The pseudo-labelled target images of ``csv`` (``kit.predict.pseudo``; 254 ignored) as ``self_train``
    trains on them: the oracle's target crops."""
    th, tw = config.target_size
    pipeline = A.Compose([A.Resize(th, tw), A.HorizontalFlip(p=0.5), A.ColorJitter(p=0.25),
                          A.RandomCrop(*config.crop_size)])
    return SegmentationDataset(read_split_file(csv), pipeline, *data.target_stats, BACKGROUND_CLASS,
                               label_values=PSEUDO_LABEL_VALUES)


def monitor_of(config: TrainConfig, evals: dict[str, Dataset]) -> str | None:
    """The metric that picks ``best.pt``: ``config.monitor``, or for ``"auto"`` the fisheye mIoU where
    the data has fisheye labels, else the source validation mIoU (on ``val_source`` images the run does not
    train on: :func:`source_splits`), else None (best.pt = last.pt)."""
    wanted = {"fisheye_miou": "fisheye", "source_val_miou": "source_val"}
    if config.monitor == "auto":
        return next((m for m in ("fisheye_miou", "source_val_miou") if wanted[m] in evals), None)
    if config.monitor == "source_val_miou" and "source_val" not in evals and "val_source" in config.train_splits:
        raise ValueError(f"monitor = 'source_val_miou', but val_holdout = {config.val_holdout} keeps no val_source "
                         f"image out of training (train_splits {list(config.train_splits)}): best.pt would be chosen "
                         f"on images the run trains on; set val_holdout > 0 or take val_source out of train_splits")
    if wanted[config.monitor] not in evals:
        source = f"{config.fisheye_eval_split}.csv" if config.monitor == "fisheye_miou" else "val_source.csv"
        raise ValueError(f"monitor = {config.monitor!r}, but {config.data_dir} has no {source} to compute it from "
                         f"(the real competition data has no fisheye labels); use 'auto' or 'source_val_miou'")
    return config.monitor


def steps_per_epoch(config: TrainConfig, data: TrainData, world_size: int = 1) -> int:
    """``config.steps_per_epoch``, or one pass over the training images when it is None (on
    ``world_size`` processes a step draws ``world_size`` batches, so a pass takes fewer steps)."""
    if config.steps_per_epoch is not None:
        return config.steps_per_epoch
    return max(len(data.train) // (config.batch_size * world_size), 1)


class Batches:
    """The batches of a run, epoch after epoch, from loaders built once: training, target and (``evals``)
    evaluation batches; with ``num_workers`` data-loading processes they stay alive across epochs
    (``persistent_workers``); the evaluation loaders start theirs for each evaluation.

    :meth:`epoch` restarts every random stream from (seed, epoch), so a resumed run repeats an
    uninterrupted one. Images are drawn from a generator of their own, and every item is augmented from
    a seed of its own (:class:`kit.data.datasets.SeededDraws`, :class:`~kit.data.datasets.Reseeded`):
    the batches are the same for any ``num_workers``. On ``world_size`` processes (``kit.train.distributed``)
    every rank walks the same global stream of draws and takes its own share of each global batch.
    """

    def __init__(self, data: TrainData, config: TrainConfig, device: torch.device = torch.device("cpu"), rank: int = 0,
                 world_size: int = 1) -> None:
        self.data, self.config, self.rank, self.world_size = data, config, rank, world_size
        self.workers = data_workers(config.num_workers, device)
        # one budget of workers: the target batches (uda, self_train's rounds) take a third of it
        targets = config.method in (*UDA_METHODS, "self_train")
        self.train_workers = self.workers - (self.workers // 3 if targets else 0)
        self.pin_memory = torch.device(device).type == "cuda"
        samples = steps_per_epoch(config, data, world_size) * config.batch_size * world_size
        if data.class_pixels is not None:
            order = RareClassSampler(data.class_pixels, config.rcs_temperature, samples, torch.Generator())
        else:
            order = RandomSampler(data.train, generator=torch.Generator())
        self.train = self._loader(data.train, order, stream=0, workers=self.train_workers)
        # evaluation runs while the training loaders wait: all the workers, started for each evaluation
        self.evals = {name: DataLoader(dataset, batch_size=config.batch_size, num_workers=self.workers,
                                       pin_memory=self.pin_memory, worker_init_fn=one_thread_worker)
                      for name, dataset in data.evals.items()}
        self.target_dataset: Dataset | None = None
        self.target: DataLoader | None = None

    def _loader(self, dataset: Dataset, order: Sampler, stream: int, workers: int) -> DataLoader:
        draws = SeededDraws(order, stream, self.config.batch_size, self.rank, self.world_size)
        # generator: the workers' base seed is drawn from it, not from the global stream the model's dropout uses
        return DataLoader(Reseeded(dataset), batch_size=self.config.batch_size, sampler=draws, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=self.pin_memory,
                          worker_init_fn=one_thread_worker, generator=torch.Generator().manual_seed(self.config.seed))

    def epoch(self, epoch: int) -> tuple[Iterator[dict], Iterator[dict] | None, torch.Generator]:
        """Endless iterators over the training batches and (uda methods, self_train's rounds) the target
        batches of ``epoch``, and the generator the step draws its own randomness from (MIC masks, class mix)."""
        epoch_seed = self.config.seed * 100_003 + epoch
        seed_all(epoch_seed)
        if self.data.target is not self.target_dataset:  # self_train's rounds bring new pseudo-labels
            self.target_dataset = self.data.target
            self.target = None if self.data.target is None else self._loader(
                self.data.target, RandomSampler(self.data.target, generator=torch.Generator()), stream=1,
                workers=self.workers - self.train_workers)
        for loader in (self.train, self.target):
            if loader is not None:
                loader.sampler.set_epoch(epoch_seed)
        return iter(self.train), None if self.target is None else iter(self.target), \
            torch.Generator().manual_seed(epoch_seed)


def epoch_batches(data: TrainData, config: TrainConfig, epoch: int) -> tuple[Iterator[dict], Iterator[dict] | None,
                                                                          torch.Generator]:
    """:meth:`Batches.epoch` of a new :class:`Batches` on the CPU (one look at one epoch: the step preview)."""
    return Batches(data, config).epoch(epoch)


def build_model(config: TrainConfig) -> nn.Module:
    """The run's network with its starting weights (pretrained encoder or local checkpoint)."""
    return create_model(config.arch, config.encoder, num_classes=OUTPUTS, pretrained=config.pretrained,
                        weights=config.weights, **head_kwargs(config))


def head_kwargs(config: TrainConfig) -> dict:
    """The head's arguments, as config.json stores them and :func:`kit.predict.runs.model_from_config` reads them."""
    return {"channels": config.head_channels, **config.head_options}
