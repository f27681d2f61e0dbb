"""The batches training draws: every item augmented from a seed of its own, so that data-loading
workers each draw their own augmentations, and the batches are the same for any number of workers,
across runs, and when a run resumes at an epoch."""

import dataclasses
import itertools
import random

import albumentations as A
import numpy as np
import pytest
import torch
from scratch import SCRATCH
from torch.utils.data import RandomSampler, SequentialSampler

from kit.common.device import data_workers
from kit.competition.layout import read_split
from kit.data.datasets import Reseeded, SeededDraws, SegmentationDataset, ZipDataset
from kit.train.config import TrainConfig
from kit.train.recipes import Batches, build_data


@pytest.fixture(scope="module")
def uda_data(tiny):
    config = TrainConfig(**(SCRATCH | dict(data_dir=str(tiny), method="uda", source_size=(48, 96), target_size=(54, 96),
                                           crop_size=(32, 32), batch_size=2, steps_per_epoch=3, seed=3)))
    return config, build_data(config)


def _draw(config, data, workers: int, epoch: int = 0, count: int = 6, batches: Batches | None = None):
    """``count`` training and target batches of ``epoch``."""
    batches = batches or Batches(data, dataclasses.replace(config, num_workers=workers))
    train, target, _ = batches.epoch(epoch)
    return [next(train) for _ in range(count)], [next(target) for _ in range(count)]


def _same(a: list[dict], b: list[dict]) -> bool:
    return all(x.keys() == y.keys() and all(torch.equal(x[k], y[k]) if torch.is_tensor(x[k]) else x[k] == y[k] for k in x)
               for x, y in zip(a, b, strict=True))


@pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")  # 3 on 2 cores, on purpose
def test_data_workers_draw_their_own_augmentations_and_the_batches_of_one_process(uda_data):
    config, data = uda_data
    two = _draw(config, data, workers=3)  # 2 for the training batches, 1 for the target batches
    for batches in two:  # 6 batches over 2 workers: no two alike (a shared random state repeated them in pairs)
        for a, b in itertools.combinations(batches, 2):
            key = "source" if "source" in a else "image"
            assert not torch.equal(a[key], b[key])
    again = _draw(config, data, workers=3)
    assert _same(two[0], again[0]) and _same(two[1], again[1])
    none = _draw(config, data, workers=0)
    assert _same(two[0], none[0]) and _same(two[1], none[1])  # workers change how, not what


def test_a_resumed_epoch_draws_what_the_run_drew_and_each_epoch_draws_anew(uda_data):
    config, data = uda_data
    batches = Batches(data, dataclasses.replace(config, num_workers=2))  # persistent workers across epochs
    first, second = _draw(config, data, 2, epoch=0, batches=batches), _draw(config, data, 2, epoch=1, batches=batches)
    resumed = _draw(config, data, 0, epoch=1)  # a fresh process starting at epoch 1
    assert _same(second[0], resumed[0]) and _same(second[1], resumed[1])
    assert not torch.equal(first[0][0]["source"], second[0][0]["source"])
    assert _same(first[0], _draw(config, data, 0, epoch=0)[0])  # the loaders restart each epoch from (seed, epoch)


def test_an_item_is_a_function_of_its_draw_alone(tiny):
    """The same (index, seed) gives the same item whatever was drawn before it and whatever the global
    random state; another seed, another augmentation; each transform draws from the shared stream
    (albumentations' own seeding gives every transform the same first draw)."""
    frame = read_split(tiny, "train_source")
    pipeline = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5), A.RandomCrop(32, 32)])
    dataset = Reseeded(SegmentationDataset(frame, pipeline))
    first = dataset[(1, 42)]
    for other in range(5):
        dataset[(0, other)]
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    assert torch.equal(dataset[(1, 42)]["image"], first["image"])
    assert not torch.equal(dataset[(1, 43)]["image"], first["image"])
    image = np.arange(4, dtype=np.uint8).reshape(2, 2, 1).repeat(3, axis=2)
    flips = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])
    decisions = set()
    for seed in range(40):
        flips.set_random_state(np.random.default_rng([seed, 0]), random.Random(seed * 64))
        out = flips(image=image)["image"][..., 0]
        decisions.add((bool(out[0, 0] in (1, 3)), bool(out[0, 0] in (2, 3))))  # (flipped left-right, up-down)
    assert decisions == {(False, False), (False, True), (True, False), (True, True)}


def test_ranks_share_one_stream_of_draws_as_one_process_with_the_global_batch():
    def draws(rank: int, world_size: int, batch_size: int, count: int) -> list[tuple[int, int]]:
        stream = SeededDraws(RandomSampler(range(11)), stream=0, batch_size=batch_size, rank=rank, world_size=world_size)
        stream.set_epoch(7)
        return list(itertools.islice(stream, count))

    one = draws(0, 1, 4, 16)  # 4 global batches of 4, across the end of the first pass over 11 images
    halves = [draws(r, 2, 2, 8) for r in (0, 1)]
    assert sum((halves[r][2 * b:2 * b + 2] for b in range(4) for r in (0, 1)), []) == one
    first_pass = [index for index, _ in draws(0, 1, 1, 22)]
    assert sorted(first_pass[:11]) == sorted(first_pass[11:]) == list(range(11))  # passes follow without a gap
    assert first_pass[:11] != first_pass[11:]
    assert len({seed for _, seed in draws(0, 1, 1, 200)}) == 200
    with pytest.raises(RuntimeError, match="set_epoch"):
        next(iter(SeededDraws(RandomSampler(range(3)), stream=0)))
    empty = SeededDraws(SequentialSampler([]), stream=0)
    empty.set_epoch(0)
    with pytest.raises(ValueError, match="the split is empty"):
        next(iter(empty))


def test_a_zipped_row_is_read_once_and_gives_each_branch_what_its_own_dataset_gives(tiny, monkeypatch):
    frame = read_split(tiny, "train_source")
    flip = A.Compose([A.HorizontalFlip(p=1.0)])
    source, flipped = SegmentationDataset(frame), SegmentationDataset(frame, flip)
    reads = []
    load = SegmentationDataset.load
    monkeypatch.setattr(SegmentationDataset, "load", lambda self, i: reads.append(i) or load(self, i))
    item = ZipDataset(source=source, distorted=flipped)[2]
    assert reads == [2]
    assert torch.equal(item["source"], source[2]["image"]) and torch.equal(item["distorted"], flipped[2]["image"])
    assert torch.equal(item["distorted_label"], flipped[2]["label"])
    with pytest.raises(ValueError, match="'distorted' does not read the rows"):
        ZipDataset(source=source, distorted=SegmentationDataset(frame.iloc[::-1]))


def test_auto_workers_none_on_the_cpu_and_one_per_free_core_on_a_gpu(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr("kit.common.device.usable_cores", lambda: 12)
    assert data_workers("auto", torch.device("cpu")) == 0
    assert data_workers(3, torch.device("cpu")) == 3
    assert data_workers("auto", cuda) == 8  # 11 free cores, at most 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert data_workers("auto", cuda) == 2  # 12 cores shared by 4 ranks: 3 each, less the rank itself
    monkeypatch.setattr("kit.common.device.usable_cores", lambda: 2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert data_workers("auto", cuda) == 1  # a Colab machine: 2 cores
