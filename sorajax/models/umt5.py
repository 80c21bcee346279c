"""The UMT5 encoder in Flax linen: the text encoder of Wan2.1 / Wan2.2, exact to transformers' `UMT5EncoderModel`.

Why its own module: Wan's DiT cross-attends to UMT5-XXL's last hidden state, so reproducing Wan
means reproducing this network to float32 round-off (1e-6 on the fixture of
tests/test_umt5.py). Loading weights is `umt5_weights`, tokenizing `umt5_tokenizer`, Wan's text
path `umt5_text`.

The network, and where it differs from BERT/MiniLM (`sorajax.models.bert`): token embedding only
(no position table); pre-norm layers with T5's RMS norm (no mean subtraction, no bias, eps 1e-6);
attention logits are `q.k` with NO 1/sqrt(d) scale, plus a learned relative-position bias that each
layer owns (T5 shares one; that is the "U" of UMT5), indexed by 32 log-spaced, direction-aware
buckets of the key-minus-query distance, saturating at 128; a gated-GELU(tanh) feed-forward; no
biases anywhere; a final RMS norm.

Parameters are float32 and carry logical axis names, so the 5.7 B-parameter XXL encoder can be
initialised (or filled) directly sharded; `dtype` is the compute dtype of the matmuls (bfloat16
halves memory traffic; norms, softmax and the residual stream stay float32).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

PRESETS: dict[str, dict[str, int]] = {
    # google/umt5-xxl's encoder, as shipped in Wan2.1 / Wan2.2's text_encoder/ folders.
    "umt5-xxl": dict(vocab_size=256384, d_model=4096, d_kv=64, num_heads=64, d_ff=10240, num_layers=24),
}


@dataclasses.dataclass(frozen=True)
class UMT5Config:
    """The fields of a transformers UMT5 `config.json` that change the encoder's computation."""

    vocab_size: int
    d_model: int
    d_kv: int
    num_heads: int
    d_ff: int
    num_layers: int
    num_buckets: int = 32
    max_distance: int = 128
    eps: float = 1e-6
    dtype: str = "float32"  # compute dtype: "float32" or "bfloat16"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "d_kv", "num_heads", "d_ff", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"UMT5Config.{name}={getattr(self, name)} must be a positive integer")
        if self.num_buckets < 4 or self.num_buckets % 2:
            raise ValueError(f"UMT5Config.num_buckets={self.num_buckets} must be an even number >= 4 "
                             "(half the buckets per direction)")
        if self.max_distance <= self.num_buckets // 4:
            raise ValueError(f"UMT5Config.max_distance={self.max_distance} must exceed num_buckets // 4 "
                             f"= {self.num_buckets // 4}, where the log-spaced buckets start")
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"UMT5Config.eps={self.eps} must be in (0, 1); T5 uses 1e-6")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"UMT5Config.dtype={self.dtype!r}: use 'float32' or 'bfloat16'")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "UMT5Config":
        if name not in PRESETS:
            raise ValueError(f"unknown UMT5 preset {name!r}: use one of {tuple(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_hf_dict(cls, config: Mapping[str, Any], dtype: str = "float32") -> "UMT5Config":
        """From a transformers UMT5 config.json, refusing variants this module does not compute."""
        projection = config.get("feed_forward_proj", "gated-gelu")
        if projection != "gated-gelu":
            raise ValueError(f"feed_forward_proj={projection!r} is not supported: UMT5 uses 'gated-gelu'")
        return cls(vocab_size=int(config["vocab_size"]), d_model=int(config["d_model"]), d_kv=int(config["d_kv"]),
                   num_heads=int(config["num_heads"]), d_ff=int(config["d_ff"]),
                   num_layers=int(config["num_layers"]),
                   num_buckets=int(config.get("relative_attention_num_buckets", 32)),
                   max_distance=int(config.get("relative_attention_max_distance", 128)),
                   eps=float(config.get("layer_norm_epsilon", 1e-6)), dtype=dtype)

    @property
    def compute_dtype(self) -> Any:
        return jnp.dtype(self.dtype)


def relative_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """Bucket of every (query i, key j) pair, int32 [L, L], for the bidirectional (encoder) case.

    Computed on the host with numpy from the static length, in float32 with the reference's order
    of operations: the log-spaced boundaries are then the reference's, bucket for bucket.
    """
    position = np.arange(length, dtype=np.int64)
    relative = position[None, :] - position[:, None]  # key - query
    half = num_buckets // 2
    bucket = (relative > 0).astype(np.int64) * half
    distance = np.abs(relative)
    exact = half // 2
    # Distances below `exact` take the other branch; clamping them to 1 only keeps log finite.
    ratio = np.maximum(distance, 1).astype(np.float32) / np.float32(exact)
    scaled = np.log(ratio) / np.float32(np.log(max_distance / exact))
    far = exact + (scaled * np.float32(half - exact)).astype(np.int64, copy=False)
    far = np.minimum(far, half - 1)
    return (bucket + np.where(distance < exact, distance, far)).astype(np.int32)


def _param(module: nn.Module, name: str, shape: tuple[int, ...], names: tuple[str, ...], std: float) -> jax.Array:
    init = nn.with_logical_partitioning(nn.initializers.normal(std), names)
    return module.param(name, init, shape, jnp.float32)


class RMSNorm(nn.Module):
    """T5's layer norm: x / sqrt(mean(x^2) + eps) * scale, in float32; no mean, no bias."""

    eps: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
                           (x.shape[-1],), jnp.float32)
        x = x.astype(jnp.float32)
        return x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=-1, keepdims=True) + self.eps) * scale


class SelfAttention(nn.Module):
    """Unscaled multi-head attention plus this layer's relative-position bias; padding keys masked."""

    config: UMT5Config

    @nn.compact
    def __call__(self, h: jax.Array, buckets: np.ndarray, key_mask: jax.Array) -> jax.Array:
        cfg, dtype = self.config, self.config.compute_dtype
        d, n, k = cfg.d_model, cfg.num_heads, cfg.d_kv
        h = h.astype(dtype)
        q, kk, v = (jnp.einsum("bld,dnk->blnk", h, _param(self, name, (d, n, k), ("embed", "heads", "kv"),
                                                            d**-0.5).astype(dtype))
                    for name in ("q", "k", "v"))
        table = _param(self, "relative_bias", (cfg.num_buckets, n), ("relpos_buckets", "heads"), 1.0)
        bias = einops.rearrange(table[buckets], "q k n -> 1 n q k")
        scores = jnp.einsum("bqnk,bsnk->bnqs", q, kk, preferred_element_type=jnp.float32) + bias
        # The reference adds the most negative float to padding keys; the weights come out the same.
        scores = scores + jnp.where(key_mask[:, None, None, :], 0.0, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(scores, axis=-1).astype(dtype)
        attended = jnp.einsum("bnqs,bsnk->bqnk", weights, v)
        out = _param(self, "o", (n, k, d), ("heads", "kv", "embed"), (n * k) ** -0.5).astype(dtype)
        return jnp.einsum("blnk,nkd->bld", attended, out, preferred_element_type=jnp.float32)


class GatedFeedForward(nn.Module):
    """wo(gelu_tanh(wi_0 h) * wi_1 h): UMT5's gated-GELU feed-forward, no biases."""

    config: UMT5Config

    @nn.compact
    def __call__(self, h: jax.Array) -> jax.Array:
        cfg, dtype = self.config, self.config.compute_dtype
        h = h.astype(dtype)
        gate_kernel = _param(self, "gate", (cfg.d_model, cfg.d_ff), ("embed", "mlp"), cfg.d_model**-0.5)
        up_kernel = _param(self, "up", (cfg.d_model, cfg.d_ff), ("embed", "mlp"), cfg.d_model**-0.5)
        down_kernel = _param(self, "down", (cfg.d_ff, cfg.d_model), ("mlp", "embed"), cfg.d_ff**-0.5)
        gate = jax.nn.gelu(jnp.einsum("bld,df->blf", h, gate_kernel.astype(dtype),
                                      preferred_element_type=jnp.float32), approximate=True)
        up = jnp.einsum("bld,df->blf", h, up_kernel.astype(dtype), preferred_element_type=jnp.float32)
        hidden = (gate * up).astype(dtype)
        return jnp.einsum("blf,fd->bld", hidden, down_kernel.astype(dtype), preferred_element_type=jnp.float32)


class UMT5Layer(nn.Module):
    """x + attn(norm(x)), then x + ffn(norm(x)); the residual stream stays float32."""

    config: UMT5Config

    @nn.compact
    def __call__(self, x: jax.Array, buckets: np.ndarray, key_mask: jax.Array) -> jax.Array:
        cfg = self.config
        x = x + SelfAttention(cfg, name="attention")(RMSNorm(cfg.eps, name="attention_norm")(x), buckets, key_mask)
        return x + GatedFeedForward(cfg, name="mlp")(RMSNorm(cfg.eps, name="mlp_norm")(x))


class UMT5Encoder(nn.Module):
    """Token ids [B, L] and attention mask [B, L] -> last hidden state [B, L, d_model] float32.

    Padded positions get outputs too (they attend to the real tokens), as in the reference;
    callers that want zeros there (Wan's text path) zero them.
    """

    config: UMT5Config

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
        cfg = self.config
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(f"expected input_ids and attention_mask of one shape [B, L], got {input_ids.shape} "
                             f"and {attention_mask.shape}")
        table = _param(self, "token_embedding", (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), 1.0)
        x = jnp.take(table, input_ids, axis=0)
        buckets = relative_buckets(input_ids.shape[1], cfg.num_buckets, cfg.max_distance)
        key_mask = attention_mask.astype(bool)
        for index in range(cfg.num_layers):
            x = UMT5Layer(cfg, name=f"layer_{index}")(x, buckets, key_mask)
        return RMSNorm(cfg.eps, name="final_norm")(x)


def abstract_params(config: UMT5Config, length: int = 8) -> Any:
    """The (boxed) parameter tree as shapes only: no memory, for key coverage and sharded init."""
    ids = jax.ShapeDtypeStruct((1, length), jnp.int32)
    return jax.eval_shape(UMT5Encoder(config).init, jax.random.key(0), ids, ids)["params"]
