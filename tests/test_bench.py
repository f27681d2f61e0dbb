"""python -m kit.bench: the scoreboard commands' arguments reach kit.bench.scoreboard (the benchmarks
themselves: tests/test_scoreboard.py)."""

import pytest

import kit.bench.cli
import kit.bench.variants


@pytest.fixture
def calls(monkeypatch):
    seen = []
    for name in ("bench_quality", "bench_tune", "bench_ladder"):
        monkeypatch.setattr(kit.bench.cli, name, lambda *args, name=name, train_missing, **kw: seen.append((name, args, *kw.values()))
                            if train_missing else seen.append((name, "report only")))
    return seen


def test_seeds_take_one_or_several_values_and_seed_is_an_alias(calls):
    kit.bench.cli.main(["quality", "--data", "d", "--out", "o", "--seed", "3"])
    kit.bench.cli.main(["quality", "--seeds", "0", "5", "--jobs", "2", "--budget", "0.5", "--overwrite"])
    kit.bench.cli.main(["quality"])  # the scoreboard: three seeds at the full budget
    assert calls == [("bench_quality", ("d", "o", 1.0, [3], False, 1, 1)),
                     ("bench_quality", ("data/demo", "outputs/bench_quality", 0.5, [0, 5], True, 1, 2)),
                     ("bench_quality", ("data/demo", "outputs/bench_quality", 1.0, [0, 1, 2], False, 1, 1))]


def test_tune_and_ladder_defaults_and_choices(calls):
    kit.bench.cli.main(["tune", "--variant", "uda_geo_untuned", "uda", "--threads", "2"])
    kit.bench.cli.main(["tune", "--variant", "self_train_warm", "--reference", "fisheye_tf"])
    kit.bench.cli.main(["ladder"])
    kit.bench.cli.main(["ladder", "--rung", "source_only", "mix_background", "--seeds", "4"])
    assert calls == [
        ("bench_tune", ("data/demo_val", "outputs/tune", ["uda_geo_untuned", "uda"], 0.5, [0], False, 2, 1), "uda_geo_untuned"),
        ("bench_tune", ("data/demo_val", "outputs/tune", ["self_train_warm"], 0.5, [0], False, 1, 1), "fisheye_tf"),
        ("bench_ladder", ("data/demo", "outputs/bench_quality", list(kit.bench.variants.LADDER), 1.0, [0, 1, 2], False, 1, 1)),
        ("bench_ladder", ("data/demo", "outputs/bench_quality", ["source_only", "mix_background"], 1.0, [4], False, 1, 1)),
    ]
    with pytest.raises(SystemExit):
        kit.bench.cli.main(["ladder", "--rung", "no_rung"])


def test_report_only_trains_nothing(calls):
    kit.bench.cli.main(["quality", "--report-only"])
    kit.bench.cli.main(["ladder", "--report-only", "--budget", "0.25"])
    assert calls == [("bench_quality", "report only"), ("bench_ladder", "report only")]
