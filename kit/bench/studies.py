"""Studies beside the scoreboard (:mod:`kit.bench.scoreboard`), trained and reused alike: variants of one
method or recipe over seeds, each table paired with a reference variant.

    tune     variants of uda_geo (:data:`TUNE_VARIANTS`) on a *validation* dataset (another seed or
             another camera), so that no default is chosen on the benchmark's test labels
    adapt    adaptation round two (:data:`ADAPT_VARIANTS`) on a validation dataset, at equal image passes
    ladder   the Car ablation ladder (:data:`LADDER`): from source_only to uda_geo, one component
             added per rung
    encoders the real MiT-B0, its timm stand-in pvt_v2_b0 and the demo's EfficientNet-Lite0
             (:data:`ENCODER_VARIANTS`) trained alike
"""

from __future__ import annotations

from pathlib import Path

from kit.bench.scoreboard import Job, budget_passes, budget_steps, run_jobs, setup_line
from kit.bench.tables import plus_minus, report, summarise
from kit.bench.variants import ADAPT_VARIANTS, ENCODER_VARIANTS, LADDER, TUNE_VARIANTS


def bench_tune(data_dir: str, out: str, variants: list[str], budget: float, seeds: list[int],
               overwrite: bool = False, threads: int | None = 1, processes: int = 1,
               reference: str = "uda_geo_untuned", train_missing: bool = True) -> str:
    """:data:`TUNE_VARIANTS` on a validation dataset; ``tune.md`` / ``tune.json`` in ``out`` (differences
    paired with ``reference`` where it was trained too)."""
    unknown = sorted(set(variants) - set(TUNE_VARIANTS))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {list(TUNE_VARIANTS)}")
    steps = budget_steps(budget)
    starts = [Job(name, TUNE_VARIANTS[name], 0, steps).after for name in variants]  # warm starts need their start
    variants = [*dict.fromkeys([*(s for s in starts if s and s not in variants), *variants])]
    jobs = [Job(name, TUNE_VARIANTS[name], seed, steps) for seed in seeds for name in variants]
    results = run_jobs(data_dir, out, jobs, overwrite, threads, processes, train_missing=train_missing)
    title = (f"Validation fisheye mIoU ({setup_line(data_dir, f'{steps} steps', seeds)})."
             + (" A warm-started variant's train s leaves out the run it starts from." if any(starts) else ""))
    return report(Path(out), "tune", title, results, (reference,), "variant", gap=False)


def bench_adapt(data_dir: str, out: str, variants: list[str], budget: float, seeds: list[int],
                overwrite: bool = False, threads: int | None = 1, processes: int = 1,
                reference: str = "source_only_rcs", train_missing: bool = True) -> str:
    """:data:`ADAPT_VARIANTS` on a validation dataset, each trained for the same image passes (``budget`` ×
    :data:`QUALITY_PASSES`); ``adapt.md`` / ``adapt.json`` in ``out``, paired with ``reference``."""
    unknown = sorted(set(variants) - set(ADAPT_VARIANTS))
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {list(ADAPT_VARIANTS)}")
    passes = budget_passes(budget)
    jobs = [Job(name, ADAPT_VARIANTS[name], seed, passes, passes=True) for seed in seeds for name in variants]
    results = run_jobs(data_dir, out, jobs, overwrite, threads, processes, train_missing=train_missing,
                       table=ADAPT_VARIANTS)
    size = f"{passes:,} image passes per run (kit.train.budget)"
    title = f"Adaptation round two on validation data, fisheye test mIoU ({setup_line(data_dir, size, seeds)})."
    return report(Path(out), "adapt", title, results, (reference,), "variant", gap=False)


def bench_ladder(data_dir: str, out: str, rungs: list[str], budget: float, seeds: list[int],
                 overwrite: bool = False, threads: int | None = 1, processes: int = 1,
                 train_missing: bool = True) -> str:
    """The rungs of :data:`LADDER`; ``ladder.md`` / ``ladder.json`` in ``out``, each rung's Car and mIoU
    paired with source_only and with the rung before it."""
    unknown = sorted(set(rungs) - set(LADDER))
    if unknown:
        raise ValueError(f"unknown rung(s) {unknown}; choose from {list(LADDER)}")
    rungs = [r for r in LADDER if r in rungs]  # in ladder order
    steps = budget_steps(budget)
    jobs = [Job(rung, LADDER[rung][1], seed, steps) for seed in seeds for rung in rungs]
    results = run_jobs(data_dir, out, jobs, overwrite, threads, processes, train_missing=train_missing)
    rungs = [r for r in rungs if any(result["name"] == r for result in results.values())]
    summary = summarise(list(results.values()), ("source_only",))
    steps_table = ["| rung | adds | Car | Δ Car vs rung before | mIoU | Δ mIoU vs rung before |", "|---|---|---|---|---|---|"]
    for before, rung in zip([None, *rungs], rungs):
        pair = summarise([r for r in results.values() if r["name"] in (rung, before)], (before,))[rung]["paired"] \
            if before else {}
        steps_table.append(f"| {rung} | {LADDER[rung][0]} | {plus_minus(summary[rung]['iou']['Car'])} | "
                           f"{plus_minus(pair[before]['Car'], sign=True) if before in pair else '–'} | "
                           f"{plus_minus(summary[rung]['mIoU'], 4)} | {plus_minus(pair[before]['mIoU'], 4, sign=True) if before in pair else '–'} |")
    title = f"The Car ablation ladder ({setup_line(data_dir, f'{steps} steps', seeds)})."
    return report(Path(out), "ladder", title, results, ("source_only",), "rung", gap=False,
                  notes=["Each rung against the rung before it (paired over seeds):", "", *steps_table, ""])


def bench_encoders(data_dir: str, out: str, budget: float, seeds: list[int], overwrite: bool = False,
                   threads: int | None = 1, processes: int = 1, train_missing: bool = True) -> str:
    """:data:`ENCODER_VARIANTS`, each seed; ``encoders.md`` / ``encoders.json`` in ``out``, paired with
    the real MiT-B0."""
    steps = budget_steps(budget)
    jobs = [Job(name, overrides, seed, steps) for seed in seeds for name, overrides in ENCODER_VARIANTS.items()]
    results = run_jobs(data_dir, out, jobs, overwrite, threads, processes, train_missing=train_missing)
    title = (f"Fisheye test mIoU of three encoders, each with fisheye_tf ({setup_line(data_dir, f'{steps} steps', seeds)}; "
             f"the encoder and its weights are the variant's).")
    return report(Path(out), "encoders", title, results, ("mit_b0_scratch",), "variant", gap=False)
