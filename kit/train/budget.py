"""Training compute in one unit for every method, so that methods are compared at equal budget.

The unit is an **image pass**: one forward pass of one training crop (``crop_size``) through the
model. A backward pass counts :data:`BACKWARD` (its FLOPs are about twice a forward's), so one
supervised crop costs 3. A forward pass of a larger image counts its pixels over the crop's: a
pseudo-label pass over a 270×480 fisheye frame with flip costs 2 × 270·480 / 128·128 ≈ 15.8.

Per training step and image of the batch (``batch_size`` images per domain):

    source_only, fisheye_tf, oracle, self_train round 0   3   (one supervised crop)
    self_train rounds 1…                                  6   (source crop + pseudo-labelled target crop)
    uda, uda_geo   3 source + 3 distortion branch + 1 EMA teacher + 1 target pass for the BatchNorm
                   statistics (bn_stats "target") + 3 class mix + 3 masked target; each where enabled

plus, for ``self_train``, each round's pseudo-labels (:func:`kit.predict.pseudo.make_pseudo_labels`):
whole image + flip at ``target_size``, over :data:`kit.predict.pseudo.THRESHOLD_IMAGES` images for the
class thresholds and then over every ``train_target`` image. Evaluation passes (per epoch, choosing ``best.pt``) are
not training compute and are left out; every method evaluates alike per epoch.

:func:`fit_budget` sets ``steps_per_epoch`` so that a run costs a given number of image passes,
keeping the method's epochs and rounds: ``source_only`` then trains as long as ``uda`` costs.
"""

from __future__ import annotations

import dataclasses
import math

from pathlib import Path

from kit.train.config import DEFAULTS, METHOD_DEFAULTS, UDA_METHODS, WARM_START_RUN, TrainConfig

FORWARD = 1.0
BACKWARD = 2.0
SUPERVISED = FORWARD + BACKWARD  # one labelled crop, forward and backward


def step_passes(config: TrainConfig, pseudo_round: bool = False) -> float:
    """Image passes of one training step of ``config`` (all ``batch_size`` images); ``pseudo_round``:
    a ``self_train`` step of rounds 1… (source + pseudo-labelled target)."""
    if config.method in UDA_METHODS:
        per_image = SUPERVISED  # the source crop
        if config.distortion_branch:
            per_image += SUPERVISED
        if config.target_branch:
            per_image += FORWARD  # the EMA teacher's pseudo-labels
            if config.bn_stats == "target":
                per_image += FORWARD  # the student's statistics pass on the unmasked target crop
            if config.class_mix:
                per_image += SUPERVISED
            per_image += SUPERVISED  # the masked target crop
    elif config.method == "self_train" and pseudo_round:
        per_image = 2 * SUPERVISED
    else:
        per_image = SUPERVISED
    return per_image * config.batch_size


def pseudo_label_passes(config: TrainConfig, target_images: int) -> float:
    """Image passes of one round of pseudo-labels over ``target_images`` fisheye frames: whole image +
    flip at ``target_size``, first over the threshold images, then over every frame."""
    from kit.predict.pseudo import THRESHOLD_IMAGES

    h, w = config.target_size
    ch, cw = config.crop_size
    images = min(THRESHOLD_IMAGES, target_images) + target_images
    return 2 * FORWARD * images * (h * w) / (ch * cw)


def _epochs(config: TrainConfig) -> tuple[int, int]:
    """Epochs of plain steps and of pseudo-label steps (``self_train``'s rounds)."""
    from kit.train.self_train import round_plan

    plan = round_plan(config)
    return sum(1 for r in plan if r == 0), sum(1 for r in plan if r > 0)


def pseudo_rounds(config: TrainConfig) -> int:
    """Rounds whose pseudo-labels the run makes itself (round 1's come from ``pseudo_split`` when given)."""
    if config.method != "self_train":
        return 0
    return config.rounds - (1 if config.pseudo_split else 0)


def run_passes(config: TrainConfig, target_images: int, steps_per_epoch: int | None = None) -> dict[str, float]:
    """The image passes a run of ``config`` costs: ``train`` (its steps), ``pseudo`` (its pseudo-label
    passes over ``target_images`` frames) and ``total``; ``steps`` is its number of training steps.
    ``steps_per_epoch`` defaults to the config's (which must then be set). A warm-started run
    (:func:`warm_start_plan`) counts its warm start's steps and passes too."""
    spe = steps_per_epoch if steps_per_epoch is not None else config.steps_per_epoch
    if spe is None:
        raise ValueError("steps_per_epoch is None (one pass over the source images): give the number of steps "
                         "to count the run's image passes")
    if config.warm_start:
        plan = warm_start_plan(dataclasses.replace(config, steps_per_epoch=spe))
        first, rest = run_passes(plan.config, target_images), run_passes(plan.run, target_images)
        return {k: first[k] + rest[k] for k in first}
    plain, rounds = _epochs(config)
    train = spe * (plain * step_passes(config) + rounds * step_passes(config, pseudo_round=True))
    pseudo = pseudo_rounds(config) * pseudo_label_passes(config, target_images)
    return {"steps": spe * (plain + rounds), "train": train, "pseudo": pseudo, "total": train + pseudo}


def fit_budget(config: TrainConfig, passes: float, target_images: int) -> TrainConfig:
    """``config`` with ``steps_per_epoch`` chosen so that the run costs at most ``passes`` image passes
    (the largest whole number of steps per epoch that fits), its epochs and rounds kept. A warm-started
    run's steps per epoch are those of the same run without the warm start, which shares them out."""
    if config.warm_start:
        fitted = fit_budget(dataclasses.replace(config, warm_start=0.0), passes, target_images)
        return dataclasses.replace(config, steps_per_epoch=fitted.steps_per_epoch)
    per_step_of_epoch = run_passes(config, target_images, steps_per_epoch=1)
    fixed = per_step_of_epoch["pseudo"]
    per_spe = per_step_of_epoch["train"]
    spe = math.floor((passes - fixed) / per_spe)
    if spe < 1:
        raise ValueError(f"a budget of {passes:,.0f} image passes does not pay for one step per epoch of "
                         f"{config.method} ({fixed + per_spe:,.0f} passes: {fixed:,.0f} of them pseudo-labels)")
    return dataclasses.replace(config, steps_per_epoch=spe)


@dataclasses.dataclass(frozen=True)
class WarmStart:
    """How a warm-started run trains: ``config``, a source_only run in ``<run folder>/warm_start``, first; then
    ``run``, the run's own config with the steps per epoch its share pays for, from that run's ``last.pt``."""

    config: TrainConfig
    run: TrainConfig

    @property
    def folder(self) -> Path:
        """The warm start's run folder, ``<run folder>/warm_start``."""
        return Path(self.config.runs_dir) / self.config.run_name


def warm_start_plan(config: TrainConfig) -> WarmStart | None:
    """The warm start of ``config`` (None without one, ``warm_start`` 0). Its budget is what
    ``config`` would cost without it (epochs × steps_per_epoch of its method, :func:`run_passes`);
    ``warm_start`` of those image passes (rounded down) pay for a ``source_only`` run of the same epochs
    and the rest for the run itself (:func:`fit_budget` each): cpu_demo's 16,000 passes give 5 × 66
    source_only steps (7,920 passes) and 5 × 25 uda steps (8,000), as the benchmark's ``uda_warm``
    trains them as two runs (``kit.bench.scoreboard.Job.start``). The source_only run takes every
    other value of ``config``, the method's own defaults (``METHOD_DEFAULTS``) reset to source_only's,
    and ``init_from``; the run itself then starts from it and its ``init_from`` is not read."""
    if not config.warm_start:
        return None
    alone = dataclasses.replace(config, warm_start=0.0)
    budget = run_passes(alone, 0)["total"]
    first = math.floor(budget * config.warm_start)
    values = dataclasses.asdict(config)
    for name, value in {**DEFAULTS, **METHOD_DEFAULTS.get(config.method, {})}.items():
        if values[name] == value:
            values[name] = None  # the method's own default: source_only takes its own
    values.update(method="source_only", warm_start=0.0, runs_dir=str(Path(config.runs_dir) / config.run_name),
                  run_name=WARM_START_RUN, resume=False, overwrite=False, stop_after_epoch=None)
    return WarmStart(fit_budget(TrainConfig(**values), first, 0), fit_budget(alone, budget - first, 0))
