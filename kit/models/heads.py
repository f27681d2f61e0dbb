"""Decoder heads over four encoder levels: DAFormer (and its stride-2 variant), SegFormer's all-MLP
head (``transformers``' module, :mod:`kit.models.segformer_head`), UPerNet (PPM + FPN); each returns
logits at stride 4 (DAFormer-up2: stride 2), which the model resizes to the input.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

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


class _Heads(Mapping):
    """Head name → class. SegFormer's head subclasses a ``transformers`` model, whose import takes seconds:
    its module is imported when its class is first looked up, not by every process that imports a head."""

    def __init__(self, heads: dict[str, type[nn.Module] | None]) -> None:
        self._heads = heads

    def __getitem__(self, name: str) -> type[nn.Module]:
        if name == "segformer" and self._heads[name] is None:
            from kit.models.segformer_head import SegFormerHead  # on first use (see above)

            self._heads[name] = SegFormerHead
        return self._heads[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._heads)

    def __len__(self) -> int:
        return len(self._heads)


HEADS: Mapping[str, type[nn.Module]] = _Heads({
    "daformer": DAFormerHead,
    "daformer_up2": DAFormerUp2Head,
    "segformer": None,  # kit.models.segformer_head, imported on first use
    "upernet": UPerNetHead,
})
