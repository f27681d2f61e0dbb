"""SegFormer's all-MLP decode head as a kit head (``ARCH = "segformer"``): ``transformers``' own module,
so that a published SegFormer checkpoint's decode head loads into it key for key. Apart from
:mod:`kit.models.heads` because subclassing it imports ``transformers``' models (seconds), which only a
run with this head needs (``kit.models.heads.HEADS`` imports this module on first use)."""

from __future__ import annotations

import torch
from transformers import SegformerConfig
from transformers.models.segformer.modeling_segformer import SegformerDecodeHead


class SegFormerHead(SegformerDecodeHead):
    """SegFormer's all-MLP decoder, ``transformers``' own (``SegformerDecodeHead``): per-level linear →
    stride 4 → concat → 1×1 fuse (conv, BN, ReLU) → dropout → classifier. Being that module, it loads
    the decode head of a published SegFormer checkpoint key for key (``kit.models.cityscapes``)."""

    def __init__(
        self,
        in_channels: list[int],
        num_classes: int,
        channels: int = 256,
        dropout: float = 0.1,
    ) -> None:
        config = SegformerConfig(hidden_sizes=list(in_channels), num_encoder_blocks=len(in_channels),
                                 decoder_hidden_size=channels, num_labels=num_classes, classifier_dropout_prob=dropout)
        super().__init__(config)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return super().forward(list(features))  # (B, K, H/4, W/4)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Runs of the kit's own earlier SegFormer head load too: its keys (``embed.embed.i`` 1×1 convs,
        ``fuse.0/1`` conv + BN over the levels in order 1…4, ``classifier.1``) are renamed and reshaped
        into ``transformers``' (linear projections, fuse over the levels in order 4…1)."""
        if f"{prefix}embed.embed.0.weight" in state_dict:
            levels = len(self.linear_projections)
            for i in range(levels):
                weight = state_dict.pop(f"{prefix}embed.embed.{i}.weight")
                state_dict[f"{prefix}linear_projections.{i}.proj.weight"] = weight.flatten(1)
                state_dict[f"{prefix}linear_projections.{i}.proj.bias"] = state_dict.pop(f"{prefix}embed.embed.{i}.bias")
            fuse = state_dict.pop(f"{prefix}fuse.0.weight")  # (ch, levels·ch, 1, 1)
            state_dict[f"{prefix}linear_fuse.weight"] = torch.cat(fuse.chunk(levels, dim=1)[::-1], dim=1)
            for old, new in (("fuse.1.", "batch_norm."), ("classifier.1.", "classifier.")):
                for key in [k for k in state_dict if k.startswith(prefix + old)]:
                    state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
