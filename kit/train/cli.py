"""The training command line: ``python -m kit.train`` and ``torchrun --nproc_per_node=N -m kit.train``,
``--config`` (a run's ``config.json`` or any JSON object of parameters), ``--preset NAME`` and ``--set
NAME=VALUE``; :func:`torchrun_command` writes the command that trains a given config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from collections.abc import Sequence
from pathlib import Path

from kit.train.config import TrainConfig
from kit.train.loop import train
from kit.train.presets import PRESETS

# Keys kit.train adds to a run's config.json next to TrainConfig's fields
_DERIVED_KEYS = ("num_classes", "head_kwargs", "source_mean", "source_std", "target_mean", "target_std")


def _parse_value(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word: a name or a path


def parse_command_line(argv: Sequence[str] | None = None) -> TrainConfig:
    """``python -m kit.train`` / ``torchrun … -m kit.train``: the recipe ``--preset`` (default cpu_demo),
    the values of ``--config`` over it, then each ``--set NAME=VALUE``; names are 03_train's parameters
    (``EPOCHS``) or fields (``epochs``), read as :meth:`TrainConfig.from_parameters` reads them."""
    parser = argparse.ArgumentParser(
        prog="python -m kit.train",
        description="Train one run as notebooks/03_train does; under torchrun, on every process it starts.")
    parser.add_argument("--preset", default="cpu_demo", help="the recipe (kit.train.presets): "
                        + ", ".join(PRESETS))
    parser.add_argument("--config", type=Path, help="a run's config.json or a JSON object of 03_train's parameters")
    parser.add_argument("--set", dest="values", action="append", default=[], metavar="NAME=VALUE",
                        help="a parameter, e.g. EPOCHS=40 or CROP_SIZE=[540,960] (VALUE is JSON, else text)")
    args = parser.parse_args(argv)
    values: dict[str, object] = {"PRESET": args.preset}
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
    return TrainConfig.from_parameters(values, notebook_only=("PREVIEW_COUNT",))  # 03_train's own


def torchrun_command(config: TrainConfig, nproc_per_node: int | str = "N", preset: str = "cpu_demo") -> str:
    """The shell command that trains ``config`` on ``nproc_per_node`` processes: ``--preset`` and one
    ``--set`` per parameter that differs from that recipe."""
    default = TrainConfig.from_preset(preset)
    parts = ["torchrun", f"--nproc_per_node={nproc_per_node}", "-m", "kit.train"]
    if preset != "cpu_demo":
        parts += ["--preset", preset]
    for field in dataclasses.fields(TrainConfig):
        value = getattr(config, field.name)
        if value != getattr(default, field.name):
            value = list(value) if isinstance(value, tuple) else value
            parts += ["--set", shlex.quote(f"{field.name.upper()}={json.dumps(value)}")]
    return " ".join(parts)


def main(argv: list[str] | None = None) -> None:
    """``python -m kit.train`` (one process) or ``torchrun --nproc_per_node=N -m kit.train`` (N)."""
    train(parse_command_line(argv))
