"""Where torch runs: :func:`resolve_device` (``"auto"``: CUDA when torch sees it) and the CPU thread
default (half the cores, so that a second busy process does not make torch's threads fight).
"""

from __future__ import annotations

import os

import cv2
import torch


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"``: CUDA when torch sees it, else the CPU; any other name as ``torch.device`` reads it."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"DEVICE = {str(name)!r} but torch sees no CUDA device; use 'auto' or 'cpu'")
    return device


def default_cpu_threads() -> int:
    """Half the cores this process may use, at least one: torch's default (every core) runs 7–9×
    slower when any other busy process shares the machine (its threads wait for each other at every
    parallel region), while half the cores costs at most ~2× then and little when alone."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // 2)


def set_cpu_threads(threads: int | None = None) -> int:
    """Set torch's (and OpenCV's) CPU threads to ``threads``, None: :func:`default_cpu_threads`;
    returns the number set."""
    threads = default_cpu_threads() if threads is None else threads
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    return threads
