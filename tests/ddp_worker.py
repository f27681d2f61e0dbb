"""One rank of the DDP tests (tests/test_distributed.py), started by torchrun: trains, one after the
other in one process group, the jobs of ``argv[1]`` (a JSON list of ``[name, TrainConfig fields]``) with
``kit.train.loop.train``, and saves what the rank ended each job with to ``argv[2]/<name>_rank<R>.pt``:
its student and teacher weights, the loss of every step, the source images it drew (``(index, seed)``
of stream 0) and the files it wrote through ``kit.train.loop``'s writers. A line ``job <name>`` on stdout starts each job's part of the rank's log."""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import kit.data.datasets
import kit.train.loop
import kit.train.steps
from kit.train.config import TrainConfig
from kit.train.distributed import context_from_environment, unwrap

jobs = json.loads(Path(sys.argv[1]).read_text())
out = Path(sys.argv[2])
context = context_from_environment()
seen: dict = {}


def spy(name, function):
    def recorded(path, *args, **kwargs):
        written = args[0] if name == "link_file" else path  # link_file(source, destination)
        seen["writes"].append(f"{name} {Path(written).name}")
        return function(path, *args, **kwargs)
    return recorded


for name in ("save_checkpoint", "link_file", "write_json", "write_csv"):
    setattr(kit.train.loop, name, spy(name, getattr(kit.train.loop, name)))
wrap, teacher_class, supervised_step = kit.train.loop.wrap, kit.train.loop.EMATeacher, kit.train.steps.supervised_step


def spy_wrap(model, context, device):
    seen["model"] = wrap(model, context, device)
    return seen["model"]


class SpyTeacher(teacher_class):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        seen["teacher"] = self


def spy_step(*args, **kwargs):
    losses = supervised_step(*args, **kwargs)
    seen["losses"].append(losses)
    return losses


draws_of = kit.data.datasets.SeededDraws.__iter__


def spy_draws(self):
    for draw in draws_of(self):
        if self.stream == 0:
            seen["draws"].append(draw)
        yield draw


kit.data.datasets.SeededDraws.__iter__ = spy_draws
kit.train.loop.wrap, kit.train.loop.EMATeacher = spy_wrap, SpyTeacher
kit.train.loop.supervised_step = kit.train.steps.supervised_step = spy_step
if context.world_size > 1:  # one group for every job: train() uses it and leaves it
    dist.init_process_group("gloo")
for name, values in jobs:
    print(f"job {name}", flush=True)
    seen.clear()
    seen.update(writes=[], losses=[], draws=[])
    kit.train.loop.train(TrainConfig(**values))
    torch.save({"model": unwrap(seen["model"]).state_dict(),
                "teacher": seen["teacher"].state_dict() if "teacher" in seen else None,
                "losses": seen["losses"], "writes": seen["writes"], "draws": seen["draws"]}, out / f"{name}_rank{context.rank}.pt")
if dist.is_initialized():
    dist.destroy_process_group()
