"""Deformable convolution v3 (DCNv3), the core operator of InternImage, in pure PyTorch.

InternImage (Wang et al., "InternImage: Exploring Large-Scale Vision Foundation Models with
Deformable Convolutions", CVPR 2023) replaces attention with a sparse, learned sampling:

    y(p0) = Σ_g Σ_k w_g · m_gk · x_g(p0 + p_k + Δp_gk)

G groups of channels (like attention heads) each look at K = k×k points of a dilated grid p_k,
moved by learned offsets Δp_gk, weighted by masks m_gk that a softmax normalises over the K
points; the projection w is shared (``input_proj`` / ``output_proj``), not one per point.

This follows the structure and the numerics of the official pure-PyTorch reference
(OpenGVLab/InternImage, ``ops_dcnv3``: ``DCNv3_pytorch`` and ``dcnv3_core_pytorch``): the same
module and parameter names (so official checkpoints load), the same order of the K points and of
(x, y) in the offsets, bilinear sampling with zeros outside the image. Unlike the reference, the
input is never padded: the sampling grid is shifted by ``pad`` and ``grid_sample``'s zero padding
plays the padded border. Everything is channels-last ``(B, H, W, C)``, as in the official code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def dcnv3_core(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    kernel_size: int,
    stride: int,
    pad: int,
    dilation: int,
    group: int,
    group_channels: int,
    offset_scale: float,
) -> torch.Tensor:
    """Sample ``x`` at the deformed grid and sum the K points of each group, weighted by ``mask``.

    Args:
        x: (B, H, W, G·Cg) values, channels grouped as ``g·Cg + c``.
        offset: (B, H_out, W_out, G·K·2) offsets in pixels, laid out ``(g, k, xy)`` with the K
            points of the k×k grid ordered x-major (``k = ix·k + iy``), as the official op.
        mask: (B, H_out, W_out, G·K) weights of the points, laid out ``(g, k)``.
        kernel_size, stride, pad, dilation: of the sampling grid, as in a convolution:
            ``H_out = (H + 2·pad - dilation·(kernel_size - 1) - 1) // stride + 1``.
        group, group_channels: G and Cg.
        offset_scale: factor on the offsets and, as in the official op, on the grid's taps.

    Returns:
        (B, H_out, W_out, G·Cg).
    """
    b, h, w, c = x.shape
    if c != group * group_channels:
        raise ValueError(f"x has {c} channels, expected group·group_channels = {group}·{group_channels}")
    span = dilation * (kernel_size - 1)
    h_out = (h + 2 * pad - span - 1) // stride + 1
    w_out = (w + 2 * pad - span - 1) // stride + 1
    k = kernel_size * kernel_size
    if offset.shape != (b, h_out, w_out, group * k * 2):
        raise ValueError(f"offset has shape {tuple(offset.shape)}, expected {(b, h_out, w_out, group * k * 2)}")
    if mask.shape != (b, h_out, w_out, group * k):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {(b, h_out, w_out, group * k)}")

    # Undeformed grid in grid_sample's coordinates: with align_corners=False, pixel i of the
    # unpadded input spans [i, i + 1) of [0, W), i.e. its centre is at (2i + 1) / W - 1.
    # The grid is float32 whatever the input's dtype, as the official op's reference points: in
    # bfloat16 a normalised coordinate has 8 significant bits: steps of 3.75 px across a 1920-wide image.
    centre = span // 2
    f32 = torch.promote_types(x.dtype, torch.float32)  # float64 stays float64 (gradcheck)
    taps = (torch.arange(kernel_size, dtype=f32, device=x.device) * dilation - centre) * offset_scale
    ref_y = torch.arange(h_out, dtype=f32, device=x.device) * stride - pad + centre  # (H_out,)
    ref_x = torch.arange(w_out, dtype=f32, device=x.device) * stride - pad + centre  # (W_out,)
    loc_y = ref_y[:, None, None, None] + taps[None, None, None, :]  # (H_out, 1, 1, ky)
    loc_x = ref_x[None, :, None, None] + taps[None, None, :, None]  # (1, W_out, kx, 1)
    loc = torch.stack(torch.broadcast_tensors(loc_x, loc_y), dim=-1)  # (H_out, W_out, kx, ky, 2), x-major
    size = torch.tensor([w, h], dtype=f32, device=x.device)
    base = ((2 * loc + 1) / size - 1).view(h_out, w_out, 1, k, 2)
    # One fused pass over the big tensor; adding the offsets as pixels means scaling them by 2/size.
    grid = torch.addcmul(base, offset.view(b, h_out, w_out, group, k, 2).to(f32), 2 * offset_scale / size)
    # (B, H_out, W_out, G, K, 2) -> (B·G, H_out·W_out, K, 2)
    grid = grid.permute(0, 3, 1, 2, 4, 5).reshape(b * group, h_out * w_out, k, 2)

    value = x.view(b, h, w, group, group_channels).permute(0, 3, 4, 1, 2)  # (B, G, Cg, H, W)
    value = value.reshape(b * group, group_channels, h, w)
    sampled = F.grid_sample(value.to(f32), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # sampled: (B·G, Cg, H_out·W_out, K)
    weight = mask.view(b, h_out * w_out, group, k).transpose(1, 2).reshape(b * group, h_out * w_out, k)
    out = (sampled * weight[:, None].to(f32)).sum(-1).to(x.dtype)  # (B·G, Cg, H_out·W_out)
    out = out.reshape(b, group * group_channels, h_out, w_out)
    return out.permute(0, 2, 3, 1).contiguous()  # (B, H_out, W_out, G·Cg)


class Permute(nn.Module):
    """``x.permute(*dims)`` as a module, to keep the official ``nn.Sequential`` layouts (and keys)."""

    def __init__(self, *dims: int) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


def layer_norm(channels: int, channels_first_in: bool = False, channels_first_out: bool = False) -> nn.Sequential:
    """LayerNorm over channels wrapped like the official ``build_norm_layer(dim, 'LN', in, out)``:
    the ``nn.LayerNorm`` sits at index 1 after a permute to channels-last, else at index 0."""
    layers: list[nn.Module] = []
    if channels_first_in:
        layers.append(Permute(0, 2, 3, 1))  # (B, C, H, W) -> (B, H, W, C)
    layers.append(nn.LayerNorm(channels, eps=1e-6))
    if channels_first_out:
        layers.append(Permute(0, 3, 1, 2))  # (B, H, W, C) -> (B, C, H, W)
    return nn.Sequential(*layers)


class DCNv3(nn.Module):
    """The DCNv3 layer: ``input_proj``, offsets and masks predicted from a depth-wise conv of the
    input, :func:`dcnv3_core`, ``output_proj``. ``forward``: (B, H, W, C) -> (B, H_out, W_out, C).

    The layer has stride 1, as in every InternImage block: its offsets are predicted per input
    pixel (the official module's ``stride`` argument only works at 1); :func:`dcnv3_core` takes any.

    Args:
        channels: C, divisible by ``group``.
        kernel_size, pad, dilation: of the sampling grid.
        dw_kernel_size: kernel of the depth-wise conv that predicts offsets and masks
            (``kernel_size`` when None).
        group: G, the number of groups (heads).
        offset_scale: factor on the predicted offsets.
        center_feature_scale: blend the output with the projected input by a learned, per-group
            sigmoid gate (used by InternImage-H/G only).
    """

    def __init__(
        self,
        channels: int = 64,
        kernel_size: int = 3,
        dw_kernel_size: int | None = None,
        pad: int = 1,
        dilation: int = 1,
        group: int = 4,
        offset_scale: float = 1.0,
        center_feature_scale: bool = False,
    ) -> None:
        super().__init__()
        if channels % group != 0:
            raise ValueError(f"channels = {channels} is not divisible by group = {group}")
        dw_kernel_size = kernel_size if dw_kernel_size is None else dw_kernel_size
        self.channels = channels
        self.kernel_size = kernel_size
        self.pad = pad
        self.dilation = dilation
        self.group = group
        self.group_channels = channels // group
        self.offset_scale = offset_scale
        self.center_feature_scale = center_feature_scale

        k = kernel_size * kernel_size
        self.dw_conv = nn.Sequential(
            nn.Conv2d(channels, channels, dw_kernel_size, padding=(dw_kernel_size - 1) // 2, groups=channels),
            layer_norm(channels, channels_first_in=True),
            nn.GELU(),
        )
        self.offset = nn.Linear(channels, group * k * 2)
        self.mask = nn.Linear(channels, group * k)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        if center_feature_scale:
            self.center_feature_scale_proj_weight = nn.Parameter(torch.zeros(group, channels))
            self.center_feature_scale_proj_bias = nn.Parameter(torch.zeros(group))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zero offsets and uniform masks at start (a plain k×k average), Xavier projections."""
        for layer in (self.offset, self.mask):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for layer in (self.input_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        value = self.input_proj(x)  # (B, H, W, C)
        query = self.dw_conv(x.permute(0, 3, 1, 2))  # (B, H, W, C)
        offset = self.offset(query)  # (B, H, W, G·K·2)
        mask = self.mask(query).view(b, h, w, self.group, -1).softmax(-1).view(b, h, w, -1)  # (B, H, W, G·K)
        out = dcnv3_core(
            value,
            offset,
            mask,
            kernel_size=self.kernel_size,
            stride=1,
            pad=self.pad,
            dilation=self.dilation,
            group=self.group,
            group_channels=self.group_channels,
            offset_scale=self.offset_scale,
        )
        if self.center_feature_scale:
            gate = F.linear(query, self.center_feature_scale_proj_weight, self.center_feature_scale_proj_bias)
            gate = gate.sigmoid().repeat_interleave(self.group_channels, dim=-1)  # (B, H, W, C)
            out = out * (1 - gate) + value * gate
        return self.output_proj(out)
