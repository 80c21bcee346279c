"""Building the models a config names: the text encoder and the DiT sized to its inputs.

Trainers, the sampling pipeline and notebooks all build models through here, so a config means
the same network everywhere.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping, Sequence

import numpy as np

from sorajax.config_dataclasses import from_mapping
from sorajax.models.dit import DiT, DiTConfig
from sorajax.models.text_encoder import (
    DEFAULT_MAX_LENGTH,
    TextEncoder,
    default_model_dir,
    load_pretrained_text_encoder,
    tiny_text_encoder,
)

TEXT_ENCODER_KINDS = ("minilm", "tiny")
TINY_TEXT_DIM = 32


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    """`kind`: 'minilm' (pretrained all-MiniLM-L6-v2 from PyPI) or 'tiny' (random, for tests)."""

    kind: str = "minilm"
    max_length: int = DEFAULT_MAX_LENGTH

    def __post_init__(self) -> None:
        if self.kind not in TEXT_ENCODER_KINDS:
            raise ValueError(f"unknown text_encoder.kind {self.kind!r}: use one of {TEXT_ENCODER_KINDS}")
        if self.max_length < 2:
            raise ValueError(f"text_encoder.max_length must be >= 2, got {self.max_length}")

    @classmethod
    def from_mapping(cls, values: Any) -> "TextEncoderConfig":
        return from_mapping(cls, values, "text_encoder")

    @property
    def dim(self) -> int:
        """Width of the token embeddings, read without loading any weights."""
        if self.kind == "tiny":
            return TINY_TEXT_DIM
        return int(json.loads((default_model_dir() / "config.json").read_text())["hidden_size"])


def build_text_encoder(cfg: TextEncoderConfig) -> TextEncoder:
    if cfg.kind == "minilm":
        return load_pretrained_text_encoder(max_length=cfg.max_length)
    return tiny_text_encoder(seed=0, dim=TINY_TEXT_DIM, max_length=cfg.max_length)


def dit_config(model: Mapping[str, Any], patch: Sequence[int], latent_channels: int, text_dim: int) -> DiTConfig:
    """DiTConfig from a config's `model` section (a preset plus overrides); token and text widths derived."""
    fields = dict(model.to_dict() if hasattr(model, "to_dict") else model)
    preset = fields.pop("preset", "tiny")
    return DiTConfig.preset(preset, **fields, patch_dim=int(np.prod(patch)) * latent_channels, text_dim=text_dim)


def build_dit(model: Mapping[str, Any], patch: Sequence[int], latent_channels: int, text_dim: int) -> DiT:
    return DiT(dit_config(model, patch, latent_channels, text_dim))
