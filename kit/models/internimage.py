"""InternImage encoders (T/S/B and a tiny CPU one) for segmentation, built on :mod:`kit.models.dcnv3`.

InternImage (Wang et al., CVPR 2023) is a CNN shaped like a hierarchical vision transformer: a
stem of two stride-2 convs (stride 4), four stages of blocks whose token mixer is DCNv3 instead of
attention (each block: DCNv3 and an MLP, each in a residual branch with LayerNorm before, or after
for the post-norm S/B models, optional layer scale and drop path), and a stride-2 conv between the
stages. This follows the segmentation backbone of OpenGVLab/InternImage
(``segmentation/mmseg_custom/models/backbones/intern_image.py``): same module names, so official
classification and UperNet checkpoints load; the outputs are each stage's last state before
downsampling (after the stage's LayerNorm for pre-norm models; post-norm models have none), with
no other per-level norm, as the official ``out_indices`` path does.

``CONFIGS`` holds the published UperNet/ADE20K backbone settings (``segmentation/configs/ade20k/
upernet_internimage_{t,s,b}_512_160k_ade20k.py``): these set ``layer_scale=1.0`` for all three
sizes (the classification configs use none for T and 1e-5 for S/B), so that a UperNet checkpoint's
``gamma1``/``gamma2`` keys load; a classification T checkpoint, without them, loads with the gammas
left at 1, which is exactly the unscaled model.
"""

from __future__ import annotations

import os

import torch
from timm.layers import DropPath, trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from kit.models.dcnv3 import DCNv3, layer_norm
from kit.models.weights import load_encoder_weights

CONFIGS: dict[str, dict] = {
    # 4 levels of 16/32/64/128 channels, one block each: for CPU tests and smoke runs.
    "internimage_tiny": dict(channels=16, depths=(1, 1, 1, 1), groups=(1, 2, 4, 8), layer_scale=1.0,
                             post_norm=False, drop_path_rate=0.0),
    "internimage_t": dict(channels=64, depths=(4, 4, 18, 4), groups=(4, 8, 16, 32), layer_scale=1.0,
                          post_norm=False, drop_path_rate=0.2),
    "internimage_s": dict(channels=80, depths=(4, 4, 21, 4), groups=(5, 10, 20, 40), layer_scale=1.0,
                          post_norm=True, drop_path_rate=0.3),
    "internimage_b": dict(channels=112, depths=(4, 4, 21, 4), groups=(7, 14, 28, 56), layer_scale=1.0,
                          post_norm=True, drop_path_rate=0.4),
}

# Published parameter counts of the ImageNet-1K classification models (backbone + head), from the
# InternImage README, and the official checkpoints pretrained=True would need.
PUBLISHED_PARAMS = {"internimage_t": 30e6, "internimage_s": 50e6, "internimage_b": 97e6}
CHECKPOINTS = {
    "internimage_t": "internimage_t_1k_224.pth (or upernet_internimage_t_512_160k_ade20k.pth)",
    "internimage_s": "internimage_s_1k_224.pth (or upernet_internimage_s_512_160k_ade20k.pth)",
    "internimage_b": "internimage_b_1k_224.pth (or upernet_internimage_b_512_160k_ade20k.pth)",
}
WEIGHTS_URL = "https://huggingface.co/OpenGVLab/InternImage (or https://github.com/OpenGVLab/InternImage/releases)"


class StemLayer(nn.Module):
    """(B, 3, H, W) -> (B, H/4, W/4, C): two 3×3 stride-2 convs, LN + GELU between, LN after."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, out_chans // 2, kernel_size=3, stride=2, padding=1)
        self.norm1 = layer_norm(out_chans // 2, channels_first_in=True, channels_first_out=True)
        self.act = nn.GELU()
        self.conv2 = nn.Conv2d(out_chans // 2, out_chans, kernel_size=3, stride=2, padding=1)
        self.norm2 = layer_norm(out_chans, channels_first_in=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.conv1(x)))  # (B, C/2, H/2, W/2)
        return self.norm2(self.conv2(x))  # (B, H/4, W/4, C)


class DownsampleLayer(nn.Module):
    """(B, H, W, C) -> (B, H/2, W/2, 2C): a 3×3 stride-2 conv and LN."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 2 * channels, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = layer_norm(2 * channels, channels_first_in=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x.permute(0, 3, 1, 2)))  # (B, H/2, W/2, 2C)


class MLPLayer(nn.Module):
    def __init__(self, in_features: int, hidden_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class InternImageLayer(nn.Module):
    """One block, (B, H, W, C) -> (B, H, W, C): a DCNv3 branch and an MLP branch.

    Pre-norm: ``x + γ·f(norm(x))``; post-norm (S/B): ``x + γ·norm(f(x))``; γ is a learned
    per-channel scale when ``layer_scale`` is set, else 1.
    """

    def __init__(
        self,
        channels: int,
        groups: int,
        mlp_ratio: float,
        drop_path: float,
        post_norm: bool,
        layer_scale: float | None,
        offset_scale: float,
        with_cp: bool,
    ) -> None:
        super().__init__()
        self.post_norm = post_norm
        self.with_cp = with_cp
        self.norm1 = layer_norm(channels)
        self.dcn = DCNv3(channels=channels, kernel_size=3, pad=1, dilation=1, group=groups, offset_scale=offset_scale)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = layer_norm(channels)
        self.mlp = MLPLayer(channels, int(channels * mlp_ratio))
        self.layer_scale = layer_scale is not None
        if self.layer_scale:
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(channels))
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(channels))

    def _branch(self, x: torch.Tensor, f: nn.Module, norm: nn.Module, gamma: str) -> torch.Tensor:
        y = norm(f(x)) if self.post_norm else f(norm(x))
        if self.layer_scale:
            y = getattr(self, gamma) * y
        return x + self.drop_path(y)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._branch(x, self.dcn, self.norm1, "gamma1")
        return self._branch(x, self.mlp, self.norm2, "gamma2")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class InternImageBlock(nn.Module):
    """One stage: ``depth`` layers, a LayerNorm for pre-norm models, then the downsampling.

    ``forward``: (B, H, W, C) -> (the stage's output (B, H, W, C), the next stage's input
    (B, H/2, W/2, 2C), or None for the last stage).
    """

    def __init__(
        self,
        channels: int,
        depth: int,
        groups: int,
        downsample: bool,
        mlp_ratio: float,
        drop_path: list[float],
        post_norm: bool,
        layer_scale: float | None,
        offset_scale: float,
        with_cp: bool,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            InternImageLayer(
                channels=channels,
                groups=groups,
                mlp_ratio=mlp_ratio,
                drop_path=drop_path[i],
                post_norm=post_norm,
                layer_scale=layer_scale,
                offset_scale=offset_scale,
                with_cp=with_cp,
            )
            for i in range(depth)
        )
        self.norm = nn.Identity() if post_norm else layer_norm(channels)
        self.downsample = DownsampleLayer(channels) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x, (self.downsample(x) if self.downsample is not None else None)


class InternImage(nn.Module):
    """InternImage encoder. ``forward``: (B, 3, H, W) -> 4 maps (B, channels[i], ⌈H/r_i⌉, ⌈W/r_i⌉)
    at reductions r = 4, 8, 16, 32 (channels-first, like timm's ``features_only``).

    Args:
        channels: width of the first stage; stage i has ``channels·2^i``.
        depths: blocks per stage.
        groups: DCNv3 groups per stage.
        mlp_ratio: MLP hidden width over the stage width.
        drop_path_rate: stochastic depth, rising linearly from 0 over all blocks.
        post_norm: LayerNorm after each branch instead of before (S/B), and no stage norm.
        layer_scale: initial value of the per-channel branch scales, None for no scales.
        offset_scale: factor on the DCNv3 offsets.
        with_cp: recompute each block in the backward pass (activation checkpointing) to save memory.
    """

    def __init__(
        self,
        channels: int = 64,
        depths: tuple[int, ...] = (4, 4, 18, 4),
        groups: tuple[int, ...] = (4, 8, 16, 32),
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.2,
        post_norm: bool = False,
        layer_scale: float | None = 1.0,
        offset_scale: float = 1.0,
        with_cp: bool = False,
    ) -> None:
        super().__init__()
        if len(depths) != 4 or len(groups) != 4:
            raise ValueError(f"depths and groups need 4 stages each, got {list(depths)} and {list(groups)}")
        self.channels = [channels * 2**i for i in range(4)]
        self.reductions = [4, 8, 16, 32]
        self.layer_scale = layer_scale
        self.patch_embed = StemLayer(3, channels)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.levels = nn.ModuleList(
            InternImageBlock(
                channels=self.channels[i],
                depth=depths[i],
                groups=groups[i],
                downsample=i < 3,
                mlp_ratio=mlp_ratio,
                drop_path=rates[sum(depths[:i]) : sum(depths[: i + 1])],
                post_norm=post_norm,
                layer_scale=layer_scale,
                offset_scale=offset_scale,
                with_cp=with_cp,
            )
            for i in range(4)
        )
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)  # (B, H/4, W/4, C)
        features = []
        for level in self.levels:
            out, x = level(x)
            features.append(out.permute(0, 3, 1, 2).contiguous())  # (B, C_i, H_i, W_i)
        return features


def _init_weights(m: nn.Module) -> None:
    """The official init: truncated-normal Linear layers, except DCNv3's own (zero offsets/masks)."""
    if isinstance(m, nn.Linear):
        trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, DCNv3):
        m.reset_parameters()  # after its children: apply() visits children first


def classification_head_params(model: InternImage, num_classes: int = 1000, cls_scale: float = 1.5) -> int:
    """Parameters of the official classification head the encoder leaves out (a 1×1 conv to
    ``cls_scale``× the last width, BatchNorm, a Linear classifier), to compare with the published
    classification-model counts."""
    width, hidden = model.channels[-1], int(model.channels[-1] * cls_scale)
    return width * hidden + 2 * hidden + hidden * num_classes + num_classes


def load_weights(model: InternImage, path: str | os.PathLike) -> None:
    """Load an official InternImage checkpoint (classification or UperNet) into ``model``, strictly.

    ``kit.models.weights.load_encoder_weights`` does the work: the state dict at the top level or under
    ``"model"`` / ``"state_dict"``, ``module.``/``backbone.`` prefixes stripped, classification-head
    keys (``conv_head``, ``head``, ``fc_norm``, ...) skipped. The layer-scale gammas may be missing
    when the model starts them at 1 (a classification T checkpoint in the segmentation T model:
    the same function).
    """
    gammas = [k for k in model.state_dict() if k.endswith((".gamma1", ".gamma2"))] if model.layer_scale == 1.0 else []
    load_encoder_weights(model, path, optional=gammas)


def create_internimage(
    name: str,
    pretrained: bool | str = False,
    weights: str | os.PathLike | None = None,
) -> InternImage:
    """Build the encoder ``name`` (a key of ``CONFIGS``), optionally with official weights.

    Args:
        name: ``internimage_tiny``, ``internimage_t``, ``internimage_s`` or ``internimage_b``.
        pretrained: the weights cannot be downloaded (nor are any bundled) here: True (or a
            string such as ``"bundled"``) without ``weights`` raises an error saying where to get them.
        weights: path of an official checkpoint (see :func:`load_weights`).
    """
    if name not in CONFIGS:
        raise ValueError(f"unknown InternImage encoder {name!r}; expected one of {sorted(CONFIGS)}")
    if pretrained and weights is None:
        source = CHECKPOINTS.get(name, "(none exists for this test-size config)")
        raise ValueError(
            f"{name}: pretrained={pretrained!r} is not available, InternImage weights cannot be downloaded "
            f"here; download the official checkpoint {source} from {WEIGHTS_URL} and pass weights=PATH"
        )
    model = InternImage(**CONFIGS[name])
    if weights is not None:
        load_weights(model, weights)
    return model
