"""How CPU thread counts fare beside another busy process: ``04_predict`` alone and beside a busy
neighbour, with the kit's default (``CPU_THREADS = None``: half the cores) and with torch's own
default (every core), run by papermill one after the other in one session so that the ratios compare.

    .venv/bin/python scripts/bench_threads.py --runs-dir outputs/demo/runs --run-name demo

The neighbour is one pure-Python busy loop (one core), the mildest "other job" a user may run.
Prints seconds per (threads, neighbour) and each slowdown against the same threads alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kit.bench.chain import RUN_NAME  # noqa: E402  (the main job's run)
from kit.bench.demo import execute  # noqa: E402  (the demo's quiet notebook runner)


def run_04(data: str, runs_dir: str, run_name: str, threads: int | None, out: Path) -> float:
    start = time.perf_counter()
    execute(ROOT / "notebooks" / "04_predict.ipynb", out / "04_predict.ipynb",
            {"DATA_DIR": data, "RUNS_DIR": runs_dir, "RUN_NAME": run_name, "OUTPUT_DIR": str(out / "predict"),
             "CPU_THREADS": threads, "DEVICE": "cpu"}, stdout_file=None, stderr_file=None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/demo")
    parser.add_argument("--runs-dir", default="outputs/demo/runs")
    parser.add_argument("--run-name", default=RUN_NAME)
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    settings = {"kit default (None: half the cores)": None, f"torch default ({cores}, every core)": cores}
    seconds = {}
    for neighbour in (False, True):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if neighbour else None
        try:
            for name, threads in settings.items():
                with tempfile.TemporaryDirectory() as tmp:
                    seconds[name, neighbour] = run_04(args.data, args.runs_dir, args.run_name, threads, Path(tmp))
                print(f"{name:36s} {'beside a busy process' if neighbour else 'alone':22s} "
                      f"{seconds[name, neighbour]:6.1f} s", flush=True)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    print()
    for name in settings:
        alone, shared = seconds[name, False], seconds[name, True]
        print(f"{name:36s} alone {alone:6.1f} s, beside a busy process {shared:6.1f} s: {shared / alone:.1f}x")


if __name__ == "__main__":
    main()
