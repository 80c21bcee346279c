"""A BERT-family encoder in Flax linen, shaped so pretrained PyTorch weights map onto it one to one.

Why it exists: the denoiser is conditioned on caption embeddings, and the cheapest good caption
embeddings on a CPU-only machine come from a small pretrained sentence encoder (all-MiniLM-L6-v2,
a 6-layer BERT). This module is only the network; loading weights and tokenising live in
`sorajax.models.text_encoder`.

Architecture (matches HuggingFace `BertModel` without the pooler):
word + absolute position + token-type embeddings -> LayerNorm, then N post-LN layers
(self-attention -> add -> LayerNorm, GELU MLP -> add -> LayerNorm). GELU is the exact erf form
(`hidden_act="gelu"`) and the LayerNorm epsilon comes from the config (1e-12 for BERT, not Flax's
default 1e-6), both needed for 1e-4 parity with the reference.

The encoder is used frozen and is small (~22M parameters), so its parameters carry no logical
sharding axes: they are replicated on every device.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

SUPPORTED_ACTIVATIONS = ("gelu",)


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The architecture fields of a HuggingFace BERT `config.json` that change the computation."""

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size={self.hidden_size} is not divisible by num_heads={self.num_heads}; "
                "choose a head count that divides the width."
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @classmethod
    def from_hf_dict(cls, config: Mapping[str, Any]) -> "BertConfig":
        """Read a HuggingFace BERT config, refusing variants this module does not implement."""
        activation = config.get("hidden_act", "gelu")
        if activation not in SUPPORTED_ACTIVATIONS:
            raise ValueError(
                f"hidden_act={activation!r} is not supported (only {SUPPORTED_ACTIVATIONS}); "
                "use a BERT checkpoint with exact GELU or extend sorajax.models.bert."
            )
        position_type = config.get("position_embedding_type", "absolute")
        if position_type != "absolute":
            raise ValueError(
                f"position_embedding_type={position_type!r} is not supported; only 'absolute' is."
            )
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=int(config["hidden_size"]),
            num_layers=int(config["num_hidden_layers"]),
            num_heads=int(config["num_attention_heads"]),
            intermediate_size=int(config["intermediate_size"]),
            max_position_embeddings=int(config.get("max_position_embeddings", 512)),
            type_vocab_size=int(config.get("type_vocab_size", 2)),
            layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
            pad_token_id=int(config.get("pad_token_id", 0)),
        )

    @classmethod
    def from_json_file(cls, path: str | Path) -> "BertConfig":
        with open(path, encoding="utf-8") as handle:
            return cls.from_hf_dict(json.load(handle))


class BertEmbeddings(nn.Module):
    """Sum of token, position and segment embeddings, then LayerNorm."""

    config: BertConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array) -> jax.Array:
        cfg = self.config
        length = input_ids.shape[-1]
        if length > cfg.max_position_embeddings:
            raise ValueError(
                f"sequence length {length} exceeds max_position_embeddings={cfg.max_position_embeddings}; "
                "truncate the text to at most that many tokens."
            )
        words = nn.Embed(cfg.vocab_size, cfg.hidden_size, name="word_embeddings")(input_ids)
        positions = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, name="position_embeddings")(
            jnp.arange(length)
        )
        segments = nn.Embed(cfg.type_vocab_size, cfg.hidden_size, name="token_type_embeddings")(token_type_ids)
        summed = words + positions[None] + segments
        return nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=self.dtype, name="norm")(summed)


class BertSelfAttention(nn.Module):
    """Multi-head self-attention over the unmasked keys, with the output projection."""

    config: BertConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
        cfg = self.config

        def project(name: str) -> jax.Array:
            flat = nn.Dense(cfg.hidden_size, dtype=self.dtype, name=name)(x)
            return einops.rearrange(flat, "b l (n h) -> b l n h", n=cfg.num_heads)

        query, key, value = project("query"), project("key"), project("value")
        scores = jnp.einsum("bqnh,bknh->bnqk", query, key) * (cfg.head_dim**-0.5)
        # Padding keys get the most negative finite score (as the reference does), so a row whose
        # keys are all padding stays finite instead of turning into NaN.
        allowed = einops.rearrange(key_mask, "b k -> b 1 1 k")
        scores = jnp.where(allowed, scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(self.dtype)
        attended = jnp.einsum("bnqk,bknh->bqnh", weights, value)
        merged = einops.rearrange(attended, "b l n h -> b l (n h)")
        return nn.Dense(cfg.hidden_size, dtype=self.dtype, name="output")(merged)


class BertLayer(nn.Module):
    """One post-LN transformer layer: norm(x + attn(x)), then norm(h + mlp(h))."""

    config: BertConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
        cfg = self.config
        attended = BertSelfAttention(cfg, dtype=self.dtype, name="attention")(x, key_mask)
        h = nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=self.dtype, name="attention_norm")(x + attended)
        hidden = nn.Dense(cfg.intermediate_size, dtype=self.dtype, name="intermediate")(h)
        hidden = jax.nn.gelu(hidden, approximate=False)
        out = nn.Dense(cfg.hidden_size, dtype=self.dtype, name="output")(hidden)
        return nn.LayerNorm(epsilon=cfg.layer_norm_eps, dtype=self.dtype, name="output_norm")(h + out)


class BertEncoder(nn.Module):
    """Token ids [B, L] and attention mask [B, L] -> last hidden state [B, L, hidden_size]."""

    config: BertConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        token_type_ids: jax.Array | None = None,
    ) -> jax.Array:
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"expected input_ids and attention_mask of the same shape [B, L], got "
                f"{input_ids.shape} and {attention_mask.shape}"
            )
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        key_mask = attention_mask.astype(bool)
        x = BertEmbeddings(self.config, dtype=self.dtype, name="embeddings")(input_ids, token_type_ids)
        for index in range(self.config.num_layers):
            x = BertLayer(self.config, dtype=self.dtype, name=f"layer_{index}")(x, key_mask)
        return x
