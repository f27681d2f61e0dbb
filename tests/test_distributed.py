"""Training on many processes (kit.train.distributed): torchrun starts 2 CPU ranks on the gloo backend."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from ddp_worker import train_recorded
from isolation import process_state_kept
from scratch import SCRATCH

from kit.train.cli import parse_command_line, torchrun_command
from kit.train.config import TrainConfig
from kit.train.distributed import Context

pytestmark = pytest.mark.slow  # trains, or starts processes: `pytest -m "not slow"` leaves it out

ROOT = Path(__file__).resolve().parents[1]


BASE = SCRATCH | dict(head_channels=16, source_size=[48, 96], target_size=[54, 96], crop_size=[32, 32], epochs=2,
                     steps_per_epoch=3, warmup_steps=2, eval_limit=2, mask_block=8, cpu_threads=1, seed=5)
# what the two ranks train, one job after the other in one launch (each launch starts processes that import
# torch and the kit again): record name → (run name, TrainConfig fields over BASE)
TWO_RANKS = {
    "uda2": ("uda2", dict(method="uda", batch_size=1)),
    "two": ("two", dict(method="source_only", batch_size=1)),
    "straight": ("straight", dict(method="fisheye_tf", batch_size=1, epochs=3, steps_per_epoch=2)),
    "resumed_first": ("resumed", dict(method="fisheye_tf", batch_size=1, epochs=3, steps_per_epoch=2,
                                      stop_after_epoch=1)),
    "resumed": ("resumed", dict(method="fisheye_tf", batch_size=1, epochs=3, steps_per_epoch=2, resume=True)),
    "m2f": ("m2f", dict(method="fisheye_tf", arch="mask2former", head_channels=32, head_options={"queries": 8, "layers": 2},
                        batch_size=2, epochs=1, steps_per_epoch=2)),  # batch 2: BatchNorm on CPU ranks is per rank
    "self2": ("self2", dict(method="self_train", batch_size=1, epochs=1, rounds=1, round_epochs=1, steps_per_epoch=2)),
    "rcs2": ("rcs2", dict(method="source_only", batch_size=1, epochs=1, rare_class_sampling=True, rcs_temperature=0.5)),
    "label2": (None, dict(label="two")),  # pseudo-labels with the run "two" ended with
}
ONE_PROCESS = {  # what they are compared with, trained in this process
    "one": ("one", dict(method="source_only", batch_size=2)),
    "other": ("other", dict(method="source_only", batch_size=2, seed=6)),
    "rcs1": ("rcs1", dict(method="source_only", batch_size=2, epochs=1, rare_class_sampling=True, rcs_temperature=0.5)),
    "uniform1": ("uniform1", dict(method="source_only", batch_size=2, epochs=1)),
}


class Launch:
    """One torchrun launch of ``nproc`` ranks of tests/ddp_worker.py training ``jobs`` in turn."""

    def __init__(self, folder: Path, nproc: int, jobs: dict, data_dir: Path) -> None:
        self.folder, self.jobs = folder, jobs
        out, self.logs = folder / "out", folder / "logs"
        out.mkdir(parents=True)
        listed = [[record, self._values(record, run, values, data_dir)] for record, (run, values) in jobs.items()]
        (out / "jobs.json").write_text(json.dumps(listed))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   "--redirects", "3", "--log-dir", str(self.logs), str(ROOT / "tests/ddp_worker.py"),
                   str(out / "jobs.json"), str(out)]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        self.records = {name: [torch.load(out / f"{name}_rank{r}.pt", weights_only=False) for r in range(nproc)]
                        for name, (_, values) in jobs.items() if "label" not in values}

    def _values(self, record: str, run: str | None, values: dict, data_dir: Path) -> dict:
        """What tests/ddp_worker.py reads for a job: TrainConfig fields over BASE, or a labelling job's run
        folder, data and output folder."""
        if "label" in values:
            return dict(label=str(self.folder / "runs" / values["label"]), data_dir=str(data_dir),
                        out=str(self.folder / record))
        return BASE | dict(data_dir=str(data_dir), runs_dir=str(self.folder / "runs"), run_name=run) | values

    def run(self, record: str) -> Path:
        return self.folder / "runs" / self.jobs[record][0]

    def log(self, record: str, rank: int) -> str:
        """What rank ``rank`` printed while it trained job ``record``."""
        text = "".join(p.read_text() for p in sorted(self.logs.rglob(f"{rank}/std*.log")))
        return text.split(f"job {record}\n", 1)[1].split("\njob ", 1)[0]


@pytest.fixture(scope="module")
def two_ranks(tiny, tmp_path_factory) -> Launch:
    return Launch(tmp_path_factory.mktemp("two_ranks"), 2, TWO_RANKS, tiny)


@pytest.fixture(scope="module")
def one_process(tiny, tmp_path_factory) -> dict[str, dict]:
    """Record name → what :func:`ddp_worker.train_recorded` recorded of each job of ONE_PROCESS."""
    runs = tmp_path_factory.mktemp("one_process")
    with process_state_kept():  # BASE's cpu_threads = 1, and each training seeds the generators
        return {record: train_recorded(BASE | dict(data_dir=str(tiny), runs_dir=str(runs), run_name=run) | values)
                for record, (run, values) in ONE_PROCESS.items()}


def test_two_ranks_keep_identical_weights_and_only_rank_0_writes(two_ranks):
    run, (rank0, rank1) = two_ranks.run("uda2"), two_ranks.records["uda2"]
    for part in ("model", "teacher"):
        assert rank0[part].keys() == rank1[part].keys()
        for name, value in rank0[part].items():
            torch.testing.assert_close(rank1[part][name], value, rtol=0, atol=0, msg=f"{part}.{name}")
    saved = torch.load(run / "last.pt", weights_only=False)
    for name, value in rank0["teacher"].items():  # the teacher moved away from its start, and was saved
        torch.testing.assert_close(saved["teacher"][name], value, rtol=0, atol=0)
    assert rank1["writes"] == []
    assert sorted(set(rank0["writes"])) == ["link_file best.pt", "save_checkpoint last.pt",
                                            "write_csv metrics.csv", "write_json config.json"]
    assert sorted(p.name for p in run.iterdir()) == [".kit-outputs", "best.pt", "config.json", "last.pt", "metrics.csv"]
    assert "epoch 2/2" in two_ranks.log("uda2", 0) and "epoch" not in two_ranks.log("uda2", 1)


def test_two_ranks_reach_the_loss_of_one_process_with_twice_the_batch(two_ranks, one_process):
    """The ranks draw the halves of the global batches one process draws, with the same augmentations
    (SeededDraws). What still differs: BatchNorm normalises each half on its own (the CPU has no
    SyncBatchNorm; at one image per rank that moves each step's loss by a few percent). Compared step by
    step, since a mean over the 6 steps near chance level agrees by chance (another seed's did on the
    issue 27 data: 2.6124 against 2.6123): the two ranks' global-batch loss is within 2 % of the single
    process's per step on average (measured 1.8 %), which another seed misses (measured 2.6 %)."""
    (a, b), one, other = two_ranks.records["two"], one_process["one"], one_process["other"]

    def ce(losses):
        return np.array([step["ce"] for step in losses])

    two = (ce(a["losses"]) + ce(b["losses"])) / 2  # each step's loss over the global batch
    reference = ce(one["losses"])
    off_two, off_other = (float(np.mean(np.abs(x - reference)) / np.mean(reference)) for x in (two, ce(other["losses"])))
    print(f"mean per-step difference to 1 process × batch 2: 2 ranks × batch 1 {off_two:.2%}, another seed {off_other:.2%}")
    assert off_two < 0.02
    assert off_other > 0.02  # the tolerance can fail


def test_two_ranks_draw_the_rare_class_batches_of_one_process(two_ranks, one_process):
    """Rare-class sampling under torchrun: rank r's source draws are the r-th halves of the global
    batches one process with twice the batch draws (images and augmentation seeds), and differ from
    uniform sampling's."""
    (rank0, rank1), one, uniform = two_ranks.records["rcs2"], one_process["rcs1"], one_process["uniform1"]
    steps = len(one["losses"])
    assert len(rank0["draws"]) == len(rank1["draws"]) == steps and len(one["draws"]) == 2 * steps
    assert [draw for pair in zip(rank0["draws"], rank1["draws"]) for draw in pair] == one["draws"]
    assert [i for i, _ in uniform["draws"]] != [i for i, _ in one["draws"]]
    _same_weights(rank0["model"], rank1["model"])


def test_the_torchrun_command_of_a_config_parses_back_to_the_same_config(tmp_path):
    config = TrainConfig(method="fisheye_tf", arch="mask2former", epochs=3, crop_size=(64, 128), runs_dir="my runs",
                         head_options={"queries": 20, "layers": 3}, clip_grad=None)
    command = torchrun_command(config, nproc_per_node=4)
    assert command.startswith("torchrun --nproc_per_node=4 -m kit.train --set ")
    assert "EPOCHS=40" not in command and "--set EPOCHS=3" in command  # only what differs from the defaults
    import shlex
    argv = shlex.split(command)[4:]
    assert parse_command_line(argv) == config


def test_the_command_line_reads_a_runs_config_json_and_overrides(tmp_path):
    stored = {**TrainConfig(method="oracle", epochs=7).__dict__, "num_classes": 13, "head_kwargs": {"channels": 256},
              "source_mean": [0.5] * 3, "source_std": [0.2] * 3, "target_mean": [0.5] * 3, "target_std": [0.2] * 3}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(stored))
    config = parse_command_line(["--config", str(path), "--set", "EPOCHS=9", "--set", "run_name=again"])
    assert (config.method, config.epochs, config.run_name) == ("oracle", 9, "again")
    with pytest.raises(ValueError, match=r"unknown training parameter\(s\) \['EPOCH'\]"):
        parse_command_line(["--set", "EPOCH=9"])
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        parse_command_line(["--set", "EPOCHS"])
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        parse_command_line(["--config", str(tmp_path / "nothing.json")])


def test_the_ranks_come_from_torchruns_environment(monkeypatch):
    from kit.train.distributed import context_from_environment
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert context_from_environment() == Context(rank=3, world_size=4, local_rank=1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ValueError, match="RANK 4 is not below WORLD_SIZE 4"):
        context_from_environment()


def test_two_ranks_resume_to_the_weights_of_an_uninterrupted_run(two_ranks):
    straight, resumed = two_ranks.run("straight"), two_ranks.run("resumed")
    first = two_ranks.log("resumed_first", 0)
    assert "epoch 1/3" in first and "epoch 2/3" not in first  # interrupted after its first epoch
    a, b = torch.load(straight / "last.pt", weights_only=False), torch.load(resumed / "last.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2
    assert len(two_ranks.records["resumed"][0]["losses"]) == 2 * 2  # the resumed part trained epochs 1 and 2 only
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, rtol=0, atol=0, msg=name)


def _same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, rtol=0, atol=0, msg=name)


def test_two_ranks_train_mask2former(two_ranks):
    run, (rank0, rank1) = two_ranks.run("m2f"), two_ranks.records["m2f"]
    _same_weights(rank0["model"], rank1["model"])
    assert len(rank0["losses"]) == len(rank1["losses"]) == 2
    assert all(np.isfinite(v) for step in rank0["losses"] + rank1["losses"] for v in step.values())
    assert rank0["losses"] != rank1["losses"]  # each rank its own half of the batch
    saved = torch.load(run / "last.pt", weights_only=False)["model"]
    _same_weights(rank0["model"], saved)


def test_two_ranks_self_train_a_round_on_rank_0s_pseudo_labels(two_ranks):
    run, (rank0, rank1) = two_ranks.run("self2"), two_ranks.records["self2"]
    _same_weights(rank0["model"], rank1["model"])
    assert (run / "pseudo_round1/pseudo.csv").is_file()  # made once, by rank 0
    assert rank1["writes"] == []
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["round"].tolist() == [0, 1]
    losses = [c for c in metrics if c.startswith("loss_")]
    assert "loss_target_ce" in losses and np.isfinite(metrics.loc[1, losses].to_numpy(float)).all()  # round 1 trained on them
    assert "round 1 pseudo-labels" in two_ranks.log("self2", 0) and "pseudo" not in two_ranks.log("self2", 1)


def test_two_ranks_label_their_shares_and_write_what_one_process_writes(two_ranks, tiny):
    """Under torchrun every rank predicts every other image; the histograms and counts are summed, so
    the thresholds, the label files and the table are those of one process labelling all of them."""
    from kit.competition.labels import PSEUDO_LABEL_VALUES
    from kit.competition.layout import read_label
    from kit.predict.pseudo import CSV_NAME, NAMES, make_pseudo_labels
    from kit.predict.runs import load_run

    two, folder = two_ranks.folder / "label2", two_ranks.folder / "one_labels"
    with process_state_kept():
        torch.set_num_threads(1)  # as each rank
        one = make_pseudo_labels([load_run(two_ranks.run("two"), "last.pt", device="cpu")], tiny, folder, quantile=0.5,
                                 cap=0.9, threshold_images=None, progress=False)
    summary = json.loads((two / "summary.json").read_text())
    assert summary["thresholds"] == dict(zip(NAMES, one.thresholds.round(4).tolist()))
    assert summary["table"] == json.loads((one.folder / "summary.json").read_text())["table"]
    assert (two / CSV_NAME).read_text() == (one.folder / CSV_NAME).read_text().replace("/one_labels/", "/label2/")
    names = sorted(p.name for p in (one.folder / "labels").glob("*.png"))
    assert names == sorted(p.name for p in (two / "labels").glob("*.png")) and len(names) >= 2
    for name in names:
        np.testing.assert_array_equal(read_label(two / "labels" / name, PSEUDO_LABEL_VALUES),
                                      read_label(one.folder / "labels" / name, PSEUDO_LABEL_VALUES))
    assert not list(two_ranks.folder.glob(".label2.*"))  # no staging folder left behind
    assert "job label2" in "".join(p.read_text() for p in sorted(two_ranks.logs.rglob("1/std*.log")))  # rank 1 ran it
