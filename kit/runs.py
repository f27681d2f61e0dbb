"""Run folders: where a training run lives, how its checkpoints are written and read, and how a
trained model is rebuilt from them for prediction.

Every run lives in ``<runs_dir>/<run_name>/``: ``config.json`` (the :class:`kit.config.TrainConfig`
values plus derived ones such as the normalisation statistics), ``metrics.csv``, ``last.pt`` and
``best.pt``, all written atomically. A run folder is never overwritten unless asked. As nanoGPT's
``sample.py`` does, :func:`load_run` rebuilds the network from the run's own config and imports no
training code, so prediction never depends on the trainer.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import cv2
import torch
from torch import nn

from kit.config import RESUME_MAY_CHANGE, TrainConfig
from kit.files import atomic_path, prepare_output_dir, results_in
from kit.models import create_model

Run = tuple[nn.Module, dict]  # (model in eval mode, its config), as load_run returns them
CONFIG_KEYS = ("arch", "encoder", "num_classes", "head_kwargs", "target_mean", "target_std", "target_size", "crop_size")


def _listing(folder: Path, pattern: str = "*") -> str:
    names = sorted(p.name for p in folder.glob(pattern)) if folder.is_dir() else []
    return ", ".join(names) if names else "nothing"


UNFINISHED = {"config.json", "metrics.csv"}  # what a run leaves that failed before its first checkpoint


def check_run_dir(config: TrainConfig) -> Path:
    """The run folder ``config`` will train into, checked without writing anything: an earlier run is
    refused unless ``overwrite`` (or continued with ``resume``, with the run's own parameters). A
    folder holding only a start that failed before its first checkpoint is no earlier run: it is
    replaced."""
    run_dir = Path(config.runs_dir) / config.run_name
    found = results_in(run_dir)
    if config.resume:
        if "last.pt" not in found:
            hint = (" (it failed before its first checkpoint: start it again without RESUME)"
                    if found and set(found) <= UNFINISHED else "")
            raise FileNotFoundError(
                f"RESUME = True but {run_dir} holds no last.pt to continue from (found: {found or 'nothing'}){hint}"
            )
        stored = json.loads((run_dir / "config.json").read_text())
        current = json.loads(json.dumps(dataclasses.asdict(config)))
        changed = {k: (stored.get(k), v) for k, v in current.items() if k not in RESUME_MAY_CHANGE and stored.get(k) != v}
        if changed:
            lines = ", ".join(f"{k}: run has {a!r}, now {b!r}" for k, (a, b) in changed.items())
            raise ValueError(f"cannot resume {run_dir} with other parameters ({lines}); "
                             f"use the run's values or start a new RUN_NAME")
    elif found and not config.overwrite and not set(found) <= UNFINISHED:
        raise FileExistsError(
            f"run folder {run_dir} already holds a run ({', '.join(found)}); set RESUME = True to "
            f"continue it, OVERWRITE = True to replace it, or choose another RUN_NAME"
        )
    return run_dir


def prepare_run_dir(config: TrainConfig) -> Path:
    """Create (or keep, when resuming) the run folder as :func:`check_run_dir` allows: a kit output
    folder (``kit.files``) whose earlier run, when replaced, is removed file by file."""
    run_dir = check_run_dir(config)
    if not config.resume:
        prepare_output_dir(run_dir, overwrite=True)
    return run_dir


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` through a temporary file and a rename: a crash never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict:
    """A checkpoint the kit wrote (holding optimizer state and metrics besides tensors: trusted,
    fully unpickled); the error names what the folder holds instead."""
    path = Path(path)
    if not path.is_file():
        folder = path.parent
        have = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "the folder does not exist"
        raise FileNotFoundError(f"no checkpoint {path} (in {folder}: {have})")
    return torch.load(path, map_location=device, weights_only=False)


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


def model_from_config(config: dict) -> nn.Module:
    """The network a run's ``config.json`` describes, without pretrained weights (a checkpoint follows)."""
    return create_model(config["arch"], config["encoder"], num_classes=config["num_classes"], **config["head_kwargs"])


def load_run(run_dir: str | os.PathLike, checkpoint: str = "best.pt", device: str | torch.device = "auto") -> Run:
    """Rebuild a trained model from ``<run_dir>/config.json`` and ``<run_dir>/<checkpoint>``.

    config.json holds at least :data:`CONFIG_KEYS`; the checkpoint is a ``torch.save``d dict whose
    ``"model"`` is the state dict (loaded strictly). ``device``: ``"auto"`` (CUDA when available),
    ``"cpu"``, ``"cuda:N"``. Returns ``(model in eval mode on device, config)``.
    """
    run_dir = Path(run_dir)
    device = resolve_device(device)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir} "
                                f"(runs in {run_dir.parent}: {_listing(run_dir.parent)})")
    config_path, checkpoint_path = run_dir / "config.json", run_dir / checkpoint
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} not found; the run folder holds: {_listing(run_dir)}")
    config = json.loads(config_path.read_text())
    missing = [k for k in CONFIG_KEYS if k not in config]
    if missing:
        raise ValueError(f"{config_path} lacks key(s) {missing}; expected at least {list(CONFIG_KEYS)}")
    if not checkpoint_path.is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint_path} not found; "
                                f"checkpoints in {run_dir}: {_listing(run_dir, '*.pt')}")
    state = load_checkpoint(checkpoint_path, device)
    if not isinstance(state, dict) or "model" not in state:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{checkpoint_path}: expected a dict with key 'model' (the state dict), found {found}")
    model = model_from_config(config)
    try:
        model.load_state_dict(state["model"], strict=True)
    except RuntimeError as error:
        raise RuntimeError(f"{checkpoint_path} does not fit {config['arch']}/{config['encoder']} "
                           f"as {config_path} describes it: {error}") from error
    return model.to(device).eval(), config
