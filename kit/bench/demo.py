"""The main job on the embedded default: ``python -m kit.bench.demo`` (``bash scripts/demo.sh`` sets up first).

Synthetic ``demo`` dataset (generated when missing) → ``01_eda`` → ``02_labels_and_augment`` →
``03_train`` (its default preset, cpu_demo: ``uda`` warm-started by ``source_only``, chosen on validation data) →
``04_predict`` (the first steps of ``kit.bench.chain``), each notebook run by
papermill into ``--out`` (executed notebooks, figures, the run folder, ``submission.csv``), then
``metrics.json`` with the fisheye test mIoU and the time each step took.

:func:`execute` runs one notebook the way the demo does (also for the test suite's notebook runner and
the benchmark): the notebook's own printed output goes to this process's stdout/stderr as it comes,
while the Jupyter transport's messages stay out of the terminal (see :class:`QuietKernelManager`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import sys
import time
from pathlib import Path

import papermill
import zmq
from jupyter_client.manager import AsyncKernelManager

from kit.bench.chain import RUN_NAME, chain
from kit.common.files import copy_file, is_output_dir, prepare_output_dir, record_output, write_json
from kit.competition.layout import has_split
from kit.synth import generate

ROOT = Path(__file__).resolve().parents[2]  # the repository: kit/bench/demo.py
STEPS = 4  # of the notebook chain (kit.bench.chain): 01 → 02 → 03 → 04


class QuietKernelManager(AsyncKernelManager):
    """jupyter_client's kernel manager minus the messages a papermill run leaves in the terminal. Each is
    stopped where it is made (no stream or logger is muted), so whatever else the kernel or a cell
    writes still shows.

    * ``[IPKernelApp] WARNING | Kernel is running over TCP without encryption. ...``: ipykernel ≥ 7.4
      logs it at every kernel start to the stderr the kernel inherits (the terminal). The manager
      provisions CurveZMQ keys (jupyter_client's ``transport_encryption = "auto"``, which does so where
      the kernelspec declares ``supported_encryption: curve``), so the kernel is encrypted and has
      nothing to warn about. Only where that can work: jupyter_client ≥ 8.10, libzmq with curve, and the
      kernel is this interpreter's ipykernel ≥ 7.4 (a kernelspec claiming curve for an older ipykernel
      would leave the client unable to connect). Elsewhere the kernel starts as before; older
      ipykernels do not warn.
    * ``Debugger warning: It seems that frozen modules are being used ... PYDEVD_DISABLE_FILE_VALIDATION=1
      ...`` (debugpy, imported as ipykernel starts). Older ipykernels printed it to the terminal;
      6.29 and 7.x import debugpy after the kernel's stderr is redirected, so it is dropped and did not
      show here. ``PYDEVD_DISABLE_FILE_VALIDATION=1`` in the kernel's environment (papermill's command
      line sets the same) only turns off debugpy's check of the standard library's file names, which
      matters for breakpoints; a papermill kernel is never debugged.
    * ``TqdmWarning: IProgress not found. Please update jupyter and ipywidgets.`` (tqdm.auto in a kernel
      without ipywidgets, imported by timm's huggingface_hub; it then draws text bars, as wanted here):
      filtered by its message in the kernel's ``PYTHONWARNINGS``, every other warning still shows.
    * ``[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.`` after the last cell, now and then
      (more often on a loaded machine). jupyter_client's ``shutdown_kernel`` first interrupts the
      kernel (SIGINT), then asks it to shut down. Papermill shuts down as soon as the reply to its last
      request (``kernel_info``) arrives, when the kernel may still be inside that request's handler,
      the one place where ipykernel turns SIGINT into KeyboardInterrupt (it ignores it elsewhere) and
      logs this error. The interrupt is for stopping a running cell and every cell has finished by
      then, so it is skipped during a shutdown. A kernel still running a cell (Ctrl-C in this process)
      still stops: the shutdown request, SIGTERM after ``shutdown_wait_time / 2`` (2.5 s), SIGKILL.
      Interrupts outside a shutdown are sent as before.
    """

    def _kernel_speaks_curve(self) -> bool:
        if not (self.has_trait("transport_encryption") and zmq.has("curve")) or self.kernel_spec is None:
            return False
        argv = self.kernel_spec.argv
        this_python = {"python", f"python{sys.version_info[0]}", "python%i.%i" % sys.version_info[:2], sys.executable}
        if not argv or argv[0] not in this_python or not any("ipykernel" in a for a in argv[1:]):
            return False  # another interpreter or kernel: its curve support is unknown here
        try:
            version = importlib.metadata.version("ipykernel")
        except importlib.metadata.PackageNotFoundError:
            return False
        return tuple(int(part) for part in re.findall(r"\d+", version)[:2]) >= (7, 4)

    async def _async_pre_start_kernel(self, **kw):
        env = dict(kw.pop("env", None) or os.environ)
        env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
        env["PYTHONWARNINGS"] = ",".join(filter(None, (env.get("PYTHONWARNINGS"), "ignore:IProgress not found")))
        if self._kernel_speaks_curve() and self.transport_encryption == "disabled":
            self.transport_encryption = "auto"
        return await super()._async_pre_start_kernel(env=env, **kw)

    async def _async_interrupt_kernel(self):
        if getattr(self, "shutting_down", False):  # shutdown_kernel's own interrupt: no cell is running
            return
        await super()._async_interrupt_kernel()

    interrupt_kernel = _async_interrupt_kernel


def execute(notebook, output, parameters: dict | None = None, **kwargs):
    """Run ``notebook`` with papermill into ``output`` (``parameters`` into its parameters cell) with
    the ``python3`` kernel and this repository as the working folder, quietly (:class:`QuietKernelManager`).

    What the cells print reaches this process's ``sys.stdout`` / ``sys.stderr`` as it is printed,
    warnings and progress bars included (rich outputs such as tables and figures stay in ``output``).
    papermill's ``log_output=True`` would send it to the ``papermill`` logger instead, where stdout is
    at INFO and so shows nowhere unless logging is configured, and stderr is a WARNING record per chunk
    (a new line for every redraw of a progress bar). A failing cell raises ``papermill.PapermillExecutionError`` with its traceback, as before.
    ``kwargs`` go to ``papermill.execute_notebook`` and win over these defaults.
    """
    options = dict(kernel_name="python3", cwd=str(ROOT), progress_bar=False, log_output=False,
                   stdout_file=sys.stdout, stderr_file=sys.stderr, kernel_manager_class=QuietKernelManager)
    options.update(kwargs)
    return papermill.execute_notebook(str(notebook), str(output), parameters=parameters or {}, **options)


def steps(data: str, out: Path) -> list[tuple[str, dict]]:
    """(notebook, parameters) in order: the chain's first :data:`STEPS` steps, every one writing below
    ``out``; 03_train runs its default preset (cpu_demo: uda warm-started by source_only)."""
    return chain(data, out)[:STEPS]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m kit.bench.demo", description=__doc__,
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
        execute(ROOT / "notebooks" / f"{name}.ipynb", out / f"{name}.ipynb", parameters)
        record_output(out / f"{name}.ipynb")
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"== {name} done in {seconds[name]:.0f} s", flush=True)

    predicted = json.loads((out / "predict" / "metrics.json").read_text())
    copy_file(out / "predict" / "submission.csv", out / "submission.csv")
    seconds["total"] = round(time.perf_counter() - started, 1)
    # the run's method as its config.json records it (kit.predict.runs would load torch for one field)
    method = json.loads((out / "runs" / RUN_NAME / "config.json").read_text())["method"]
    summary = {"fisheye_test_mIoU": predicted["mIoU"], "iou": predicted["iou"], "method": method,
               "run": str(out / "runs" / RUN_NAME), "seconds": seconds}
    write_json(out / "metrics.json", summary)
    print(f"\nfisheye test mIoU ({method}): {predicted['mIoU']:.4f}")
    print(f"results in {out.resolve()}: submission.csv, metrics.json, executed notebooks 01–04 and their figures")
    print(f"total {seconds['total'] / 60:.1f} min")


if __name__ == "__main__":
    main()
