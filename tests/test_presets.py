"""Named recipes (kit.train.presets): one source of defaults, each preset a diff, and the three layers
of 03_train's parameters (preset, OVERRIDES, names)."""

import ast
import dataclasses
from pathlib import Path

import nbformat
import papermill
import pytest

from kit.train.config import NONE_KEEPS_PRESET, TrainConfig
from kit.train.presets import PRESETS, RUN_FIELDS, preset_diff

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks/03_train.ipynb"
FIELDS = {f.name for f in dataclasses.fields(TrainConfig)}


def test_cpu_demo_is_trainconfigs_own_defaults():
    assert preset_diff("cpu_demo") == {} and TrainConfig.from_preset("cpu_demo") == TrainConfig()
    demo = TrainConfig()  # the values 03_train's cell held before the presets (commit a332dd8)
    assert (demo.method, demo.encoder, demo.pretrained, demo.head_channels) == ("uda", "tf_efficientnet_lite0",
                                                                                "bundled", 64)
    # issue 27: rare-class sampling, and uda without solution A's elastic copy (chosen on validation data)
    assert (demo.rare_class_sampling, demo.distortion_branch, demo.fda_beta) == (True, False, 0.0)
    assert (demo.source_size, demo.target_size, demo.crop_size) == ((256, 512), (270, 480), (128, 128))
    assert (demo.epochs, demo.steps_per_epoch, demo.warmup_steps, demo.lr_encoder, demo.lr_decoder) == (5, 50, 30, 2e-4, 2e-3)
    assert (demo.mask_block, demo.src_hfov_deg, demo.rounds, demo.bn_stats) == (16, 80.0, 2, "target")
    # issue 27, seventh part: the warm-started uda masks a quarter of the target blocks; methods that never mask, and
    # uda_geo, keep 0.75 (so do their stored results' keys), and solution A keeps its own
    assert (demo.mask_ratio, demo.source_scale) == (0.25, (1.0, 1.0))
    assert [TrainConfig(method=m).mask_ratio for m in ("source_only", "fisheye_tf", "uda_geo", "oracle")] == [0.75] * 4
    assert TrainConfig.from_preset("solution_a").mask_ratio == 0.75


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_diff_of_fields_that_builds(name):
    preset = PRESETS[name]
    assert set(preset.values) <= FIELDS, set(preset.values) - FIELDS
    assert not set(preset.values) & set(RUN_FIELDS)  # a preset never names the run or where it runs
    assert preset.base is None or preset.base in PRESETS
    if preset.base:  # a diff states only differences
        base = TrainConfig.from_preset(preset.base)
        same = [k for k, v in preset.values.items() if getattr(base, k) == v]
        assert same == [], f"{name} repeats its base's {same}"
    TrainConfig.from_preset(name)


def test_the_reference_solutions_recipes():
    # REFERENCE.md §2 (solution A) and §3 (solution B)
    a = TrainConfig.from_preset("solution_a")
    assert (a.method, a.arch, a.source_size, a.target_size, a.crop_size) == ("uda", "daformer_up2", (512, 1024), (540, 960),
                                                                           (256, 512))
    assert (a.lr_encoder, a.lr_decoder, a.mask_ratio, a.mask_block, a.ema_max_alpha, a.ema_per) == (1e-4, 1e-3, 0.75, 32,
                                                                                                   0.9, "epoch")
    assert (a.border_threshold, a.batch_size, a.steps_per_epoch, a.predict_mode) == (108.0, 8, None, "slide")
    assert a.warmup_steps == 50 * 333  # 50 epochs of (2194 + 466) / 8 steps
    # its elastic distortion copy; rare-class sampling "tried and dropped for time"
    assert (a.distortion_branch, a.rare_class_sampling) == (True, False)
    t4 = TrainConfig.from_preset("t4")
    assert (t4.source_size, t4.crop_size, t4.amp, t4.method, t4.lr_encoder) == ((256, 512), (128, 256), "fp16", "uda", 1e-4)
    b = TrainConfig.from_preset("solution_b")
    assert (b.method, b.arch, b.encoder, b.crop_size, b.source_size) == ("fisheye_tf", "mask2former", "internimage_t",
                                                                        (540, 960), (1080, 1920))
    assert (b.lr_encoder, b.weight_decay, b.border_threshold, b.pretrained) == (2e-5, 0.05, 108.0, False)
    assert (b.predict_scales, b.predict_flip) == ((0.8, 0.9, 1.0, 1.1, 1.2), True)


def test_parameters_take_the_preset_then_overrides_then_names():
    config = TrainConfig.from_parameters({"PRESET": "t4", "OVERRIDES": {"lr_encoder": 3e-4}, "EPOCHS": 2, "METHOD": None,
                                          "STEPS_PER_EPOCH": 7})
    assert (config.crop_size, config.lr_encoder, config.epochs, config.method, config.steps_per_epoch) == (
        (128, 256), 3e-4, 2, "uda", 7)
    # None keeps the preset's value only where the field cannot be None; STEPS_PER_EPOCH None means one pass
    config = TrainConfig.from_parameters({"ENCODER": None, "STEPS_PER_EPOCH": None})
    assert (config.encoder, config.steps_per_epoch) == ("tf_efficientnet_lite0", None)
    assert TrainConfig.from_parameters({}) == TrainConfig()
    # ...and where 03's cell holds a field at None that a preset sets: WEIGHTS = None keeps its hub id
    hub = "nvidia/segformer-b5-finetuned-cityscapes-1024-1024"
    assert TrainConfig.from_parameters({"PRESET": "segformer_cityscapes", "WEIGHTS": None}).weights == hub
    assert TrainConfig.from_parameters({"PRESET": "segformer_cityscapes", "WEIGHTS": None,
                                        "OVERRIDES": {"weights": None}}).weights is None
    assert TrainConfig.from_parameters({"PRESET": "solution_a", "BORDER_THRESHOLD": None}).border_threshold is None


def test_a_cell_name_at_none_never_drops_what_a_preset_sets():
    """03's cell passes every name, most at None; a None-able field a preset sets must keep it (NONE_KEEPS_PRESET)."""
    cell = {name.lower() for name in _cell_names()}
    for preset in PRESETS:
        for field_name, value in preset_diff(preset).items():
            if value is not None and field_name in cell and field_name not in NONE_KEEPS_PRESET:
                assert "None" not in str(TrainConfig.__dataclass_fields__[field_name].type), (preset, field_name)


@pytest.mark.parametrize("namespace, message", [
    ({"PRESET": "solution_c"}, "preset = 'solution_c' is not one of 'cpu_demo'"),
    ({"OVERRIDES": {"lr_encodr": 1e-4}}, r"OVERRIDES names \['lr_encodr'\], which are no TrainConfig fields"),
    ({"OVERRIDES": [("lr_encoder", 1e-4)]}, "OVERRIDES = .*expected a dict"),
    ({"OVERRIDES": {"epochs": 3}, "EPOCHS": 4}, r"EPOCHS = 4 and OVERRIDES\['epochs'\] = 3: give it once"),
    ({"EPOCH": 4}, r"unknown training parameter\(s\) \['EPOCH'\]"),
])
def test_parameters_that_cannot_be_read_are_refused(namespace, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_parameters(namespace)


def _cell_names() -> list[str]:
    cell = next(c for c in nbformat.read(NOTEBOOK, as_version=4).cells
                if "parameters" in c.metadata.get("tags", []))
    return [node.target.id for node in ast.parse(cell.source).body]


def test_03s_cell_is_a_dozen_typed_names_papermill_can_show():
    names = _cell_names()
    assert len(names) <= 20 and names[:4] == ["DATA_DIR", "RUNS_DIR", "RUN_NAME", "PRESET"]
    shown = papermill.inspect_notebook(str(NOTEBOOK))  # what papermill --help-notebook prints
    assert list(shown) == names  # no line papermill cannot read (it skips them silently)
    for name, parameter in shown.items():
        assert parameter["inferred_type_name"] != "None" and parameter["help"], name
    assert shown["METHOD"]["inferred_type_name"] == "Optional[str]" and shown["OVERRIDES"]["inferred_type_name"] == "dict"
    # every name but the notebook's own is a TrainConfig field
    assert {n.lower() for n in names} - FIELDS == {"preset", "overrides", "preview_count"}


def test_the_torchrun_command_names_the_preset_and_parses_back():
    import shlex

    from kit.train.cli import parse_command_line, torchrun_command

    config = TrainConfig.from_parameters({"PRESET": "solution_b", "RUN_NAME": "m2f_t", "EPOCHS": 9,
                                          "OVERRIDES": {"crop_size": [512, 512]}})
    command = torchrun_command(config, nproc_per_node=8, preset="solution_b")
    argv = shlex.split(command)
    assert argv[:6] == ["torchrun", "--nproc_per_node=8", "-m", "kit.train", "--preset", "solution_b"]
    assert sorted(argv[7::2]) == ["CROP_SIZE=[512, 512]", "EPOCHS=9", "RUN_NAME=\"m2f_t\""]  # only what differs
    assert parse_command_line(argv[4:]) == config


@pytest.mark.parametrize("field", dataclasses.fields(TrainConfig), ids=lambda f: f.name)
def test_a_field_takes_none_exactly_when_its_type_says_so(field):
    # from_parameters keeps the preset's value for a None only where the type has no None: the two must agree
    optional = "None" in str(field.type)
    if optional:
        TrainConfig(**{field.name: None})
    else:
        with pytest.raises((ValueError, TypeError)):
            TrainConfig(**{field.name: None})
