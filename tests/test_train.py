"""The training loop: schedule, run folder rules, resume equivalence, NaN stop, data options."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scratch import SCRATCH
from torch.utils.data import DataLoader

import kit.data.stats
import kit.train.loop
import kit.train.recipes
import kit.train.steps
from kit.data.datasets import RareClassSampler
from kit.data.rare import RareClassCrop
from kit.data.stats import class_pixel_counts, domain_stats
from kit.predict.runs import RunConfig, load_checkpoint, model_from_config
from kit.train.config import TrainConfig
from kit.train.loop import train
from kit.train.steps import TrainingDiverged, lr_factor


def _config(tiny, tmp_path, **overrides) -> TrainConfig:
    values = SCRATCH | dict(
        data_dir=str(tiny), runs_dir=str(tmp_path / "runs"), run_name="run", method="uda", head_channels=16,
        source_size=(48, 96), target_size=(54, 96), crop_size=(32, 32), epochs=2, batch_size=2, warmup_steps=2,
        mask_block=8, eval_limit=2, progress=False, seed=3,
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.mark.parametrize("step, expected", [(0, 0.25), (3, 1.0), (4, 1.0), (9, 0.5), (14, 0.0), (20, 0.0)])
def test_lr_warmup_then_linear_decay(step, expected):
    assert lr_factor(step, warmup_steps=4, total_steps=14, power=1.0) == pytest.approx(expected)


def test_lr_poly_power():
    assert lr_factor(9, warmup_steps=4, total_steps=14, power=0.9) == pytest.approx(0.5**0.9)


@pytest.mark.slow
def test_resume_equals_an_uninterrupted_run(tiny, tmp_path):
    straight = train(_config(tiny, tmp_path, run_name="straight", epochs=4))
    interrupted = _config(tiny, tmp_path, run_name="resumed", epochs=4, stop_after_epoch=2)
    train(interrupted)
    assert load_checkpoint(tmp_path / "runs/resumed/last.pt")["epoch"] == 1
    # the resumed half loads its data in 2 worker processes: the batches are those of the training process
    resumed = train(_config(tiny, tmp_path, run_name="resumed", epochs=4, resume=True, num_workers=2))
    a, b = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    assert a["epoch"] == b["epoch"] == 3
    for part in ("model", "teacher"):
        for name, value in a[part].items():
            torch.testing.assert_close(b[part][name], value, rtol=0, atol=0, msg=f"{part}.{name}")
    pd.testing.assert_frame_equal(
        pd.read_csv(straight / "metrics.csv").drop(columns="train_seconds"),
        pd.read_csv(resumed / "metrics.csv").drop(columns="train_seconds"),
    )


def test_a_run_folder_is_never_overwritten_silently(tiny, tmp_path):
    run = train(_config(tiny, tmp_path, method="source_only", epochs=1))
    before = (run / "last.pt").read_bytes()
    with pytest.raises(FileExistsError, match="OVERWRITE = True"):
        train(_config(tiny, tmp_path, method="source_only", epochs=1))
    assert (run / "last.pt").read_bytes() == before
    with pytest.raises(ValueError, match="method: run has 'source_only', now 'uda'"):
        train(_config(tiny, tmp_path, method="uda", epochs=1, resume=True))
    train(_config(tiny, tmp_path, method="source_only", epochs=1, overwrite=True, seed=4))
    assert json.loads((run / "config.json").read_text())["seed"] == 4


def test_a_run_from_before_a_field_existed_resumes(tiny, tmp_path):
    # config.json of a run trained before the predict_* fields: a missing field ran with its default
    run = train(_config(tiny, tmp_path, method="source_only", epochs=2, stop_after_epoch=1))
    stored = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({k: v for k, v in stored.items() if not k.startswith("predict_")}))
    train(_config(tiny, tmp_path, method="source_only", epochs=2, resume=True))
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    with pytest.raises(ValueError, match=r"predict_flip: run has False, now True"):  # a real change is still refused
        train(_config(tiny, tmp_path, method="source_only", epochs=2, resume=True, predict_flip=True))


def test_resume_without_a_run_names_the_folder(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="no last.pt"):
        train(_config(tiny, tmp_path, resume=True))


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tiny, tmp_path, monkeypatch):
    run = train(_config(tiny, tmp_path, method="source_only", epochs=3, stop_after_epoch=1))
    good = (run / "last.pt").read_bytes()
    calls = {"n": 0}
    real = kit.train.steps.supervised_step

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        losses = real(*args, **kwargs)
        return {**losses, "ce": float("nan")} if calls["n"] == 2 else losses

    monkeypatch.setattr(kit.train.loop, "supervised_step", poisoned)
    monkeypatch.setattr(kit.train.steps, "supervised_step", poisoned)
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 2 .*last good checkpoint .*epoch 1"):
        train(_config(tiny, tmp_path, method="source_only", epochs=3, resume=True))
    assert (run / "last.pt").read_bytes() == good


def _real_like(tiny, tmp_path):
    """The tiny dataset as the real competition data looks: no held-out fisheye labels."""
    root = tmp_path / "real_like"
    root.mkdir()
    for split in ("train_source", "val_source", "train_target", "test"):
        frame = pd.read_csv(tiny / f"{split}.csv")
        frame.to_csv(root / f"{split}.csv", index=False)
        (root / f"{split}_image").symlink_to(tiny / f"{split}_image")
        if (tiny / f"{split}_gt").exists():
            (root / f"{split}_gt").symlink_to(tiny / f"{split}_gt")
    return root


def test_oracle_is_refused_without_held_out_labels(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match="only the kit's synthetic datasets"):
        train(_config(_real_like(tiny, tmp_path), tmp_path, method="oracle"))


def test_monitoring_fisheye_miou_without_fisheye_labels_is_refused_before_anything_is_written(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"monitor = 'fisheye_miou', but .*real_like has no train_target_gt\.csv"):
        train(_config(_real_like(tiny, tmp_path), tmp_path, method="source_only", monitor="fisheye_miou"))
    assert not (tmp_path / "runs").exists()


def test_a_misspelt_fisheye_eval_split_is_refused(tiny, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"fisheye_eval_split = 'train_target_gtt', but .* has no "
                                                r"train_target_gtt\.csv \(CSV files there: .*train_target_gt\.csv"):
        train(_config(tiny, tmp_path, method="source_only", fisheye_eval_split="train_target_gtt"))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("overrides, error", [
    ({"encoder": "no_such_encoder"}, ValueError),  # refused by TrainConfig itself
    ({"weights": "missing_encoder.pt"}, FileNotFoundError),
    ({"train_splits": ("train_source", "nope")}, FileNotFoundError),
])
def test_nothing_is_written_before_the_data_and_the_model_are_known_good(tiny, tmp_path, overrides, error):
    with pytest.raises(error):
        train(_config(tiny, tmp_path, method="source_only", **overrides))
    assert not (tmp_path / "runs").exists()


def test_a_start_that_failed_before_its_first_checkpoint_is_replaced_not_refused(tiny, tmp_path, monkeypatch):
    def failing(*args, **kwargs):
        raise RuntimeError("out of memory at step 1")

    monkeypatch.setattr(kit.train.loop, "supervised_step", failing)
    monkeypatch.setattr(kit.train.steps, "supervised_step", failing)
    with pytest.raises(RuntimeError, match="out of memory"):
        train(_config(tiny, tmp_path, method="source_only", epochs=1))
    run = tmp_path / "runs" / "run"
    assert (run / "config.json").is_file() and not (run / "last.pt").exists()
    with pytest.raises(FileNotFoundError, match="failed before its first checkpoint: start it again without RESUME"):
        train(_config(tiny, tmp_path, method="source_only", epochs=1, resume=True))
    monkeypatch.undo()
    train(_config(tiny, tmp_path, method="source_only", epochs=1, seed=7))  # no OVERWRITE needed
    assert json.loads((run / "config.json").read_text())["seed"] == 7 and (run / "last.pt").is_file()


def test_evaluation_ignores_void_pixels_but_scores_background():
    from kit.competition.labels import BACKGROUND_CLASS, IGNORE_INDEX

    label = torch.tensor([[0, 0, BACKGROUND_CLASS, IGNORE_INDEX]])  # Road, Road, background, void (bonnet)
    dataset = [{"image": torch.zeros(3, 1, 4), "label": label}]

    class AlwaysRoad(torch.nn.Module):
        def forward(self, x):
            logits = torch.zeros(x.shape[0], 13, *x.shape[2:])
            logits[:, 0] = 1.0
            return logits

    import contextlib

    cm = kit.train.steps.evaluate(AlwaysRoad(), DataLoader(dataset, batch_size=1), torch.device("cpu"), contextlib.nullcontext)
    assert cm.sum() == 3  # the void pixel is not counted at all
    assert cm[0, 0] == 2 and cm[BACKGROUND_CLASS, 0] == 1  # Road on background is a false positive


def test_domain_stats_are_measured_once_and_cached(tiny, tmp_path, monkeypatch):
    mean, std = domain_stats(tiny, "train_target", limit=None)
    from kit.competition.layout import read_split
    from kit.data.stats import channel_stats

    expected = channel_stats(list(read_split(tiny, "train_target").img_path))
    np.testing.assert_allclose(mean, expected[0])
    np.testing.assert_allclose(std, expected[1])
    monkeypatch.setattr(kit.data.stats, "channel_stats", lambda paths: pytest.fail("not cached"))
    assert domain_stats(tiny, "train_target", limit=None) == (mean, std)


def test_class_pixel_counts_match_the_labels(tiny):
    from kit.competition.layout import read_label, read_split

    counts = class_pixel_counts(tiny, "train_source")
    label = read_label(read_split(tiny, "train_source").gt_path[1])
    assert counts[1, 0] == (label == 0).sum() and counts[1, 12] == (label == 255).sum()
    assert counts[1].sum() == label.size


def test_rare_class_sampling_prefers_images_with_rare_classes():
    # image 0: only class 0 (common); image 1: class 0 and a little of class 1 (rare)
    pixels = np.array([[1000, 0], [900, 10]])
    sampler = RareClassSampler(pixels, temperature=0.01, num_samples=400, generator=torch.Generator().manual_seed(0))
    drawn = np.bincount(list(sampler), minlength=2)
    assert len(list(sampler)) == 400
    # p(class 1) ≈ 1 at T = 0.01 (its frequency is 1% against 99%), and only image 1 has it
    assert drawn[1] > 390


def test_upernet_internimage_trains_in_the_loop(tiny, tmp_path):
    run = train(_config(tiny, tmp_path, method="source_only", arch="upernet", encoder="internimage_tiny",
                        epochs=1, steps_per_epoch=1, head_channels=16))
    state = load_checkpoint(run / "last.pt")
    assert any(k.startswith("encoder.levels.0.blocks.0.dcn.") for k in state["model"])
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.dtype.is_floating_point)
    model = model_from_config(RunConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    assert model.eval()(torch.zeros(1, 3, 54, 96)).shape == (1, 13, 54, 96)


def test_bonnet_void_ignores_exactly_the_pixels_the_fix_made_background(tiny, tmp_path):
    from kit.competition.labels import BACKGROUND_CLASS, IGNORE_INDEX

    def val_labels(bonnet):
        evals = kit.train.recipes.build_data(_config(tiny, tmp_path, method="source_only", bonnet=bonnet)).evals
        return [evals["source_val"][i]["label"].numpy() for i in range(len(evals["source_val"]))]

    changed = 0
    for background, void in zip(val_labels("background"), val_labels("void")):
        differ = background != void
        assert (background[differ] == BACKGROUND_CLASS).all() and (void[differ] == IGNORE_INDEX).all()
        assert differ.nonzero()[0].min(initial=background.shape[0]) >= int(2 / 3 * background.shape[0]) - 1
        changed += differ.sum()
    assert changed > 0  # the tiny preset's bonnets are labelled Sky
    with pytest.raises(ValueError, match="bonnet"):
        _config(tiny, tmp_path, bonnet="sky")


@pytest.mark.parametrize("method", ["uda", "uda_geo"])
def test_without_the_distortion_branch_the_train_items_have_no_distorted_copy(tiny, tmp_path, method):
    def item_keys(**overrides):
        return set(kit.train.recipes.build_data(_config(tiny, tmp_path, method=method, **overrides)).train[0])

    assert item_keys(distortion_branch=True) == {"source", "source_label", "distorted", "distorted_label"}
    assert item_keys(distortion_branch=False) == {"source", "source_label"}
    # the default: uda leaves solution A's elastic copy out (issue 27), uda_geo's warp copy is the method
    assert item_keys() == ({"source", "source_label"} if method == "uda" else item_keys(distortion_branch=True))


def test_fda_styles_every_source_pipeline_with_a_style_of_its_own(tiny, tmp_path):
    from kit.data.augment import FourierStyle
    from kit.data.datasets import Reseeded

    def styles(dataset):
        return [t for t in dataset.transform.transforms if isinstance(t, FourierStyle)]

    # rare-class sampling off: its crop draws from the generator FDA's frame is drawn from, the plain crop does not
    plain = kit.train.recipes.build_data(_config(tiny, tmp_path, method="source_only", rare_class_sampling=False))
    assert styles(plain.train) == []
    data = kit.train.recipes.build_data(_config(tiny, tmp_path, method="source_only", fda_beta=0.05,
                                                rare_class_sampling=False))
    (style,) = styles(data.train)
    assert style.beta == 0.05 and len(style.target_paths) > 0
    from kit.competition.layout import read_split

    assert set(style.target_paths) <= set(read_split(tiny, "train_target").img_path)  # unlabelled fisheye frames only
    # the same draw gives the same image and label as without FDA, but for the styled image
    with_fda, without = Reseeded(data.train)[(0, 7)], Reseeded(plain.train)[(0, 7)]
    assert torch.equal(with_fda["label"], without["label"])
    assert not torch.equal(with_fda["image"], without["image"])
    zipped = kit.train.recipes.build_data(_config(tiny, tmp_path, method="uda", fda_beta=0.01,
                                                  distortion_branch=True)).train.datasets
    found = [style for dataset in zipped.values() for style in styles(dataset)]
    assert len(found) == 2 and found[0] is not found[1]  # source and distortion copy, each drawing on its own
    with pytest.raises(ValueError, match="fda_beta = 0.01: .* not 'fisheye_tf'"):
        _config(tiny, tmp_path, method="fisheye_tf", fda_beta=0.01)
    with pytest.raises(ValueError, match="fda_beta"):
        _config(tiny, tmp_path, method="source_only", fda_beta=0.7)


def test_source_scale_reaches_every_source_pipeline_and_only_those(tiny, tmp_path):
    def scales(dataset):
        return [t.scale_limit for t in dataset.transform.transforms if type(t).__name__ == "RandomScale"]

    for method in ("source_only", "uda"):
        copy = {"distortion_branch": True, "warm_start": 0.0} if method == "uda" else {}  # uda: the distortion copy too
        train = kit.train.recipes.build_data(_config(tiny, tmp_path, method=method, source_scale=[0.5, 1.0], **copy)).train
        datasets = train.datasets.values() if hasattr(train, "datasets") else [train]
        assert [scales(d) for d in datasets] == [[(-0.5, 0.0)]] * (2 if method == "uda" else 1)  # 1 + limit: 0.5…1
    assert scales(kit.train.recipes.build_data(_config(tiny, tmp_path, method="source_only")).train) == []
    with pytest.raises(ValueError, match=r"source_scale = \[0.5, 1.0\]: .* not 'oracle'"):
        _config(tiny, tmp_path, method="oracle", source_scale=[0.5, 1.0])
    with pytest.raises(ValueError, match="0 < low ≤ high"):
        _config(tiny, tmp_path, method="source_only", source_scale=[1.0, 0.5])


def test_from_parameters_maps_upper_case_names_and_refuses_unknown_ones():
    import types

    namespace = {"METHOD": "uda", "LR_ENCODER": 3e-4, "CROP_SIZE": [64, 64], "PREVIEW_COUNT": 2,
                 "np": np, "A": types.ModuleType("albumentations"), "_": 1, "lower": 1}
    config = TrainConfig.from_parameters(namespace, notebook_only=("PREVIEW_COUNT",))
    assert (config.method, config.lr_encoder, config.crop_size) == ("uda", 3e-4, (64, 64))
    assert config.epochs == TrainConfig().epochs  # names not given keep the defaults
    with pytest.raises(ValueError, match=r"unknown training parameter\(s\) \['LR_ENCODR', 'PREVIEW_COUNT'\]"):
        TrainConfig.from_parameters({"LR_ENCODR": 1e-4, "PREVIEW_COUNT": 2})


@pytest.mark.parametrize("method", ["uda_geo", "uda", "source_only"])
def test_preview_step_shows_the_first_batch_as_the_step_sees_it(tiny, tmp_path, method):
    from kit.competition.labels import NUM_CLASSES
    from kit.train.preview import preview_step

    config = _config(tiny, tmp_path, method=method, crop_size=(32, 48), mask_ratio=0.5)
    panels = preview_step(config)
    if method == "source_only":
        assert list(panels) == ["input"]
        images, labels = panels["input"]
        assert images.shape == (2, 32, 48, 3) and images.dtype == np.uint8 and labels.shape == (2, 32, 48)
        assert set(np.unique(labels)) <= set(range(NUM_CLASSES)) | {255}
        return
    if method == "uda":  # the kit's uda trains no distortion copy: none is shown
        assert list(panels) == ["source", "target", "masked target", "pseudo-label"]
        return
    assert list(panels) == ["source", "distorted", "target", "masked target", "pseudo-label"]
    target, masked = panels["target"][0].astype(int), panels["masked target"][0].astype(int)
    blanked = (target != masked).any(axis=-1)  # (B, H, W)
    assert 0.2 < blanked.mean() < 0.8  # MIC blocks at mask_ratio 0.5
    # a masked pixel is 0 after normalisation: the target's mean colour
    tmean = np.array(kit.train.recipes.normalisation(config)[1][0]) * 255
    assert np.abs(masked[blanked] - np.round(tmean)).max() <= 1
    pseudo = panels["pseudo-label"][1]
    assert pseudo.shape == (2, 32, 48) and set(np.unique(pseudo)) <= set(range(NUM_CLASSES)) | {255}
    # the step's crops: the distorted copy (the fisheye warp) is black outside its valid area
    assert panels["distorted"][0].shape == panels["source"][0].shape == (2, 32, 48, 3)


M2F = dict(arch="mask2former", encoder="internimage_tiny", head_channels=32, crop_size=(48, 96),
           head_options={"queries": 8, "layers": 2, "encoder_layers": 1, "heads": 4, "feedforward": 64, "points": 256})


@pytest.mark.slow
def test_mask2former_trains_and_self_trains_in_the_loop(tiny, tmp_path):
    """Mask2Former learns through the trainer's fisheye_tf round and a self_train round on its own
    pseudo-labels; the run reloads from its config.json and predicts probabilities."""
    run = train(_config(tiny, tmp_path, method="self_train", rounds=1, epochs=2, steps_per_epoch=2, **M2F))
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["round"]) == [0, 0, 1]
    assert {"loss_m2f_class", "loss_m2f_mask", "loss_m2f_dice", "loss_target_m2f_class"} <= set(metrics.columns)
    assert (run / "pseudo_round1" / "pseudo.csv").is_file()
    state = load_checkpoint(run / "last.pt")
    assert state["config"]["head_kwargs"] == {"channels": 32, **M2F["head_options"]}
    model = model_from_config(RunConfig.from_dict(state["config"]))
    model.load_state_dict(state["model"])
    probs = model.eval()(torch.zeros(1, 3, 54, 96)).exp()
    assert probs.shape == (1, 13, 54, 96)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 54, 96))


@pytest.mark.parametrize("overrides, error", [
    (dict(method="uda", **M2F), r"trains with method source_only, fisheye_tf, self_train, oracle, not 'uda'"),
    (dict(method="uda_geo", **M2F), "not 'uda_geo'"),
    (dict(method="source_only", head_options={"queries": 8, "layer": 2}), r"head_options \['layer', 'queries'\] are no arguments of the 'daformer' head"),
    (dict(method="source_only", **{**M2F, "head_options": {"layer": 2}}), r"\['layer'\] are no arguments of the 'mask2former' head; it takes \['queries', 'layers'"),
])
def test_what_mask2former_cannot_train_is_refused(tiny, tmp_path, overrides, error):
    with pytest.raises(ValueError, match=error):
        _config(tiny, tmp_path, **overrides)


def test_head_options_are_the_heads_own_arguments():
    from kit.models.model import head_option_names
    assert head_option_names("mask2former") == ("queries", "layers", "encoder_layers", "heads", "feedforward",
                                                "no_object_weight", "points")
    assert head_option_names("upernet") == ("pool_scales", "dropout")
    assert head_option_names("daformer_up2") == ()


def test_best_pt_is_never_chosen_on_images_the_run_trains_on(tiny, tmp_path):
    from kit.competition.layout import read_split
    from kit.train.recipes import build_data, source_splits

    config = _config(tiny, tmp_path, method="source_only", fisheye_eval_split=None)  # the real data: no fisheye labels
    assert "val_source" in config.train_splits  # the default: solution A trained on it
    val, train_ids = read_split(tiny, "val_source"), set(read_split(tiny, "train_source")["id"])
    trained, monitored = source_splits(config)
    assert len(monitored) == int(np.ceil(0.2 * len(val))) >= 1
    assert set(monitored["id"]).isdisjoint(trained["id"])
    assert set(trained["id"]) | set(monitored["id"]) == train_ids | set(val["id"])
    data = build_data(config)
    assert data.monitor == "source_val_miou" and list(data.evals["source_val"].frame["id"]) == list(monitored["id"])
    assert set(data.train.frame["id"]) == set(trained["id"])
    only_train = _config(tiny, tmp_path, train_splits=("train_source",))  # val not trained on: all of it monitors
    assert source_splits(only_train)[1]["id"].tolist() == val["id"].tolist()
    assert set(source_splits(only_train)[0]["id"]) == train_ids
    rare = build_data(_config(tiny, tmp_path, method="source_only", rare_class_sampling=True))
    assert len(rare.class_pixels) == len(rare.train)  # counted over the rows trained on
    from kit.competition.layout import read_label

    np.testing.assert_array_equal(rare.class_pixels, np.stack([  # the files' own labels, row by row
        np.bincount(read_label(path).ravel(), minlength=256)[:12] for path in rare.train.frame["gt_path"]]))
    oracle = build_data(_config(tiny, tmp_path, method="oracle", rare_class_sampling=False))
    assert len(oracle.evals["source_val"]) == len(val)  # the oracle trains on no source image: all of it monitors
    rare_oracle = build_data(_config(tiny, tmp_path, method="oracle", rare_class_sampling=True))
    np.testing.assert_array_equal(rare_oracle.class_pixels, np.stack([  # the oracle draws from the fisheye labels
        np.bincount(read_label(path).ravel(), minlength=256)[:12] for path in rare_oracle.train.frame["gt_path"]]))
    assert isinstance(rare_oracle.train.transform.transforms[-1], RareClassCrop)
    assert isinstance(rare.train.transform.transforms[-1], RareClassCrop)
    assert type(oracle.train.transform.transforms[-1]).__name__ == "RandomCrop"  # off: the plain crop
    zipped = build_data(_config(tiny, tmp_path, method="uda", rare_class_sampling=True, distortion_branch=True)).train.datasets
    crops = [t for d in zipped.values() for t in d.transform.transforms if isinstance(t, RareClassCrop)]
    assert len(crops) == 2 and crops[0] is not crops[1]  # each pipeline its own crop, drawing from its own generator
    everything = _config(tiny, tmp_path, method="source_only", fisheye_eval_split=None, val_holdout=0.0)
    assert build_data(everything).monitor is None  # nothing left to monitor: best.pt follows last.pt
    with pytest.raises(ValueError, match="val_holdout = 0.0 keeps no val_source image out of training"):
        build_data(_config(tiny, tmp_path, method="source_only", val_holdout=0.0, monitor="source_val_miou"))


def test_best_pt_holds_the_epoch_of_the_best_monitored_score(tiny, tmp_path, monkeypatch):
    # scripted source-val mIoU per epoch: the best is epoch 1; NaN (epoch 2) never counts as better
    scores = iter([0.3, 0.5, float("nan"), 0.4])
    saved = {}  # epoch → the model weights its checkpoint held
    real_save = kit.train.loop.save_checkpoint

    def record(path, state):
        saved[state["epoch"]] = {k: v.clone() for k, v in state["model"].items()}
        real_save(path, state)

    monkeypatch.setattr(kit.train.loop, "evaluate", lambda *args: None)
    monkeypatch.setattr(kit.train.loop, "mean_iou", lambda cm: next(scores))
    monkeypatch.setattr(kit.train.loop, "save_checkpoint", record)
    run = train(_config(tiny, tmp_path, method="source_only", epochs=4, steps_per_epoch=1, fisheye_eval_split=None,
                        monitor="source_val_miou"))
    best = load_checkpoint(run / "best.pt")
    assert (best["epoch"], best["best"], best["metrics"]["source_val_miou"]) == (1, 0.5, 0.5)
    assert load_checkpoint(run / "last.pt")["epoch"] == 3
    assert not all(torch.equal(saved[1][k], saved[3][k]) for k in saved[1])  # the epochs' weights differ
    for name, value in best["model"].items():
        torch.testing.assert_close(value, saved[1][name], rtol=0, atol=0, msg=lambda m: f"{name}: {m}")


def _grads(parameters) -> list:
    return [p.grad.clone() for p in parameters if p.grad is not None]


@pytest.mark.parametrize("clip_grad", [None, 1e-3])
def test_clip_grad_scales_the_gradient_to_its_norm_and_none_leaves_it(tiny, tmp_path, monkeypatch, clip_grad):
    seen = {}  # the gradients the step back-propagated, and those the optimiser stepped with
    real_step, real_optimizer = kit.train.loop.supervised_step, kit.train.loop.make_optimizer

    def step(model, *args):
        losses = real_step(model, *args)
        seen["raw"] = _grads(model.parameters())
        return losses

    def optimizer(model, config):
        def before_step(*args) -> None:
            seen["stepped"] = _grads(model.parameters())

        made = real_optimizer(model, config)
        made.register_step_pre_hook(before_step)
        return made

    monkeypatch.setattr(kit.train.loop, "supervised_step", step)
    monkeypatch.setattr(kit.train.loop, "make_optimizer", optimizer)
    train(_config(tiny, tmp_path, method="source_only", epochs=1, steps_per_epoch=1, clip_grad=clip_grad))
    raw, stepped = seen["raw"], seen["stepped"]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in raw])).item()
    assert len(stepped) == len(raw) and norm > 1.0  # above 1e-3 and TrainConfig's default 1.0: clipping would show
    scale = 1.0 if clip_grad is None else clip_grad / norm
    for a, b in zip(raw, stepped):
        torch.testing.assert_close(b, a * scale, rtol=1e-5, atol=1e-12)
    if clip_grad is not None:
        clipped = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in stepped])).item()
        assert clipped == pytest.approx(clip_grad, rel=1e-4)


# the EMA weight at each of 2 epochs × 2 steps, min(0.6, 1 - 1/(t + 1)): the teacher moves after every step,
# ema_per says what its ramp's t counts (TrainConfig, EMATeacher); the cap 0.6 is reached by the step ramp
EMA_ALPHAS = {"step": [0.0, 1 / 2, 0.6, 0.6], "epoch": [0.0, 0.0, 1 / 2, 1 / 2]}


@pytest.mark.parametrize("ema_per", ["step", "epoch"])
def test_the_teacher_is_the_ema_of_the_students_after_each_step(tiny, tmp_path, monkeypatch, ema_per):
    students = []  # the student's weights at the start, then after each optimiser step
    real_optimizer = kit.train.loop.make_optimizer

    def optimizer(model, config):
        def record(*args) -> None:
            students.append({k: v.clone() for k, v in model.state_dict().items()})

        record()
        made = real_optimizer(model, config)
        made.register_step_post_hook(record)
        return made

    monkeypatch.setattr(kit.train.loop, "make_optimizer", optimizer)
    monkeypatch.setattr(kit.train.loop, "evaluate", lambda *args: np.eye(13, dtype=np.int64))  # no evaluation pass
    run = train(_config(tiny, tmp_path, epochs=2, steps_per_epoch=2, ema_per=ema_per, ema_max_alpha=0.6,
                        distortion_branch=False))  # one pass fewer per step
    assert len(students) == 5
    teacher = load_checkpoint(run / "last.pt")["teacher"]
    for name, value in teacher.items():
        if not value.dtype.is_floating_point:
            continue
        expected = students[0][name].double()
        for alpha, student in zip(EMA_ALPHAS[ema_per], students[1:]):
            expected = alpha * expected + (1 - alpha) * student[name].double()
        torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
