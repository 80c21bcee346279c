"""Where a token sits in its own frame: an absolute position signal to go beside relative RoPE.

RoPE only tells attention how far apart two tokens are. A caption says "starts at the left" or
"in the top right", which is a place in the FRAME, and a token under RoPE alone can only infer
where it is from how its attention is cut off at the edges of its segment: learnable, but slow.
This embedding hands each token that place directly, NaViT-style: height and width as fractions
of its own sample's patch grid (so "left" means the same in a 48x80 clip and an 80x48 one, at any
resolution), and time as the latent frame index (so "starts" means frame 0, and clips longer than
the training window keep the same speed scale). Extents are found per segment inside the model,
so the PackedBatch contract is unchanged and a packed row still equals each sample run alone.
"""

from __future__ import annotations

import math
from typing import Any

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from sorajax.models.dit_layers import dense

Array = jax.Array

SPACE_FREQUENCIES = 8  # sin/cos(pi k u), k = 1..8, of each fractional coordinate u in (0, 1)
TIME_FREQUENCIES = 8  # sin/cos of the latent frame index at periods from 2 pi to ~2 pi * 100 frames
_TIME_MAX_PERIOD = 100.0


def segment_extents(positions: Array, segment_ids: Array) -> Array:
    """For each token, its segment's grid size ``[B, L, 3]`` (max position + 1 per axis); padding gets 1.

    A scatter-max over ``B * L`` slots (segment ids are below ``L``), so memory is linear in the row.
    """
    batch, length, _ = positions.shape
    slots = (jnp.arange(batch, dtype=jnp.int32)[:, None] * length + segment_ids.astype(jnp.int32)).reshape(-1)
    flat = positions.reshape(batch * length, 3).astype(jnp.int32)
    maxima = jax.ops.segment_max(flat, slots, num_segments=batch * length, indices_are_sorted=False)
    extents = maxima[slots].reshape(batch, length, 3) + 1
    return jnp.where((segment_ids > 0)[..., None], jnp.maximum(extents, 1), 1)


def frame_position_features(positions: Array, segment_ids: Array) -> Array:
    """Fourier features ``[B, L, 2 * (2 * SPACE + TIME)_FREQUENCIES]`` (float32) of place and frame index.

    Height and width become patch-centre fractions ``(p + 0.5) / extent`` in (0, 1); time stays the
    latent frame index.
    """
    extents = segment_extents(positions, segment_ids).astype(jnp.float32)
    place = (positions[..., 1:].astype(jnp.float32) + 0.5) / extents[..., 1:]  # [B, L, 2]
    k = jnp.arange(1, SPACE_FREQUENCIES + 1, dtype=jnp.float32)
    space_args = jnp.pi * place[..., None] * k  # [B, L, 2, K]
    omega = jnp.exp(-math.log(_TIME_MAX_PERIOD) * jnp.arange(TIME_FREQUENCIES, dtype=jnp.float32) / TIME_FREQUENCIES)
    time_args = positions[..., :1].astype(jnp.float32)[..., None] * omega  # [B, L, 1, K]
    args = jnp.concatenate([space_args, time_args], axis=-2)  # [B, L, 3 (h, w, t), K]
    args = einops.rearrange(args, "b l coord k -> b l (coord k)")
    return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)  # sin of h, w, t; then cos of h, w, t


class FramePositionEmbedder(nn.Module):
    """``frame_position_features`` -> ``[B, L, width]``, added to the patch embedding.

    Takes the features, not positions, so the DiT computes them (a scatter-max per row) once and can
    re-use them before every block.
    """

    width: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: Array) -> Array:
        features = features.astype(self.dtype)
        h = dense(self.width, (None, "mlp"), self.dtype, "fc1", init="small_normal")(features)
        h = nn.silu(h)
        return dense(self.width, ("mlp", "embed"), self.dtype, "fc2", init="small_normal")(h)
