"""Building the models a config names: the text encoder and the DiT sized to its inputs.

Trainers, the sampling pipeline and notebooks all build models through here, so
a config means the same network everywhere.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from sorajax.models.dit import DiT, DiTConfig
from sorajax.models.text_encoder import TextEncoder, load_pretrained_text_encoder, tiny_text_encoder

TEXT_ENCODER_KINDS = ("minilm", "tiny")


def build_text_encoder(cfg: Any) -> TextEncoder:
    """`cfg.kind`: 'minilm' (pretrained all-MiniLM-L6-v2 from PyPI) or 'tiny' (random, for tests)."""
    if cfg.kind == "minilm":
        return load_pretrained_text_encoder(max_length=cfg.max_length)
    if cfg.kind == "tiny":
        return tiny_text_encoder(seed=0, max_length=cfg.max_length)
    raise ValueError(f"unknown text_encoder.kind {cfg.kind!r}: use one of {TEXT_ENCODER_KINDS}")


def dit_config(model_cfg: Any, patch: Sequence[int], latent_channels: int, text_dim: int) -> DiTConfig:
    """DiTConfig from `config.model` (a preset plus overrides); token and text widths are derived."""
    fields = dict(model_cfg.to_dict() if hasattr(model_cfg, "to_dict") else model_cfg)
    preset = fields.pop("preset", "tiny")
    return DiTConfig.preset(preset, **fields, patch_dim=int(np.prod(patch)) * latent_channels, text_dim=text_dim)


def build_dit(model_cfg: Any, patch: Sequence[int], latent_channels: int, text_dim: int) -> DiT:
    return DiT(dit_config(model_cfg, patch, latent_channels, text_dim))
