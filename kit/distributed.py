"""Training on many processes with PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

``torchrun --nproc_per_node=N -m kit.train --set METHOD=self_train …`` starts N copies of
:func:`kit.train.train`; torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous
address, and its usual flags (``--nnodes``, ``--node_rank``, ``--rdzv_endpoint`` …) span machines. Each
process trains the same model on its own slice of every global batch (``kit.recipes.epoch_batches``);
DDP averages the gradients, so every rank takes the same step and the EMA teacher, updated from the
same weights, stays identical everywhere. BatchNorm becomes SyncBatchNorm on CUDA (PyTorch's
SyncBatchNorm runs on GPUs only; on the CPU's ``gloo`` backend each rank normalises its own slice).
Only rank 0 writes files and shows progress; the others wait for it at barriers. Multi-node runs need
the run folder on a file system every node sees (resuming reads ``last.pt`` on every rank).

:func:`parse_command_line` turns ``--config FILE`` (a run's ``config.json`` or a JSON of 03_train's
parameters) and ``--set NAME=VALUE`` (VALUE read as JSON, else as text) into a ``TrainConfig``;
:func:`torchrun_command` writes that command for a config, as ``03_train`` prints it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from kit.config import TrainConfig
from kit.runs import resolve_device

# Rank 0 alone labels images (self_train) and evaluates while the others wait at a barrier:
# NCCL's 10-minute default would cut a long pseudo-labelling pass short.
TIMEOUT = datetime.timedelta(hours=3)


@dataclass(frozen=True)
class Context:
    """Where this process stands among the training processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # start() joined the process group, so stop() leaves it

    @property
    def main(self) -> bool:
        """The process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def context_from_environment() -> Context:
    """The ranks torchrun (or any ``torch.distributed`` launcher) put in the environment; none: one process."""
    def read(name: str, default: int) -> int:
        value = os.environ.get(name, str(default))
        if not value.isdigit():
            raise ValueError(f"environment variable {name} = {value!r}: expected a non-negative integer "
                             f"(torchrun sets it)")
        return int(value)

    context = Context(read("RANK", 0), read("WORLD_SIZE", 1), read("LOCAL_RANK", 0))
    if context.rank >= context.world_size:
        raise ValueError(f"RANK {context.rank} is not below WORLD_SIZE {context.world_size}")
    return context


def start(device_name: str) -> tuple[Context, torch.device]:
    """Join the process group torchrun describes (``nccl`` on CUDA, ``gloo`` on the CPU) and pick
    this rank's device: ``cuda:LOCAL_RANK`` when ``device_name`` resolves to CUDA."""
    context = context_from_environment()
    device = resolve_device(device_name)
    if not context.distributed:
        return context, device
    if device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
        context = dataclasses.replace(context, owns_group=True)
    return context, device


def stop(context: Context) -> None:
    """Leave the process group :func:`start` joined."""
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(context: Context) -> None:
    """Wait until every rank gets here (nothing to wait for in one process)."""
    if context.distributed:
        dist.barrier()


def wrap(model: nn.Module, context: Context, device: torch.device) -> nn.Module:
    """``model`` for training on every rank: SyncBatchNorm (CUDA) inside ``DistributedDataParallel``,
    which starts every rank from rank 0's weights; in one process, ``model`` itself."""
    if not context.distributed:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


@torch.no_grad()
def average_buffers(model: nn.Module, context: Context) -> None:
    """Average the floating-point buffers (BatchNorm running statistics) over the ranks after a step:
    without SyncBatchNorm (the CPU) each rank's statistics saw only its own slice of the batch, and
    the ranks' models (and the teachers made from them) would drift apart."""
    if not context.distributed:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= context.world_size


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a DDP wrapper (what is saved, evaluated and copied into the teacher)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


# Keys kit.train adds to a run's config.json next to TrainConfig's fields
_DERIVED_KEYS = ("num_classes", "head_kwargs", "source_mean", "source_std", "target_mean", "target_std")


def _parse_value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word: a name or a path


def parse_command_line(argv: Sequence[str] | None = None) -> TrainConfig:
    """``python -m kit.train`` / ``torchrun … -m kit.train``: the config of ``--config`` overridden
    by each ``--set NAME=VALUE``; names are 03_train's parameters (``EPOCHS``) or fields (``epochs``)."""
    parser = argparse.ArgumentParser(
        prog="python -m kit.train",
        description="Train one run as notebooks/03_train does; under torchrun, on every process it starts.")
    parser.add_argument("--config", type=Path, help="a run's config.json or a JSON object of 03_train's parameters")
    parser.add_argument("--set", dest="values", action="append", default=[], metavar="NAME=VALUE",
                        help="a parameter, e.g. EPOCHS=40 or CROP_SIZE=[540,960] (VALUE is JSON, else text)")
    args = parser.parse_args(argv)
    values: dict[str, object] = {}
    if args.config is not None:
        if not args.config.is_file():
            raise FileNotFoundError(f"--config {args.config}: no such file")
        try:
            loaded = json.loads(args.config.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"--config {args.config} is not JSON: {error}") from error
        if not isinstance(loaded, dict):
            raise ValueError(f"--config {args.config}: expected a JSON object of parameters, "
                             f"found {type(loaded).__name__}")
        values.update({k.upper(): v for k, v in loaded.items() if k not in _DERIVED_KEYS})
    for item in args.values:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--set {item!r}: expected NAME=VALUE, e.g. EPOCHS=40")
        values[name.upper()] = _parse_value(text)
    return TrainConfig.from_parameters(values)


def torchrun_command(config: TrainConfig, nproc_per_node: int | str = "N") -> str:
    """The shell command that trains ``config`` on ``nproc_per_node`` processes: one ``--set`` per
    parameter that differs from ``TrainConfig``'s default."""
    default = TrainConfig()
    parts = ["torchrun", f"--nproc_per_node={nproc_per_node}", "-m", "kit.train"]
    for field in dataclasses.fields(TrainConfig):
        value = getattr(config, field.name)
        if value != getattr(default, field.name):
            value = list(value) if isinstance(value, tuple) else value
            parts += ["--set", shlex.quote(f"{field.name.upper()}={json.dumps(value)}")]
    return " ".join(parts)
