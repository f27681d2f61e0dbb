"""One rank of the DDP tests (tests/test_distributed.py), started by torchrun: runs, one after the other
in one process group, the jobs of ``argv[1]`` (a JSON list of ``[name, values]``): values of TrainConfig
fields train, and each job's record (:func:`train_recorded`) goes to ``argv[2]/<name>_rank<R>.pt``;
``{"label": run folder, "data_dir": …, "out": …}`` pseudo-labels with the run's ``last.pt``, the ranks
sharing the images. A line ``job <name>``
on stdout starts each job's part of the rank's log. The tests also call :func:`train_recorded` in their
own process for the single-process runs they compare with."""

import json
import sys
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

import kit.data.datasets
import kit.train.loop
import kit.train.steps
from kit.predict.pseudo import make_pseudo_labels
from kit.predict.runs import load_run
from kit.train.config import TrainConfig
from kit.train.distributed import context_from_environment, unwrap


@contextmanager
def spied(seen: dict):
    """``kit.train.loop`` and ``kit.data.datasets`` recording into ``seen`` what a training does: the
    wrapped model, the teacher, every step's losses, the source draws and the files written."""
    loop, steps, draws = kit.train.loop, kit.train.steps, kit.data.datasets.SeededDraws
    saved = [(module, name, getattr(module, name)) for module, name in [
        (loop, "save_checkpoint"), (loop, "link_file"), (loop, "write_json"), (loop, "write_csv"), (loop, "wrap"),
        (loop, "EMATeacher"), (loop, "supervised_step"), (steps, "supervised_step"), (draws, "__iter__")]]
    original = {(module, name): value for module, name, value in saved}

    def writer(name):
        def recorded(path, *args, **kwargs):
            written = args[0] if name == "link_file" else path  # link_file(source, destination)
            seen["writes"].append(f"{name} {Path(written).name}")
            return original[loop, name](path, *args, **kwargs)
        return recorded

    def wrap(model, context, device):
        seen["model"] = original[loop, "wrap"](model, context, device)
        return seen["model"]

    class Teacher(original[loop, "EMATeacher"]):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen["teacher"] = self

    def supervised_step(*args, **kwargs):
        losses = original[steps, "supervised_step"](*args, **kwargs)
        seen["losses"].append(losses)
        return losses

    def drawn(self):
        for draw in original[draws, "__iter__"](self):
            if self.stream == 0:  # the source images
                seen["draws"].append(draw)
            yield draw

    for name in ("save_checkpoint", "link_file", "write_json", "write_csv"):
        setattr(loop, name, writer(name))
    loop.wrap, loop.EMATeacher, draws.__iter__ = wrap, Teacher, drawn
    loop.supervised_step = steps.supervised_step = supervised_step
    try:
        yield seen
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


def train_recorded(values: dict) -> dict:
    """Train ``TrainConfig(**values)``; what this process ended with: its student and teacher weights,
    the loss of every step, the source images it drew (``(index, seed)`` of stream 0) and the files it
    wrote through ``kit.train.loop``'s writers."""
    seen: dict = {"writes": [], "losses": [], "draws": []}
    with spied(seen):
        kit.train.loop.train(TrainConfig(**values))
    return {"model": unwrap(seen["model"]).state_dict(),
            "teacher": seen["teacher"].state_dict() if "teacher" in seen else None,
            "losses": seen["losses"], "writes": seen["writes"], "draws": seen["draws"]}


def label_shares(run: str, data_dir: str, out: str) -> None:
    """Pseudo-label ``data_dir``'s target images with ``run``'s ``last.pt`` (every rank its share)."""
    make_pseudo_labels([load_run(run, "last.pt", device="cpu")], data_dir, out, quantile=0.5, cap=0.9,
                       threshold_images=None, progress=False)


def main(jobs_path: str, out: str) -> None:
    rank = context_from_environment().rank
    dist.init_process_group("gloo")  # one group for every job: train() uses it and leaves it
    try:
        for name, values in json.loads(Path(jobs_path).read_text()):
            print(f"job {name}", flush=True)
            if "label" in values:
                label_shares(values["label"], values["data_dir"], values["out"])
            else:
                torch.save(train_recorded(values), Path(out) / f"{name}_rank{rank}.pt")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
