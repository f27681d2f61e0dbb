"""The encoders the kit supports, each with every head: built, one forward at an odd non-square size
and one training step; and the encoders it refuses, with the reason."""

import copy

import pytest
import torch
import torch.nn.functional as F

from kit.models.encoders import create_encoder
from kit.models.heads import HEADS
from kit.models.mask2former import Mask2FormerHead, MaskClassificationModel
from kit.models.model import ARCHS, SegmentationModel

# encoder → what makes it a case of its own
SUPPORTED = {
    "resnet18": "CNN, 5 levels (the last 4 used)",
    "tf_efficientnet_lite0": "the demo's encoder",
    "mobilenetv3_small_100": "mobile CNN",
    "convnextv2_atto": "ConvNeXt: floors odd sizes",
    "pvt_v2_b0": "timm's MiT-shaped transformer",
    "mit_b0": "SegFormer's MiT (transformers)",
    "hf_swin_tiny": "transformers' Swin backbone (the Cityscapes Mask2Former's)",
    "swin_tiny_patch4_window7_224": "channels-last features, fixed input size, patches of 4",
    "mambaout_femto": "channels-last features",
    "hrnet_w18_small": "needs a multiple of 32",
    "internimage_t": "DCNv3 (the kit's InternImage)",
}
SIZE = (65, 98)  # (H, W), odd and non-square
HEAD_OPTIONS = {"mask2former": dict(channels=32, queries=4, layers=1, encoder_layers=1, heads=2, feedforward=64,
                                    points=64)}


@pytest.fixture(scope="module")
def encoders():
    """Each supported encoder, built once (random weights); copied per head."""
    torch.manual_seed(0)
    return {name: create_encoder(name) for name in SUPPORTED}


def _model(encoder, arch):
    encoder = copy.deepcopy(encoder)
    if arch == "mask2former":
        head = Mask2FormerHead(encoder.channels, 13, reductions=encoder.reductions, **HEAD_OPTIONS[arch])
        return MaskClassificationModel(encoder, head)
    return SegmentationModel(encoder, HEADS[arch](encoder.channels, 13, channels=16))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SUPPORTED))
def test_a_supported_encoder_runs_and_trains_with_every_head(encoders, name):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, *SIZE, generator=generator)
    labels = torch.randint(0, 13, (1, *SIZE), generator=generator)
    features = encoders[name].eval()(x)
    assert [tuple(f.shape[:2]) for f in features] == [(1, c) for c in encoders[name].channels]
    for f, r in zip(features, [4, 8, 16, 32]):  # channels first, each level about the input's extent / stride
        assert abs(f.shape[-2] - SIZE[0] / r) <= 1 and abs(f.shape[-1] - SIZE[1] / r) <= 1, (name, f.shape)
    for arch in ARCHS:
        model = _model(encoders[name], arch)
        with torch.no_grad():
            assert model.eval()(x).shape == (1, 13, *SIZE), arch
        model.train()
        out = model(x)
        loss = sum(model.decode_head.losses(out, labels).values()) if arch == "mask2former" else F.cross_entropy(out, labels)
        loss.backward()
        first = next(p for p in model.encoder.parameters() if p.requires_grad)
        assert torch.isfinite(loss) and first.grad is not None and first.grad.abs().sum() > 0, (name, arch)


@pytest.mark.parametrize("name, message", [
    ("vit_tiny_patch16_224", r"strides \[16, 16, 16, 16\]; the kit's heads take four levels at strides \[4, 8, 16, 32\]"),
    ("maxvit_tiny_tf_224", r"does not run at other input sizes than its own \(AssertionError: height .* divisible by window"),
])
def test_an_encoder_the_heads_cannot_take_is_refused_with_the_reason(name, message):
    with pytest.raises(ValueError, match=f"encoder '{name}' .*{message}"):
        create_encoder(name)


def test_padding_is_only_for_the_encoders_that_need_it(encoders):
    assert {name for name, e in encoders.items() if getattr(e, "pad_to", 1) > 1} == {
        "swin_tiny_patch4_window7_224", "hrnet_w18_small"}
    # padded to 128×160, then cropped: the features of the top-left part equal an unpadded run's
    hrnet = encoders["hrnet_w18_small"].eval()
    x = torch.randn(1, 3, 128, 160, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole, part = hrnet(x), hrnet(x[..., :97, :130])
    assert [tuple(f.shape[-2:]) for f in part] == [(25, 33), (13, 17), (7, 9), (4, 5)]
    assert [tuple(f.shape[-2:]) for f in whole] == [(32, 40), (16, 20), (8, 10), (4, 5)]
