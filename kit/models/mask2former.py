"""Mask2Former's mask-classification head on the kit's encoders, built from ``transformers``' parts.

Cheng et al., "Masked-attention Mask Transformer for Universal Image Segmentation", CVPR 2022;
reference solution B's strongest model (InternImage-H + Mask2Former, 200 queries, 9 decoder layers,
no-object class weight 0.1). The network pieces are Hugging Face ``transformers``' own, so that the
kit does not carry a copy of them: ``Mask2FormerPixelDecoder`` (multi-scale deformable-attention
encoder over the three coarsest levels + an FPN to stride 4), ``Mask2FormerTransformerModule``
(masked-attention decoder; its layers' mask predictions give deep supervision) and ``Mask2FormerLoss``
(Hungarian matching; class cross-entropy with a no-object weight, mask BCE + Dice on
importance-sampled points). Their multi-scale deformable attention is pure PyTorch and runs on the CPU.

What the kit adds:

- :func:`label_masks`: a label map → one binary mask per class present (background is a class);
  ignored pixels (255, pseudo-labels' 254 once read) belong to no mask, as in the original code and
  mmseg's Mask2Former, so they are negatives of every mask and no class target.
- :func:`semantic_probabilities`: the semantic read-out (mask logits upsampled to the input size,
  then class softmax without no-object × mask sigmoid, summed over queries, as the original's
  ``semantic_inference``), normalised to sum to 1 over the classes.
- :class:`MaskClassificationModel`: in training, ``forward`` returns every decoder layer's class and
  mask logits (:class:`MaskPredictions`) for :meth:`Mask2FormerHead.losses`; in evaluation it returns
  the *log* of the semantic probabilities, so the kit's prediction code (its softmax gives back the
  probabilities exactly), slide windows, TTA, ensembles and submissions work unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Mask2FormerConfig
from transformers.models.mask2former.modeling_mask2former import (
    Mask2FormerLoss,
    Mask2FormerPixelDecoder,
    Mask2FormerPreTrainedModel,
    Mask2FormerTransformerModule,
)

# Mask2Former's loss weights (its paper and transformers' defaults): class 2, mask BCE 5, Dice 5.
LOSS_WEIGHTS = {"class": 2.0, "mask": 5.0, "dice": 5.0}
_HF_LOSS_NAMES = {"class": "loss_cross_entropy", "mask": "loss_mask", "dice": "loss_dice"}


class MaskPredictions(NamedTuple):
    """Every decoder layer's predictions; index -1 is the final layer's.

    classes: (L, B, Q, K + 1) class logits, the last column is "no object".
    masks: (L, B, Q, h, w) mask logits at stride 4 of the input.
    """

    classes: torch.Tensor
    masks: torch.Tensor


def label_masks(
    labels: torch.Tensor,
    num_classes: int,
    ignore_index: int = 255,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Label maps ``(B, H, W)`` → per image, the binary masks ``(n, H, W)`` float of the ``n`` classes
    present (ascending) and their class ids ``(n,)`` long. Values ≥ ``num_classes`` other than
    ``ignore_index`` are an error; ignored pixels belong to no mask."""
    masks, classes = [], []
    for label in labels:  # (H, W)
        present = torch.unique(label)
        present = present[present != ignore_index]
        if present.numel() and int(present.max()) >= num_classes:
            raise ValueError(f"label value {int(present.max())} is no class of 0..{num_classes - 1} "
                             f"and not the ignore index {ignore_index}")
        masks.append((label[None] == present[:, None, None]).float())  # (n, H, W)
        classes.append(present.long())
    return masks, classes


READ_OUT_QUERIES = 25  # queries resized at once: 200 of them at 1080×1920 would hold 1.7 GB


def semantic_probabilities(
    classes: torch.Tensor,
    masks: torch.Tensor,
    size: Sequence[int] | None = None,
) -> torch.Tensor:
    """Per-class probabilities ``(B, K, H, W)`` summing to 1 per pixel from one layer's
    ``classes (B, Q, K + 1)`` and ``masks (B, Q, h, w)`` logits, at ``size`` (default: the masks').

    As the original (and ``transformers``' ``post_process_semantic_segmentation``), the mask
    *logits* are resized (bilinear) before the sigmoid: the sigmoid is not linear, so resizing the
    map Σ_q softmax(class_q)[k] · sigmoid(mask_q) at stride 4 instead would blur the masks' edges."""
    size = tuple(masks.shape[-2:] if size is None else size)
    scores = None
    with torch.autocast(masks.device.type, enabled=False):  # sums of 200 queries: in float32 under AMP too
        weights = classes.float().softmax(-1)[..., :-1]  # (B, Q, K): no "no object"
        for start in range(0, masks.shape[1], READ_OUT_QUERIES):  # (B, READ_OUT_QUERIES, H, W) at a time, not all Q
            chunk = masks[:, start:start + READ_OUT_QUERIES].float()
            if tuple(chunk.shape[-2:]) != size:
                chunk = F.interpolate(chunk, size=size, mode="bilinear", align_corners=False)
            part = torch.einsum("bqk,bqhw->bkhw", weights[:, start:start + READ_OUT_QUERIES], chunk.sigmoid())
            scores = part if scores is None else scores + part
    scores = scores.clamp_min(1e-6)  # a pixel no query claims gets the uniform distribution, not 0/0
    return scores / scores.sum(dim=1, keepdim=True)


class Mask2FormerHead(Mask2FormerPreTrainedModel):
    """Pixel decoder + masked-attention transformer decoder + class predictor, and the matching loss.

    A ``transformers`` pretrained-model class only so that its own weight initialisation runs
    (``post_init``); the kit builds, saves and loads it like any head. Defaults are solution B's.

    Args:
        in_channels: the encoder's 4 level widths (strides ``reductions``).
        num_classes: K, classes including background.
        channels: width of the pixel decoder, the queries and the mask features (a multiple of 32:
            the pixel decoder uses GroupNorm with 32 groups).
        queries: number of queries (solution B 200).
        layers: masked-attention decoder layers (solution B 9); each, and the prediction made from
            the queries before the first, is supervised.
        encoder_layers: deformable-attention layers of the pixel decoder (6).
        heads: attention heads in both decoders.
        feedforward: feed-forward width of the transformer decoder (2048); the pixel decoder's is half.
        no_object_weight: class-loss weight of "no object" (solution B 0.1).
        points: points sampled per mask for the matching and the mask losses (112² = 12544).
        reductions: the encoder levels' strides.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 256,
        queries: int = 200,
        layers: int = 9,
        encoder_layers: int = 6,
        heads: int = 8,
        feedforward: int = 2048,
        no_object_weight: float = 0.1,
        points: int = 12544,
        reductions: Sequence[int] = (4, 8, 16, 32),
    ) -> None:
        if channels % 32 or channels % heads:
            raise ValueError(f"mask2former channels = {channels}: expected a multiple of 32 (GroupNorm groups) "
                             f"and of heads = {heads}")
        if len(in_channels) != 4:
            raise ValueError(f"mask2former needs 4 encoder levels, got {len(in_channels)}: {list(in_channels)}")
        config = Mask2FormerConfig(
            num_labels=num_classes, feature_size=channels, mask_feature_size=channels, hidden_dim=channels,
            num_queries=queries, decoder_layers=layers + 1,  # transformers counts the prediction before layer 1
            encoder_layers=encoder_layers, num_attention_heads=heads, dim_feedforward=feedforward,
            encoder_feedforward_dim=feedforward // 2, no_object_weight=no_object_weight, train_num_points=points,
            class_weight=LOSS_WEIGHTS["class"], mask_weight=LOSS_WEIGHTS["mask"], dice_weight=LOSS_WEIGHTS["dice"],
            feature_strides=list(reductions),
        )
        super().__init__(config)
        self.pixel_decoder = Mask2FormerPixelDecoder(config, feature_channels=list(in_channels))
        self.transformer = Mask2FormerTransformerModule(in_features=channels, config=config)
        self.class_predictor = nn.Linear(channels, num_classes + 1)
        self.criterion = Mask2FormerLoss(config, weight_dict={})
        # the no-object weight is a setting, not a learnt state: keep it out of checkpoints
        self.criterion.register_buffer("empty_weight", self.criterion.empty_weight, persistent=False)
        self.num_classes = num_classes
        self.post_init()

    def forward(self, features: list[torch.Tensor]) -> MaskPredictions:
        """features: 4 × (B, C_i, H/r_i, W/r_i) → :class:`MaskPredictions` of layers + 1 predictions."""
        pixels = self.pixel_decoder(features)  # mask_features (B, ch, H/4, W/4) + 3 coarser levels
        decoded = self.transformer(list(pixels.multi_scale_features), pixels.mask_features)
        classes = torch.stack([self.class_predictor(h.transpose(0, 1))  # (Q, B, ch) → (B, Q, K + 1)
                               for h in decoded.intermediate_hidden_states])
        return MaskPredictions(classes, torch.stack(list(decoded.masks_queries_logits)))

    def losses(
        self,
        predictions: MaskPredictions,
        labels: torch.Tensor,
        ignore_index: int = 255,
    ) -> dict[str, torch.Tensor]:
        """Mask2Former's weighted losses of ``labels (B, H, W)``, each summed over the decoder layers
        (deep supervision): ``class`` (2 × CE), ``mask`` (5 × BCE) and ``dice`` (5 × Dice)."""
        masks, classes = label_masks(labels, self.num_classes, ignore_index)
        totals = dict.fromkeys(LOSS_WEIGHTS, 0.0)
        for layer_classes, layer_masks in zip(predictions.classes.float(), predictions.masks.float()):
            layer = self.criterion(layer_masks, layer_classes, masks, classes)
            for name, weight in LOSS_WEIGHTS.items():
                totals[name] = totals[name] + weight * layer[_HF_LOSS_NAMES[name]]
        return totals


class MaskClassificationModel(nn.Module):
    """Encoder → :class:`Mask2FormerHead`. Training: ``forward`` gives :class:`MaskPredictions`;
    evaluation: the log of :func:`semantic_probabilities` ``(B, K, H, W)`` at the input size."""

    def __init__(self, encoder: nn.Module, decode_head: Mask2FormerHead) -> None:
        super().__init__()
        self.encoder = encoder
        self.decode_head = decode_head

    def forward(self, x: torch.Tensor) -> MaskPredictions | torch.Tensor:
        predictions = self.decode_head(self.encoder(x))
        if self.training:
            return predictions
        return semantic_probabilities(predictions.classes[-1], predictions.masks[-1], x.shape[-2:]).log()
