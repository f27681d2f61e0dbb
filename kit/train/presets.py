"""The benchmark's recipe: the CPU demo values of ``notebooks/03_train`` (a test keeps them in step)."""

from __future__ import annotations

# The CPU demo values of notebooks/03_train (its parameters cell; a test keeps them in step), shared
# by every method here.
QUALITY_CONFIG = dict(
    arch="daformer", encoder="tf_efficientnet_lite0", pretrained="bundled", head_channels=64,
    source_size=(128, 256), target_size=(144, 256), crop_size=(128, 128), batch_size=8,
    lr_encoder=2e-4, lr_decoder=2e-3, warmup_steps=30, mask_block=16, src_hfov_deg=80.0, eval_limit=100,
)
