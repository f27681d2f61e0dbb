"""The scoreboard's summaries (:mod:`kit.bench.scoreboard`): mean ± standard deviation over seeds,
gaps closed and paired differences, written as markdown tables and JSON, and mIoU against budget."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from kit.common.files import write_json, write_text
from kit.competition.labels import CLASSES

REFERENCES = ("fisheye_tf", "source_only", "uda", "uda_elastic")  # paired differences in the quality table (where trained)


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n − 1; NaN for one value) of the finite ``values``."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else float("nan")
    return float(np.mean(finite)), std


def summarise(results: list[dict], references: tuple[str, ...] = REFERENCES) -> dict[str, dict]:
    """Per name (in order of first appearance): the seeds, mean ± std of mIoU, teacher mIoU, each
    class's IoU and the gap closed (per seed, where that seed has source_only and oracle), mean train
    seconds, and the paired difference of mIoU and Car to each reference present (over shared seeds)."""
    by_name: dict[str, dict[int, dict]] = {}
    for r in results:
        by_name.setdefault(r["name"], {})[r["seed"]] = r
    summary = {}
    for name, runs in by_name.items():
        seeds = sorted(runs)
        s = {"seeds": seeds, "mIoU": mean_std([runs[k]["mIoU"] for k in seeds]),
             "train_seconds": float(np.mean([runs[k]["train_seconds"] for k in seeds])),
             **{field: float(np.mean([runs[k][field] for k in seeds])) for field in ("train_steps", "image_passes")
                if all(field in runs[k] for k in seeds)},
             "iou": {c: mean_std([runs[k]["iou"][c] for k in seeds]) for c in CLASSES}}
        if all("teacher_mIoU" in runs[k] for k in seeds):
            s["teacher_mIoU"] = mean_std([runs[k]["teacher_mIoU"] for k in seeds])
        gaps = []
        for k in seeds:
            low, high = by_name.get("source_only", {}).get(k), by_name.get("oracle", {}).get(k)
            if low and high and high["mIoU"] != low["mIoU"]:
                gaps.append((runs[k]["mIoU"] - low["mIoU"]) / (high["mIoU"] - low["mIoU"]))
        s["gap_closed"] = mean_std(gaps)
        s["paired"] = {}
        for ref in references:
            shared = [k for k in seeds if k in by_name.get(ref, {})]
            if ref != name and shared:
                s["paired"][ref] = {
                    "seeds": shared,
                    "mIoU": mean_std([_minus(runs[k]["mIoU"], by_name[ref][k]["mIoU"]) for k in shared]),
                    "Car": mean_std([_minus(runs[k]["iou"]["Car"], by_name[ref][k]["iou"]["Car"]) for k in shared]),
                }
        summary[name] = s
    return summary


def _minus(a: float | None, b: float | None) -> float:
    """``a - b``; NaN where either is missing (an IoU of a class a seed did not score is null in its JSON)."""
    return float("nan") if a is None or b is None else a - b


def plus_minus(value: tuple[float, float], digits: int = 3, percent: bool = False, sign: bool = False) -> str:
    """``mean ± std`` as a table cell (``–`` for no value; std left out where there is one seed)."""
    mean, std = value
    if not math.isfinite(mean):
        return "–"
    scale, unit = (100, "%") if percent else (1, "")
    text = f"{mean * scale:{'+' if sign else ''}.{0 if percent else digits}f}{unit}"
    return text + (f" ± {std * scale:.{0 if percent else digits}f}{unit}" if math.isfinite(std) else "")


def summary_tables(summary: dict[str, dict], references: tuple[str, ...] = REFERENCES, first: str = "method",
                   gap: bool = True) -> list[str]:
    """Markdown: one table of mIoU (student, teacher), gap closed, paired differences and train
    seconds; one of each class's IoU; every cell mean ± std over the seeds."""
    refs = [r for r in references if any(r in s["paired"] for s in summary.values())]
    head = [first, "seeds", "mIoU", "teacher mIoU", *(["gap closed"] if gap else []),
            *[f"Δ mIoU vs {r}" for r in refs], *[f"Δ Car vs {r}" for r in refs], "steps", "image passes", "train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in summary.items():
        paired = [plus_minus(s["paired"][r]["mIoU"], sign=True) if r in s["paired"] else "–" for r in refs]
        paired_car = [plus_minus(s["paired"][r]["Car"], sign=True) if r in s["paired"] else "–" for r in refs]
        cells = [name, ",".join(map(str, s["seeds"])), plus_minus(s["mIoU"], 4), plus_minus(s.get("teacher_mIoU", (math.nan,) * 2), 4),
                 *([plus_minus(s["gap_closed"], percent=True)] if gap else []), *paired, *paired_car,
                 f"{s['train_steps']:.0f}" if "train_steps" in s else "–",
                 f"{s['image_passes']:,.0f}" if "image_passes" in s else "–", f"{s['train_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"| {first} | " + " | ".join(CLASSES) + " |", "|" + "---|" * (1 + len(CLASSES))]
    for name, s in summary.items():
        lines.append(f"| {name} | " + " | ".join(plus_minus(s["iou"][c], 2) for c in CLASSES) + " |")
    return lines


def report(out_dir: Path, stem: str, title: str, results: dict[str, dict], references: tuple[str, ...],
           first: str, gap: bool, notes: list[str] = ()) -> str:
    """Write ``<stem>.md`` (the tables) and ``<stem>.json`` (summary and every seed's result); print the tables."""
    summary = summarise(list(results.values()), references)
    text = "\n".join([title, "", *summary_tables(summary, references, first, gap), "", *notes])
    write_text(Path(out_dir) / f"{stem}.md", text)
    write_json(Path(out_dir) / f"{stem}.json", {"title": title, "summary": summary, "results": results})
    print(text, flush=True)
    return text


def _names(by_passes: dict[int, dict[str, dict]]) -> list[str]:
    """The rows of any budget's summary, in the order the scoreboard trained them."""
    return list(dict.fromkeys(name for summary in by_passes.values() for name in summary))


def budget_table(by_passes: dict[int, dict[str, dict]]) -> list[str]:
    """Markdown: each method's mIoU (mean ± std) and wall seconds at each budget (image passes → summary)."""
    budgets = list(by_passes)
    names = _names(by_passes)
    head = ["method", *[f"{b:,} passes" for b in budgets], *[f"train s at {b:,}" for b in budgets]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        cells = [plus_minus(by_passes[b][name]["mIoU"], 4) if name in by_passes[b] else "–" for b in budgets]
        cells += [f"{by_passes[b][name]['train_seconds']:.0f}" if name in by_passes[b] else "–" for b in budgets]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def plot_budget(by_passes: dict[int, dict[str, dict]], path: Path) -> None:
    """Each method's mean mIoU (± std over seeds) against the image passes it trained for."""
    import matplotlib.pyplot as plt

    from kit.report.viz import save_figure

    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for name in _names(by_passes):
        points = [(b, *s[name]["mIoU"]) for b, s in by_passes.items() if name in s]
        if points:
            x, mean, std = (np.array(v, float) for v in zip(*points))
            axis.errorbar(x, mean, yerr=np.nan_to_num(std), marker="o", capsize=3, label=name)
    axis.set_xlabel("image passes per run (kit.train.budget)")
    axis.set_ylabel("fisheye test mIoU")
    axis.set_title("Every method at equal budgets")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    save_figure(figure, path)
