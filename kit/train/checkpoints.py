"""Run folders on the training side: checked before anything is written (an earlier run is refused
unless overwritten or resumed with its own parameters), created as kit output folders, and
checkpoints saved atomically (temporary file + rename).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from kit.common.files import atomic_path, prepare_output_dir, results_in
from kit.train.config import RESUME_MAY_CHANGE, WARM_START_RUN, TrainConfig, with_later_fields

UNFINISHED = {"config.json", "metrics.csv"}  # what a run leaves that failed before its first checkpoint


def check_run_dir(config: TrainConfig) -> Path:
    """The run folder ``config`` will train into, checked without writing anything: an earlier run is
    refused unless ``overwrite`` (or continued with ``resume``, with the run's own parameters). A
    folder holding only a start that failed before its first checkpoint is no earlier run: it is
    replaced. A warm-started run (``warm_start``) stopped inside or just after its warm start resumes
    from there."""
    run_dir = Path(config.runs_dir) / config.run_name
    found = results_in(run_dir)
    if config.resume:
        begun = bool(config.warm_start) and WARM_START_RUN in found  # the warm start resumes, or the run begins
        if "last.pt" not in found and not begun:
            hint = (" (it failed before its first checkpoint: start it again without RESUME)"
                    if found and set(found) <= UNFINISHED else "")
            raise FileNotFoundError(
                f"RESUME = True but {run_dir} holds no last.pt to continue from (found: {found or 'nothing'}){hint}"
            )
        if begun and "config.json" not in found:  # the run itself has not begun: its warm start checks its own
            return run_dir
        stored = with_later_fields(json.loads((run_dir / "config.json").read_text()))
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
    folder (``kit.common.files``) whose earlier run, when replaced, is removed file by file."""
    run_dir = check_run_dir(config)
    if not config.resume:
        prepare_output_dir(run_dir, overwrite=True)
    return run_dir


def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save`` through a temporary file and a rename: a crash never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
