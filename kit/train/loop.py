"""The training loop behind ``notebooks/03_train``: one :func:`train` call, six methods, one process
or many (``torchrun … -m kit.train``, ``kit.train.distributed``).

What each method trains on is ``kit.train.recipes``; the step of the self-training methods is
``kit.train.uda.uda_step``; the run folder and its checkpoints are ``kit.predict.runs``. :func:`train` reads top to
bottom: run folder → data → model, teacher, optimiser → (resume) → epochs of steps → evaluation →
atomic checkpoints. ``resume=True`` continues from ``last.pt`` and gives the result an uninterrupted
run would have given.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from kit.common.device import describe_device, resolve_amp, set_cpu_threads
from kit.common.files import link_file, write_csv, write_json
from kit.common.progress import tqdm
from kit.competition.metrics import mean_iou
from kit.predict.runs import load_checkpoint
from kit.train.budget import WarmStart, warm_start_plan
from kit.train.checkpoints import check_run_dir, prepare_run_dir, save_checkpoint
from kit.train.config import DICE_METHODS, OUTPUTS, UDA_METHODS, TrainConfig
from kit.train.distributed import Context, average_buffers, barrier, start, stop, unwrap, wrap
from kit.train.recipes import (
    Batches,
    TrainData,
    build_data,
    build_model,
    head_kwargs,
    pseudo_dataset,
    seed_all,
    steps_per_epoch,
)
from kit.train.self_train import load_init_weights, round_plan, round_pseudo_labels
from kit.train.steps import (
    TrainingDiverged,
    autocast_factory,
    evaluate,
    lr_factor,
    make_optimizer,
    self_train_step,
    supervised_step,
)
from kit.train.uda import EMATeacher, UDAConfig, uda_step


def _run_config(config: TrainConfig, data: TrainData) -> dict:
    out = json.loads(json.dumps(dataclasses.asdict(config)))
    out.update(
        num_classes=OUTPUTS,
        head_kwargs=head_kwargs(config),
        source_mean=list(data.source_stats[0]), source_std=list(data.source_stats[1]),
        target_mean=list(data.target_stats[0]), target_std=list(data.target_stats[1]),
        prediction_precision=config.amp,  # InferenceSettings(amp="run"); runs without it predicted in float16
    )
    return out


def train(config: TrainConfig) -> Path:
    """Train one run; returns its folder (``kit.predict.runs``). What each method trains on: ``kit.train.recipes``;
    ``self_train``'s rounds: :func:`round_plan`; a warm start (``warm_start``): :func:`_warm_start`. Under
    torchrun, every process calls it (``kit.train.distributed``)."""
    run_dir = check_run_dir(config)  # nothing is written before the config, the data and the model are known good
    context, device = start(config.device)
    try:
        warm = None
        if config.warm_start:  # the budget it shares out: epochs × steps_per_epoch (None: one pass over the images)
            steps = config.steps_per_epoch or steps_per_epoch(config, build_data(config), context.world_size)
            warm = warm_start_plan(dataclasses.replace(config, steps_per_epoch=steps))
            config = _warm_start(config, warm, run_dir, context, device)
            if config is None:  # stopped inside the warm start (stop_after_epoch)
                return run_dir
        return _train(config, run_dir, context, device, warm)
    finally:
        stop(context)


def _warm_start(config: TrainConfig, warm: WarmStart, run_dir: Path, context: Context,
                device: torch.device) -> TrainConfig | None:
    """Train ``warm.config`` (source_only) into ``<run_dir>/warm_start`` unless a finished one is there
    (``resume``), and return the config the run itself trains with: ``resume`` only where it has a
    ``last.pt`` of its own, ``stop_after_epoch`` counted on from the warm start's epochs; None when
    ``stop_after_epoch`` stops the run inside the warm start."""
    first, epochs = warm.config, len(round_plan(warm.config))
    stop_at = config.stop_after_epoch
    last = warm.folder / "last.pt"
    finished = config.resume and last.is_file() and load_checkpoint(last)["epoch"] + 1 >= epochs
    if not finished:
        if context.main and not config.resume:
            prepare_run_dir(config)  # an overwritten run's files go before the warm start is written
        barrier(context)
        first = dataclasses.replace(first, resume=config.resume and last.is_file(),
                                    stop_after_epoch=stop_at if stop_at is not None and stop_at < epochs else None)
        _train(first, warm.folder, context, device)
    if stop_at is not None and stop_at <= epochs:
        return None
    return dataclasses.replace(config, resume=config.resume and (run_dir / "last.pt").is_file(),
                               stop_after_epoch=None if stop_at is None else stop_at - epochs)


def _train(config: TrainConfig, run_dir: Path, context: Context, device: torch.device,
           warm: WarmStart | None = None) -> Path:
    recorded = config  # what config.json holds: the run's parameters as given (warm_start, steps_per_epoch)
    if warm is not None:  # trains the steps per epoch its share of the budget pays for
        config = dataclasses.replace(config, steps_per_epoch=warm.run.steps_per_epoch, warm_start=0.0)
    set_cpu_threads(config.cpu_threads)
    seed_all(config.seed)
    data = build_data(config)
    net = build_model(config)
    start_from = warm.folder if warm is not None else config.init_from  # a warm start is read instead of init_from
    if start_from and not config.resume:
        load_init_weights(net, start_from, config)
    net = net.to(device)
    run_config = _run_config(recorded, data)
    barrier(context)  # every rank has checked the run folder before rank 0 changes it
    if context.main:
        if warm is None:  # a warm-started run's folder was prepared before its warm start was written into it
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
    amp = resolve_amp(config.amp, device)
    loaders = Batches(data, config, device, context.rank, context.world_size)
    if context.main:
        print(f"training {config.run_name} ({config.method}, {config.encoder} + {config.arch}): "
              f"{describe_device(device, amp)}, {loaders.workers} data-loading workers", flush=True)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp == "fp16")
    autocast = autocast_factory(amp, device)
    uda_config = UDAConfig.from_train_config(config)

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
                # every rank labels its share of the images (kit.predict.pseudo.Ranks); rank 0 writes the folder
                csv = round_pseudo_labels(config, run_dir, round_, net, run_config, data.border.border("ellipse"))
                data.target = pseudo_dataset(config, data, csv)
        batches, targets, generator = loaders.epoch(epoch)
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
                dice = config.dice_weight if config.method in DICE_METHODS else 0.0
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
            if device.type != "cuda":  # CUDA runs SyncBatchNorm instead (kit.train.distributed.wrap)
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
        for name, loader in loaders.evals.items():
            row[f"{name}_miou"] = mean_iou(evaluate(net, loader, device, autocast))
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
        if improved or epoch == 0:  # the same state: one file under two names (a MiT-B4 run's is 1 GB)
            link_file(run_dir / "last.pt", run_dir / "best.pt")
        if progress:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in row.items()
                              if k.startswith(("loss", "pseudo", "source_val", "fisheye")))
            print(f"epoch {epoch + 1}/{len(plan)}: {shown}", flush=True)
        barrier(context)
        if stopping:
            break
    return run_dir

