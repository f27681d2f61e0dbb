"""python -m kit.bench: the throughput benchmarks at their smallest sizes, checked on what they print; the
scoreboard commands' arguments reach kit.bench.scoreboard (the benchmarks themselves: tests/test_scoreboard.py)."""

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

import kit.bench.cli
import kit.bench.studies
import kit.bench.variants
from kit.data.fisheye import pinhole_to_fisheye_maps

NUMBER = r"(\d+(?:\.\d+)?)"


def _printed_inverses(rate: float, rate_step: float, value: float, value_step: float, scale: float) -> bool:
    """Whether a printed ``rate`` can be ``scale / v`` for a ``v`` that printed as ``value``: the benchmarks
    print both, each rounded to its step."""
    low, high = value - value_step / 2, value + value_step / 2
    return scale / high - rate_step / 2 <= rate <= (scale / low if low > 0 else np.inf) + rate_step / 2


@pytest.fixture
def calls(monkeypatch):
    seen = []
    for name in ("bench_quality", "bench_tune", "bench_ladder", "bench_adapt"):
        monkeypatch.setattr(kit.bench.cli, name, lambda *args, name=name, train_missing, **kw: seen.append((name, args, *kw.values()))
                            if train_missing else seen.append((name, "report only")))
    return seen


def test_seeds_take_one_or_several_values_and_seed_is_an_alias(calls):
    kit.bench.cli.main(["quality", "--data", "d", "--out", "o", "--seed", "3"])
    kit.bench.cli.main(["quality", "--seeds", "0", "5", "--jobs", "2", "--budget", "0.5", "--overwrite"])
    kit.bench.cli.main(["quality"])  # the scoreboard: three seeds at the full budget
    kit.bench.cli.main(["quality", "--curve", "0.25", "0.5"])  # and at two more budgets, for the plot
    kit.bench.cli.main(["quality", "--method", "uda", "uda_elastic"])  # some rows only
    rows = tuple(kit.bench.scoreboard.QUALITY_ROWS)
    assert calls == [("bench_quality", ("d", "o", 1.0, [3], False, 1, 1), (), rows),
                     ("bench_quality", ("data/demo", "outputs/bench_quality", 0.5, [0, 5], True, 1, 2), (), rows),
                     ("bench_quality", ("data/demo", "outputs/bench_quality", 1.0, [0, 1, 2], False, 1, 1), (), rows),
                     ("bench_quality", ("data/demo", "outputs/bench_quality", 1.0, [0, 1, 2], False, 1, 1), (0.25, 0.5), rows),
                     ("bench_quality", ("data/demo", "outputs/bench_quality", 1.0, [0, 1, 2], False, 1, 1), (),
                      ("uda", "uda_elastic"))]
    assert rows == ("source_only", "fisheye_tf", "uda", "uda_elastic", "uda_warm", "uda_geo", "self_train", "oracle")
    assert kit.bench.scoreboard.QUALITY_ROWS["uda_elastic"] == {"method": "uda", "distortion_branch": True, "mask_ratio": 0.75}
    assert kit.bench.scoreboard.QUALITY_ROWS["uda"] == {"method": "uda", "mask_ratio": 0.75}  # as measured before 0.25
    assert kit.bench.scoreboard.QUALITY_ROWS["uda_warm"] == {"method": "uda", "init_from": "@source_only"}  # the recipe's


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


def test_adapt_trains_its_candidates_at_equal_image_passes_on_validation_data(calls, monkeypatch):
    kit.bench.cli.main(["adapt", "--variant", "uda_rcs", "uda_rcs_fda", "--jobs", "2"])
    kit.bench.cli.main(["adapt", "--data", "data/val2", "--reference", "uda", "--seeds", "0", "1"])
    assert calls == [
        ("bench_adapt", ("data/demo_val", "outputs/adapt", ["uda_rcs", "uda_rcs_fda"], 0.5, [0], False, 1, 2), "source_only_rcs"),
        ("bench_adapt", ("data/val2", "outputs/adapt", list(kit.bench.variants.ADAPT_VARIANTS), 0.5, [0, 1], False, 1, 1), "uda"),
    ]
    with pytest.raises(SystemExit):
        kit.bench.cli.main(["adapt", "--variant", "nope"])
    seen = {}
    monkeypatch.setattr(kit.bench.studies, "run_jobs", lambda data, out, jobs, *a, **kw: seen.setdefault("jobs", jobs) and {})
    monkeypatch.setattr(kit.bench.studies, "report", lambda *a, **kw: "")
    kit.bench.studies.bench_adapt("d", "o", ["source_only_rcs", "uda_rcs_mix"], 0.5, [0, 2])
    assert [(j.key, j.passes, j.overrides) for j in seen["jobs"]] == [
        ("source_only_rcs_seed0_16000p", True, {"method": "source_only", "rare_class_sampling": True}),
        ("uda_rcs_mix_seed0_16000p", True, {"method": "uda", "mask_ratio": 0.75, "rare_class_sampling": True,
                                            "distortion_branch": True, "class_mix": True}),
        ("source_only_rcs_seed2_16000p", True, {"method": "source_only", "rare_class_sampling": True}),
        ("uda_rcs_mix_seed2_16000p", True, {"method": "uda", "mask_ratio": 0.75, "rare_class_sampling": True,
                                            "distortion_branch": True, "class_mix": True})]
    with pytest.raises(ValueError, match="unknown variant.*'nope'"):
        kit.bench.studies.bench_adapt("d", "o", ["uda", "nope"], 0.5, [0])


def test_report_only_trains_nothing(calls):
    kit.bench.cli.main(["quality", "--report-only"])
    kit.bench.cli.main(["ladder", "--report-only", "--budget", "0.25"])
    assert calls == [("bench_quality", "report only"), ("bench_ladder", "report only")]


@pytest.mark.slow
def test_the_gpu_check_runs_its_cases_on_a_cpu_and_fails_on_a_nan(tiny, tmp_path, monkeypatch, capsys):
    """The GPU check's code at toy sizes on the CPU (no test depends on a GPU): every case trains,
    the table has a row per case, and a non-finite loss fails the case and the exit code."""
    import pandas as pd

    import kit.bench.gpu

    args = ["--device", "cpu", "--data-dir", str(tiny), "--out", str(tmp_path / "gpu"), "--size", "32", "--steps", "1",
            "--images", "3", "--batch-size", "2", "--uda-encoder", "pvt_v2_b0"]
    assert kit.bench.gpu.main(args) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0] for row in rows] == [
        "| uda pvt_v2_b0 32² bf16", "| uda pvt_v2_b0 32² fp16", "| uda pvt_v2_b0 32² none",
        "| mask2former internimage_t 32² bf16", "| pseudo-label 3 images (whole + flip)"]
    assert all(row.endswith("| ok |") for row in rows)

    def diverging(config):  # the run the first call trained, with a NaN loss (training it again proves nothing)
        run = Path(config.runs_dir) / config.run_name
        metrics = pd.read_csv(run / "metrics.csv")
        metrics.loc[0, "loss_ce"] = float("nan")
        metrics.to_csv(run / "metrics.csv", index=False)
        return run

    monkeypatch.setattr(kit.bench.gpu, "train", diverging)
    with pytest.raises(SystemExit) as exit_:  # through python -m kit.bench's command line
        kit.bench.cli.main(["gpu", *args])
    assert exit_.value.code == 1
    assert "FloatingPointError: a loss is not finite" in capsys.readouterr().out


def test_the_scale_dry_run_passes_each_notebook_parameters_it_has():
    """``python -m kit.bench scale`` runs at full size only by hand (half an hour): its stages must at
    least name parameters their notebooks have and TrainConfig fields that exist."""
    import dataclasses
    from pathlib import Path

    import papermill

    import kit.bench.scale
    from kit.train.config import TrainConfig

    root = Path(__file__).resolve().parents[1]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    stages = kit.bench.scale.stages("data", Path("out"))
    assert [s[1] for s in stages] == ["01_eda", "02_labels_and_augment", "03_train", "03_train", "06_pseudo_label",
                                      "04_predict", "05_ensemble"]
    for _, notebook, parameters, _, _ in stages:
        known = papermill.inspect_notebook(str(root / f"notebooks/{notebook}.ipynb"))
        assert set(parameters) <= set(known), (notebook, set(parameters) - set(known))
        assert set(parameters.get("OVERRIDES", {})) <= fields


def test_the_rle_bench_encodes_like_the_baseline_and_stops_when_it_does_not(capsys, monkeypatch):
    kit.bench.cli.main(["rle", "--count", "2", "--seed", "1"])  # 3365 runs on average: no rounding hides one
    lines = capsys.readouterr().out.splitlines()
    rng = np.random.default_rng(1)  # the bench's maps again; their runs counted one by one
    maps = [kit.bench.cli.fake_fisheye_label_map(rng) for _ in range(2)]
    runs = [sum(1 for _ in itertools.groupby(label_map.ravel().tolist())) for label_map in maps]
    assert lines[0] == f"2 label maps at 960x540, {np.mean(runs):.0f} runs per map on average"
    for line, name in zip(lines[1:3], ("baseline (12 passes):", "kit.competition.rle  (1 pass):")):
        pattern = re.escape(name) + rf"\s+{NUMBER} maps/s  \({NUMBER} s\)"
        rate, seconds = map(float, re.fullmatch(pattern, line).groups())
        assert rate > 0 and _printed_inverses(rate, 0.1, seconds, 0.01, scale=2)
    assert re.fullmatch(rf"speed-up: {NUMBER}x   strings identical: True", lines[3])

    encode = kit.bench.cli.encode_label_map

    def class_0_off_by_one(label_map):
        strings = encode(label_map)
        start, *rest = strings[0].split(" ")
        return [" ".join([str(int(start) + 1), *rest]), *strings[1:]]

    monkeypatch.setattr(kit.bench.cli, "encode_label_map", class_0_off_by_one)
    with pytest.raises(SystemExit, match="kit.competition.rle output differs from the baseline"):
        kit.bench.cli.main(["rle", "--count", "1"])
    assert capsys.readouterr().out.splitlines()[-1].endswith("strings identical: False")


def test_the_warp_bench_times_building_the_maps_against_reusing_them(capsys):
    kit.bench.cli.main(["warp", "--repeats", "2"])
    pattern = (rf"(\w+)\s+(\d+)x(\d+) -> (\d+)x(\d+): first call\s+{NUMBER} ms, "
               rf"cached maps\s+{NUMBER} ms/pair \(\s*{NUMBER} pairs/s\)")
    rows = [re.fullmatch(pattern, line).groups() for line in capsys.readouterr().out.splitlines()]
    assert [row[:5] for row in rows] == [("competition", "2048", "1024", "1920", "1080"),
                                         ("demo", "512", "256", "480", "270")]
    for _first, cached, rate in (map(float, row[5:]) for row in rows):
        assert 0 < cached and _printed_inverses(rate, 0.1, cached, 0.1, scale=1000)
    assert float(rows[0][5]) > float(rows[0][6])  # 2 million rays projected, against one remap
    # the demo's camera: built by the first call, reused by the two timed ones
    assert pinhole_to_fisheye_maps.cache_info()[:2] == (2, 1)  # (hits, misses)


@pytest.mark.slow
def test_the_models_bench_counts_parameters_against_published_ones_and_times_each_model(capsys, monkeypatch):
    steps = []
    monkeypatch.setattr(kit.bench.cli, "bench_encoder_steps", steps.append)  # next test: it trains three models
    kit.bench.cli.main(["models", "--size", "32", "--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert steps == [1]
    encoder, head, total, off = map(float, re.fullmatch(
        rf"internimage_t: encoder {NUMBER}M \+ ImageNet head {NUMBER}M = {NUMBER}M, published 30M .*, ([+-]\d+\.\d)%",
        lines[0]).groups())
    # printed to 0.01M and 0.1 %
    assert encoder + head == pytest.approx(total, abs=0.016) and off == pytest.approx(100 * (total / 30 - 1), abs=0.07)
    assert abs(off) < 1.0  # InternImage-T: 30M
    assert "1×3×32×32" in lines[2]
    encoders = {name: (float(params), float(ms), channels) for name, params, ms, channels in
                (re.fullmatch(rf"(\w+)\s+{NUMBER}M\s+{NUMBER}  (\[.*\])", line).groups() for line in lines[4:7])}
    # published parameter counts less the ImageNet classifier (features_only): PVTv2-b1 14.0M − 0.5M,
    # ConvNeXt-T 28.6M − 0.8M; the stage widths of the three papers
    assert {name: (params, channels) for name, (params, _, channels) in encoders.items()} == {
        "internimage_t": (pytest.approx(encoder, abs=0.06), "[64, 128, 256, 512]"),
        "pvt_v2_b1": (pytest.approx(13.5, abs=0.1), "[64, 128, 320, 512]"),
        "convnext_tiny": (pytest.approx(27.8, abs=0.1), "[96, 192, 384, 768]"),
    }
    assert all(ms > 0 for _, ms, _ in encoders.values())
    heads = {name: (float(params), float(ms)) for name, params, ms in
             (re.fullmatch(rf"(\w+) \+ internimage_t\s+{NUMBER}M\s+{NUMBER}", line).groups() for line in lines[-2:])}
    assert list(heads) == ["upernet", "mask2former"] and all(ms > 0 for _, ms in heads.values())
    # Mask2Former's head on a Swin-T: 47M in all less the 28M encoder (Cheng et al. 2022, Table 1)
    assert heads["mask2former"][0] == pytest.approx(19.0, rel=0.1)


def test_the_training_step_bench_times_the_encoders_taking_turns(capsys):
    kit.bench.cli.bench_encoder_steps(1, names=("pvt_v2_b0",))
    lines = capsys.readouterr().out.splitlines()
    assert "daformer 64, batch 8 × 3×128×128" in lines[1] and "median of 1" in lines[1]
    name, params, seconds, ratio = re.fullmatch(rf"(\w+)\s+{NUMBER}M\s+{NUMBER}\s+{NUMBER}", lines[-1]).groups()
    # PVTv2-b0: 3.7M published, less its 0.26M ImageNet classifier
    assert (name, float(params), float(ratio)) == ("pvt_v2_b0", pytest.approx(3.41, abs=0.01), 1.0)
    assert float(seconds) > 0


def test_the_infer_bench_predicts_alike_batched_or_one_window_at_a_time(capsys):
    kit.bench.cli.main(["infer", "--image", "64", "128", "--window", "64", "64", "--stride", "32", "64",
                        "--channels", "16", "--count", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("daformer + pvt_v2_b0 (head channels 16), frames 480x270 → image 64x128 (H×W)")
    rows = [re.fullmatch(rf"(.+?)\s+{NUMBER} images/s  \(\s*{NUMBER} ms/image\)", line).groups() for line in lines[1:6]]
    assert [row[0] for row in rows] == ["whole", "slide, batch 8", "slide, 1 window at a time",
                                        "tta whole (flip, 3 scales)", "tta slide (flip, 3 scales)"]
    for _, rate, ms in rows:
        assert _printed_inverses(float(rate), 0.01, float(ms), 1.0, scale=1000)
    difference = float(re.fullmatch(r"slide batched vs one window at a time: max abs probability difference (\S+)",
                                    lines[6]).group(1))
    assert difference < 1e-5  # the same windows and sums, batched: float32 rounding only


def test_the_dice_tool_switches_dice_where_a_method_has_it_and_refuses_where_it_has_none():
    from kit.bench.tools import tool_switch

    assert tool_switch("dice", "fisheye_tf") == ("nodice", {"dice_weight": 0.0})  # solution B's: on in the recipe
    assert tool_switch("dice", "self_train") == ("nodice", {"dice_weight": 0.0})
    assert tool_switch("dice", "uda") == ("dice", {"uda_dice_weight": 1.0})  # off in the recipe: switched on
    assert tool_switch("dice", "uda_geo") == ("dice", {"uda_dice_weight": 1.0})
    assert tool_switch("norcs", "oracle") == ("norcs", {"rare_class_sampling": False})
    for method in ("source_only", "oracle"):  # dice_weight is read by no step of theirs (kit.train.loop)
        with pytest.raises(ValueError, match=f"{method} trains without Dice loss"):
            tool_switch("dice", method)
    with pytest.raises(ValueError, match="unknown tool 'tta'"):
        tool_switch("tta", "uda")
