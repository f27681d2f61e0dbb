"""What the tuning sweep, the Car ladder, the encoder comparison and adaptation round two train: variants
of ``uda_geo``, ``self_train`` and ``uda``, and encoders, as diffs on the benchmark recipe (``python -m
kit.bench tune``, ``ladder``, ``encoders``, ``adapt``).
"""

from __future__ import annotations

# The sweep's baseline: uda_geo as it was before tuning (= the TrainConfig defaults of every method,
# with masked crops updating BatchNorm statistics as before the Car fix).
UNTUNED = {"method": "uda_geo", "bonnet": "background", "pseudo_weighting": "image", "uda_dice_weight": 0.0,
           "bn_stats": "all"}
# Variants of the tuning sweep (python -m kit.bench tune), each a full set of the tuned knobs.
TUNE_VARIANTS: dict[str, dict] = {
    "uda_geo_untuned": UNTUNED,
    "uda_geo_bonnet_void": {**UNTUNED, "bonnet": "void"},
    "uda_geo_void_pixel": {**UNTUNED, "bonnet": "void", "pseudo_weighting": "pixel"},
    "uda_geo_void_class": {**UNTUNED, "bonnet": "void", "pseudo_weighting": "class"},
    "uda_geo_void_batch": {**UNTUNED, "bonnet": "void", "pseudo_weighting": "batch"},  # DAFormer's weighting
    "uda_geo_void_class_dice": {**UNTUNED, "bonnet": "void", "pseudo_weighting": "class", "uda_dice_weight": 1.0},
    "uda_geo_void_dice": {**UNTUNED, "bonnet": "void", "uda_dice_weight": 1.0},
    "uda_geo_void_rcs": {**UNTUNED, "bonnet": "void", "rare_class_sampling": True},
    "uda_geo_void_nomix": {**UNTUNED, "bonnet": "void", "mix_background": 0.0},
    "uda_geo_void_ema99": {**UNTUNED, "bonnet": "void", "ema_max_alpha": 0.99},
    "uda_geo_void_ema99_dice": {**UNTUNED, "bonnet": "void", "ema_max_alpha": 0.99, "uda_dice_weight": 1.0},
    "uda_geo_void_noclip": {**UNTUNED, "bonnet": "void", "clip_grad": None},
    "uda_geo_void_noclip_ema99": {**UNTUNED, "bonnet": "void", "clip_grad": None, "ema_max_alpha": 0.99},
    # an ablation, not a candidate: threshold 1 leaves no confident pixel, so the target loss is 0
    "uda_geo_void_no_target": {**UNTUNED, "bonnet": "void", "pseudo_threshold": 1.0},
    # the Car fix: masked target crops leave the BatchNorm running statistics alone
    "uda_geo_void_bnfix": {**UNTUNED, "bonnet": "void", "bn_stats": "labelled"},
    "uda_geo_void_bntarget": {**UNTUNED, "bonnet": "void", "bn_stats": "target"},
    "uda_geo_void_bntarget_block8": {**UNTUNED, "bonnet": "void", "bn_stats": "target", "mask_block": 8},
    "fisheye_tf": {"method": "fisheye_tf"},
    "uda": {"method": "uda"},
    "uda_geo": {"method": "uda_geo"},
    "source_only": {"method": "source_only"},
    "oracle": {"method": "oracle"},
    # offline self-training. "@fisheye_tf" warm-starts from the fisheye_tf run of the same seed
    # and steps (what self_train's round 0 trains), so that each variant trains only its rounds.
    "self_train": {"method": "self_train"},
    "self_train_warm": {"method": "self_train", "init_from": "@fisheye_tf"},
    "self_train_warm_warp": {"method": "self_train", "init_from": "@fisheye_tf", "self_train_source": "warp"},
    "self_train_warm_bg_void": {"method": "self_train", "init_from": "@fisheye_tf", "pseudo_background": False},
    "self_train_warm_balanced": {"method": "self_train", "init_from": "@fisheye_tf", "pseudo_balanced": True},
    "self_train_warm_one_round": {"method": "self_train", "init_from": "@fisheye_tf", "rounds": 1, "round_epochs": 2},
    "self_train_warm_q20": {"method": "self_train", "init_from": "@fisheye_tf", "pseudo_quantile": 0.2},
    "self_train_warm_q80": {"method": "self_train", "init_from": "@fisheye_tf", "pseudo_quantile": 0.8},
    "uda_geo_warm": {"method": "uda_geo", "init_from": "@fisheye_tf"},  # does a warm-started teacher fix uda_geo?
}
# The Car ablation ladder: each rung adds one component to the one before (rung → (what it adds, overrides)).
_SOURCE_PATH = {"method": "uda_geo", "bonnet": "background", "mix_background": 0.0, "distortion_branch": False,
                "target_branch": False, "bn_stats": "labelled"}  # uda_geo's code path with only the source branch
LADDER: dict[str, tuple[str, dict]] = {
    "source_one_norm": ("source crops, one normalisation for both domains (the encoder's)",
                        {"method": "source_only", "normalization": "encoder"}),
    "source_only": ("+ per-domain normalisation (= the method source_only)", {"method": "source_only"}),
    "mix_background": ("+ Mix Background (uda_geo's code, source branch only)", {**_SOURCE_PATH, "mix_background": 0.25}),
    "warp_branch": ("+ the warp (distortion) branch; clipping now acts on the summed branches",
                    {**_SOURCE_PATH, "mix_background": 0.25, "distortion_branch": True}),
    "bonnet_void": ("+ the source bonnet ignored (BONNET void)",
                    {**_SOURCE_PATH, "mix_background": 0.25, "distortion_branch": True, "bonnet": "void"}),
    "target_branch": ("+ the target branch (EMA teacher, MIC masks 16 px), every pass updating the BatchNorm "
                      "statistics (uda_geo before the fix)", {"method": "uda_geo", "bn_stats": "all", "mask_block": 16}),
    "bn_fix": ("masked crops leave the BatchNorm statistics alone",
               {"method": "uda_geo", "bn_stats": "labelled", "mask_block": 16}),
    "bn_target": ("the fix: BatchNorm statistics from the unmasked target crop only (= the method uda_geo)",
                  {"method": "uda_geo", "bn_stats": "target", "mask_block": 16}),
    "mask_block_8": ("MIC mask blocks of 8 px instead of 16 (64 px at 1024-px crops scaled to 128)",
                     {"method": "uda_geo", "bn_stats": "target", "mask_block": 8}),
}

# The encoder comparison (python -m kit.bench encoders): the real MiT-B0 against its timm stand-in, both
# from scratch (no weights can be downloaded here), and the demo's encoder with its offline ImageNet
# weights; each with fisheye_tf, self_train's round-0 recipe, so that every run trains alike.
ENCODER_VARIANTS: dict[str, dict] = {
    "lite0_bundled": {"method": "fisheye_tf"},
    "pvt_v2_b0_scratch": {"method": "fisheye_tf", "encoder": "pvt_v2_b0", "pretrained": False},
    "mit_b0_scratch": {"method": "fisheye_tf", "encoder": "mit_b0", "pretrained": False},
}

# Adaptation round two (python -m kit.bench adapt, issue 27 item 4): candidates trained for the same image
# passes as the baselines on a *validation* dataset, so that the recommended method is chosen off the
# benchmark's test labels. "_rcs": rare-class sampling of images and crops (kit.data.rare); "_mix": DACS class
# mix of source classes (never the source's background, which is no class) onto the teacher-labelled target
# crop; "_nodist": no elastic distortion copy (its passes go to more steps); "_fda": Fourier domain adaptation
# of the source images towards random fisheye frames (kit.data.augment.FourierStyle); "_void": the source bonnet
# ignored in training (BONNET void) instead of taught as background; "_warm": the first half of the budget trains
# source_only_rcs, the second half this variant from that run (student and EMA teacher; kit.bench.scoreboard.Job.start);
# "_dice": Dice next to CE on the uda source crops (uda_dice_weight 1); "_warm25"/"_warm75": the warm start inside
# the run (warm_start, kit.train.budget.warm_start_plan) with a quarter / three quarters of the budget on source_only;
# "_class": only confident pixels count, each class's upper half of confidences too (pseudo_weighting "class", CBST's
# idea against thin classes vanishing); "_thr90": pseudo-label confidence threshold 0.9 (DAFormer: 0.968);
# "_mask50"/"_mask25"/"_mask0": a half / a quarter / none of the target blocks masked (MIC 0.7, the kit 0.75 before);
# "_scale": source images rescaled by a random factor in [0.5, 1] before the crop (source_scale; the fisheye frames
# show cars at about 0.56×, people at 0.73× the source's median height), in both halves of a warm-started variant;
# "_scale2": in [0.5, 2] (DAFormer's range: the fisheye's near road is seen closer than anything in a dash camera's view).
# Each states rare-class sampling, the distortion copy and the share of masked blocks explicitly (their defaults were
# chosen with them).
_RCS, _NO_RCS = {"rare_class_sampling": True}, {"rare_class_sampling": False}
_ELASTIC, _NODIST = {"distortion_branch": True}, {"distortion_branch": False}
_MASK75 = {"mask_ratio": 0.75}  # MIC's and solution A's share of masked target blocks, the uda default until the seventh part
ADAPT_VARIANTS: dict[str, dict] = {
    "source_only": {"method": "source_only", **_NO_RCS},
    "source_only_rcs": {"method": "source_only", **_RCS},
    "fisheye_tf_rcs": {"method": "fisheye_tf", **_RCS},
    "uda": {"method": "uda", **_MASK75, **_NO_RCS, **_ELASTIC},
    "uda_rcs": {"method": "uda", **_MASK75, **_RCS, **_ELASTIC},
    "uda_rcs_mix": {"method": "uda", **_MASK75, **_RCS, **_ELASTIC, "class_mix": True},
    "uda_rcs_nodist": {"method": "uda", **_MASK75, **_RCS, **_NODIST},
    "uda_rcs_fda": {"method": "uda", **_MASK75, **_RCS, **_ELASTIC, "fda_beta": 0.01},
    "source_only_rcs_fda": {"method": "source_only", **_RCS, "fda_beta": 0.01},
    "uda_rcs_void": {"method": "uda", **_MASK75, **_RCS, **_ELASTIC, "bonnet": "void"},
    "source_only_rcs_void": {"method": "source_only", **_RCS, "bonnet": "void"},
    "uda_rcs_nodist_void": {"method": "uda", **_MASK75, **_RCS, **_NODIST, "bonnet": "void"},
    "uda_rcs_nodist_fda": {"method": "uda", **_MASK75, **_RCS, **_NODIST, "fda_beta": 0.01},
    "oracle_rcs": {"method": "oracle", **_RCS},
    "uda_rcs_nodist_warm": {"method": "uda", **_MASK75, **_RCS, **_NODIST, "init_from": "@source_only_rcs"},
    "uda_rcs_nodist_warm_dice": {"method": "uda", **_MASK75, **_RCS, **_NODIST, "init_from": "@source_only_rcs", "uda_dice_weight": 1.0},
    "uda_rcs_nodist_warm_mix": {"method": "uda", **_MASK75, **_RCS, **_NODIST, "init_from": "@source_only_rcs", "class_mix": True},
    "uda_rcs_nodist_warm25": {"method": "uda", **_MASK75, **_RCS, **_NODIST, "warm_start": 0.25},
    "uda_rcs_nodist_warm75": {"method": "uda", **_MASK75, **_RCS, **_NODIST, "warm_start": 0.75},
    "uda_rcs_nodist_warm_class": {"method": "uda", **_MASK75, **_RCS, **_NODIST, "init_from": "@source_only_rcs", "pseudo_weighting": "class"},
    "uda_rcs_nodist_warm_thr90": {"method": "uda", **_MASK75, **_RCS, **_NODIST, "init_from": "@source_only_rcs", "pseudo_threshold": 0.9},
    "uda_rcs_nodist_warm_mask50": {"method": "uda", **_RCS, **_NODIST, "init_from": "@source_only_rcs", "mask_ratio": 0.5},
    "uda_rcs_nodist_warm_mask25": {"method": "uda", **_RCS, **_NODIST, "init_from": "@source_only_rcs", "mask_ratio": 0.25},
    "uda_rcs_nodist_warm_mask25_dice": {"method": "uda", **_RCS, **_NODIST, "init_from": "@source_only_rcs", "mask_ratio": 0.25,
                                        "uda_dice_weight": 1.0},
    "uda_rcs_nodist_warm_mask0": {"method": "uda", **_RCS, **_NODIST, "init_from": "@source_only_rcs", "mask_ratio": 0.0},
    "uda_rcs_nodist_warm_void": {"method": "uda", **_MASK75, **_RCS, **_NODIST, "init_from": "@source_only_rcs_void", "bonnet": "void"},
    "source_only_rcs_scale": {"method": "source_only", **_RCS, "source_scale": (0.5, 1.0)},
    "source_only_rcs_scale2": {"method": "source_only", **_RCS, "source_scale": (0.5, 2.0)},
    "uda_rcs_nodist_warm_scale2": {"method": "uda", **_MASK75, **_RCS, **_NODIST, "init_from": "@source_only_rcs_scale2",
                                   "source_scale": (0.5, 2.0)},
    "uda_rcs_nodist_warm_scale": {"method": "uda", **_MASK75, **_RCS, **_NODIST, "init_from": "@source_only_rcs_scale",
                                  "source_scale": (0.5, 1.0)},
}
