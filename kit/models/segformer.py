"""The real MiT encoder (SegFormer's) and SegFormer checkpoints, through ``transformers``.

timm has no MiT; ``transformers``' ``SegformerModel`` is the real one, whose published weights load:
ImageNet encoders ``nvidia/mit-b0`` … ``nvidia/mit-b5`` and whole Cityscapes models
``nvidia/segformer-b{0..5}-finetuned-cityscapes-*`` (encoder + all-MLP head, 19 classes; NVIDIA's
licence: non-commercial use only). ``mit_b0`` … ``mit_b5`` build it from its published
configuration (Xie et al., NeurIPS 2021, table 6: widths, depths; heads 1/2/5/8, reduction ratios
8/4/2/1, MLP ratio 4 in every variant).

Weights (:func:`read_segformer`) come from a hub id, a local folder saved with ``save_pretrained``
(either in the published layout), or a single file: a ``transformers`` state dict, or the original
SegFormer key names of NVlabs/SegFormer (``patch_embed1``, ``block1.0.attn.kv``, ``decode_head.linear_c1``,
…), converted here to the published layout and loaded by ``transformers`` itself. mmsegmentation
1.x's renamed MiT (``backbone.layers.*``) is refused with a message. Every tensor of
what is built must come from the weights; the error names the source and what was missing.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
import transformers  # the package only: its model classes load when a function here uses them (seconds of imports)
from torch import nn

# (hidden sizes, depths, decoder width) of the published variants
MIT_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...], int]] = {
    "mit_b0": ((32, 64, 160, 256), (2, 2, 2, 2), 256),
    "mit_b1": ((64, 128, 320, 512), (2, 2, 2, 2), 256),
    "mit_b2": ((64, 128, 320, 512), (3, 4, 6, 3), 768),
    "mit_b3": ((64, 128, 320, 512), (3, 4, 18, 3), 768),
    "mit_b4": ((64, 128, 320, 512), (3, 8, 27, 3), 768),
    "mit_b5": ((64, 128, 320, 512), (3, 6, 40, 3), 768),
}
MIT_HUB = {name: f"nvidia/mit-{name[-2:]}" for name in MIT_VARIANTS}  # ImageNet-1k weights


def is_mit(name: str) -> bool:
    return name in MIT_VARIANTS


def mit_config(name: str, **values) -> transformers.SegformerConfig:
    """The published configuration of ``name`` (``mit_b0`` … ``mit_b5``); ``values`` override it."""
    if not is_mit(name):
        raise ValueError(f"unknown MiT encoder {name!r}; expected one of {', '.join(MIT_VARIANTS)}")
    hidden, depths, decoder = MIT_VARIANTS[name]
    return transformers.SegformerConfig(**{"hidden_sizes": list(hidden), "depths": list(depths), "decoder_hidden_size": decoder,
                              **values})


class MiTEncoder(nn.Module):
    """``transformers``' ``SegformerModel`` giving its 4 stage outputs (B, C_i, H/r_i, W/r_i).

    Attributes:
        model: the ``SegformerModel`` (its state_dict keys are transformers').
        channels: the stages' widths, e.g. ``[32, 64, 160, 256]`` for mit_b0.
        reductions: their strides, ``[4, 8, 16, 32]``.
    """

    def __init__(self, model: transformers.SegformerModel) -> None:
        super().__init__()
        self.model = model
        self.channels: list[int] = list(model.config.hidden_sizes)
        self.reductions: list[int] = list(itertools.accumulate(model.config.strides, operator.mul))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.model(pixel_values=x, output_hidden_states=True).hidden_states)


# --------------------------------------------------------------------------- reading weights


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers prints a load report of every key it skipped; the kit checks them itself."""
    hf_logging = transformers.utils.logging
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


# the original SegFormer / mmsegmentation names → the published transformers names
_ORIGINAL_RENAMES = (
    (r"^patch_embed(\d)\.proj\.", lambda m: f"encoder.patch_embeddings.{int(m[1]) - 1}.proj."),
    (r"^patch_embed(\d)\.norm\.", lambda m: f"encoder.patch_embeddings.{int(m[1]) - 1}.layer_norm."),
    (r"^block(\d)\.(\d+)\.", lambda m: f"encoder.block.{int(m[1]) - 1}.{m[2]}."),
    (r"^norm(\d)\.", lambda m: f"encoder.layer_norm.{int(m[1]) - 1}."),
    (r"\.norm1\.", ".layer_norm_1."), (r"\.norm2\.", ".layer_norm_2."),
    (r"\.attn\.q\.", ".attention.self.query."), (r"\.attn\.sr\.", ".attention.self.sr."),
    (r"\.attn\.norm\.", ".attention.self.layer_norm."), (r"\.attn\.proj\.", ".attention.output.dense."),
    (r"\.mlp\.fc1\.", ".mlp.dense1."), (r"\.mlp\.fc2\.", ".mlp.dense2."),
    (r"^decode_head\.linear_c(\d)\.", lambda m: f"decode_head.linear_c.{int(m[1]) - 1}."),
    (r"^decode_head\.linear_fuse\.conv\.", "decode_head.linear_fuse."),
    (r"^decode_head\.linear_fuse\.bn\.", "decode_head.batch_norm."),
    (r"^decode_head\.linear_pred\.", "decode_head.classifier."),
)


def is_original_layout(state: Mapping[str, torch.Tensor]) -> bool:
    return any(re.match(r"^(backbone\.)?(patch_embed\d|block\d)\.", key) for key in state)


def _is_mmseg1_layout(state: Mapping[str, torch.Tensor]) -> bool:
    return any(re.match(r"^(backbone\.)?layers\.\d+\.\d+\.", key) for key in state)


def original_to_published(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An original SegFormer / mmseg state dict under the published ``transformers`` names.

    The fused ``attn.kv`` projection is split into key and value (first half: key); an encoder
    under ``backbone.`` goes under ``segformer.encoder.``; a classifier's ``head.*`` is dropped.
    """
    whole = any(key.startswith("decode_head.") for key in state)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        key = key.removeprefix("backbone.")
        if key.startswith("head.") or key.startswith("auxiliary_head."):
            continue  # the ImageNet classifier, mmseg's auxiliary head: nothing of the segmentation model
        for pattern, replacement in _ORIGINAL_RENAMES:
            key = re.sub(pattern, replacement, key)
        if ".attn.kv." in key:
            key_part, value_part = tensor.chunk(2, dim=0)
            out[key.replace(".attn.kv.", ".attention.self.key.")] = key_part
            out[key.replace(".attn.kv.", ".attention.self.value.")] = value_part
            continue
        out[key] = tensor
    if whole:  # a whole segmentation model: the encoder sits under `segformer.`
        out = {(k if k.startswith("decode_head.") else f"segformer.{k}"): v for k, v in out.items()}
    return out


def _read_state_file(path: Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (safetensors, or a torch file, maybe under ``state_dict``/``model``);
    ``mmap``: its tensors are not read from disk until used (torch files in the zip format)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError:
        if not mmap:
            raise
        state = torch.load(path, map_location="cpu", weights_only=True)  # the legacy format cannot be mapped
    for key in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    return dict(state)


def _state_keys(path: Path) -> list[str]:
    """The keys of the state dict in ``path``, without reading its tensors."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as file:
            return list(file.keys())
    return list(_read_state_file(path, mmap=True))


def _published_folder(path: Path, variant: str, folder: Path) -> Path:
    """Write the state dict in ``path`` as a ``save_pretrained`` folder of ``variant``'s config."""
    from safetensors.torch import save_file

    state = {k.removeprefix("module."): v.contiguous() for k, v in _read_state_file(path).items()}
    if _is_mmseg1_layout(state):
        raise ValueError(f"{path} holds mmsegmentation 1.x's MiT names (backbone.layers.*), which the kit does not convert: "
                         f"pass the NVlabs/SegFormer checkpoint, a transformers one or its hub id")
    if is_original_layout(state):
        state = original_to_published(state)
    whole = any(k.startswith("decode_head.") for k in state)
    values = {}
    if whole:
        values["num_labels"] = int(state["decode_head.classifier.weight"].shape[0])
        values["decoder_hidden_size"] = int(state["decode_head.classifier.weight"].shape[1])
    config = mit_config(variant, **values)
    config.architectures = ["SegformerForSemanticSegmentation" if whole else "SegformerModel"]
    config.save_pretrained(folder)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def local_or_hub(source: str | os.PathLike, what: str) -> str:
    """``source`` as ``from_pretrained`` should read it: an existing local path expanded (``~/…``), else
    as given (a hub id); a source that looks like a path but does not exist is a FileNotFoundError."""
    source = str(source)
    path = Path(source).expanduser()
    if path.exists():
        return str(path)
    if source.startswith((".", "/", "~")) or source.endswith((".pth", ".pt", ".bin", ".safetensors")):
        raise FileNotFoundError(f"{what} {source!r} not found: expected a save_pretrained folder, a state-dict file "
                                f"or a Hugging Face model id")
    return source


@contextlib.contextmanager
def reading(what: str, source: str, instead: str = "a local folder saved with save_pretrained") -> Iterator[None]:
    """Quiet ``transformers`` while it reads ``source``; without internet, an error that says what to
    pass ``instead``."""
    try:
        with _quiet_transformers():
            yield
    except OSError as error:
        raise OSError(f"could not read {what} {source!r} ({error}); without internet pass {instead}") from error


def from_pretrained_checked(cls: type, source: str, what: str) -> nn.Module:
    """``cls.from_pretrained(source)``, raising unless every tensor of the built model came from
    ``source`` (none missing, none of another shape); without internet, an error that says what to
    pass instead."""
    source = local_or_hub(source, what)
    with reading(what, source):
        model, info = cls.from_pretrained(source, output_loading_info=True)
    problems = {kind: sorted(info[kind]) for kind in ("missing_keys", "mismatched_keys") if info[kind]}
    if problems:
        listed = "; ".join(f"{len(keys)} {kind.replace('_', ' ')}: {keys[:5]}" for kind, keys in problems.items())
        raise ValueError(f"{what} {source!r} do not fill a {cls.__name__}: {listed}")
    return model


def read_segformer(source: str | os.PathLike, variant: str | None, whole: bool) -> nn.Module:
    """A ``SegformerModel`` (``whole=False``) or ``SegformerForSemanticSegmentation`` with weights from
    ``source``: a hub id, a ``save_pretrained`` folder, or a state-dict file (transformers' or the
    original names; it needs ``variant`` for its configuration). Raises unless every tensor of the
    built model came from ``source`` and, given a ``variant``, its widths and depths are the variant's."""
    source = local_or_hub(source, "SegFormer weights")
    path = Path(source)
    if path.is_file():
        if variant is None:
            raise ValueError(f"weights {source!r} are a state-dict file: name the MiT variant it holds (mit_b0 … mit_b5)")
        with tempfile.TemporaryDirectory() as folder:
            return read_segformer(_published_folder(path, variant, Path(folder)), variant, whole)
    cls = transformers.SegformerForSemanticSegmentation if whole else transformers.SegformerModel
    model = from_pretrained_checked(cls, source, "SegFormer weights")
    if variant is not None:
        hidden, depths, _ = MIT_VARIANTS[variant]
        if tuple(model.config.hidden_sizes) != hidden or tuple(model.config.depths) != depths:
            raise ValueError(f"weights {source!r} are a MiT with widths {list(model.config.hidden_sizes)} and depths "
                             f"{list(model.config.depths)}, not {variant} ({list(hidden)}, {list(depths)})")
    return model


def has_decode_head(source: str | os.PathLike) -> bool:
    """Whether SegFormer weights ``source`` hold a whole segmentation model (a decode head), not only
    an encoder: from a file's keys, or a folder's / hub model's ``config.json`` architectures."""
    source = local_or_hub(source, "SegFormer weights")
    if Path(source).is_file():  # its keys only: the tensors are read once, by read_segformer
        return any(k.removeprefix("module.").startswith("decode_head.") for k in _state_keys(Path(source)))
    with reading("SegFormer weights", source, instead="a local folder saved with save_pretrained, or a state-dict file"):
        config = transformers.SegformerConfig.from_pretrained(source)
    return any("SemanticSegmentation" in name for name in (config.architectures or ()))


def create_mit(name: str, pretrained: bool = False, weights: str | os.PathLike | None = None) -> MiTEncoder:
    """``mit_b0`` … ``mit_b5``: random (``pretrained=False``), ImageNet weights from the hub
    (``pretrained=True``: :data:`MIT_HUB`), or ``weights`` (:func:`read_segformer`; a whole SegFormer
    checkpoint gives its encoder)."""
    if weights is not None:
        return MiTEncoder(read_segformer(weights, name, whole=False))
    if pretrained is True:
        return MiTEncoder(read_segformer(MIT_HUB[name], name, whole=False))
    return MiTEncoder(transformers.SegformerModel(mit_config(name)))
