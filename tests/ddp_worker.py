"""One rank of the DDP tests (tests/test_distributed.py), started by torchrun: trains the config in
``argv[1]`` (a JSON of TrainConfig fields) with ``kit.train.loop.train`` and saves what the rank ended with
to ``argv[2]/rank<R>.pt``: its student and teacher weights, the loss of every step and the files it
wrote through ``kit.train.loop``'s writers."""

import json
import sys
from pathlib import Path

import torch

import kit.train.loop
import kit.train.steps
from kit.train.config import TrainConfig
from kit.train.distributed import context_from_environment, unwrap

config = TrainConfig(**json.loads(Path(sys.argv[1]).read_text()))
out = Path(sys.argv[2])
rank = context_from_environment().rank
seen: dict = {"writes": [], "losses": []}


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


kit.train.loop.wrap, kit.train.loop.EMATeacher = spy_wrap, SpyTeacher
kit.train.loop.supervised_step = kit.train.steps.supervised_step = spy_step
kit.train.loop.train(config)
torch.save({"model": unwrap(seen["model"]).state_dict(),
            "teacher": seen["teacher"].state_dict() if "teacher" in seen else None,
            "losses": seen["losses"], "writes": seen["writes"]}, out / f"rank{rank}.pt")
