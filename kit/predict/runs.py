"""Run folders: where a training run lives, how its checkpoints are written and read, and how a
trained model is rebuilt from them for prediction.

Every run lives in ``<runs_dir>/<run_name>/``: ``config.json`` (the :class:`kit.train.config.TrainConfig`
values plus derived ones such as the normalisation statistics), ``metrics.csv``, ``last.pt`` and
``best.pt``, all written atomically. A run folder is never overwritten unless asked. As nanoGPT's
``sample.py`` does, :func:`load_run` rebuilds the network from the run's own config and imports no
training code, so prediction never depends on the trainer.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kit.common.device import resolve_device
from kit.competition.cityscapes import CITYSCAPES_ARCH
from kit.data.border import BORDER_IMAGES
from kit.models.model import create_model


@dataclass(frozen=True)
class RunConfig:
    """What prediction reads of a run: its ``config.json`` read once into types (as nanoGPT's
    ``GPTConfig(**checkpoint["model_args"])``), so that no consumer reads keys by string. The fields
    with defaults are absent from configs written by hand or by older versions of the kit."""

    arch: str  # kit.models.model.create_model's arch
    encoder: str
    num_classes: int  # outputs: 12 classes + background
    head_kwargs: Mapping[str, object]  # the head's arguments: create_model(arch, encoder, **head_kwargs)
    target_size: tuple[int, int]  # (H, W) the run's fisheye input size
    target_mean: tuple[float, float, float]  # the normalisation the run trained with on fisheye images
    target_std: tuple[float, float, float]
    crop_size: tuple[int, int] | None = None  # (H, W) training crop: the slide window
    data_dir: str | None = None  # the dataset it trained on
    method: str | None = None
    stats_limit: int | None = BORDER_IMAGES  # images its training averaged into the mean target image (the border)
    border_threshold: float | None = None  # its border threshold (None: Otsu)
    fisheye_eval_split: str | None = "train_target_gt"
    pseudo_threshold: float = 0.968  # the teacher's confidence threshold (uda methods)
    predict_mode: str = "whole"  # how the run is predicted unless told otherwise (kit.predict.tta)
    predict_scales: tuple[float, ...] = (1.0,)
    predict_flip: bool = False
    values: Mapping[str, object] = field(default_factory=dict, repr=False)  # everything config.json holds

    @classmethod
    def from_dict(cls, values: Mapping[str, object], source: str = "the run config") -> RunConfig:
        """The fields of ``values`` (a run's ``config.json``); the error names ``source`` and the
        keys it lacks."""
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "values"}
        required = [n for n, f in fields.items() if f.default is dataclasses.MISSING]
        missing = [n for n in required if n not in values]
        if missing:
            raise ValueError(f"{source} lacks key(s) {missing}; expected at least {required}")
        typed = {}
        for name in fields:
            if name in values:
                value = values[name]
                typed[name] = tuple(value) if isinstance(value, list) else value
        return cls(**typed, values=dict(values))


Run = tuple[nn.Module, RunConfig]  # (model in eval mode, its config), as load_run returns them


def _listing(folder: Path, pattern: str = "*") -> str:
    names = sorted(p.name for p in folder.glob(pattern)) if folder.is_dir() else []
    return ", ".join(names) if names else "nothing"


def load_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> dict:
    """A checkpoint the kit wrote (holding optimizer state and metrics besides tensors: trusted,
    fully unpickled); the error names what the folder holds instead."""
    path = Path(path)
    if not path.is_file():
        folder = path.parent
        have = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else "the folder does not exist"
        raise FileNotFoundError(f"no checkpoint {path} (in {folder}: {have})")
    return torch.load(path, map_location=device, weights_only=False)


def model_from_config(config: RunConfig) -> nn.Module:
    """The network a run's config describes, without pretrained weights (a checkpoint follows); a
    zero-shot Cityscapes run (``kit.predict.zero_shot``) is its network wrapped with the class map."""
    if config.arch == CITYSCAPES_ARCH:  # transformers' models: imported (seconds) only for such a run
        from kit.models.cityscapes import cityscapes_model_from_config

        return cityscapes_model_from_config(**config.head_kwargs)
    return create_model(config.arch, config.encoder, num_classes=config.num_classes, **config.head_kwargs)


def load_run(run_dir: str | os.PathLike, checkpoint: str = "best.pt", device: str | torch.device = "auto") -> Run:
    """Rebuild a trained model from ``<run_dir>/config.json`` and ``<run_dir>/<checkpoint>``.

    config.json holds at least :class:`RunConfig`'s fields without defaults; the checkpoint is a ``torch.save``d dict whose
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
    config = RunConfig.from_dict(json.loads(config_path.read_text()), source=str(config_path))
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
        raise RuntimeError(f"{checkpoint_path} does not fit {config.arch}/{config.encoder} "
                           f"as {config_path} describes it: {error}") from error
    return model.to(device).eval(), config
