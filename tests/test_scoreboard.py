"""The scoreboard: summaries by hand; quality, tune and ladder at a one-step budget on the tiny preset
(reuse of earlier results, resume, refusals, parallel processes, the border used for scoring)."""

import json
import math
import shutil
import statistics

import pytest

import kit.bench.scoreboard
import kit.bench.studies
import kit.bench.variants
import kit.predict.splits
import kit.train.config
from kit.bench.scoreboard import mean_std, summarise, summary_tables
from kit.competition.labels import CLASSES

pytestmark = pytest.mark.slow  # trains, or starts processes: `pytest -m "not slow"` leaves it out

NAN = float("nan")


def _small(monkeypatch) -> float:
    """The tiny preset's frames are small: train and predict at its scale; returns the one-step budget."""
    for name, value in dict(source_size=(48, 96), target_size=(54, 96), crop_size=(32, 32), batch_size=2,
                            pretrained=False, mask_block=8).items():
        monkeypatch.setitem(kit.bench.scoreboard.QUALITY_OVERRIDES, name, value)
    monkeypatch.setitem(kit.bench.scoreboard.QUALITY_OVERRIDES, "eval_limit", 2)
    monkeypatch.setitem(kit.bench.scoreboard.QUALITY_OVERRIDES, "epochs", 1)  # quality's runs (tune's set their own)
    monkeypatch.setattr(kit.bench.scoreboard, "QUALITY_PASSES", SMALL_PASSES * kit.bench.scoreboard.QUALITY_STEPS)
    return 1 / kit.bench.scoreboard.QUALITY_STEPS


# quality's budget at that budget: what self_train's one step per epoch costs here, by hand: 1 epoch + 2 rounds
# of 1 epoch at batch 2 (2 × 3 + 2 × 2 × 6 = 30 image passes) and two rounds of pseudo-labels over the 3 tiny
# target frames, each a threshold pass and a labelling pass with flip (2 × 2 × (3 + 3) × 54·96 / 32² = 121.5)
SMALL_PASSES = 152


@pytest.fixture
def small_quality(monkeypatch):
    return _small(monkeypatch)


@pytest.fixture(scope="module")
def quality_run(tiny, tmp_path_factory):
    """One bench_quality (seed 0) with the small settings, trained once for the tests that read it; tests
    that add to it work on a copy."""
    out = tmp_path_factory.mktemp("quality") / "out"
    with pytest.MonkeyPatch.context() as monkeypatch:
        kit.bench.scoreboard.bench_quality(str(tiny), str(out), _small(monkeypatch), seeds=[0], threads=1)
    return out


def _counting(monkeypatch) -> list[str]:
    """The keys of the runs trained from now on (kit.bench.scoreboard._train_and_score still does the work)."""
    trained, real = [], kit.bench.scoreboard._train_and_score

    def counted(data_dir, out_dir, job, *args):
        trained.append(job.key)
        return real(data_dir, out_dir, job, *args)

    monkeypatch.setattr(kit.bench.scoreboard, "_train_and_score", counted)
    return trained


def _table(text: str, first: str) -> dict[str, dict[str, str]]:
    """The first markdown table of ``text`` whose header starts with ``first``: row name → column → cell."""
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"| {first} |")))
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(head, cells))
    return rows


# --- summaries, by hand -------------------------------------------------------------------------


def test_mean_std_is_the_sample_std_of_the_finite_values():
    mean, std = mean_std([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3) and std == pytest.approx(math.sqrt(7 / 3))  # Σ(x − x̄)² = 42/9, / (3 − 1)
    assert mean_std([1.0, None, NAN, 3.0]) == pytest.approx((2.0, math.sqrt(2)))  # None and NaN skipped
    mean, std = mean_std([5.0])
    assert mean == 5.0 and math.isnan(std)
    assert all(math.isnan(v) for v in mean_std([None, NAN]))


def _result(name, seed, miou, car, teacher=None):
    iou = {c: 0.1 for c in CLASSES}
    iou["Car"] = car
    r = {"name": name, "seed": seed, "mIoU": miou, "iou": iou, "train_seconds": 10.0 * (seed + 1)}
    return r if teacher is None else {**r, "teacher_mIoU": teacher}


HAND_MADE = [
    _result("source_only", 0, 0.2, 0.4), _result("source_only", 1, 0.3, 0.5),
    _result("fisheye_tf", 0, 0.3, 0.5), _result("fisheye_tf", 1, 0.4, 0.5),
    _result("uda_geo", 0, 0.4, 0.6, teacher=0.49), _result("uda_geo", 1, 0.45, 0.8, teacher=0.50),
    _result("uda_geo", 2, 0.9, 0.1, teacher=0.51),  # no reference has seed 2
    _result("uda", 0, 0.35, 0.5, teacher=0.36), _result("uda", 5, 0.25, 0.5),  # seed 5: no teacher
    _result("oracle", 0, 0.6, 0.9), _result("oracle", 1, 0.5, 0.9),
]


def test_summarise_means_gaps_per_seed_and_pairs_over_shared_seeds():
    summary = summarise(HAND_MADE)
    assert list(summary) == ["source_only", "fisheye_tf", "uda_geo", "uda", "oracle"]
    s = summary["uda_geo"]
    assert s["seeds"] == [0, 1, 2]
    assert s["mIoU"] == pytest.approx(((0.4 + 0.45 + 0.9) / 3, statistics.stdev([0.4, 0.45, 0.9])))
    assert s["iou"]["Car"] == pytest.approx((0.5, math.sqrt(0.13)))  # deviations 0.1, 0.3, -0.4
    assert s["teacher_mIoU"] == pytest.approx((0.5, 0.01))
    assert s["train_seconds"] == pytest.approx(20.0)
    # gap closed per seed: (0.4 − 0.2) / (0.6 − 0.2) = 0.5, (0.45 − 0.3) / (0.5 − 0.3) = 0.75; seed 2 has no ends
    assert s["gap_closed"] == pytest.approx((0.625, 0.25 / math.sqrt(2)))
    assert summary["source_only"]["gap_closed"] == pytest.approx((0.0, 0.0))
    assert summary["oracle"]["gap_closed"] == pytest.approx((1.0, 0.0))
    # paired over the seeds both have (0, 1): mIoU 0.1, 0.05; Car 0.1, 0.3
    fisheye = s["paired"]["fisheye_tf"]
    assert fisheye["seeds"] == [0, 1]
    assert fisheye["mIoU"] == pytest.approx((0.075, 0.05 / math.sqrt(2)))
    assert fisheye["Car"] == pytest.approx((0.2, 0.2 / math.sqrt(2)))
    assert s["paired"]["source_only"]["mIoU"] == pytest.approx((0.175, 0.05 / math.sqrt(2)))
    assert "source_only" not in summary["source_only"]["paired"]  # never against itself
    u = summary["uda"]
    assert "teacher_mIoU" not in u  # seed 5 has no teacher
    assert u["paired"]["fisheye_tf"]["seeds"] == [0]
    assert u["paired"]["fisheye_tf"]["mIoU"][0] == pytest.approx(0.05) and math.isnan(u["paired"]["fisheye_tf"]["mIoU"][1])
    assert u["gap_closed"][0] == pytest.approx(0.375) and math.isnan(u["gap_closed"][1])


def test_summarise_pairs_skip_a_class_a_seed_did_not_score():
    # a class absent from the test split and the prediction has IoU NaN, stored as null in results JSON
    results = [_result("source_only", 0, 0.2, None), _result("source_only", 1, 0.3, 0.5),
               _result("uda", 0, 0.3, 0.4), _result("uda", 1, 0.4, 0.7)]
    paired = summarise(results, ("source_only",))["uda"]["paired"]["source_only"]
    assert paired["mIoU"] == pytest.approx((0.1, 0.0))
    assert paired["Car"][0] == pytest.approx(0.2) and math.isnan(paired["Car"][1])


def test_summary_tables_render_mean_pm_std_and_a_dash_for_what_is_missing():
    lines = summary_tables(summarise(HAND_MADE))
    rows = _table("\n".join(lines), "method")
    assert rows["uda_geo"]["seeds"] == "0,1,2"
    assert rows["uda_geo"]["teacher mIoU"] == "0.5000 ± 0.0100"
    assert rows["uda_geo"]["mIoU"] == f"{(0.4 + 0.45 + 0.9) / 3:.4f} ± {statistics.stdev([0.4, 0.45, 0.9]):.4f}"
    assert rows["uda_geo"]["Δ mIoU vs fisheye_tf"] == "+0.075 ± 0.035"
    assert rows["uda_geo"]["Δ Car vs fisheye_tf"] == "+0.200 ± 0.141"
    assert rows["uda"]["teacher mIoU"] == "–" and rows["source_only"]["teacher mIoU"] == "–"
    assert rows["uda"]["Δ mIoU vs fisheye_tf"] == "+0.050"  # one shared seed: no std
    assert rows["fisheye_tf"]["Δ mIoU vs fisheye_tf"] == "–"
    assert rows["oracle"]["gap closed"] == "100% ± 0%" and rows["uda_geo"]["train s"] == "20"
    classes = _table("\n".join(lines[lines.index(""):]), "method")
    assert classes["uda_geo"]["Car"] == f"0.50 ± {math.sqrt(0.13):.2f}" and classes["uda_geo"]["Road"] == "0.10 ± 0.00"


def test_unknown_variants_and_rungs_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="unknown variant.*'nope'"):
        kit.bench.studies.bench_tune("no_data", str(tmp_path / "tune"), ["uda_geo_untuned", "nope"], 1.0, [0])
    with pytest.raises(ValueError, match="unknown rung.*'no_rung'"):
        kit.bench.studies.bench_ladder("no_data", str(tmp_path / "ladder"), ["no_rung", "source_only"], 1.0, [0])
    with pytest.raises(ValueError, match=r"unknown scoreboard row\(s\) \['uda_mic'\]"):
        kit.bench.scoreboard.bench_quality("no_data", str(tmp_path / "quality"), 1.0, [0], rows=("uda", "uda_mic"))
    assert not any((tmp_path / name).exists() for name in ("tune", "ladder", "quality"))


@pytest.mark.parametrize("table", ["TUNE_VARIANTS", "ADAPT_VARIANTS"])
def test_every_variant_is_a_valid_config_and_starts_from_a_variant_of_its_table(table):
    """A typo in a variant (a field, a value, the run it starts from) fails here, not an hour into a sweep."""
    variants = getattr(kit.bench.variants, table)
    for name, overrides in variants.items():
        start = overrides.get("init_from")
        if isinstance(start, str) and start.startswith("@"):
            assert start[1:] in variants or start[1:] in kit.bench.scoreboard.QUALITY_ROWS, (name, start)
        values = {k: v for k, v in overrides.items() if k != "init_from"}
        config = kit.train.config.TrainConfig(**{**kit.bench.scoreboard.QUALITY_OVERRIDES, **values})
        for key, value in values.items():
            assert getattr(config, key) == (tuple(value) if isinstance(value, list) else value), (name, key)


# --- training at a one-step budget ----------------------------------------------------------------


def test_quality_table_gap_closed(quality_run):
    report = json.loads((quality_run / "quality.json").read_text())
    results, summary = report["results"], report["summary"]
    assert list(results) == [f"{m}_seed0_152p" for m in ("source_only", "fisheye_tf", "uda", "uda_elastic", "uda_warm",
                                                          "uda_geo", "self_train", "oracle")]
    assert all(r["budget_passes"] == 152 and r["seed"] == 0 and not r["resumed"] for r in results.values())
    # every method spent the budget, to within one step per epoch (self_train: exactly one step per epoch)
    # by hand at batch 2: supervised 6 per step, the kit's uda 16 (no elastic copy), uda_elastic and uda_geo 22;
    # uda_warm: source_only for 76 passes (12 steps, 72), then its own 4 uda steps (64)
    steps = {r["name"]: (r["train_steps"], r["image_passes"]) for r in results.values()}
    assert steps == {"source_only": (25, 150), "fisheye_tf": (25, 150), "oracle": (25, 150), "uda": (9, 144),
                     "uda_elastic": (6, 132), "uda_warm": (4, 136), "uda_geo": (6, 132), "self_train": (3, 152)}
    assert results["uda_warm_seed0_152p"]["start"] == "source_only_seed0_76p"
    assert results["uda_elastic_seed0_152p"]["config"]["distortion_branch"] is True
    assert results["uda_seed0_152p"]["config"]["distortion_branch"] is False
    assert all(("teacher_mIoU" in r) == (r["name"] in ("uda", "uda_elastic", "uda_warm", "uda_geo"))
               for r in results.values())
    low, high = results["source_only_seed0_152p"]["mIoU"], results["oracle_seed0_152p"]["mIoU"]
    table = _table((quality_run / "quality.md").read_text(), "method")
    assert math.isfinite(low) and math.isfinite(high) and high != low  # else "gap closed" is not defined
    for r in results.values():
        present = [r["iou"][c] for c in CLASSES if r["iou"][c] is not None]
        assert r["mIoU"] == pytest.approx(sum(present) / len(present))
        assert summary[r["name"]]["mIoU"][0] == pytest.approx(r["mIoU"])
        assert summary[r["name"]]["gap_closed"][0] == pytest.approx((r["mIoU"] - low) / (high - low))
        assert table[r["name"]]["mIoU"] == f"{r['mIoU']:.4f}"  # one seed: no std


def test_a_second_call_reuses_a_changed_config_is_refused_overwrite_retrains(tiny, tmp_path, quality_run,
                                                                            small_quality, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(quality_run, out)
    table = (out / "quality.md").read_text()
    trained = _counting(monkeypatch)
    again = kit.bench.scoreboard.bench_quality(str(tiny), str(out), small_quality, seeds=[0], threads=1)
    assert trained == [] and again == table and (out / "quality.md").read_text() == table
    monkeypatch.setitem(kit.bench.scoreboard.QUALITY_OVERRIDES, "lr_encoder", 1e-3)
    # the first run checked: uda_warm's start, source_only at half the budget
    with pytest.raises(FileExistsError, match=r"source_only_seed0_76p\.json was trained with other settings "
                                              r"\(lr_encoder differ\)"):
        kit.bench.scoreboard.bench_quality(str(tiny), str(out), small_quality, seeds=[0], threads=1)
    assert trained == [] and (out / "quality.md").read_text() == table
    kit.bench.scoreboard.bench_quality(str(tiny), str(out), small_quality, seeds=[0], threads=1, overwrite=True)
    assert sorted(trained) == sorted([*json.loads((quality_run / "quality.json").read_text())["results"],
                                      "source_only_seed0_76p"])
    results = json.loads((out / "quality.json").read_text())["results"]
    assert all(r["config"]["lr_encoder"] == 1e-3 for r in results.values())


def test_an_interrupted_run_is_resumed_and_ends_as_an_uninterrupted_one(tiny, tmp_path, small_quality, monkeypatch):
    # two epochs of one step; the first call stops after epoch 1, as an interrupted run would
    monkeypatch.setattr(kit.bench.scoreboard, "QUALITY_STEPS_PER_EPOCH", 1)
    budget = 2 * small_quality

    def source_only(out):
        text = kit.bench.studies.bench_ladder(str(tiny), str(out), ["source_only"], budget, seeds=[0], threads=1)
        return json.loads((out / "results/source_only_seed0_2.json").read_text()), text

    straight, _ = source_only(tmp_path / "straight")
    assert not straight["resumed"]
    with monkeypatch.context() as interrupted:
        interrupted.setitem(kit.bench.scoreboard.QUALITY_OVERRIDES, "stop_after_epoch", 1)
        source_only(tmp_path / "resumed")
    (tmp_path / "resumed/results/source_only_seed0_2.json").unlink()  # the run stopped before its result
    assert (tmp_path / "resumed/runs/source_only_seed0_2/last.pt").is_file()
    resumed, _ = source_only(tmp_path / "resumed")
    assert resumed["resumed"] and resumed["config"] == straight["config"]
    assert resumed["iou"] == pytest.approx(straight["iou"], nan_ok=True)
    assert resumed["mIoU"] == pytest.approx(straight["mIoU"])


def test_ladder_tables_its_rungs_and_overwrite_leaves_other_results_alone(tiny, tmp_path, small_quality, monkeypatch):
    out = tmp_path / "out"
    trained = _counting(monkeypatch)
    kit.bench.studies.bench_ladder(str(tiny), str(out), ["mix_background", "source_only"], small_quality, seeds=[0, 1],
                                threads=1)
    assert sorted(trained) == sorted(f"{r}_seed{s}_1" for r in ("source_only", "mix_background") for s in (0, 1))
    results = json.loads((out / "ladder.json").read_text())["results"]
    text = (out / "ladder.md").read_text()
    rungs = _table(text, "rung")
    assert rungs["source_only"]["seeds"] == rungs["mix_background"]["seeds"] == "0,1"
    steps = _table(text.split("rung before it")[1], "rung")
    assert list(steps) == ["source_only", "mix_background"]  # ladder order, not the order asked
    assert steps["mix_background"]["adds"] == kit.bench.variants.LADDER["mix_background"][0]
    assert steps["source_only"]["Δ mIoU vs rung before"] == steps["source_only"]["Δ Car vs rung before"] == "–"
    diffs = [results[f"mix_background_seed{s}_1"]["mIoU"] - results[f"source_only_seed{s}_1"]["mIoU"] for s in (0, 1)]
    expected = f"{statistics.mean(diffs):+.4f} ± {statistics.stdev(diffs):.4f}"
    assert steps["mix_background"]["Δ mIoU vs rung before"] == expected
    mious = [results[f"mix_background_seed{s}_1"]["mIoU"] for s in (0, 1)]
    assert steps["mix_background"]["mIoU"] == f"{statistics.mean(mious):.4f} ± {statistics.stdev(mious):.4f}"

    trained.clear()
    kit.bench.scoreboard.bench_quality(str(tiny), str(out), small_quality, seeds=[0], threads=1)
    # quality trains at a budget of image passes, the ladder at steps: no run is shared (uda_warm's start: half)
    assert sorted(trained) == sorted([*(f"{m}_seed0_152p" for m in kit.bench.scoreboard.QUALITY_ROWS),
                                      "source_only_seed0_76p"])

    # overwrite retrains what the call asks for and leaves the other benchmarks' results alone
    trained.clear()
    kit.bench.studies.bench_ladder(str(tiny), str(out), ["mix_background"], small_quality, seeds=[0], threads=1,
                                overwrite=True)
    assert trained == ["mix_background_seed0_1"]
    assert (out / "quality.md").is_file() and (out / "results/uda_geo_seed0_152p.json").is_file()
    assert (out / "results/mix_background_seed1_1.json").is_file()


def test_methods_in_parallel_processes_give_the_sequential_results(tiny, tmp_path, quality_run, small_quality):
    # the spawned processes must train with the caller's (here: patched) settings, not the module's
    kit.bench.scoreboard.bench_quality(str(tiny), str(tmp_path / "two"), small_quality, seeds=[0], threads=1, processes=2)
    one, two = (json.loads((out / "quality.json").read_text())["results"] for out in (quality_run, tmp_path / "two"))
    assert list(one) == list(two)
    for key in one:
        assert two[key]["config"] == one[key]["config"], key
        assert two[key]["iou"] == pytest.approx(one[key]["iou"], nan_ok=True), key


def test_the_benchmark_scores_with_the_border_training_used(tiny, tmp_path, small_quality, monkeypatch):
    # Otsu (solution B's threshold 108 fits the real mean target image, not the synthetic one), at
    # the run's target size, from as many images as training averaged; once for student and teacher
    import kit.predict.splits

    seen = []
    real = kit.predict.splits.make_border

    def spy(root, kind, **kwargs):
        seen.append((kind, kwargs))
        return real(root, kind, **kwargs)

    monkeypatch.setattr(kit.predict.splits, "make_border", spy)
    kit.bench.scoreboard._ellipse_border.cache_clear()  # computed once per process: an earlier test may have cached it
    kit.bench.studies.bench_tune(str(tiny), str(tmp_path / "tune"), ["uda_geo_untuned"], small_quality, seeds=[0],
                              threads=1)
    assert seen == [("ellipse", {"size": (96, 54), "threshold": None, "max_images": 200})]
    result = json.loads((tmp_path / "tune/results/uda_geo_untuned_seed0_1.json").read_text())
    assert result["config"]["bn_stats"] == "all" and math.isfinite(result["teacher_mIoU"])


def test_the_benchmark_trains_03s_default_preset():
    # one source of defaults: the benchmark's recipe is the preset 03_train runs by default
    import ast
    import pathlib

    import papermill

    notebook = pathlib.Path(__file__).parents[1] / "notebooks/03_train.ipynb"
    default = papermill.inspect_notebook(str(notebook))["PRESET"]["default"]
    assert ast.literal_eval(default) == kit.bench.scoreboard.QUALITY_PRESET
    assert kit.bench.scoreboard.QUALITY_PRESET == "cpu_demo"
    # ...less the warm start inside a uda run, which the scoreboard names as a row of its own (uda_warm: Job.start)
    assert set(kit.bench.scoreboard.QUALITY_OVERRIDES) == {"eval_limit", "progress", "warm_start"}


@pytest.mark.parametrize("name, overrides, key", [
    ("source_only", {"method": "source_only"}, "12682f4907ab4639"),
    ("self_train", {"method": "self_train"}, "2b6103b9b6ae00ee"),
    ("uda_geo", {"method": "uda_geo"}, "54cb28b34546a674"),
    ("uda_geo_untuned", kit.bench.variants.TUNE_VARIANTS["uda_geo_untuned"], "b621319f9b821726"),
])
def test_a_jobs_configuration_changes_only_when_what_it_trains_changes(name, overrides, key):
    # results already trained into a --out folder are reused by their configuration: the move from a
    # hand copy of 03's cell (QUALITY_CONFIG, commit a332dd8) to the cpu_demo preset did not change it;
    # issue 25 did on purpose (amp "auto", val_holdout: other draws, other data), and issue 27 (the demo
    # frames' own 270×480 and 256×512 sizes; then rare-class sampling on in the recipe), so that a result trained
    # before them is trained again, not reused
    import hashlib

    config = kit.bench.scoreboard.job_config(kit.bench.scoreboard.Job(name, overrides, 1, 150), "data/demo",
                                             dict(kit.bench.scoreboard.QUALITY_OVERRIDES))
    # warm_start came later (issue 27, sixth part) at what every run before it did: stored results are reused
    assert config.pop("warm_start") == 0.0 and kit.train.config.with_later_fields({})["warm_start"] == 0.0
    # ...and source_scale (seventh part) at (1, 1), no rescaling
    assert config.pop("source_scale") == [1.0, 1.0] == kit.train.config.with_later_fields({})["source_scale"]
    assert hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16] == key


def test_report_only_tabulates_what_is_there_and_trains_nothing(tiny, tmp_path, small_quality, monkeypatch):
    out = tmp_path / "ladder"
    kit.bench.studies.bench_ladder(str(tiny), str(out), ["source_only"], small_quality, seeds=[0], threads=1)
    monkeypatch.setattr(kit.bench.scoreboard, "_train_and_score", lambda *a: pytest.fail("trained in a report-only call"))
    text = kit.bench.studies.bench_ladder(str(tiny), str(out), ["source_only", "mix_background"], small_quality,
                                       seeds=[0, 1], threads=1, train_missing=False)
    assert "| source_only | 0 |" in text and "| mix_background |" not in text


def test_a_warm_started_variant_trains_after_the_run_it_starts_from(tiny, tmp_path, small_quality, monkeypatch):
    import pandas as pd

    trained = _counting(monkeypatch)
    out = tmp_path / "out"
    text = kit.bench.studies.bench_tune(str(tiny), str(out), ["self_train_warm"], small_quality, seeds=[0], threads=1,
                                     reference="fisheye_tf")
    assert trained == ["fisheye_tf_seed0_1", "self_train_warm_seed0_1"]  # the start is brought in and trained first
    result = json.loads((out / "results/self_train_warm_seed0_1.json").read_text())
    assert result["config"]["init_from"] == "@fisheye_tf"  # as written: independent of where --out is
    run = out / "runs/self_train_warm_seed0_1"
    assert json.loads((run / "config.json").read_text())["init_from"] == str(out / "runs/fisheye_tf_seed0_1/last.pt")
    assert list(pd.read_csv(run / "metrics.csv")["round"]) == [1, 2]  # no round 0: it starts from fisheye_tf
    assert "self_train_warm" in _table(text, "variant") and "leaves out the run it starts from" in text
    job = kit.bench.scoreboard.Job("late", {"method": "self_train", "init_from": "@source_only"}, 0, 1)
    with pytest.raises(FileNotFoundError, match="train source_only \\(seed 0, 1 steps\\) into .* first"):
        kit.bench.scoreboard._train_and_score(str(tiny), out, job, False, 1, dict(kit.bench.scoreboard.QUALITY_OVERRIDES))


def test_a_warm_start_on_a_budget_of_image_passes_pays_half_of_it_and_counts_both_halves(tiny, tmp_path,
                                                                                       small_quality, monkeypatch):
    trained = _counting(monkeypatch)
    out = tmp_path / "out"
    budget = kit.bench.scoreboard.budget_passes(small_quality)  # 152 image passes
    text = kit.bench.studies.bench_adapt(str(tiny), str(out), ["uda_rcs_nodist_warm"], small_quality, seeds=[0],
                                            threads=1, reference="uda_rcs_nodist_warm")
    assert trained == ["source_only_rcs_seed0_76p", "uda_rcs_nodist_warm_seed0_152p"]  # its start: the first half
    first = json.loads((out / "results/source_only_rcs_seed0_76p.json").read_text())
    warm = json.loads((out / "results/uda_rcs_nodist_warm_seed0_152p.json").read_text())
    # by hand, batch 2, one epoch: source_only 3 passes per crop, 76 // 6 = 12 steps; uda without the distortion
    # copy 3 + 1 + 1 + 3 = 8 per image, 76 // 16 = 4 steps
    assert (first["train_steps"], first["image_passes"]) == (12, 72)
    assert (warm["train_steps"], warm["start"]) == (4, "source_only_rcs_seed0_76p")
    assert warm["image_passes"] == 72 + 64 <= budget
    assert warm["train_seconds"] > first["train_seconds"]
    run = out / "runs/uda_rcs_nodist_warm_seed0_152p"
    assert json.loads((run / "config.json").read_text())["init_from"] == str(out / "runs/source_only_rcs_seed0_76p/last.pt")
    rows = _table(text, "variant")
    assert list(rows) == ["uda_rcs_nodist_warm"]  # the start is trained, not tabulated
    assert rows["uda_rcs_nodist_warm"]["image passes"] == "136"


def test_a_result_from_before_a_field_existed_is_reused_at_that_fields_default(tiny, tmp_path, quality_run,
                                                                             small_quality, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(quality_run, out)
    path = out / "results/source_only_seed0_152p.json"
    result = json.loads(path.read_text())
    for later in ("init_from", "rounds", "pseudo_quantile"):  # fields added with self_train (issue 16)
        del result["config"][later]
    path.write_text(json.dumps(result))
    trained = _counting(monkeypatch)
    kit.bench.scoreboard.bench_quality(str(tiny), str(out), small_quality, seeds=[0], threads=1)
    assert trained == []
    result["config"]["lr_decoder"] = 1.0  # a field it has, with another value: refused as before
    path.write_text(json.dumps(result))
    with pytest.raises(FileExistsError, match=r"\(lr_decoder differ\)"):
        kit.bench.scoreboard.bench_quality(str(tiny), str(out), small_quality, seeds=[0], threads=1)


def test_the_encoder_comparison_trains_each_encoder_alike(tiny, tmp_path, small_quality):
    text = kit.bench.studies.bench_encoders(str(tiny), str(tmp_path), small_quality, seeds=[0], threads=1)
    results = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "results").glob("*.json")}
    assert sorted(results) == ["lite0_bundled_seed0_1", "mit_b0_scratch_seed0_1", "pvt_v2_b0_scratch_seed0_1"]
    configs = {r["name"]: r["config"] for r in results.values()}
    assert {name: c["encoder"] for name, c in configs.items()} == {
        "lite0_bundled": "tf_efficientnet_lite0", "pvt_v2_b0_scratch": "pvt_v2_b0", "mit_b0_scratch": "mit_b0"}
    # everything but the encoder and its weights is the same recipe
    strip = ("encoder", "pretrained")
    assert len({json.dumps({k: v for k, v in c.items() if k not in strip}, sort_keys=True) for c in configs.values()}) == 1
    assert configs["mit_b0_scratch"]["method"] == "fisheye_tf" and configs["mit_b0_scratch"]["pretrained"] is False
    assert "Δ mIoU vs mit_b0_scratch" in text and (tmp_path / "encoders.md").is_file()


def test_quality_at_more_budgets_tables_and_plots_mIoU_against_image_passes(tiny, tmp_path, quality_run, small_quality,
                                                                            monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(quality_run, out)
    table = (out / "quality.md").read_text()
    trained = _counting(monkeypatch)
    kit.bench.scoreboard.bench_quality(str(tiny), str(out), small_quality, seeds=[0], threads=1, curve=(2 * small_quality,))
    assert sorted(trained) == sorted(f"{m}_seed0_304p" for m in kit.bench.scoreboard.QUALITY_ROWS)  # the main budget is reused
    assert (out / "quality.md").read_text() == table  # the main table stays the main budget's
    results = {p.stem: json.loads(p.read_text()) for p in (out / "results").glob("*.json")}
    rows = _table((out / "quality_budget.md").read_text(), "method")
    for method in kit.bench.scoreboard.QUALITY_ROWS:
        assert rows[method]["152 passes"] == f"{results[f'{method}_seed0_152p']['mIoU']:.4f}"
        assert rows[method]["304 passes"] == f"{results[f'{method}_seed0_304p']['mIoU']:.4f}"
        assert results[f"{method}_seed0_304p"]["image_passes"] <= 304
    assert (out / "quality_budget.png").stat().st_size > 5000


def test_a_method_the_budget_cannot_pay_for_is_left_out_with_the_reason(tiny, tmp_path, small_quality, monkeypatch):
    # 130 image passes: self_train's two rounds of pseudo-labels alone cost 121.5 here, one step per epoch 30 more
    trained = _counting(monkeypatch)
    monkeypatch.setattr(kit.bench.scoreboard, "_train_and_score", lambda data_dir, out_dir, job, *a: {
        "name": job.name, "seed": job.seed, "mIoU": 0.5, "train_seconds": 1.0, "iou": dict.fromkeys(CLASSES, 0.5),
        "budget_passes": job.steps} if trained.append(job.key) is None else None)
    text = kit.bench.scoreboard.bench_quality(str(tiny), str(tmp_path / "out"), small_quality * 130 / SMALL_PASSES,
                                              seeds=[0], threads=1)
    assert sorted(trained) == sorted([*(f"{m}_seed0_130p" for m in kit.bench.scoreboard.QUALITY_ROWS if m != "self_train"),
                                      "source_only_seed0_65p"])  # uda_warm's start
    assert "Left out: self_train (a budget of 130 image passes does not pay for one step per epoch of self_train " \
           "(152 passes: 122 of them pseudo-labels))." in text


def test_the_tools_bench_switches_each_tool_and_scores_tta_on_the_same_runs(tiny, tmp_path, quality_run, small_quality,
                                                                             monkeypatch):
    import kit.bench.tools
    from kit.predict.tta import InferenceSettings

    out = tmp_path / "out"
    shutil.copytree(quality_run, out)
    trained = _counting(monkeypatch)
    text = kit.bench.tools.bench_tools(str(tiny), str(out), ["source_only"], small_quality, seeds=[0], threads=1)
    # the method is reused; source_only trains without Dice, so Dice has no switch there and is left out
    assert trained == ["source_only_norcs_seed0_152p"]
    assert "Left out: dice for source_only (source_only trains without Dice loss" in text
    results = {p.stem: json.loads(p.read_text()) for p in (out / "results").glob("*.json")}
    assert results["source_only_seed0_152p"]["config"]["rare_class_sampling"] is True  # the recipe's
    assert results["source_only_norcs_seed0_152p"]["config"]["rare_class_sampling"] is False
    tta = kit.bench.scoreboard.score_run(out / "runs" / "source_only_seed0_152p", str(tiny),
                                         settings=InferenceSettings(mode="whole", scales=kit.bench.tools.TTA_SCALES, flip=True))
    rows = _table(text, "variant")
    assert rows["source_only_tta"]["mIoU"] == f"{tta['mIoU']:.4f}"
    base = results["source_only_seed0_152p"]["mIoU"]
    assert rows["source_only_tta"]["Δ mIoU vs source_only"] == f"{tta['mIoU'] - base:+.3f}"
    assert rows["source_only_norcs"]["Δ mIoU vs source_only"] == \
        f"{results['source_only_norcs_seed0_152p']['mIoU'] - base:+.3f}"
    with pytest.raises(ValueError, match=r"unknown tool\(s\) \['tta'\]; choose from \['norcs', 'dice'\]"):
        kit.bench.tools.bench_tools(str(tiny), str(out), ["source_only"], small_quality, seeds=[0], tools=("tta",))
