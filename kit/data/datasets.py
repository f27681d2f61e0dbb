"""The competition's data layout: class names, CSV splits, image/label I/O, the torch datasets and
samplers training draws from, and the per-dataset statistics cache.

Layout of a dataset root (2023 Samsung AI Challenge, camera-invariant domain adaptation):

    train_source.csv  val_source.csv      id,img_path,gt_path
    train_target.csv  test.csv            id,img_path
    train_source_image/TRAIN_SOURCE_0000.png  train_source_gt/TRAIN_SOURCE_0000.png ...

Paths inside the CSVs are relative to the root (``./train_source_image/...``). The kit's synthetic
datasets add held-out fisheye labels as ``train_target_gt.csv`` / ``test_gt.csv`` (id,img_path,gt_path).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from kit.competition.labels import IGNORE_INDEX, VALID_LABEL_VALUES, VOID_INDEX
from kit.competition.layout import read_image, read_label
from kit.data.rare import rare_class_probabilities
from kit.data.stats import IMAGENET_MEAN, IMAGENET_STD


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``uint8 (H, W, 3)`` → normalised ``float32 (3, H, W)`` tensor: (x/255 - mean) / std."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)  # (3, H, W)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (x - mean_t) / std_t


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The inverse of :func:`normalize`: ``float32 (3, H, W)`` → ``uint8 (H, W, 3)`` (rounded, clipped)."""
    x = x.detach().float().cpu() * torch.tensor(std).view(3, 1, 1) + torch.tensor(mean).view(3, 1, 1)
    return (x.permute(1, 2, 0).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)


class SegmentationDataset(Dataset):
    """Images (and labels, when the frame has ``gt_path``) with an albumentations pipeline.

    Each item is a dict: ``image`` float32 (3, H, W) normalised with this domain's mean/std,
    ``id`` str, and for labelled frames ``label`` int64 (H, W) where 255 becomes ``background``.

    Args:
        frame: a split from :func:`read_split` (``gt_path`` present → labelled).
        transform: an ``A.Compose`` (or any callable taking ``image=``, ``mask=`` and returning a
            dict with the same keys); applied to uint8 arrays before normalisation.
        mean, std: this domain's RGB statistics in 0..1 (e.g. SOURCE_MEAN / TARGET_MEAN).
        background: the value 255 label pixels take (255 to ignore them, 12 for a background class);
            ``VOID_INDEX`` pixels always become 255 (ignored).
        label_fn: optional ``uint8 (H, W) → uint8 (H, W)`` applied on load (e.g. the sky-bonnet fix).
        label_values: the values label files may hold (pseudo-labels: :data:`PSEUDO_LABEL_VALUES`).
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        transform: Callable | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        background: int = IGNORE_INDEX,
        label_fn: Callable[[np.ndarray], np.ndarray] | None = None,
        label_values: frozenset[int] = VALID_LABEL_VALUES,
    ) -> None:
        self.frame = frame.reset_index(drop=True)
        self.labelled = "gt_path" in self.frame.columns
        self.transform = transform
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.background = background
        self.label_fn = label_fn
        self.label_values = label_values

    def __len__(self) -> int:
        return len(self.frame)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The raw ``uint8`` image and label (None when unlabelled), before any transform."""
        row = self.frame.iloc[index]
        image = read_image(row["img_path"])
        label = read_label(row["gt_path"], self.label_values) if self.labelled else None
        if label is not None and label.shape != image.shape[:2]:
            raise ValueError(
                f"label {row['gt_path']} is {label.shape[1]}x{label.shape[0]} but image "
                f"{row['img_path']} is {image.shape[1]}x{image.shape[0]}"
            )
        if label is not None and self.label_fn is not None:
            label = self.label_fn(label)
        return image, label

    def __getitem__(self, index: int) -> dict:
        return self.prepare(index, *self.load(index))

    def prepare(self, index: int, image: np.ndarray, label: np.ndarray | None) -> dict:
        """Row ``index``'s item from its loaded ``image`` and ``label``: transformed and normalised."""
        if self.transform is not None:
            out = self.transform(image=image, mask=label) if label is not None else self.transform(image=image)
            image, label = out["image"], out.get("mask", label)
        item = {"image": normalize(image, self.mean, self.std), "id": self.frame.at[index, "id"]}
        if label is not None:
            target = torch.from_numpy(np.ascontiguousarray(label)).long()  # (H, W)
            if self.background != IGNORE_INDEX:
                target[target == IGNORE_INDEX] = self.background
            target[target == VOID_INDEX] = IGNORE_INDEX
            item["label"] = target
        return item


class ZipDataset(Dataset):
    """Items of several :class:`SegmentationDataset` over the same rows, keys prefixed: ``{"source": ...,
    "distorted": ..., "source_label": ...}``. Each row is read once and goes through every dataset's
    own transform (at 2048×1024, decoding a PNG costs as much as the rest of a sample)."""

    def __init__(self, **datasets: SegmentationDataset) -> None:
        first = next(iter(datasets.values()))
        for name, dataset in datasets.items():
            same = (dataset.frame[["img_path"]].equals(first.frame[["img_path"]]) and dataset.labelled == first.labelled
                    and dataset.label_fn is first.label_fn and dataset.label_values == first.label_values)
            if not same:
                raise ValueError(f"ZipDataset: {name!r} does not read the rows (images, labels, label_fn) of "
                                 f"{next(iter(datasets))!r}; each row is read once for all")
        self.datasets = datasets
        self.length = len(first)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        image, label = next(iter(self.datasets.values())).load(index)
        out = {}
        for name, dataset in self.datasets.items():
            item = dataset.prepare(index, image, label)
            out[name] = item["image"]
            if "label" in item:
                out[f"{name}_label"] = item["label"]
        return out


def pipelines(dataset: Dataset) -> list:
    """The augmentation pipelines (``A.Compose``) a dataset's items go through, in a fixed order."""
    if isinstance(dataset, ZipDataset):
        return [p for d in dataset.datasets.values() for p in pipelines(d)]
    transform = getattr(dataset, "transform", None)
    return [transform] if hasattr(transform, "set_random_state") else []


def draw_seed(*key: int) -> int:
    """A 32-bit seed from a tuple of non-negative integers, well mixed (numpy's ``SeedSequence``):
    nearby keys (consecutive draws, epochs, streams) give unrelated seeds."""
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0])


class Reseeded(Dataset):
    """``dataset`` read by ``(index, seed)`` draws (:class:`SeededDraws`): before each item, every
    augmentation pipeline in it restarts from the draw's own seed. An item's crop, flip, jitter, donor
    image and warp camera are then a function of the draw alone, whichever data-loading worker makes
    it, however many there are, and in whatever order.

    All transforms of a pipeline share one generator (``set_random_state``); albumentations'
    ``set_random_seed`` would give each transform its own generator with the same seed, so that, e.g.,
    the first draws of a horizontal and a vertical flip coincide.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.pipelines = pipelines(dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, draw: tuple[int, int]) -> dict:
        index, seed = draw
        for i, pipeline in enumerate(self.pipelines):
            pipeline.set_random_state(np.random.default_rng([seed, i]), random.Random(seed * 64 + i))
        return self.dataset[index]


class SeededDraws(Sampler[tuple[int, int]]):
    """An endless stream of ``(index, seed)`` draws for :class:`Reseeded`, restarted by :meth:`set_epoch`.

    ``order`` draws the indices (a ``RandomSampler`` or :class:`RareClassSampler`; its ``generator`` is
    replaced by this stream's own, so that nothing else, e.g. a training step drawing from another
    generator while data-loading workers prefetch, moves it); passes over it follow each other without
    a gap. The ``n``-th draw of an epoch has the seed ``draw_seed(key, stream, n)``. On ``world_size``
    processes every rank walks the same global stream and keeps, of every ``batch_size · world_size``
    consecutive draws, its own ``batch_size``: together the ranks draw exactly the batches (and the
    augmentations) of one process with the global batch.
    """

    def __init__(self, order: Sampler, stream: int, batch_size: int = 1, rank: int = 0, world_size: int = 1) -> None:
        self.order, self.stream = order, stream
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.key: int | None = None

    def set_epoch(self, key: int) -> None:
        """Start the stream over from ``key`` (the kit uses ``seed · 100003 + epoch``) at the next iteration."""
        self.key = key

    def __iter__(self) -> Iterator[tuple[int, int]]:
        if self.key is None:
            raise RuntimeError("SeededDraws.set_epoch(key) was not called before drawing")
        key = self.key
        self.order.generator = torch.Generator().manual_seed(draw_seed(key, self.stream))
        size = self.batch_size * self.world_size
        mine = range(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        n = 0
        while True:
            start = n
            for index in self.order:
                if n % size in mine:
                    yield int(index), draw_seed(key, self.stream, n)
                n += 1
            if n == start:
                raise ValueError("a training loader drew no image: the split is empty")


class RareClassSampler(Sampler[int]):
    """DAFormer's rare-class sampling: draw a class with probability ∝ exp((1 - f_c) / T), where
    f_c is its share of labelled pixels, then an image that contains it.

    ``class_pixels``: ``(N, C)`` pixel counts per image (background column excluded by the caller).
    """

    def __init__(self, class_pixels: np.ndarray, temperature: float, num_samples: int, generator: torch.Generator) -> None:
        counts = np.asarray(class_pixels, dtype=np.float64)
        self.class_prob = torch.tensor(rare_class_probabilities(counts, temperature))
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
