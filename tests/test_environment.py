"""The installed environment: torch and torchvision must be a matching pair, or timm fails to import."""

import torch


def test_timm_imports_and_builds_a_feature_pyramid():
    import timm

    model = timm.create_model("pvt_v2_b0", features_only=True, pretrained=False)
    assert model.feature_info.reduction() == [4, 8, 16, 32]
    with torch.no_grad():
        feats = model(torch.zeros(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert [f.shape[1] for f in feats] == model.feature_info.channels()


def test_torchvision_operators_load():
    import torchvision

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


def test_transformers_has_the_mask2former_parts_the_kit_builds_on():
    """requirements.txt pins transformers to the major version whose internal Mask2Former classes
    kit.models.mask2former calls with these signatures."""
    import inspect

    from transformers.models.mask2former import modeling_mask2former as m2f

    assert list(inspect.signature(m2f.Mask2FormerPixelDecoder.__init__).parameters) == ["self", "config", "feature_channels"]
    assert list(inspect.signature(m2f.Mask2FormerTransformerModule.__init__).parameters) == ["self", "in_features", "config"]
    assert list(inspect.signature(m2f.Mask2FormerLoss.__init__).parameters) == ["self", "config", "weight_dict"]
