"""Cityscapes-trained models as a start: their 19 classes mapped onto the competition's 12 + background
(``kit.competition.cityscapes``).

Two uses:

- **Fine-tuning a whole SegFormer** (``ARCH = "segformer"`` on ``mit_b*`` with ``WEIGHTS`` a
  ``nvidia/segformer-b*-finetuned-cityscapes-*`` model): :func:`load_cityscapes_segformer` copies its
  encoder and decode head into the kit's model. The classifier's rows are mapped: a competition class
  starts from its Cityscapes class's row, a merged class (Construction, Nature, Car) from the row of
  its largest member (building, vegetation, car), background from a new row. Likewise a whole
  Mask2Former (``ARCH = "mask2former"`` on ``hf_swin_*``, ``WEIGHTS`` a
  ``facebook/mask2former-swin-*-cityscapes-semantic`` model): :func:`load_cityscapes_mask2former`.
- **Zero-shot prediction** (:class:`CityscapesModel`): a SegFormer or Mask2Former Cityscapes model
  that the kit never trained predicts the competition's classes: each competition class's
  probability is the sum of its Cityscapes classes' probabilities. ``python -m kit.predict.zero_shot``
  writes such a model as a run folder, so that ``04``/``05``/``06`` predict with it like any run.

Licences: NVIDIA's SegFormer checkpoints and the Mask2Former model zoo (CC BY-NC 4.0) are for
non-commercial use.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    PretrainedConfig,
    SegformerConfig,
    SegformerForSemanticSegmentation,
)

from kit.competition.cityscapes import CITYSCAPES_CLASSES, cityscapes_class_map, first_members
from kit.competition.labels import NUM_CLASSES
from kit.models.mask2former import semantic_probabilities
from kit.models.segformer import _quiet_transformers, from_pretrained_checked, local_or_hub, read_segformer, reading

_NETWORKS: dict[str, tuple[type[PretrainedConfig], type[nn.Module]]] = {
    "segformer": (SegformerConfig, SegformerForSemanticSegmentation),
    "mask2former": (Mask2FormerConfig, Mask2FormerForUniversalSegmentation),
}


def check_cityscapes_labels(config: PretrainedConfig, source: str) -> None:
    """Raise unless ``config`` predicts Cityscapes' 19 classes in their order (names compared where
    the config names them; generic ``LABEL_i`` names are accepted)."""
    if config.num_labels != len(CITYSCAPES_CLASSES):
        raise ValueError(f"{source} predicts {config.num_labels} classes, not Cityscapes' 19: its head cannot start "
                         f"the competition's (choose another ARCH to load only its encoder)")
    names = [str(config.id2label[i]).lower() for i in range(config.num_labels)]
    if not all(name == f"label_{i}" for i, name in enumerate(names)) and names != list(CITYSCAPES_CLASSES):
        raise ValueError(f"{source}'s classes {names} are not Cityscapes' {list(CITYSCAPES_CLASSES)} in that order")


def mapping_matrix(class_map: Sequence[int]) -> torch.Tensor:
    """``(13, 19)`` float: row k sums the Cityscapes classes ``class_map`` sends to output k."""
    matrix = torch.zeros(NUM_CLASSES + 1, len(class_map))
    matrix[list(class_map), range(len(class_map))] = 1.0
    return matrix


def map_classifier_rows(
    cityscapes: Mapping[str, torch.Tensor],
    fresh: Mapping[str, torch.Tensor],
    class_map: Sequence[int],
) -> dict[str, torch.Tensor]:
    """The competition classifier's ``weight``/``bias`` from a Cityscapes classifier's (19 rows): row k
    is the row of :func:`kit.competition.cityscapes.first_members`' class for k; background keeps
    ``fresh``'s row (the new head's own initialisation)."""
    out = {name: tensor.detach().clone() for name, tensor in fresh.items()}
    for output, source in first_members(tuple(class_map)).items():
        for name in out:
            out[name][output] = cityscapes[name][source]
    return out


def load_cityscapes_segformer(model: nn.Module, source: str | os.PathLike, variant: str) -> None:
    """Copy a whole Cityscapes SegFormer ``source`` (hub id, folder or state-dict file) into ``model``:
    a kit ``segformer`` model on ``variant`` (its ``encoder.model`` and ``decode_head``), mapping the
    classifier as :func:`map_classifier_rows`. Every tensor of the checkpoint is used. Where the
    two-wheelers go does not matter here: no merged class starts from their rows."""
    network = read_segformer(source, variant, whole=True)
    check_cityscapes_labels(network.config, str(source))
    width, ours = network.config.decoder_hidden_size, model.decode_head.config.decoder_hidden_size
    if width != ours:
        raise ValueError(f"{source}'s decode head is {width} channels wide, the run's is {ours}: "
                         f"set HEAD_CHANNELS = {width}")
    model.encoder.model.load_state_dict(network.segformer.state_dict(), strict=True)
    head = network.decode_head.state_dict()
    classifier = {name: head.pop(f"classifier.{name}") for name in ("weight", "bias")}
    fresh = {name: getattr(model.decode_head.classifier, name) for name in ("weight", "bias")}
    mapped = map_classifier_rows(classifier, fresh, cityscapes_class_map())
    model.decode_head.load_state_dict({**head, **{f"classifier.{k}": v for k, v in mapped.items()}}, strict=True)


# head options (kit.models.mask2former.Mask2FormerHead) ← a transformers Mask2FormerConfig
_MASK2FORMER_OPTIONS = {"queries": "num_queries", "encoder_layers": "encoder_layers", "heads": "num_attention_heads",
                        "feedforward": "dim_feedforward"}


def mask2former_head_options(config: Mask2FormerConfig) -> dict[str, int]:
    """``HEAD_CHANNELS`` (as ``channels``) and the ``HEAD_OPTIONS`` a kit head needs to hold ``config``'s weights."""
    return {"channels": config.hidden_dim, "layers": config.decoder_layers - 1,
            **{ours: getattr(config, theirs) for ours, theirs in _MASK2FORMER_OPTIONS.items()}}


def load_cityscapes_mask2former(model: nn.Module, source: str | os.PathLike) -> None:
    """Copy a whole Cityscapes Mask2Former ``source`` (hub id or folder) into ``model``: a kit
    ``mask2former`` on the matching ``hf_swin_*`` (its backbone, pixel decoder, transformer decoder
    and class predictor; every tensor of the checkpoint but the loss's no-object weight, a setting).
    Class rows are mapped as :func:`map_classifier_rows`; "no object" keeps its row."""
    from kit.models.hf_swin import load_mask2former_backbone, read_mask2former

    network = read_mask2former(source)
    check_cityscapes_labels(network.config, str(source))
    needed, head = mask2former_head_options(network.config), model.decode_head
    have = mask2former_head_options(head.config)
    if needed != have:
        options = {k: v for k, v in needed.items() if k != "channels"}
        raise ValueError(f"{source}'s Mask2Former is {needed}, the run's head is {have}: set HEAD_CHANNELS = "
                         f"{needed['channels']} and HEAD_OPTIONS = {options}")
    load_mask2former_backbone(model.encoder, network, str(source))
    head.pixel_decoder.load_state_dict(network.model.pixel_level_module.decoder.state_dict(), strict=True)
    head.transformer.load_state_dict(network.model.transformer_module.state_dict(), strict=True)
    theirs = {name: getattr(network.class_predictor, name) for name in ("weight", "bias")}
    fresh = {name: getattr(head.class_predictor, name) for name in ("weight", "bias")}
    mapped = map_classifier_rows(theirs, fresh, cityscapes_class_map())
    for name in mapped:  # the last row is "no object" in both
        mapped[name][-1] = theirs[name][-1]
    head.class_predictor.load_state_dict(mapped, strict=True)


# --------------------------------------------------------------------------- zero-shot


def cityscapes_probabilities(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(B, 19, H, W)`` class probabilities of a Cityscapes ``network`` at the input's size, in the order
    of ``transformers``' ``post_process_semantic_segmentation``: SegFormer's logits resized, then
    softmax; Mask2Former's mask logits resized (to the input's own size, where transformers assumes
    its processor's 384×384), sigmoid, weighted by the class softmax (no-object left out),
    normalised to sum to 1."""
    size = x.shape[-2:]
    out = network(pixel_values=x)
    if isinstance(network, SegformerForSemanticSegmentation):
        return F.interpolate(out.logits.float(), size=size, mode="bilinear", align_corners=False).softmax(dim=1)
    return semantic_probabilities(out.class_queries_logits, out.masks_queries_logits, size)


class CityscapesModel(nn.Module):
    """A Cityscapes ``network`` (SegFormer or Mask2Former) predicting the competition's 13 outputs: in
    both modes ``forward`` gives the log of the mapped probabilities ``(B, 13, H, W)`` (the kit's
    softmax of them gives the probabilities back), for prediction; it is not trained."""

    def __init__(self, network: nn.Module, class_map: Sequence[int]) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mapping", mapping_matrix(class_map), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = cityscapes_probabilities(self.network, x)
        return torch.einsum("kc,bchw->bkhw", self.mapping, probs).clamp_min(1e-8).log()


def network_kind(model_type: str) -> str:
    if model_type not in _NETWORKS:
        raise ValueError(f"a {model_type!r} model is no Cityscapes model the kit maps; expected "
                         f"{' or '.join(_NETWORKS)} (SegformerForSemanticSegmentation, "
                         f"Mask2FormerForUniversalSegmentation)")
    return model_type


def read_cityscapes_network(source: str | os.PathLike) -> nn.Module:
    """A Cityscapes SegFormer or Mask2Former from a hub id or ``save_pretrained`` folder, every tensor
    filled, its 19 classes checked."""
    from transformers import AutoConfig

    source = local_or_hub(source, "Cityscapes model")
    with reading("Cityscapes model", source):
        config = AutoConfig.from_pretrained(source)
    network = from_pretrained_checked(_NETWORKS[network_kind(config.model_type)][1], source, "Cityscapes model")
    check_cityscapes_labels(network.config, source)
    return network


def network_config(network: nn.Module) -> dict:
    """The network's configuration as plain JSON values (a run's ``head_kwargs["network"]``)."""
    return json.loads(network.config.to_json_string(use_diff=False))


def cityscapes_model_from_config(network: Mapping[str, object], class_map: Sequence[int]) -> CityscapesModel:
    """The :class:`CityscapesModel` a run's ``head_kwargs`` describe, with random weights (a checkpoint follows)."""
    config_cls, model_cls = _NETWORKS[network_kind(str(network.get("model_type")))]
    config = config_cls.from_dict(dict(network))
    with _quiet_transformers():
        return CityscapesModel(model_cls(config), class_map)
