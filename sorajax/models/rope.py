"""3D rotary position embeddings (RoPE) for spacetime patch tokens.

Each token carries its integer patch-grid position ``(t, h, w)``. The head
dimension is cut into three slices, one per axis; inside a slice, consecutive
pairs of features are rotated by ``position * frequency`` with the usual
geometric ladder of frequencies ``theta ** (-i / n)``. A rotation by angle a
followed by a dot product with a vector rotated by b depends only on ``b - a``,
so attention scores see *relative* offsets along each axis, and no grid size is
baked into the weights: one model attends over any duration, height and width.

How the head dimension is split between the axes is a config choice
(``axis_weights``): the dimension is counted in rotation pairs and the pairs
are shared out in proportion to the weights, the remainder going to the axes
with the largest fractional share (ties: the later, spatial, axes first). The
default ``(2, 3, 3)`` gives a quarter of the pairs to time and three eighths
each to height and width, e.g. head_dim 64 -> 16 / 24 / 24 features.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import rearrange

Array = jax.Array

NUM_AXES = 3  # (t, h, w)


def rope_axis_dims(head_dim: int, axis_weights: tuple[int, int, int] | tuple[float, ...]) -> tuple[int, int, int]:
    """Features of the head dimension given to the (t, h, w) axes; each even, summing to ``head_dim``."""
    if head_dim % 2:
        raise ValueError(f"3D RoPE rotates feature pairs, so head_dim must be even; got {head_dim}: change width/num_heads")
    if len(axis_weights) != NUM_AXES or any(w < 0 for w in axis_weights) or sum(axis_weights) <= 0:
        raise ValueError(
            f"rope axis weights must be 3 non-negative numbers (t, h, w) with a positive sum; got {axis_weights}"
        )
    pairs = head_dim // 2
    total = float(sum(axis_weights))
    shares = [pairs * w / total for w in axis_weights]
    counts = [int(s) for s in shares]
    leftover = pairs - sum(counts)
    # Largest fractional remainder first; on ties prefer the later (spatial) axes.
    order = sorted(range(NUM_AXES), key=lambda i: (shares[i] - counts[i], i), reverse=True)
    for i in order[:leftover]:
        counts[i] += 1
    return tuple(2 * c for c in counts)  # type: ignore[return-value]


def rope_inverse_frequencies(axis_dims: tuple[int, int, int], theta: float) -> Array:
    """Per-pair angular frequencies ``[head_dim // 2]``, the t slice first, then h, then w."""
    per_axis = []
    for dim in axis_dims:
        n = dim // 2
        per_axis.append(theta ** (-jnp.arange(n, dtype=jnp.float32) / max(n, 1)))
    return jnp.concatenate(per_axis)


def rope_angles(positions: Array, axis_dims: tuple[int, int, int], theta: float) -> Array:
    """Rotation angle of every feature pair: ``[..., 3]`` int positions -> ``[..., head_dim // 2]`` float32."""
    if positions.shape[-1] != NUM_AXES:
        raise ValueError(f"positions must end in 3 (t, h, w) grid indices, got shape {positions.shape}")
    inv_freq = rope_inverse_frequencies(axis_dims, theta)
    # Which axis's position drives each pair: [0]*n_t + [1]*n_h + [2]*n_w.
    axis_of_pair = jnp.concatenate([jnp.full((d // 2,), a, jnp.int32) for a, d in enumerate(axis_dims)])
    pair_positions = jnp.take(positions.astype(jnp.float32), axis_of_pair, axis=-1)
    return pair_positions * inv_freq


def apply_rope(x: Array, positions: Array, axis_dims: tuple[int, int, int], theta: float = 10_000.0) -> Array:
    """Rotate queries or keys ``[B, L, heads, head_dim]`` by their tokens' positions ``[B, L, 3]``.

    The rotation is done in float32 (angles of long, high-frequency positions
    lose precision in bfloat16) and cast back to ``x.dtype``.
    """
    if sum(axis_dims) != x.shape[-1]:
        raise ValueError(f"rope axis dims {axis_dims} sum to {sum(axis_dims)} but head_dim is {x.shape[-1]}")
    if positions.shape[:2] != x.shape[:2]:
        raise ValueError(f"positions {positions.shape} do not match the tokens of x {x.shape} in [B, L]")
    angles = rope_angles(positions, axis_dims, theta)[:, :, None, :]  # broadcast over heads
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    pairs = rearrange(x.astype(jnp.float32), "b l n (p two) -> b l n p two", two=2)
    even, odd = pairs[..., 0], pairs[..., 1]
    rotated = jnp.stack([even * cos - odd * sin, even * sin + odd * cos], axis=-1)
    return rearrange(rotated, "b l n p two -> b l n (p two)").astype(x.dtype)
