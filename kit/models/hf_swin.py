"""``transformers``' Swin backbone as a kit encoder: the encoder of the Cityscapes Mask2Former models
(``facebook/mask2former-swin-{tiny,small,base-IN21k,large}-cityscapes-semantic``), so that such a model
can start the kit's ``mask2former`` whole (``kit.models.cityscapes.load_cityscapes_mask2former``).

``hf_swin_tiny`` … ``hf_swin_large`` build ``SwinBackbone`` from those models' backbone configurations
(Liu et al., ICCV 2021: widths 96/96/128/192, depths 2-2-6-2 or 2-2-18-2, windows 7 or 12). Its weights
come with a Mask2Former checkpoint; for ImageNet Swin weights use timm's ``swin_*`` names
(``PRETRAINED = True``), which the kit runs at any size too.
"""

from __future__ import annotations

import os

import transformers  # the package only: its model classes load when a function here uses them (seconds of imports)
from torch import nn

from kit.models.segformer import from_pretrained_checked

# (embed width, depths, heads, window) of the Cityscapes Mask2Former backbones
HF_SWIN_VARIANTS: dict[str, tuple[int, tuple[int, ...], tuple[int, ...], int]] = {
    "hf_swin_tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24), 7),
    "hf_swin_small": (96, (2, 2, 18, 2), (3, 6, 12, 24), 7),
    "hf_swin_base": (128, (2, 2, 18, 2), (4, 8, 16, 32), 12),
    "hf_swin_large": (192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
}
STAGES = ["stage1", "stage2", "stage3", "stage4"]


def is_hf_swin(name: str) -> bool:
    return name in HF_SWIN_VARIANTS


def hf_swin_config(name: str) -> transformers.SwinConfig:
    if not is_hf_swin(name):
        raise ValueError(f"unknown transformers Swin encoder {name!r}; expected one of {', '.join(HF_SWIN_VARIANTS)}")
    width, depths, heads, window = HF_SWIN_VARIANTS[name]
    return transformers.SwinConfig(embed_dim=width, depths=list(depths), num_heads=list(heads), window_size=window,
                      out_features=STAGES)


class HFBackboneEncoder(nn.Module):
    """A ``transformers`` backbone (``SwinBackbone``) giving its 4 stages' feature maps (B, C_i, H/r_i, W/r_i).

    Attributes:
        model: the backbone (its state_dict keys are transformers').
        channels: the stages' widths, e.g. ``[96, 192, 384, 768]`` for Swin-T.
        reductions: ``[4, 8, 16, 32]``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.channels: list[int] = list(model.channels)
        self.reductions: list[int] = [4, 8, 16, 32]

    def forward(self, x):
        return list(self.model(x).feature_maps)


def read_mask2former(source: str | os.PathLike) -> transformers.Mask2FormerForUniversalSegmentation:
    """A whole ``transformers`` Mask2Former from a hub id or ``save_pretrained`` folder, every tensor filled."""
    return from_pretrained_checked(transformers.Mask2FormerForUniversalSegmentation, str(source), "Mask2Former weights")


def create_hf_swin(name: str, pretrained: bool | str = False, weights: str | os.PathLike | None = None) -> HFBackboneEncoder:
    """``hf_swin_*``: random, or the backbone of the Mask2Former ``weights`` (hub id or folder)."""
    if pretrained is not False:
        raise ValueError(f"{name} has no ImageNet weights of its own in the kit: its weights come with a Cityscapes "
                         f"Mask2Former as WEIGHTS; for ImageNet Swin use timm's swin_* names with PRETRAINED = True")
    encoder = HFBackboneEncoder(transformers.SwinBackbone(hf_swin_config(name)))
    if weights is not None:
        load_mask2former_backbone(encoder, read_mask2former(weights), str(weights))
    return encoder


def load_mask2former_backbone(encoder: HFBackboneEncoder, network: transformers.Mask2FormerForUniversalSegmentation,
                              source: str) -> None:
    """Copy the backbone of ``network`` (read from ``source``) into ``encoder``, every tensor."""
    try:
        encoder.model.load_state_dict(network.model.pixel_level_module.encoder.state_dict(), strict=True)
    except RuntimeError as error:
        raise ValueError(f"the backbone of {source} does not fit the encoder: {str(error)[:400]}") from error
