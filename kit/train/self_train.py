"""Offline self-training (``METHOD = "self_train"``) and warm starts: the round plan (round 0 as
``fisheye_tf``, then ``rounds`` rounds on source + pseudo-labels), each round's pseudo-labels made
by ``kit.predict.pseudo`` from the model so far, and ``INIT_FROM`` weights loaded into the student.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from kit.common.files import results_in
from kit.data.border import Border
from kit.predict.pseudo import CSV_NAME, Ranks, is_pseudo_folder, make_pseudo_labels
from kit.predict.runs import RunConfig, load_checkpoint
from kit.predict.tta import InferenceSettings
from kit.train.config import OUTPUTS, TrainConfig
from kit.train.recipes import head_kwargs


def round_plan(config: TrainConfig) -> list[int]:
    """The round each epoch of the run belongs to, in order. Every method but ``self_train`` has one
    round 0 of ``epochs``. ``self_train``: round 0 trains on source images alone for ``epochs``
    (skipped when ``init_from`` warm-starts the run), then rounds 1…``rounds`` train on source +
    pseudo-labels for ``round_epochs`` each (None: half of ``epochs``, at least 1)."""
    if config.method != "self_train":
        return [0] * config.epochs
    first = [] if config.init_from else [0] * config.epochs
    per_round = config.round_epochs or max(config.epochs // 2, 1)
    return first + [r for r in range(1, config.rounds + 1) for _ in range(per_round)]


def load_init_weights(model: nn.Module, source: str | Path, config: TrainConfig) -> Path:
    """Start ``model`` from ``source`` (``INIT_FROM``): a run folder (its ``last.pt``, the weights its
    training ended with) or a checkpoint file (the kit's, or a bare state dict). A checkpoint of
    another architecture is an error naming what differs; returns the file read."""
    source = Path(source)
    path = source / "last.pt" if source.is_dir() else source
    state = load_checkpoint(path)
    stored = state.get("config") if isinstance(state, dict) else None
    if isinstance(stored, dict):
        wanted = {"arch": config.arch, "encoder": config.encoder, "head_kwargs": head_kwargs(config),
                  "num_classes": OUTPUTS}
        differ = {k: (stored.get(k), v) for k, v in wanted.items() if k in stored and stored[k] != v}
        if differ:
            raise ValueError(f"INIT_FROM {path} was trained with other settings: "
                             + ", ".join(f"{k.upper()} {a!r} there, {b!r} here" for k, (a, b) in differ.items()))
    weights = state["model"] if isinstance(state, dict) and "model" in state else state
    if not isinstance(weights, dict):
        raise ValueError(f"INIT_FROM {path}: expected a checkpoint dict with 'model' or a state dict, "
                         f"found {type(weights).__name__}")
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shapes = [f"{k} {tuple(weights[k].shape)} there, {tuple(v.shape)} here" for k, v in own.items()
              if k in weights and hasattr(weights[k], "shape") and tuple(weights[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        problems = [f"{label}: {some(keys)}" for label, keys in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("other shapes", shapes)) if keys]
        raise ValueError(f"INIT_FROM {path} does not fit ARCH {config.arch!r} / ENCODER {config.encoder!r} "
                         f"({head_kwargs(config)}): {'; '.join(problems)}")
    model.load_state_dict(weights)
    return path


def round_pseudo_labels(config: TrainConfig, run_dir: Path, round_: int, model: nn.Module, run_config: dict,
                        border: Border) -> Path:
    """The pseudo-label CSV round ``round_`` of ``self_train`` trains on: ``pseudo_split`` for round 1
    when given, else ``<run>/pseudo_round<r>/`` labelled by ``model`` as it is now (the end of the round
    before; whole image + flip, ``border``: the run's ellipse), made once and reused when the run resumes."""
    if round_ == 1 and config.pseudo_split:
        given = Path(config.pseudo_split)
        csv = given / CSV_NAME if given.is_dir() else given
        if not csv.is_file():
            raise FileNotFoundError(f"PSEUDO_SPLIT = {config.pseudo_split!r}: no such CSV "
                                    f"(expected 06_pseudo_label's folder or its {CSV_NAME})")
        return csv
    folder = run_dir / f"pseudo_round{round_}"
    if folder.exists() and not is_pseudo_folder(folder):
        # the kit's own folder appears complete or not at all (kit.predict.pseudo): this one is someone else's
        found = results_in(folder)
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise FileExistsError(f"round {round_}'s pseudo-labels go to {folder}, which holds {shown or 'nothing'} but "
                              f"is no pseudo-label folder of the kit; move it out of the way and resume "
                              f"(RESUME = True); nothing was removed")
    if not is_pseudo_folder(folder):
        settings = InferenceSettings(mode="whole", flip=True)  # in the run's own precision
        model.eval()
        made = make_pseudo_labels([(model, RunConfig.from_dict(run_config))], config.data_dir, folder, settings=settings,
                                  quantile=config.pseudo_quantile, cap=config.pseudo_cap, border=border,
                                  background=config.pseudo_background, balanced=config.pseudo_balanced,
                                  progress=config.progress)
        model.train()
        if config.progress and Ranks.of_process_group().rank == 0:
            print(f"round {round_} pseudo-labels: {made.folder} (disc pixels kept: "
                  f"{(made.table['kept'] * made.table['predicted_share']).sum():.1%})", flush=True)
    return folder / CSV_NAME
