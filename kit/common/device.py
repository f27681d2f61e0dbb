"""Where torch runs: :func:`resolve_device` (``"auto"``: CUDA when torch sees it) and the CPU thread
default (half the cores, so that a second busy process does not make torch's threads fight).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import cv2
import torch


def unusable_gpu() -> str | None:
    """Why this machine's NVIDIA GPU cannot be used by the installed torch (with what to install), or
    None: torch uses it, or there is none (no NVIDIA driver)."""
    if torch.cuda.is_available() or not (Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi")):
        return None
    if torch.version.cuda is None:
        why = f"the installed torch {torch.__version__} is a CPU-only build"
    else:
        why = (f"the installed torch {torch.__version__} is built for CUDA {torch.version.cuda}, which this machine's "
               f"driver does not run (or CUDA_VISIBLE_DEVICES hides the GPU)")
    return (f"an NVIDIA GPU is present but unusable: {why}. `nvidia-smi` prints the newest CUDA version the driver "
            f"runs; install a torch (and torchvision) built for it or older, e.g. `pip install torch torchvision "
            f"--index-url https://download.pytorch.org/whl/cu126` for a driver of CUDA 12.6 or newer")


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"``: CUDA when torch sees it, else the CPU (warning when a GPU is there but torch cannot use
    it); any other name as ``torch.device`` reads it."""
    if str(name) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if (why := unusable_gpu()) is not None:
            warnings.warn(f"DEVICE = 'auto' runs on the CPU: {why}", stacklevel=2)
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE = {str(name)!r} but torch sees no CUDA device; use 'auto' or 'cpu'"
                           + (f" ({why})" if (why := unusable_gpu()) else ""))
    return device


AMP_CHOICES = ("auto", "bf16", "fp16", "none")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


def has_bf16(device: torch.device) -> bool:
    """Whether the GPU computes in bfloat16 natively (compute capability 8.0 and newer: A100, L4, H100;
    a T4 or V100 only emulates it, slower than float32)."""
    return torch.device(device).type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def resolve_amp(amp: str, device: torch.device) -> str:
    """The mixed precision a run computes in on ``device``: ``"none"`` on the CPU (float32 whatever
    ``amp`` says); ``"auto"``: bf16 where the GPU has it, else fp16 (with the gradient scaler); an
    explicit choice as given (bf16 on a GPU without it warns: it is emulated)."""
    if torch.device(device).type != "cuda":
        return "none"
    if amp == "auto":
        return "bf16" if has_bf16(device) else "fp16"
    if amp == "bf16" and not has_bf16(device):
        warnings.warn(f"AMP = 'bf16' on {torch.cuda.get_device_name(device)}, which only emulates bfloat16 "
                      f"(slower than float32): AMP = 'auto' picks fp16 there", stacklevel=2)
    return amp


def describe_device(device: torch.device, amp: str) -> str:
    """One line for the start of training and prediction: where it runs and in which precision."""
    device = torch.device(device)
    precision = {"bf16": "bfloat16 autocast", "fp16": "float16 autocast", "none": "float32"}[amp]
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        memory = torch.cuda.get_device_properties(index).total_memory / 2**30
        where = f"{device} ({torch.cuda.get_device_name(index)}, {memory:.0f} GiB)"
    else:
        where = f"cpu ({torch.get_num_threads()} threads)"
    return f"device: {where}, precision: {precision}"


def usable_cores() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_cpu_threads() -> int:
    """Half the cores this process may use, at least one: torch's default (every core) runs 7–9×
    slower when any other busy process shares the machine (its threads wait for each other at every
    parallel region), while half the cores costs at most ~2× then and little when alone."""
    return max(1, usable_cores() // 2)


MAX_AUTO_WORKERS = 8


def data_workers(num_workers: int | str, device: torch.device) -> int:
    """``num_workers`` data-loading processes as given, or for ``"auto"``: none on the CPU (the training
    process's own threads need the cores; on 2 cores a worker beside them slows both), and on a GPU
    one per core this process has to itself (the cores shared among the ``LOCAL_WORLD_SIZE`` processes
    torchrun starts on a machine) less one for the process itself, at most 8."""
    if num_workers != "auto":
        return int(num_workers)
    if torch.device(device).type != "cuda":
        return 0
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(MAX_AUTO_WORKERS, usable_cores() // processes - 1))


def one_thread_worker(worker_id: int) -> None:
    """A data-loading worker's ``worker_init_fn``: OpenCV on one thread (torch already is), so that
    workers × threads does not oversubscribe the cores."""
    cv2.setNumThreads(1)


def set_cpu_threads(threads: int | None = None) -> int:
    """Set torch's (and OpenCV's) CPU threads to ``threads``, None: :func:`default_cpu_threads`;
    returns the number set."""
    threads = default_cpu_threads() if threads is None else threads
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    return threads
