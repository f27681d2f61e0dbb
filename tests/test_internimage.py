from pathlib import Path

import pytest
import torch

from kit.models.internimage import PUBLISHED_PARAMS, classification_head_params, create_internimage


def test_tiny_gives_four_levels_for_an_odd_input() -> None:
    torch.manual_seed(0)
    model = create_internimage("internimage_tiny").eval()
    assert model.channels == [16, 32, 64, 128]
    assert model.reductions == [4, 8, 16, 32]
    with torch.no_grad():
        features = model(torch.randn(1, 3, 97, 131))
    # Each stride-2 conv rounds up: 97 -> 49 -> 25 -> 13 -> 7 -> 4, 131 -> 66 -> 33 -> 17 -> 9 -> 5.
    assert [tuple(f.shape) for f in features] == [(1, 16, 25, 33), (1, 32, 13, 17), (1, 64, 7, 9), (1, 128, 4, 5)]
    assert all(torch.isfinite(f).all() for f in features)


@pytest.mark.parametrize("name", ["internimage_t"])
def test_param_count_matches_the_published_classification_model(name: str) -> None:
    model = create_internimage(name)
    backbone = sum(p.numel() for p in model.parameters())
    # The published 30M is the ImageNet classification model: the encoder plus its head.
    total = backbone + classification_head_params(model)
    assert total == pytest.approx(PUBLISHED_PARAMS[name], rel=0.03)


def test_keys_follow_the_official_names() -> None:
    keys = create_internimage("internimage_tiny").state_dict().keys()
    for key in [
        "patch_embed.conv1.weight",
        "patch_embed.norm1.1.weight",
        "levels.0.blocks.0.dcn.offset.weight",
        "levels.0.blocks.0.dcn.dw_conv.1.1.weight",
        "levels.0.blocks.0.mlp.fc1.weight",
        "levels.0.norm.0.weight",
        "levels.0.downsample.conv.weight",
        "levels.2.downsample.norm.1.bias",
    ]:
        assert key in keys
    assert not any(k.startswith("levels.3.downsample") for k in keys)


def test_segmentation_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = create_internimage("internimage_tiny")
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    state["decode_head.conv_seg.weight"] = torch.zeros(13, 8, 1, 1)  # not the encoder's: skipped
    path = tmp_path / "upernet.pth"
    torch.save({"model": state, "meta": {"iter": 10}}, path)
    loaded = create_internimage("internimage_tiny", weights=path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_classification_checkpoint_without_gammas_loads(tmp_path: Path) -> None:
    torch.manual_seed(2)
    source = create_internimage("internimage_tiny")
    state = {k: v for k, v in source.state_dict().items() if ".gamma" not in k}
    state["head.weight"] = torch.zeros(1000, 192)  # classification head: ignored
    state["conv_head.0.weight"] = torch.zeros(192, 128, 1, 1)
    path = tmp_path / "cls.pth"
    torch.save({"state_dict": state}, path)
    loaded = create_internimage("internimage_tiny", weights=path)
    torch.testing.assert_close(loaded.levels[1].blocks[0].dcn.mask.weight, source.levels[1].blocks[0].dcn.mask.weight)
    assert all(torch.equal(p, torch.ones_like(p)) for n, p in loaded.named_parameters() if ".gamma" in n)


def test_mismatching_checkpoint_names_the_file(tmp_path: Path) -> None:
    state = create_internimage("internimage_tiny").state_dict()
    del state["levels.0.blocks.0.dcn.offset.weight"]
    state["levels.0.blocks.0.dcn.extra"] = torch.zeros(1)
    path = tmp_path / "wrong_size.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"wrong_size\.pth.*1 missing.*dcn\.offset\.weight.*1 unexpected.*dcn\.extra"):
        create_internimage("internimage_tiny", weights=path)


@pytest.mark.parametrize("pretrained", [True, "bundled"])
def test_pretrained_without_weights_says_where_to_get_them(pretrained: bool | str) -> None:
    with pytest.raises(ValueError, match=r"internimage_t_1k_224\.pth.*huggingface\.co/OpenGVLab/InternImage.*weights="):
        create_internimage("internimage_t", pretrained=pretrained)


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"'internimage_x'.*internimage_b.*internimage_tiny"):
        create_internimage("internimage_x")


def test_upernet_on_tiny_trains_one_step() -> None:
    from kit.models.model import create_model

    torch.manual_seed(3)
    model = create_model("upernet", "internimage_tiny", channels=32).train()
    images = torch.randn(2, 3, 67, 93)
    labels = torch.randint(0, 13, (2, 67, 93))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    logits = model(images)
    assert logits.shape == (2, 13, 67, 93)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    optimizer.step()
    after = dict(model.named_parameters())
    assert all(torch.isfinite(p).all() for p in after.values())
    for name in ["encoder.patch_embed.conv1.weight", "encoder.levels.0.blocks.0.dcn.offset.weight"]:
        assert not torch.equal(before[name], after[name])
