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
from scratch import SCRATCH

from kit.train.cli import parse_command_line, torchrun_command
from kit.train.config import TrainConfig
from kit.train.distributed import Context

ROOT = Path(__file__).resolve().parents[1]


def _launch(tmp_path: Path, name: str, nproc: int, **overrides) -> tuple[Path, list[dict], Path]:
    """torchrun ``nproc`` ranks of tests/ddp_worker.py; returns the run folder, each rank's record
    and torchrun's per-rank log folder."""
    values = SCRATCH | dict(runs_dir=str(tmp_path / "runs"), run_name=name, head_channels=16, source_size=[48, 96],
                  target_size=[54, 96], crop_size=[32, 32], epochs=2, steps_per_epoch=3, warmup_steps=2,
                  eval_limit=2, mask_block=8, cpu_threads=1, seed=5)
    values.update(overrides)
    out, logs = tmp_path / f"{name}_out", tmp_path / f"{name}_logs"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(values))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "--redirects", "3", "--log-dir", str(logs), str(ROOT / "tests/ddp_worker.py"),
               str(out / "config.json"), str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return tmp_path / "runs" / name, [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(nproc)], logs


def _rank_log(logs: Path, rank: int) -> str:
    return "".join(p.read_text() for p in sorted(logs.rglob(f"{rank}/std*.log")))


def test_two_ranks_keep_identical_weights_and_only_rank_0_writes(tiny, tmp_path):
    run, (rank0, rank1), logs = _launch(tmp_path, "uda2", 2, data_dir=str(tiny), method="uda", batch_size=1)
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
    assert "epoch 2/2" in _rank_log(logs, 0) and "epoch" not in _rank_log(logs, 1)


def test_two_ranks_reach_the_loss_of_one_process_with_twice_the_batch(tiny, tmp_path):
    """The ranks draw the halves of the global batches one process draws, with the same augmentations
    (SeededDraws). What still differs: BatchNorm normalises each half on its own (the CPU has no
    SyncBatchNorm). Tolerance: 2 % on the mean loss of 6 steps (measured 0.8 %), which
    another seed of the single process misses (measured 4.5 %)."""
    settings = dict(data_dir=str(tiny), method="source_only", epochs=2, steps_per_epoch=3)
    _, (a, b), _ = _launch(tmp_path, "two", 2, batch_size=1, **settings)
    _, (one,), _ = _launch(tmp_path, "one", 1, batch_size=2, **settings)
    _, (other,), _ = _launch(tmp_path, "other", 1, batch_size=2, **{**settings, "seed": 6})

    def mean(losses):
        return float(np.mean([step["ce"] for step in losses]))

    two = (mean(a["losses"]) + mean(b["losses"])) / 2
    print(f"mean CE: 2 ranks × batch 1 {two:.4f}, 1 process × batch 2 {mean(one['losses']):.4f}, "
          f"another seed {mean(other['losses']):.4f}")
    assert two == pytest.approx(mean(one["losses"]), rel=0.02)
    assert mean(other["losses"]) != pytest.approx(mean(one["losses"]), rel=0.02)  # the tolerance can fail


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


def test_two_ranks_resume_to_the_weights_of_an_uninterrupted_run(tiny, tmp_path):
    settings = dict(data_dir=str(tiny), method="fisheye_tf", batch_size=1, epochs=3, steps_per_epoch=2)
    straight, _, _ = _launch(tmp_path, "straight", 2, **settings)
    _launch(tmp_path, "resumed", 2, stop_after_epoch=1, **settings)
    for part in ("out", "logs"):
        (tmp_path / f"resumed_{part}").rename(tmp_path / f"resumed_first_{part}")
    resumed, _, _ = _launch(tmp_path, "resumed", 2, resume=True, **settings)
    a, b = torch.load(straight / "last.pt", weights_only=False), torch.load(resumed / "last.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] == 2
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, rtol=0, atol=0, msg=name)


def _same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, rtol=0, atol=0, msg=name)


def test_two_ranks_train_mask2former(tiny, tmp_path):
    run, (rank0, rank1), _ = _launch(tmp_path, "m2f", 2, data_dir=str(tiny), method="fisheye_tf", arch="mask2former",
                                     head_channels=32, head_options={"queries": 8, "layers": 2}, batch_size=2,
                                     epochs=1, steps_per_epoch=2)  # batch 2: BatchNorm on CPU ranks is per rank
    _same_weights(rank0["model"], rank1["model"])
    assert len(rank0["losses"]) == len(rank1["losses"]) == 2
    assert all(np.isfinite(v) for step in rank0["losses"] + rank1["losses"] for v in step.values())
    assert rank0["losses"] != rank1["losses"]  # each rank its own half of the batch
    saved = torch.load(run / "last.pt", weights_only=False)["model"]
    _same_weights(rank0["model"], saved)


def test_two_ranks_self_train_a_round_on_rank_0s_pseudo_labels(tiny, tmp_path):
    run, (rank0, rank1), logs = _launch(tmp_path, "self2", 2, data_dir=str(tiny), method="self_train", batch_size=1,
                                        epochs=1, rounds=1, round_epochs=1, steps_per_epoch=2)
    _same_weights(rank0["model"], rank1["model"])
    assert (run / "pseudo_round1/pseudo.csv").is_file()  # made once, by rank 0
    assert rank1["writes"] == []
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["round"].tolist() == [0, 1]
    losses = [c for c in metrics if c.startswith("loss_")]
    assert "loss_target_ce" in losses and np.isfinite(metrics.loc[1, losses].to_numpy(float)).all()  # round 1 trained on them
    assert "round 1 pseudo-labels" in _rank_log(logs, 0) and "pseudo" not in _rank_log(logs, 1)
