"""The small-class tools on/off at equal budget (``python -m kit.bench tools``, issue 27 item 3).

For each method asked for, every seed: the method as the benchmark trains it, then once per tool
switched the other way (``TOOLS``: rare-class sampling off, Dice loss off), each trained for the same
image passes (:mod:`kit.train.budget`); and the method's own run scored again with multi-scale +
flip test-time augmentation (``TTA``; no training). ``tools.md`` / ``tools.json`` give mIoU, the
small classes' IoU and the paired differences against the method as trained.
"""

from __future__ import annotations

import json
from pathlib import Path

from kit.bench.scoreboard import Job, budget_passes, run_jobs, score_run, setup_line
from kit.bench.tables import report
from kit.common.files import make_dirs, write_json

# overrides switching one tool from the benchmark recipe's setting (dice_weight 1, rare-class sampling on)
TOOLS: dict[str, dict] = {"norcs": {"rare_class_sampling": False}, "nodice": {"dice_weight": 0.0}}
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
    switched = {"": {}, **{tool: TOOLS[tool] for tool in tools}}
    jobs = [Job(method + (f"_{tool}" if tool else ""), {"method": method, **overrides}, seed, passes, passes=True)
            for method in methods for tool, overrides in switched.items() for seed in seeds]
    results = run_jobs(data_dir, out, jobs, overwrite, threads, processes, train_missing=train_missing)
    out_dir = Path(out)
    for job in jobs:
        if job.name in methods and job.key in results:
            results[job.key + "_tta"] = tta_result(results[job.key], out_dir / "runs" / job.key, data_dir,
                                                   make_dirs(out_dir / "tta") / f"{job.key}.json")
    size = f"{passes:,} image passes per run (kit.train.budget)"
    title = (f"Small-class tools, fisheye test mIoU ({setup_line(data_dir, size, seeds)}); each method as the "
             f"benchmark trains it (rare-class sampling of images and crops on), with rare-class sampling off "
             f"(_norcs), Dice off (_nodice), and scored with {len(TTA_SCALES)}-scale + flip TTA (_tta, the same runs); "
             f"Δ: paired differences against the method over the same seeds.")
    return report(out_dir, "tools", title, results, tuple(methods), "variant", gap=False)
