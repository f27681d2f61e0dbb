"""Every command in README.md's bash blocks runs, as written, at tiny scale where it trains: a recipe
shown in the README cannot rot. Each command kind has one handler below; a command no handler knows
fails the test, so a new README command comes with a way to run it. A papermill command's parameters
are read as papermill's command line reads them, and its notebook's cells run in this process
(tests/notebook_cells.py; tests/test_notebooks_run.py runs every notebook through papermill itself)."""

import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from notebook_cells import run_cells
from papermill.cli import _resolve_type
from transformers import SegformerForSemanticSegmentation

import kit.bench.cli
import kit.predict.zero_shot
import kit.synth.dataset
from kit.models.internimage import create_internimage
from kit.models.segformer import is_mit, mit_config
from kit.predict.runs import RunConfig
from kit.train.cli import parse_command_line
from kit.train.config import TrainConfig

pytestmark = pytest.mark.slow  # trains, or starts processes: `pytest -m "not slow"` leaves it out

ROOT = Path(__file__).resolve().parents[1]
# the scale-down: the sizes of the tiny synthetic data (crops of the whole frame, so that a slide
# prediction is one window) and one step; nothing about the recipe itself
SMALL = {"source_size": [64, 96], "target_size": [64, 96], "crop_size": [64, 96], "epochs": 1, "steps_per_epoch": 1,
         "batch_size": 2, "warmup_steps": 1, "mask_block": 8, "eval_limit": 1, "num_workers": 0, "round_epochs": 1,
         "rounds": 1, "amp": "none"}  # amp: the CPU trains in float32 whatever it says


def readme_commands(text: str) -> list[list[str]]:
    """The commands of every ```bash block (continuation lines joined, comments dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append(shlex.split(line))
    return commands


def papermill_parameters(args: list[str]) -> dict:
    """``-p NAME VALUE`` / ``-y "NAME: yaml"`` as papermill's command line reads them."""
    import yaml

    parameters, i = {}, 0
    while i < len(args):
        if args[i] in ("-p", "--parameters"):
            parameters[args[i + 1]] = _resolve_type(args[i + 2])
            i += 3
        elif args[i] in ("-y", "--parameters_yaml"):
            parameters.update(yaml.safe_load(args[i + 1]))
            i += 2
        else:
            raise AssertionError(f"papermill argument {args[i]!r} is not handled by this test")
    return parameters


COMMANDS = readme_commands((ROOT / "README.md").read_text())


def test_the_readme_shows_the_two_commands_and_the_presets():
    assert ["bash", "scripts/demo.sh"] in COMMANDS and ["bash", "scripts/test.sh"] in COMMANDS
    presets = {c[c.index("PRESET") + 1] for c in COMMANDS if "PRESET" in c}
    assert {"solution_a", "t4", "solution_b"} <= presets, presets
    assert (ROOT / ".ci/run").read_text().strip().splitlines()[-1] == "bash scripts/test.sh"  # CI runs the README's


@pytest.fixture
def workplace(tiny, tmp_path, monkeypatch):
    """A folder in which the README's relative paths exist: data/open is the tiny synthetic dataset."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data/open").symlink_to(tiny)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _weights(path: str, encoder: str = "internimage_t") -> None:
    """Random weights in the published layout where a command names some: InternImage-T's official
    key names, or for a MiT a Cityscapes SegFormer of its configuration saved as the hub's, in a
    folder named like the hub id (a local folder wins over the hub)."""
    if Path(path).exists():
        return
    if is_mit(encoder):
        SegformerForSemanticSegmentation(mit_config(encoder, num_labels=19)).save_pretrained(path)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    torch.save(create_internimage(encoder).state_dict(), path)


def _scaled_down(parameters: dict) -> dict:
    """The command's parameters with :data:`SMALL` on top (as OVERRIDES, replacing any name it sets)."""
    config = TrainConfig.from_parameters(parameters)  # the recipe as written, before the scale-down
    small = dict(SMALL)
    if config.pretrained is True:  # no internet here: random weights instead of the hub's
        small["pretrained"] = False
    if config.border_threshold is not None:  # the real data's 108 does not fit the synthetic mean image: Otsu
        small["border_threshold"] = None
    parameters = {k: v for k, v in parameters.items() if k.lower() not in small}
    return {**parameters, "OVERRIDES": {**parameters.get("OVERRIDES", {}), **small}}


def _key(config: TrainConfig) -> str:
    return json.dumps({k: v for k, v in dataclasses.asdict(config).items() if k != "run_name"}, sort_keys=True, default=str)


def test_every_readme_command_runs(workplace, monkeypatch):
    trained: dict[str, TrainConfig] = {}  # run name → the recipe as the README writes it
    ran: dict[str, str] = {}  # the scaled-down recipe → the run that trained it
    for command in COMMANDS:
        if command[0] == "bash":  # the two commands: the tests are CI itself; the main job is the chain's
            assert (ROOT / command[1]).is_file() and command[1] in ("scripts/test.sh", "scripts/demo.sh"), command
            # first steps, which tests/test_notebooks_run.py runs at tiny scale
        elif command[0] == "papermill":
            notebook, parameters = command[1], papermill_parameters(command[3:])
            assert command[2].endswith(".ipynb") and (ROOT / notebook).is_file(), command
            if notebook == "notebooks/03_train.ipynb":
                small = _scaled_down(parameters)
                key = _key(TrainConfig.from_parameters(small))
                if key not in ran:  # t4 is solution_a at other sizes: at tiny sizes the two are one run
                    recipe = TrainConfig.from_parameters(small)
                    if recipe.weights:
                        _weights(recipe.weights, recipe.encoder)
                    run_cells(Path(notebook).stem, {**small, "PREVIEW_COUNT": 1}, cwd=workplace)
                    ran[key] = small.get("RUN_NAME", "demo")
                trained[parameters.get("RUN_NAME", "demo")] = TrainConfig.from_parameters(parameters)
            else:
                run_cells(Path(notebook).stem, parameters, cwd=workplace)
        elif command[:4] == ["torchrun", command[1], "-m", "kit.train"] and command[1].startswith("--nproc_per_node="):
            config = parse_command_line(command[4:])  # what every process would train
            assert config == trained[config.run_name], config.run_name  # the recipe of the papermill command
        elif command[1:3] == ["-m", "kit.synth"]:
            args = command[3:]
            args[args.index("--preset") + 1] = "tiny"
            args[args.index("--out") + 1] = str(workplace / "synth")
            kit.synth.dataset.main(args)
            assert (workplace / "synth/test.csv").is_file()
        elif command[1:3] == ["-m", "kit.predict.zero_shot"]:
            _weights(command[3], "mit_b5" if "segformer-b5" in command[3] else "mit_b0")  # no hub here
            kit.predict.zero_shot.main(command[3:])
            name = command[command.index("--run-name") + 1]
            assert RunConfig.from_dict(json.loads((workplace / "outputs/runs" / name / "config.json").read_text())).arch == \
                "cityscapes"
        elif command[1:3] == ["-m", "kit.bench"]:
            # parsed into the scoreboard's call (an hour of training; tests/test_scoreboard.py runs it at tiny scale)
            calls = []
            for name in ("bench_quality", "bench_tune", "bench_ladder"):
                monkeypatch.setattr(kit.bench.cli, name, lambda *a, name=name, **k: calls.append((name, a, k)))
            kit.bench.cli.main(command[3:])
            assert len(calls) == 1 and calls[0][0] == f"bench_{command[3]}", calls
        else:
            pytest.fail(f"README command {shlex.join(command)!r} is run by no handler of tests/test_readme.py")
    assert trained, "no training command in the README"
    for name in ran.values():  # the runs exist and predict as their recipe says
        config = RunConfig.from_dict(json.loads((workplace / "outputs/runs" / name / "config.json").read_text()))
        assert (config.predict_mode, config.predict_scales) == (trained[name].predict_mode, trained[name].predict_scales)
        assert config.values["weights"] == trained[name].weights  # e.g. a Cityscapes preset's hub id reached 03
