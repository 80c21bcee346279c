"""One vector per caption for the adaLN conditioning: learned-query attention over the caption's tokens.

A mean over a sentence encoder's tokens keeps what a sentence is "about" (colours, object kinds)
and dilutes short phrases that change what the clip should do: on the built-in world's captions
(`experiments/caption_readability.py`), a linear read-out of MiniLM's mean over all tokens gets the
motion direction 78% and the start place 65% of the time, against 100% and 84% from the mean of the
last six tokens alone (colour: 100% either way). Learned queries let each head weight the words that
matter for it. At init the queries are ~0, so every head starts as the plain mean over the caption.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sorajax.models.dit_layers import dense, logical, segment_mean

Array = jax.Array

CAPTION_POOLS = ("mean", "attention", "none")  # none: the conditioning is the time embedding alone (Wan)


def segment_softmax_pool(logits: Array, values: Array, text_segment_ids: Array) -> Array:
    """At every text token, ``sum_j softmax_j(logits) * values_j`` over the text tokens of ITS caption.

    logits ``[B, Lt, H]``, values ``[B, Lt, H, D]`` -> ``[B, Lt, H, D]`` float32 (zeros on text padding).
    Working per text token keeps the cost at ``Lt^2``; ``segment_mean`` then hands each video token
    its own caption's vector.
    """
    same = (text_segment_ids[:, :, None] == text_segment_ids[:, None, :]) & (text_segment_ids[:, None, :] > 0)
    masked = jnp.where(same[..., None], logits[:, None, :, :].astype(jnp.float32), -jnp.inf)  # [B, Lt, Lt, H]
    masked = jnp.where(same.any(axis=-1)[..., None, None], masked, 0.0)  # padding rows: finite, unused
    weights = jax.nn.softmax(masked, axis=2)
    pooled = jnp.einsum("bijh,bjhd->bihd", weights, values.astype(jnp.float32))
    return jnp.where((text_segment_ids > 0)[..., None, None], pooled, 0.0)


class CaptionAttentionPooler(nn.Module):
    """Each token's own caption, pooled by ``num_heads`` learned queries -> ``[B, L, width]``.

    ``num_heads`` must divide ``width`` (``DiTConfig`` checks it with the fix in its message).
    """

    width: int
    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, text: Array, text_segment_ids: Array, segment_ids: Array) -> Array:
        head_dim = self.width // self.num_heads
        heads = (self.num_heads, head_dim)
        keys = dense(heads, ("text_embed", "heads", "kv"), self.dtype, "key")(text)
        values = dense(heads, ("text_embed", "heads", "kv"), self.dtype, "value")(text)
        query = self.param("query", logical(nn.initializers.normal(0.02), ("heads", "kv")), heads, jnp.float32)
        logits = jnp.einsum("bjhd,hd->bjh", keys.astype(jnp.float32), query) / math.sqrt(head_dim)
        pooled = segment_softmax_pool(logits, values, text_segment_ids).reshape(*text.shape[:2], self.width)
        per_token = segment_mean(pooled, text_segment_ids, segment_ids).astype(self.dtype)
        return dense(self.width, ("mlp", "embed"), self.dtype, "out")(nn.silu(per_token))


class CaptionPooler(nn.Module):
    """Each token's own caption, mean-pooled over its segment's text tokens -> ``[B, L, width]``.

    Added to the timestep conditioning, so global caption content (colours,
    object kinds) modulates every block directly, not only through cross-attention.
    ``DiTConfig.caption_pool='mean'``; the default is :class:`CaptionAttentionPooler`.
    """

    width: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, text: Array, text_segment_ids: Array, segment_ids: Array) -> Array:
        pooled = segment_mean(text, text_segment_ids, segment_ids).astype(self.dtype)
        h = dense(self.width, ("text_embed", "mlp"), self.dtype, "fc1")(pooled)
        h = nn.silu(h)
        return dense(self.width, ("mlp", "embed"), self.dtype, "fc2")(h)
