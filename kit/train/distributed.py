"""Training on many processes with PyTorch's own engine: ``torchrun`` + ``DistributedDataParallel``.

``torchrun --nproc_per_node=N -m kit.train --set METHOD=self_train …`` starts N copies of
:func:`kit.train.loop.train`; torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous
address, and its usual flags (``--nnodes``, ``--node_rank``, ``--rdzv_endpoint`` …) span machines. Each
process trains the same model on its own slice of every global batch (``kit.train.recipes.epoch_batches``);
DDP averages the gradients, so every rank takes the same step and the EMA teacher, updated from the
same weights, stays identical everywhere. BatchNorm becomes SyncBatchNorm on CUDA (PyTorch's
SyncBatchNorm runs on GPUs only; on the CPU's ``gloo`` backend each rank normalises its own slice).
Only rank 0 writes files and shows progress; the others wait for it at barriers. Multi-node runs need
the run folder on a file system every node sees (resuming reads ``last.pt`` on every rank).

The command line itself (``--preset``, ``--config``, ``--set``, and the command ``03_train`` prints) is
``kit.train.cli``.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from kit.common.device import resolve_device

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
