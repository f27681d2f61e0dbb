"""The training loop behind ``notebooks/03_train``: one :func:`train` call, six methods, one process
or many (``torchrun … -m kit.train``, ``kit.distributed``).

What each method trains on is ``kit.recipes``; the step of the self-training methods is
``kit.uda.uda_step``; the run folder and its checkpoints are ``kit.runs``. :func:`train` reads top to
bottom: run folder → data → model, teacher, optimiser → (resume) → epochs of steps → evaluation →
atomic checkpoints. ``resume=True`` continues from ``last.pt`` and gives the result an uninterrupted
run would have given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from kit.border import Border
from kit.config import OUTPUTS, UDA_METHODS, TrainConfig
from kit.data import IGNORE_INDEX, NUM_CLASSES, denormalize
from kit.distributed import Context, average_buffers, barrier, parse_command_line, start, stop, unwrap, wrap
from kit.files import write_csv, write_json
from kit.losses import cross_entropy, dice_loss
from kit.metrics import confusion_matrix, mean_iou
from kit.models import create_model
from kit.progress import tqdm
from kit.recipes import TrainData, build_data, epoch_batches, pseudo_dataset, seed_all, steps_per_epoch
from kit.runs import check_run_dir, load_checkpoint, prepare_run_dir, save_checkpoint, set_cpu_threads
from kit.uda import EMATeacher, UDAConfig, block_mask, frozen_norm_stats, uda_step


class TrainingDiverged(FloatingPointError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


def lr_factor(step: int, warmup_steps: int, total_steps: int, power: float = 1.0) -> float:
    """Linear warm-up to 1 over ``warmup_steps``, then ``(1 - progress)^power`` decay to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    return max(0.0, 1.0 - (step - warmup_steps) / span) ** power


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with the encoder at ``lr_encoder`` and everything else (the decoder) at ``lr_decoder``."""
    encoder = set(id(p) for p in model.encoder.parameters())
    decoder = [p for p in model.parameters() if id(p) not in encoder]
    return torch.optim.AdamW(
        [{"params": list(model.encoder.parameters()), "lr": config.lr_encoder},
         {"params": decoder, "lr": config.lr_decoder}],
        weight_decay=config.weight_decay,
    )


def _autocast_factory(config: TrainConfig, device: torch.device) -> Callable:
    if device.type != "cuda" or config.amp == "none":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if config.amp == "bf16" else torch.float16
    return lambda: torch.autocast("cuda", dtype=dtype)


def supervised_step(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    dice_weight: float,
    backward: Callable[[torch.Tensor], None],
    autocast: Callable,
) -> dict[str, float]:
    """CE (+ ``dice_weight`` · Dice, solution B) on a labelled batch; back-propagates, returns the losses.
    A mask-classification model (``kit.mask2former``) has its own: class CE, mask BCE and Dice over
    every decoder layer (``dice_weight`` does not apply)."""
    with autocast():
        outputs = model(images)
    head = unwrap(model).decode_head
    if hasattr(head, "losses"):  # MaskPredictions, not logits
        losses = head.losses(outputs, labels, ignore_index=IGNORE_INDEX)
        backward(sum(losses.values()))
        return {f"m2f_{k}": v.item() for k, v in losses.items()}
    logits = outputs.float()
    losses = {"ce": cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)}
    if dice_weight > 0:
        losses["dice"] = dice_weight * dice_loss(logits, labels, ignore_index=IGNORE_INDEX)
    backward(sum(losses.values()))
    return {k: v.item() for k, v in losses.items()}


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int, autocast: Callable) -> np.ndarray:
    """The 13×13 confusion matrix of whole-image predictions at model input size.

    Background is scored (row and column 12) as the competition scores it; pixels the dataset's
    labels make void (``IGNORE_INDEX`` in its items: the bonnet under ``bonnet="void"``, pixels a
    warp left empty) are not counted at all, so that a method is not judged on pixels it was told to
    ignore.
    """
    model.eval()
    cm = np.zeros((OUTPUTS, OUTPUTS), np.int64)
    for batch in DataLoader(dataset, batch_size=batch_size):
        with autocast():
            logits = model(batch["image"].to(device))
        label = batch["label"].to(device)
        counted = label != IGNORE_INDEX  # void; background is BACKGROUND_CLASS in the items
        confusion_matrix(logits.argmax(1)[counted], label[counted], out=cm)
    model.train()
    return cm


def build_model(config: TrainConfig) -> nn.Module:
    """The run's network with its starting weights (pretrained encoder or local checkpoint)."""
    return create_model(config.arch, config.encoder, num_classes=OUTPUTS, pretrained=config.pretrained,
                        weights=config.weights, **head_kwargs(config))


def head_kwargs(config: TrainConfig) -> dict:
    """The head's arguments, as config.json stores them and :func:`kit.runs.model_from_config` reads them."""
    return {"channels": config.head_channels, **config.head_options}


def _run_config(config: TrainConfig, data: TrainData) -> dict:
    out = json.loads(json.dumps(dataclasses.asdict(config)))
    out.update(
        num_classes=OUTPUTS,
        head_kwargs=head_kwargs(config),
        source_mean=list(data.source_stats[0]), source_std=list(data.source_stats[1]),
        target_mean=list(data.target_stats[0]), target_std=list(data.target_stats[1]),
    )
    return out


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


def self_train_step(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    dice_weight: float,
    backward: Callable[[torch.Tensor], None],
    autocast: Callable,
) -> dict[str, float]:
    """``self_train``'s step from round 1 on: the source crop (its pass leaves the BatchNorm statistics
    alone, as uda's ``bn_stats="target"``) and the pseudo-labelled target crop (its pass updates
    them), CE (+ Dice) each; pseudo-label pixels of 254 are ignored."""
    with frozen_norm_stats(model):
        losses = supervised_step(model, batch["image"], batch["label"], dice_weight, backward, autocast)
    target = supervised_step(model, batch["target"], batch["target_label"], dice_weight, backward, autocast)
    return {**losses, **{f"target_{k}": v for k, v in target.items()}}


def round_pseudo_labels(config: TrainConfig, run_dir: Path, round_: int, model: nn.Module, run_config: dict,
                        border: Border) -> Path:
    """The pseudo-label CSV round ``round_`` of ``self_train`` trains on: ``pseudo_split`` for round 1
    when given, else ``<run>/pseudo_round<r>/`` labelled by ``model`` as it is now (the end of the round
    before; whole image + flip, ``border``: the run's ellipse), made once and reused when the run resumes."""
    from kit.infer import InferenceSettings
    from kit.pseudo import CSV_NAME, is_pseudo_folder, make_pseudo_labels

    if round_ == 1 and config.pseudo_split:
        given = Path(config.pseudo_split)
        csv = given / CSV_NAME if given.is_dir() else given
        if not csv.is_file():
            raise FileNotFoundError(f"PSEUDO_SPLIT = {config.pseudo_split!r}: no such CSV "
                                    f"(expected 06_pseudo_label's folder or its {CSV_NAME})")
        return csv
    folder = run_dir / f"pseudo_round{round_}"
    if not is_pseudo_folder(folder):
        settings = InferenceSettings(mode="whole", flip=True, amp=config.amp != "none")
        model.eval()
        made = make_pseudo_labels([(model, run_config)], config.data_dir, folder, settings=settings,
                                  quantile=config.pseudo_quantile, cap=config.pseudo_cap, border=border,
                                  background=config.pseudo_background, balanced=config.pseudo_balanced,
                                  overwrite=folder.exists(), progress=config.progress)
        model.train()
        if config.progress:
            print(f"round {round_} pseudo-labels: {made.folder} (disc pixels kept: "
                  f"{(made.table['kept'] * made.table['predicted_share']).sum():.1%})", flush=True)
    return folder / CSV_NAME


def train(config: TrainConfig) -> Path:
    """Train one run; returns its folder (``kit.runs``). What each method trains on: ``kit.recipes``;
    ``self_train``'s rounds: :func:`round_plan`. Under torchrun, every process calls it (``kit.distributed``)."""
    run_dir = check_run_dir(config)  # nothing is written before the config, the data and the model are known good
    context, device = start(config.device)
    try:
        return _train(config, run_dir, context, device)
    finally:
        stop(context)


def _train(config: TrainConfig, run_dir: Path, context: Context, device: torch.device) -> Path:
    set_cpu_threads(config.cpu_threads)
    seed_all(config.seed)
    data = build_data(config)
    net = build_model(config)
    if config.init_from and not config.resume:
        load_init_weights(net, config.init_from, config)
    net = net.to(device)
    run_config = _run_config(config, data)
    barrier(context)  # every rank has checked the run folder before rank 0 changes it
    if context.main:
        prepare_run_dir(config)
        if not config.resume:
            write_json(run_dir / "config.json", run_config)
    progress = config.progress and context.main

    channels_last = config.channels_last and device.type == "cuda"
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = wrap(net, context, device)  # DDP on many processes: the training forward passes go through it
    net = unwrap(model)  # (SyncBatchNorm inside): saved, evaluated, copied into the teacher
    teacher = EMATeacher(net, config.ema_max_alpha) if config.method in UDA_METHODS else None
    steps = steps_per_epoch(config, data, context.world_size)
    plan = round_plan(config)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and config.amp == "fp16")
    autocast = _autocast_factory(config, device)
    uda_config = UDAConfig(config.pseudo_threshold, config.mask_ratio, config.mask_block, config.class_mix,
                           ignore_index=IGNORE_INDEX, pseudo_weighting=config.pseudo_weighting,
                           dice_weight=config.uda_dice_weight, bn_stats=config.bn_stats,
                           target_branch=config.target_branch)

    def new_round(round_: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        """Each round (one for most methods) starts a fresh optimiser and learning-rate schedule."""
        optimizer = make_optimizer(net, config)
        total = plan.count(round_) * steps
        return optimizer, torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_factor(s, config.warmup_steps, total, config.poly_power))

    start_epoch, best, rows, state = 0, -math.inf, [], None
    if config.resume:
        state = load_checkpoint(run_dir / "last.pt", device)
        net.load_state_dict(state["model"])
        if teacher is not None:
            teacher.load_state_dict(state["teacher"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, best = state["epoch"] + 1, state["best"]
        rows = [r for r in pd.read_csv(run_dir / "metrics.csv").to_dict("records") if r["epoch"] < start_epoch]

    def move(x: torch.Tensor) -> torch.Tensor:
        x = x.to(device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x

    def backward(loss: torch.Tensor) -> None:
        scaler.scale(loss).backward()

    model.train()
    optimizer = scheduler = None
    for epoch in range(start_epoch, len(plan)):
        round_ = plan[epoch]
        if epoch == start_epoch or plan[epoch - 1] != round_:
            optimizer, scheduler = new_round(round_)
            if state is not None and epoch == start_epoch and plan[state["epoch"]] == round_:  # resumed mid-round
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
            if config.method == "self_train" and round_ > 0:
                if context.main:  # the others wait, then find the folder made
                    round_pseudo_labels(config, run_dir, round_, net, run_config, data.border.border("ellipse"))
                barrier(context)
                csv = round_pseudo_labels(config, run_dir, round_, net, run_config, data.border.border("ellipse"))
                data.target = pseudo_dataset(config, data, csv)
        batches, targets, generator = epoch_batches(data, config, epoch, context.rank, context.world_size)
        sums: dict[str, float] = {}
        started = time.time()
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{len(plan)}", disable=not progress, leave=False)
        for step_in_epoch in bar:
            global_step = epoch * steps + step_in_epoch
            batch = {k: move(v) for k, v in next(batches).items() if isinstance(v, torch.Tensor)}
            if teacher is not None:
                if config.target_branch:
                    batch["target"] = move(next(targets)["image"])
                losses = uda_step(model, teacher, batch, uda_config, backward=backward, autocast=autocast,
                                  generator=generator)
            elif targets is not None:  # self_train from round 1
                target = next(targets)
                batch["target"], batch["target_label"] = move(target["image"]), move(target["label"])
                losses = self_train_step(model, batch, config.dice_weight, backward, autocast)
            else:
                dice = config.dice_weight if config.method in ("fisheye_tf", "self_train") else 0.0
                losses = supervised_step(model, batch["image"], batch["label"], dice, backward, autocast)
            bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
            if bad:
                kept = f"the last good checkpoint {run_dir / 'last.pt'} (epoch {epoch}) is kept" if epoch > 0 \
                    else "no checkpoint was written yet"
                raise TrainingDiverged(f"loss {bad} at epoch {epoch + 1}, step {step_in_epoch + 1} "
                                       f"(global step {global_step}); {kept}")
            scaler.unscale_(optimizer)
            if config.clip_grad is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if device.type != "cuda":  # CUDA runs SyncBatchNorm instead (kit.distributed.wrap)
                average_buffers(net, context)
            if teacher is not None:
                teacher.update(net, t=global_step if config.ema_per == "step" else epoch)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix({k: f"{v / (step_in_epoch + 1):.3f}" for k, v in sums.items()})

        stopping = config.stop_after_epoch is not None and epoch + 1 >= config.stop_after_epoch
        if not context.main:  # rank 0 evaluates and writes; the others wait for it
            barrier(context)
            if stopping:
                break
            continue
        row = {"epoch": epoch, "step": (epoch + 1) * steps,
               **({"round": round_} if config.method == "self_train" else {}),
               **{(k if k == "pseudo_weight" else f"loss_{k}"): v / steps for k, v in sums.items()},
               "lr_encoder": optimizer.param_groups[0]["lr"], "train_seconds": round(time.time() - started, 2)}
        for name, dataset in data.evals.items():
            row[f"{name}_miou"] = mean_iou(evaluate(net, dataset, device, config.batch_size, autocast))
        rows.append(row)
        write_csv(run_dir / "metrics.csv", pd.DataFrame(rows))
        score = row[data.monitor] if data.monitor is not None else row["epoch"]  # no metric: the latest
        improved = score > best  # NaN (no pixel of a scored class) never improves
        best = max(best, score) if improved else best
        state = {
            "model": net.state_dict(), "teacher": teacher.state_dict() if teacher else None,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
            "epoch": epoch, "best": best, "monitor": data.monitor, "metrics": row, "config": run_config,
        }
        save_checkpoint(run_dir / "last.pt", state)
        if improved or epoch == 0:
            save_checkpoint(run_dir / "best.pt", state)
        if progress:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                              if k.startswith(("loss", "pseudo", "source_val", "fisheye")))
            print(f"epoch {epoch + 1}/{len(plan)}: {shown}", flush=True)
        barrier(context)
        if stopping:
            break
    return run_dir


def main(argv: list[str] | None = None) -> None:
    """``python -m kit.train`` (one process) or ``torchrun --nproc_per_node=N -m kit.train`` (N)."""
    train(parse_command_line(argv))


if __name__ == "__main__":
    main()


@torch.no_grad()
def preview_step(config: TrainConfig) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """The first batch of a run as its step sees it, for drawing (``kit.viz.save_step_view``); trains nothing.

    Returns panels in the step's order, each ``(images uint8 (B, H, W, 3), labels uint8 (B, H, W) or
    None)``, images denormalised with the run's statistics, labels 255 where ignored or background:
    ``input`` (the supervised methods' crop) or, for the uda methods, ``source``, ``distorted``,
    ``target``, ``masked target`` (MIC's blocks at 0 = the domain's mean colour, drawn with the
    step's own generator) and ``pseudo-label`` (the teacher's confident pixels; at step 0 the teacher
    is the freshly built student, so expect noise unless the encoder is pretrained).
    """
    seed_all(config.seed)
    data = build_data(config)
    batches, targets, generator = epoch_batches(data, config, epoch=0)
    batch = next(batches)

    def images(x: torch.Tensor, stats) -> np.ndarray:
        return np.stack([denormalize(image, *stats) for image in x])

    def labels(y: torch.Tensor) -> np.ndarray:
        return torch.where(y >= NUM_CLASSES, IGNORE_INDEX, y).to(torch.uint8).numpy()

    if targets is None:
        stats = data.target_stats if config.method == "oracle" else data.source_stats
        return {"input": (images(batch["image"], stats), labels(batch["label"]))}
    panels = {name: (images(batch[name], data.source_stats), labels(batch[f"{name}_label"]))
              for name in ("source", "distorted")}
    target = next(targets)["image"]
    model = build_model(config)
    confidence, pseudo = EMATeacher(model, config.ema_max_alpha)(target).softmax(dim=1).max(dim=1)
    pseudo[confidence <= config.pseudo_threshold] = IGNORE_INDEX
    keep = block_mask((target.shape[0], *target.shape[2:]), config.mask_ratio, config.mask_block, generator=generator)
    panels["target"] = (images(target, data.target_stats), None)
    panels["masked target"] = (images(target * keep, data.target_stats), None)
    panels["pseudo-label"] = (images(target, data.target_stats), labels(pseudo))
    return panels
