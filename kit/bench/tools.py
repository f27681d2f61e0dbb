"""The small-class tools on/off at equal budget (``python -m kit.bench tools``, issue 27 item 3).

For each method asked for, every seed: the method as the benchmark trains it, then once per tool
switched the other way (:data:`TOOLS`, :func:`tool_switch`: rare-class sampling off; Dice loss off
where the method trains with it, on where it can), each trained for the same image passes
(:mod:`kit.train.budget`); and the method's own run scored again with multi-scale + flip test-time
augmentation (``TTA``; no training). ``tools.md`` / ``tools.json`` give mIoU, the small classes' IoU
and the paired differences against the method as trained. A tool the method has no switch for
(Dice for source_only and the oracle, which train without it) is left out with a note.
"""

from __future__ import annotations

import json
from pathlib import Path

from kit.bench.scoreboard import QUALITY_PRESET, Job, budget_passes, run_jobs, score_run, setup_line
from kit.bench.tables import report
from kit.common.files import make_dirs, write_json
from kit.train.config import DICE_METHODS, UDA_METHODS, TrainConfig

TOOLS = ("norcs", "dice")  # rare-class sampling (on in the benchmark recipe), Dice loss (per method)


def tool_switch(tool: str, method: str) -> tuple[str, dict]:
    """The variant's suffix and the overrides that switch ``tool`` away from the benchmark recipe's
    setting for ``method`` (its TrainConfig, defaults resolved). Dice: the weight the method's steps read
    (``dice_weight`` for :data:`~kit.train.config.DICE_METHODS`, ``uda_dice_weight`` for the uda methods)
    off (``_nodice``) where it is on, else on at weight 1 as solution B's (``_dice``); ValueError for a
    method that trains without Dice whatever its weights say (switching them would retrain the same model)."""
    if tool == "norcs":
        return "norcs", {"rare_class_sampling": False}
    if tool != "dice":
        raise ValueError(f"unknown tool {tool!r}; choose from {list(TOOLS)}")
    field = "dice_weight" if method in DICE_METHODS else "uda_dice_weight" if method in UDA_METHODS else None
    if field is not None:
        on = getattr(TrainConfig.from_preset(QUALITY_PRESET, method=method), field) > 0
        return ("nodice", {field: 0.0}) if on else ("dice", {field: 1.0})
    raise ValueError(f"{method} trains without Dice loss (kit.train.loop: only {', '.join(DICE_METHODS)} and the uda "
                     f"methods' uda_dice_weight add it), so there is no Dice to switch")


# solution B's test-time scales, with a flip (kit.predict.tta)
TTA_SCALES = (0.8, 0.9, 1.0, 1.1, 1.2)


def tta_result(result: dict, run_dir: Path, data_dir: str, path: Path) -> dict:
    """``result`` (a trained run's) scored again with :data:`TTA_SCALES` + flip, as ``<name>_tta``;
    kept in ``path`` and reused while its run's result is the same."""
    from kit.predict.tta import InferenceSettings

    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("config") == result["config"]:
            return stored
    iou = score_run(run_dir, data_dir, settings=InferenceSettings(mode="whole", scales=TTA_SCALES, flip=True))
    scored = {**{k: v for k, v in result.items() if not k.startswith("teacher")}, "name": result["name"] + "_tta",
              "iou": iou, "mIoU": iou["mIoU"]}
    write_json(path, scored)
    return scored


def bench_tools(data_dir: str, out: str, methods: list[str], budget: float, seeds: list[int],
                overwrite: bool = False, threads: int | None = 1, processes: int = 1,
                train_missing: bool = True, tools: tuple[str, ...] = tuple(TOOLS)) -> str:
    """Each of ``methods`` with each of ``tools`` (:data:`TOOLS`) switched, and with TTA, at ``budget`` ×
    QUALITY_PASSES image passes over ``seeds``; paired differences against the method as trained."""
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        raise ValueError(f"unknown tool(s) {unknown}; choose from {list(TOOLS)}")
    passes = budget_passes(budget)
    variants, notes = {}, []
    for method in methods:
        variants[method] = {"method": method}
        for tool in tools:
            try:
                suffix, overrides = tool_switch(tool, method)
            except ValueError as error:
                notes.append(f"Left out: {tool} for {method} ({error}).")
                continue
            variants[f"{method}_{suffix}"] = {"method": method, **overrides}
    jobs = [Job(name, overrides, seed, passes, passes=True) for name, overrides in variants.items() for seed in seeds]
    results = run_jobs(data_dir, out, jobs, overwrite, threads, processes, train_missing=train_missing)
    out_dir = Path(out)
    for job in jobs:
        if job.name in methods and job.key in results:
            results[job.key + "_tta"] = tta_result(results[job.key], out_dir / "runs" / job.key, data_dir,
                                                   make_dirs(out_dir / "tta") / f"{job.key}.json")
    size = f"{passes:,} image passes per run (kit.train.budget)"
    title = (f"Small-class tools, fisheye test mIoU ({setup_line(data_dir, size, seeds)}); each method as the "
             f"benchmark trains it (rare-class sampling of images and crops on), with rare-class sampling off "
             f"(_norcs), Dice off (_nodice) or on (_dice), and scored with {len(TTA_SCALES)}-scale + flip TTA (_tta, the "
             f"same runs); Δ: paired differences against the method over the same seeds.")
    for note in notes:
        print(note, flush=True)
    return report(out_dir, "tools", title, results, tuple(methods), "variant", gap=False, notes=notes)
