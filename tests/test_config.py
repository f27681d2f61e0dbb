"""TrainConfig refuses every bad value at construction, naming the field, the value and what is allowed."""

import pytest

from kit.common.checks import check_choice, check_int, check_number
from kit.train.config import METHODS, TrainConfig

BAD_VALUES = [  # (field, value, the allowed range the message must state)
    ("clip_grad", -1, "a finite number > 0 or None"),  # clip_grad_norm_(…, -1) flips the gradient
    ("clip_grad", 0, "a finite number > 0 or None"),
    ("lr_encoder", -1, "a finite number ≥ 0"),
    ("lr_decoder", float("nan"), "a finite number ≥ 0"),
    ("weight_decay", -0.1, "a finite number ≥ 0"),
    ("mask_ratio", 1.5, "a finite number ≥ 0 and ≤ 1"),
    ("pseudo_threshold", 2, "a finite number ≥ 0 and ≤ 1"),
    ("ema_max_alpha", 1.5, "a finite number ≥ 0 and < 1"),
    ("ema_max_alpha", 1.0, "a finite number ≥ 0 and < 1"),  # a teacher that never moves
    ("mask_block", 0, "an integer ≥ 1 and ≤ 128"),
    ("mask_block", 300, "an integer ≥ 1 and ≤ 128"),  # larger than the 128×128 crop's side
    ("warmup_steps", -3, "an integer ≥ 0"),
    ("poly_power", -1, "a finite number ≥ 0"),
    ("epochs", 2.5, "an integer ≥ 1"),
    ("epochs", True, "an integer ≥ 1"),
    ("batch_size", 0, "an integer ≥ 1"),
    ("steps_per_epoch", 0, "an integer ≥ 1 or None"),  # 0 used to mean "one pass" (``or``)
    ("eval_limit", 0, "an integer ≥ 1 or None"),  # 0 made the monitored mIoU NaN
    ("stats_limit", -5, "an integer ≥ 1 or None"),
    ("cpu_threads", 0, "an integer ≥ 1 or None"),
    ("num_workers", -1, "'auto' or an integer ≥ 0"),
    ("head_channels", 0, "an integer ≥ 1"),
    ("mix_background", 1.2, "a finite number ≥ 0 and ≤ 1"),
    ("src_hfov_deg", 180, "a finite number > 0 and < 180"),
    ("fisheye_fov_deg", (190, 400), "a finite number > 0 and < 360"),
    ("fisheye_fov_deg", (210, 190), "expected [low, high] with low ≤ high"),
    ("border_threshold", 300, "a finite number ≥ 0 and ≤ 255 or None"),
    ("rcs_temperature", 0, "a finite number > 0"),
    ("crop_size", (128, 0), "crop_size = [128, 0]: expected (H, W), two integers ≥ 1"),
    ("crop_size", (128,), "expected (H, W)"),
    ("source_size", "128", "expected a list or tuple"),
    ("run_name", "../../escape", "a plain folder name"),
    ("run_name", "", "a plain folder name"),
    ("run_name", ".hidden", "a plain folder name"),
    ("device", "tpu", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
    ("device", "cuda:x", "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"),
    ("pretrained", "yes", "is not one of True, False, 'bundled'"),
    ("pretrained", 1, "is not one of True, False, 'bundled'"),
    ("arch", "unet", "is not one of 'daformer'"),
    ("method", "self_training", "is not one of 'source_only'"),
    ("pseudo_weighting", "global", "is not one of 'image', 'batch', 'pixel', 'class'"),
    ("monitor", "miou", "is not one of 'auto'"),
    ("progress", "no", "expected True or False"),
    ("class_mix", 1, "expected True or False"),
    ("bn_stats", "masked", "is not one of 'target', 'labelled', 'all'"),
    ("distortion_branch", "no", "expected True or False"),
    ("target_branch", None, "expected True or False"),
    ("train_splits", (), "expected one or more split names"),
    ("data_dir", "", "a non-empty string"),
]


@pytest.mark.parametrize("field, value, allowed", BAD_VALUES, ids=[f"{f}={v!r}" for f, v, _ in BAD_VALUES])
def test_bad_values_are_refused_with_name_value_and_range(field, value, allowed):
    with pytest.raises(ValueError) as error:
        TrainConfig(**{field: value})
    message = str(error.value)
    assert message.startswith(field) and allowed in message, message
    if not isinstance(value, tuple):
        assert repr(value) in message, message


def test_good_edge_values_are_accepted():
    config = TrainConfig(clip_grad=None, lr_encoder=0, pseudo_threshold=1.0, mask_ratio=0.0, ema_max_alpha=0.0,
                         steps_per_epoch=None, eval_limit=None, warmup_steps=0, device="cuda:1", run_name="a.b-c_1",
                         pseudo_weighting="batch", border_threshold=108, epochs=1, fisheye_eval_split=None)
    assert (config.lr_encoder, config.device, config.pseudo_weighting) == (0, "cuda:1", "batch")
    assert TrainConfig(source_size=[128, 256], crop_size=[64, 64]).source_size == (128, 256)  # JSON lists


def test_resume_and_overwrite_together_are_refused():
    with pytest.raises(ValueError, match="resume = True and overwrite = True contradict"):
        TrainConfig(resume=True, overwrite=True)


def test_checkers_for_notebook_parameters():
    check_int("GRID_COUNT", 0, low=0)
    check_number("SCALE", 0.5, low=0, low_open=True)
    check_choice("BORDER", None, ("ellipse", "mask", None))
    with pytest.raises(ValueError, match=r"GRID_COUNT = -1: expected an integer ≥ 0$"):
        check_int("GRID_COUNT", -1, low=0)
    with pytest.raises(ValueError, match=r"MAX_IMAGES = 2\.0: expected an integer ≥ 1 or None$"):
        check_int("MAX_IMAGES", 2.0, low=1, optional=True)
    with pytest.raises(ValueError, match=r"BORDER = 'circle' is not one of 'ellipse', 'mask', None$"):
        check_choice("BORDER", "circle", ("ellipse", "mask", None))


METHOD_DEFAULTS_RESOLVED = {  # method: (bonnet, pseudo_weighting, uda_dice_weight, distortion_branch) left at None, by hand
    "source_only": ("background", "image", 0.0, True),
    "fisheye_tf": ("background", "image", 0.0, True),
    "uda": ("background", "image", 0.0, False),  # the kit's uda: no elastic copy (docs/RESULTS.md, issue 27)
    "uda_geo": ("void", "image", 0.0, True),  # uda_geo's own bonnet (docs/RESULTS.md); its warp copy is the method
    "self_train": ("background", "image", 0.0, True),
    "oracle": ("background", "image", 0.0, True),
}


def test_every_method_has_a_row_of_resolved_defaults():
    assert sorted(METHOD_DEFAULTS_RESOLVED) == sorted(METHODS)


@pytest.mark.parametrize("method, expected", METHOD_DEFAULTS_RESOLVED.items(), ids=list(METHOD_DEFAULTS_RESOLVED))
def test_fields_left_at_none_take_the_methods_own_defaults(method, expected):
    config = TrainConfig(method=method)
    assert (config.bonnet, config.pseudo_weighting, config.uda_dice_weight, config.distortion_branch) == expected


@pytest.mark.parametrize("method", ["uda", "uda_geo"])
def test_an_explicit_value_wins_over_the_methods_default(method):
    config = TrainConfig(method=method, bonnet="background", pseudo_weighting="pixel", uda_dice_weight=0.5)
    assert (config.bonnet, config.pseudo_weighting, config.uda_dice_weight) == ("background", "pixel", 0.5)
    assert TrainConfig(method=method, bonnet="void").bonnet == "void"
