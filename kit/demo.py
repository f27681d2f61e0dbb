"""The main job on the embedded default: ``python -m kit.demo`` (``bash scripts/demo.sh`` sets up first).

Synthetic ``demo`` dataset (generated when missing) → ``01_eda`` → ``02_labels_and_augment`` →
``03_train`` (method ``uda_geo``, the notebook's CPU values) → ``04_predict``, each notebook run by
papermill into ``--out`` (executed notebooks, figures, the run folder, ``submission.csv``), then
``metrics.json`` with the fisheye test mIoU and the time each step took.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import papermill

from kit.data import has_split
from kit.files import copy_file, is_output_dir, prepare_output_dir, record_output, write_json
from kit.synth import generate

ROOT = Path(__file__).resolve().parents[1]
RUN_NAME = "uda_geo"


def steps(data: str, out: Path) -> list[tuple[str, dict]]:
    """(notebook, parameters) in order; every notebook writes below ``out``."""
    return [
        ("01_eda", {"DATA_DIR": data, "OUTPUT_DIR": str(out / "01_eda")}),
        ("02_labels_and_augment", {"DATA_DIR": data, "OUTPUT_DIR": str(out / "02_labels_and_augment")}),
        ("03_train", {"DATA_DIR": data, "RUNS_DIR": str(out / "runs"), "RUN_NAME": RUN_NAME, "METHOD": "uda_geo"}),
        ("04_predict", {"DATA_DIR": data, "RUNS_DIR": str(out / "runs"), "RUN_NAME": RUN_NAME,
                        "OUTPUT_DIR": str(out / "04_predict")}),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kit.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/demo", help="dataset root; the synthetic demo preset is made here if missing")
    parser.add_argument("--out", default="outputs/demo", help="everything the job writes")
    parser.add_argument("--overwrite", action="store_true", help="replace an earlier job's outputs in --out")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    out = prepare_output_dir(args.out, args.overwrite)  # --overwrite removes only an earlier job's own files
    seconds = {}
    if not has_split(args.data, "test_gt"):
        unfinished = is_output_dir(args.data)  # the kit's own dataset folder without its last CSV: interrupted
        print(f"== synthetic demo dataset → {args.data}" + (" (an unfinished one is replaced)" if unfinished else ""),
              flush=True)
        start = time.perf_counter()
        generate(args.data, preset="demo", seed=0, workers=2, overwrite=unfinished)
        seconds["synth"] = round(time.perf_counter() - start, 1)
    for name, parameters in steps(args.data, out):
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        papermill.execute_notebook(
            str(ROOT / "notebooks" / f"{name}.ipynb"), str(out / f"{name}.ipynb"), parameters=parameters,
            kernel_name="python3", cwd=str(ROOT), log_output=True, progress_bar=False,
        )
        record_output(out / f"{name}.ipynb")
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"== {name} done in {seconds[name]:.0f} s", flush=True)

    predicted = json.loads((out / "04_predict" / "metrics.json").read_text())
    copy_file(out / "04_predict" / "submission.csv", out / "submission.csv")
    seconds["total"] = round(time.perf_counter() - started, 1)
    summary = {"fisheye_test_mIoU": predicted["mIoU"], "iou": predicted["iou"], "method": "uda_geo",
               "run": str(out / "runs" / RUN_NAME), "seconds": seconds}
    write_json(out / "metrics.json", summary)
    print(f"\nfisheye test mIoU (uda_geo): {predicted['mIoU']:.4f}")
    print(f"results in {out.resolve()}: submission.csv, metrics.json, executed notebooks 01–04 and their figures")
    print(f"total {seconds['total'] / 60:.1f} min")


if __name__ == "__main__":
    main()
