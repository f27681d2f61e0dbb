"""The scoreboard: training methods and variants over several seeds on synthetic data, scored on
labelled fisheye test images, summarised as mean ± standard deviation with paired differences.

    quality  every method (source_only, fisheye_tf, uda, uda_geo, self_train, oracle) on the benchmark data,
             each trained for the same image passes (kit.train.budget), so that none wins by training longer

and what every study trains with (:mod:`kit.bench.studies`: tune, adapt, ladder, encoders; :mod:`kit.bench.tools`):
:class:`Job`, :func:`run_jobs`, :func:`score_run`.

Every (name, seed, size) trains once; the size is steps (tune, ladder, encoders: ``<steps>``) or image
passes (quality: ``<passes>p``). Its result goes to ``<out>/results/<name>_seed<seed>_<size>.json``
with the whole configuration it was trained with; a later call that asks for the same name, seed and
size with the same configuration reuses it, an interrupted run resumes from its ``last.pt``, and a
result with another configuration is refused unless ``overwrite``. ``quality``, ``tune`` and
``ladder`` may share one ``--out``: a run whose configuration equals one already trained there under
another name (a tune variant equal to a ladder rung) is reused too. The summaries and tables are
:mod:`kit.bench.tables`' (re-exported here).

Each run is scored twice on the test split (whole image at the run's size, ellipse border): the
student (what ``04_predict`` predicts with) and, for the self-training methods, the EMA teacher.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from kit.bench.tables import (  # noqa: F401 (mean_std, summary_tables: re-exported)
    REFERENCES,
    budget_table,
    mean_std,
    plot_budget,
    plus_minus,
    report,
    summarise,
    summary_tables,
)
from kit.common.files import is_output_dir, make_dirs, prepare_output_dir, write_json, write_text
from kit.competition.layout import has_split
from kit.train.config import METHODS, UDA_METHODS, TrainConfig, with_later_fields

QUALITY_PRESET = "cpu_demo"  # the benchmark's recipe (kit.train.presets), shared by every method here
# Where the benchmark departs from 03_train on purpose: it scores last.pt on the test split, so the
# per-epoch evaluation (which only picks best.pt) reads fewer images; no progress bars in the log; and no uda
# run warm-starts inside itself (cpu_demo's warm_start): the row uda_warm names its start, so that the start is a
# result of its own (Job.start; the same two runs as 03_train's warm start, tests/test_warm_start.py)
QUALITY_OVERRIDES = dict(eval_limit=50, progress=False, warm_start=0.0)

QUALITY_STEPS = 600  # training steps per run at --budget 1 (tune, ladder, encoders: variants of one method)
# quality: image passes per run at --budget 1 (kit.train.budget), the same compute for every method, so that a
# baseline trains as long as the most expensive method costs; twice the cpu_demo recipe (16,000: uda_warm), about
# what self_train at 540 steps with two rounds of pseudo-labels over the demo's 400 fisheye frames costs (34,540)
QUALITY_PASSES = 32_000
QUALITY_STEPS_PER_EPOCH = 60
# The scoreboard's rows: every method as the recipe trains it; uda as solution A built it (with its elastic
# distortion copy, which the kit's uda leaves out: kit.train.config.METHOD_DEFAULTS); and uda_warm, source_only for
# the first half of the budget, then uda from that run for the second (Job.start; chosen on validation data). uda and
# uda_elastic, which start from ImageNet weights, keep MIC's and solution A's share of masked target blocks (0.75), at
# which they were measured; the recipe's 0.25 was chosen for the warm-started uda (docs/RESULTS.md, seventh part)
_MIC_MASK = {"mask_ratio": 0.75}
QUALITY_ROWS: dict[str, dict] = {**{method: {"method": method} for method in METHODS[:2]},
                                 "uda": {"method": "uda", **_MIC_MASK},
                                 "uda_elastic": {"method": "uda", "distortion_branch": True, **_MIC_MASK},
                                 "uda_warm": {"method": "uda", "init_from": "@source_only"},
                                 **{method: {"method": method} for method in METHODS[3:]}}


@dataclass(frozen=True)
class Job:
    """One training run of the scoreboard: a name (method, variant or rung), its overrides, a seed and
    its size: ``steps`` training steps, or with ``passes`` a budget of ``steps`` image passes
    (:mod:`kit.train.budget`), the same compute whatever the method."""

    name: str
    overrides: dict
    seed: int
    steps: int
    passes: bool = False

    @property
    def size(self) -> str:
        return f"{self.steps}p" if self.passes else str(self.steps)

    @property
    def key(self) -> str:
        return f"{self.name}_seed{self.seed}_{self.size}"

    @property
    def after(self) -> str | None:
        """The name whose run this one starts from (``init_from = "@name"``: that name's run of the same
        seed in the same ``--out``, :meth:`start`), or None."""
        source = self.overrides.get("init_from")
        return source[1:] if isinstance(source, str) and source.startswith("@") else None

    def start(self, overrides: dict) -> Job | None:
        """The job this one starts from, given the start's ``overrides``: of the same steps, or, on a
        budget of image passes, the first half of it (the warm-started run trains the rest, so that the
        two together cost ``steps`` passes, as much as any other job of that budget)."""
        if self.after is None:
            return None
        return Job(self.after, overrides, self.seed, self.steps // 2 if self.passes else self.steps, self.passes)

    @property
    def own_steps(self) -> int:
        """Steps or image passes that this job's own run trains (a budget's second half when warm-started)."""
        return self.steps - self.steps // 2 if self.passes and self.after else self.steps

    @property
    def slow(self) -> bool:  # the self-training runs take about three times as long: started first
        method = self.overrides.get("method")
        return method == "self_train" or (method in UDA_METHODS and self.overrides.get("target_branch", True))


def _train_config(job: Job, data_dir: str, base: dict, **how) -> TrainConfig:
    """The job's TrainConfig: ``base`` + its overrides, its seed, and its size: steps as epochs of
    :data:`QUALITY_STEPS_PER_EPOCH`, or image passes as the preset's epochs (and rounds) with the
    steps per epoch that the budget pays for (:func:`kit.train.budget.fit_budget`); ``how``: fields of
    :data:`_HOW` (folders, threads, resume)."""
    values = {**base, **job.overrides, "data_dir": data_dir, "seed": job.seed, **how}
    if job.passes:
        from kit.train.budget import fit_budget

        return fit_budget(TrainConfig.from_preset(QUALITY_PRESET, **values), job.own_steps, target_images(data_dir))
    epochs = max(job.steps // QUALITY_STEPS_PER_EPOCH, 1)
    return TrainConfig.from_preset(QUALITY_PRESET, **{**values, "epochs": epochs, "steps_per_epoch": job.steps // epochs})


@functools.lru_cache(maxsize=8)
def target_images(data_dir: str) -> int:
    """How many unlabelled fisheye training images ``data_dir`` holds (what self-training pseudo-labels)."""
    from kit.competition.layout import read_split

    return len(read_split(data_dir, "train_target"))


def _defining(config: TrainConfig, job: Job) -> dict:
    """Every value of ``config`` that defines a result, JSON-normalised (tuples as lists), and the
    job's size (``steps``, or ``passes`` for a budget of image passes)."""
    values = {k: v for k, v in dataclasses.asdict(config).items() if k not in _HOW}
    return json.loads(json.dumps({**values, ("passes" if job.passes else "steps"): job.steps}))


def job_config(job: Job, data_dir: str, base: dict) -> dict:
    """Every TrainConfig value that defines the job's result, defaults resolved, JSON-normalised:
    compared before a result is reused. How the run was carried out (threads, folders, resume) is
    left out."""
    return _defining(_train_config(job, data_dir, base), job)


# how a run is carried out and predicted, not what it learns (the benchmark predicts whole images itself)
_HOW = ("runs_dir", "run_name", "cpu_threads", "resume", "overwrite", "progress", "device", "num_workers",
        "predict_mode", "predict_scales", "predict_flip")


def _train_and_score(data_dir: str, out_dir: Path, job: Job, overwrite: bool, threads: int | None,
                     base: dict) -> dict:
    """Train ``job`` with :data:`QUALITY_PRESET` + ``base`` (:data:`QUALITY_OVERRIDES`, passed so that
    spawned processes get the caller's values) + its overrides, score its ``last.pt`` (student and,
    where there is one, EMA teacher) and write ``results/<key>.json``. A run folder with a
    ``last.pt`` but no result (an interrupted run) is resumed."""
    from kit.train.loop import train

    run_dir = out_dir / "runs" / job.key
    resume = not overwrite and (run_dir / "last.pt").is_file()
    config = _train_config(job, data_dir, base, runs_dir=str(out_dir / "runs"), run_name=job.key,
                           cpu_threads=threads, overwrite=overwrite, resume=resume)
    defining = _defining(config, job)  # "@name" as written: the result does not depend on where out_dir is
    before = job.start({})
    if before is not None:
        start = out_dir / "runs" / before.key / "last.pt"
        if not start.is_file():
            unit = "image passes" if job.passes else "steps"
            raise FileNotFoundError(f"{job.key} starts from {job.after}'s run, but {start} does not exist: "
                                    f"train {job.after} (seed {job.seed}, {before.steps} {unit}) into {out_dir} first")
        config = dataclasses.replace(config, init_from=str(start))
    from kit.train.budget import run_passes, warm_start_plan

    warm = warm_start_plan(config)  # a warm start inside the run: its own steps first
    steps = (f"source_only {warm.config.epochs} epochs × {warm.config.steps_per_epoch} steps, then " if warm else "") + \
        f"{config.method} {config.epochs} epochs × {(warm.run if warm else config).steps_per_epoch} steps"
    print(f"--- {job.key}: {steps}, {job.overrides}{' (resumed)' if resume else ''}", flush=True)
    start = time.perf_counter()
    train(config)
    seconds = time.perf_counter() - start
    cost = run_passes(config, target_images(data_dir))
    result = {"name": job.name, "seed": job.seed, ("budget_passes" if job.passes else "steps"): job.steps,
              "data": data_dir, "resumed": resume,
              "config": defining, "train_seconds": round(seconds, 1), "train_steps": cost["steps"],
              "image_passes": round(cost["total"])}
    if before is not None and job.passes:  # a budget's warm start: the run it starts from is half its cost
        first = json.loads((out_dir / "results" / f"{before.key}.json").read_text())
        result.update(start=before.key, image_passes=result["image_passes"] + first["image_passes"],
                      train_seconds=round(seconds + first["train_seconds"], 1))
    result["iou"] = score_run(run_dir, data_dir)
    result["mIoU"] = result["iou"]["mIoU"]
    if config.method in UDA_METHODS and config.target_branch:
        result["teacher_iou"] = score_run(run_dir, data_dir, weights="teacher")
        result["teacher_mIoU"] = result["teacher_iou"]["mIoU"]
    write_json(make_dirs(out_dir / "results") / f"{job.key}.json", result)
    teacher = f", teacher {result['teacher_mIoU']:.4f}" if "teacher_mIoU" in result else ""
    print(f"{job.key}: fisheye test mIoU {result['mIoU']:.4f}{teacher}, Car {result['iou']['Car']:.3f} "
          f"({seconds:.0f} s)", flush=True)
    return result


def score_run(run_dir: str | Path, data_dir: str, weights: str = "model", settings=None) -> dict:
    """Per-class IoU and mIoU of a run's ``last.pt`` (``weights``: ``"model"``, the student, or
    ``"teacher"``) on ``data_dir``'s labelled fisheye test split: whole image at the run's target
    size (or ``settings``, a ``kit.predict.tta.InferenceSettings``), the border an ellipse estimated
    as the run's training estimated it (``kit.predict.splits.run_border``)."""
    from kit.competition.layout import read_split
    from kit.predict.runs import load_checkpoint, load_run
    from kit.predict.splits import predict_split
    from kit.predict.tta import InferenceSettings

    model, config = load_run(run_dir, "last.pt", device="cpu")
    if weights != "model":
        state = load_checkpoint(Path(run_dir) / "last.pt")
        if not state.get(weights):
            raise ValueError(f"{run_dir}/last.pt holds no {weights!r} weights")
        model.load_state_dict(state[weights])
    border = _ellipse_border(data_dir, config.target_size, config.stats_limit, config.border_threshold)
    return predict_split([(model, config)], read_split(data_dir, "test_gt"),
                         settings=settings or InferenceSettings(mode="whole"),
                         border=border, progress=False).scores


@functools.lru_cache(maxsize=4)
def _ellipse_border(data_dir: str, target_size: tuple[int, int], stats_limit: int | None,
                    border_threshold: float | None):
    """``data_dir``'s border for runs with these settings (all run_border reads), once per process."""
    from kit.predict.splits import border_at

    return border_at(data_dir, "ellipse", target_size, stats_limit, border_threshold)


def run_jobs(data_dir: str, out: str, jobs: list[Job], overwrite: bool, threads: int | None, processes: int,
             base: dict | None = None, train_missing: bool = True, table: dict[str, dict] | None = None
             ) -> dict[str, dict]:
    """Results of ``jobs`` (key → result): reused from ``out/results`` where one exists with the same
    configuration, else trained, ``processes`` at a time (slow ones first); with ``train_missing``
    False, jobs without a result are left out (tables of what is there). ``table`` (name → overrides)
    gives the runs that warm-started jobs start from (:meth:`Job.start`): trained first where missing,
    not returned unless asked for."""
    asked = [job.key for job in jobs]
    starts = [job.start(table[job.after]) for job in jobs if job.after and table and job.after in table]
    jobs = [*{job.key: job for job in [*starts, *jobs]}.values()]
    if not has_split(data_dir, "test_gt"):
        raise FileNotFoundError(f"{data_dir} has no test_gt.csv: the scoreboard needs the synthetic data's held-out "
                                f"fisheye labels (python -m kit.synth --out {data_dir} --preset demo)")
    base = dict(QUALITY_OVERRIDES) if base is None else base
    out_dir = Path(out)
    if not out_dir.exists() or not is_output_dir(out_dir):  # overwrite retrains the jobs asked for and clears
        out_dir = prepare_output_dir(out_dir, overwrite)  # nothing else; refuses a folder of other files
    done, todo = {}, []
    stored_by_config = {} if overwrite else {
        json.dumps(with_later_fields(r.get("config", {}), leave_out=_HOW), sort_keys=True): r for r in
        (json.loads(p.read_text()) for p in sorted((out_dir / "results").glob("*.json")))}
    for job in jobs:
        path = out_dir / "results" / f"{job.key}.json"
        wanted = job_config(job, data_dir, base)
        twin = stored_by_config.get(json.dumps(wanted, sort_keys=True))
        if not path.is_file() and twin is not None:  # trained under another name (a rung equal to a method)
            done[job.key] = {**twin, "name": job.name}
            write_json(make_dirs(out_dir / "results") / f"{job.key}.json", done[job.key])
        elif path.is_file() and not overwrite:
            stored = json.loads(path.read_text())
            config = with_later_fields(stored.get("config", {}), leave_out=_HOW)
            if config != wanted:
                changed = sorted(k for k in {**config, **wanted} if config.get(k) != wanted.get(k))
                raise FileExistsError(f"{path} was trained with other settings ({', '.join(changed)} differ); "
                                      f"pass --overwrite to retrain it, or choose another --out")
            done[job.key] = stored
        else:
            todo.append(job)
    if not train_missing:
        print(f"{len(done)} result(s) in {out_dir / 'results'}; not trained, so not tabulated: "
              f"{', '.join(job.key for job in todo) or 'none'}", flush=True)
        return {key: done[key] for key in asked if key in done}
    print(f"{len(done)} result(s) reused from {out_dir / 'results'}, {len(todo)} run(s) to train", flush=True)
    todo.sort(key=lambda job: not job.slow)
    for stage in ([job for job in todo if not job.after], [job for job in todo if job.after]):  # warm starts last
        if processes > 1 and len(stage) > 1:
            with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn")) as pool:
                futures = {job.key: pool.submit(_train_and_score, data_dir, out_dir, job, overwrite, threads, base)
                           for job in stage}
                done.update({key: future.result() for key, future in futures.items()})
        else:
            done.update({job.key: _train_and_score(data_dir, out_dir, job, overwrite, threads, base) for job in stage})
    return {key: done[key] for key in asked}


def setup_line(data_dir: str, size: str, seeds: list[int], base: dict | None = None) -> str:
    recipe = TrainConfig.from_preset(QUALITY_PRESET, **(QUALITY_OVERRIDES if base is None else base))
    return (f"{size}, seeds {', '.join(map(str, seeds))}, {recipe.encoder} ({recipe.pretrained}) + "
            f"{recipe.arch} {recipe.head_channels}, crop {recipe.crop_size}, target {recipe.target_size}, "
            f"scored on {data_dir}'s fisheye test split (whole image, ellipse border); mean ± std over seeds")


def budget_steps(budget: float) -> int:
    """Training steps per run at ``budget`` × :data:`QUALITY_STEPS` (at least one)."""
    return max(int(round(QUALITY_STEPS * budget)), 1)


def budget_passes(budget: float) -> int:
    """Image passes per run at ``budget`` × :data:`QUALITY_PASSES` (at least one)."""
    return max(int(round(QUALITY_PASSES * budget)), 1)


def bench_quality(data_dir: str, out: str, budget: float, seeds: list[int], overwrite: bool = False,
                  threads: int | None = 1, processes: int = 1, train_missing: bool = True,
                  curve: tuple[float, ...] = (), rows: tuple[str, ...] = tuple(QUALITY_ROWS)) -> str:
    """Every row of :data:`QUALITY_ROWS` (or ``rows``), each seed, each trained for the same image passes
    (``budget`` × :data:`QUALITY_PASSES`); ``quality.md`` / ``quality.json`` in ``out``. ``curve``: further
    budgets, trained alike, for ``quality_budget.md`` and ``quality_budget.png`` (mIoU against image passes)."""
    unknown = sorted(set(rows) - set(QUALITY_ROWS))
    if unknown:
        raise ValueError(f"unknown scoreboard row(s) {unknown}; choose from {list(QUALITY_ROWS)}")
    budgets = sorted({budget, *curve})
    rows = tuple(r for r in QUALITY_ROWS if r in rows)  # in the table's order

    def job(row: str, seed: int, b: float) -> Job:
        return Job(row, QUALITY_ROWS[row], seed, budget_passes(b), passes=True)

    unpaid = {}  # (row, budget) → why a row cannot train on that budget (self_train's pseudo-labels alone)
    for b in budgets:
        for row in rows:
            try:
                job_config(job(row, 0, b), data_dir, dict(QUALITY_OVERRIDES))
            except ValueError as error:
                unpaid[row, b] = str(error)
                print(f"{row} left out at {budget_passes(b):,} image passes: {error}", flush=True)
    jobs = {b: [job(row, seed, b) for seed in seeds for row in rows if (row, b) not in unpaid] for b in budgets}
    results = run_jobs(data_dir, out, [job for b in reversed(budgets) for job in jobs[b]], overwrite, threads,
                       processes, train_missing=train_missing, table=QUALITY_ROWS)
    main = {job.key: results[job.key] for job in jobs[budget] if job.key in results}
    size = f"{budget_passes(budget):,} image passes per run (kit.train.budget)"
    title = (f"Fisheye test mIoU ({setup_line(data_dir, size, seeds)}); gap closed = (mIoU − source_only) / "
             f"(oracle − source_only) per seed; Δ: paired differences over the same seeds.")
    notes = [f"Left out: {method} ({why})." for (method, b), why in unpaid.items() if b == budget]
    text = report(Path(out), "quality", title, main, REFERENCES, "method", gap=True, notes=notes)
    if len(budgets) > 1:
        by_passes = {budget_passes(b): summarise([results[job.key] for job in jobs[b] if job.key in results])
                     for b in budgets}
        write_text(Path(out) / "quality_budget.md", "\n".join(budget_table(by_passes)) + "\n")
        plot_budget(by_passes, Path(out) / "quality_budget.png")
    return text
