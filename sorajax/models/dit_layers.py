"""Layers of the spacetime diffusion transformer (see ``dit.py`` for the whole model).

Conditioning is per token: every token has its own noise level ``t`` (clean
conditioning frames have ``t = 0``), so the adaLN shift/scale/gate vectors are
``[B, L, width]`` rather than one per sample as in the original DiT.

Every parameter is created through :func:`logical` with LOGICAL axis names
(``embed``, ``mlp``, ``heads``, ``kv``, ...). Without a mesh they are plain
arrays wrapped in ``flax.linen.Partitioned`` boxes (``nn.meta.unbox`` strips
them); with a mesh, ``sorajax.parallel.rules.DIT_RULES`` maps the names to mesh axes.
Parameters are float32; ``dtype`` is the compute dtype of activations/matmuls.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from sorajax.models.attention import dot_product_attention
from sorajax.models.condition_slots import Conditioning, per_condition
from sorajax.models.rope import apply_rope

Array = jax.Array
Initializer = Callable[..., Array]

TIMESTEP_FREQUENCY_DIM = 256  # sinusoidal features of t before the timestep MLP
TIMESTEP_SCALE = 1000.0  # t in [0, 1] is embedded as t * 1000, the range the frequencies were designed for
NORM_EPS = 1e-6
ADALN_CHUNKS = 6  # shift, scale, gate for attention; shift, scale, gate for the MLP


def logical(init: Initializer, names: tuple[str | None, ...]) -> Initializer:
    """An initializer whose parameter carries logical axis names (one per dimension)."""
    return nn.with_logical_partitioning(init, names)


_INITS: dict[str, Callable[..., Initializer]] = {
    "xavier": nn.initializers.xavier_uniform,
    "small_normal": lambda in_axis, out_axis: nn.initializers.normal(0.02),
    "zeros": lambda in_axis, out_axis: nn.initializers.zeros_init(),
}


class Linear(nn.Module):
    """``y = x . W + b`` contracting the last ``contract_dims`` input dims into ``features``.

    Unlike ``nn.DenseGeneral`` the kernel is created at its full shape (e.g.
    ``[embed, heads, kv]``), so its logical names stay valid when a mesh is active;
    fan-in/fan-out for the initializer count all contracted / all output dims.
    """

    features: tuple[int, ...]
    names: tuple[str | None, ...]
    dtype: Any = jnp.float32
    contract_dims: int = 1
    init: str = "xavier"

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.init not in _INITS:
            raise ValueError(f"unknown init {self.init!r}: use one of {sorted(_INITS)}")
        shape = (*x.shape[x.ndim - self.contract_dims:], *self.features)
        if len(self.names) != len(shape):
            raise ValueError(f"kernel {shape} needs {len(shape)} logical names, got {self.names}")
        in_axis = tuple(range(self.contract_dims))
        out_axis = tuple(range(self.contract_dims, len(shape)))
        kernel_init = _INITS[self.init](in_axis=in_axis, out_axis=out_axis)
        kernel = self.param("kernel", logical(kernel_init, self.names), shape, jnp.float32)
        bias = self.param(
            "bias", logical(nn.initializers.zeros_init(), self.names[self.contract_dims:]), self.features, jnp.float32
        )
        y = jnp.tensordot(x.astype(self.dtype), kernel.astype(self.dtype), axes=self.contract_dims)
        return y + bias.astype(self.dtype)


def dense(
    features: int | tuple[int, ...],
    names: tuple[str | None, ...],
    dtype: Any,
    name: str,
    contract_dims: int = 1,
    zero_init: bool = False,
    init: str = "xavier",
) -> Linear:
    """A :class:`Linear` with kernel logical axes ``names`` (inputs..., outputs...); bias named by the outputs."""
    features = features if isinstance(features, tuple) else (features,)
    return Linear(features, names, dtype, contract_dims, "zeros" if zero_init else init, name=name)


def layer_norm(dtype: Any, name: str, affine: bool, axis_name: str = "embed") -> nn.LayerNorm:
    """LayerNorm; without ``affine`` it has no parameters (the adaLN modulation supplies scale and shift)."""
    return nn.LayerNorm(
        epsilon=NORM_EPS,
        use_scale=affine,
        use_bias=affine,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=logical(nn.initializers.ones_init(), (axis_name,)),
        bias_init=logical(nn.initializers.zeros_init(), (axis_name,)),
        name=name,
    )


def modulate(x: Array, shift: Array, scale: Array) -> Array:
    """adaLN: ``x * (1 + scale) + shift`` (scale 0 at init, so the block starts as a plain pre-norm)."""
    return x * (1 + scale) + shift


def constrain(x: Array, names: tuple[str | None, ...]) -> Array:
    """Pin an activation's sharding by logical names (a no-op when no mesh/rules are active)."""
    return nn.with_logical_constraint(x, names)


def timestep_embedding(t: Array, dim: int = TIMESTEP_FREQUENCY_DIM, max_period: float = 10_000.0) -> Array:
    """Sinusoidal features ``[..., dim]`` (float32) of noise levels ``t`` in [0, 1], scaled by 1000."""
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = (t.astype(jnp.float32) * TIMESTEP_SCALE)[..., None] * freqs
    return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def segment_mean(values: Array, value_segment_ids: Array, token_segment_ids: Array) -> Array:
    """For each token, the mean of ``values [B, Lv, D]`` over the entries of its own segment.

    Returns ``[B, L, D]`` float32; padding tokens (segment 0) and segments with
    no entries get zeros. No maximum number of segments per row is needed.
    """
    same = (token_segment_ids[:, :, None] == value_segment_ids[:, None, :]) & (value_segment_ids[:, None, :] > 0)
    weights = same.astype(jnp.float32)
    counts = jnp.maximum(weights.sum(axis=-1, keepdims=True), 1.0)
    return jnp.einsum("blj,bjd->bld", weights, values.astype(jnp.float32)) / counts


class TimestepEmbedder(nn.Module):
    """Per-token noise level ``t [B, L]`` -> conditioning vector ``[B, L, width]``."""

    width: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, t: Array) -> Array:
        h = timestep_embedding(t).astype(self.dtype)
        h = dense(self.width, (None, "mlp"), self.dtype, "fc1", init="small_normal")(h)
        h = nn.silu(h)
        return dense(self.width, ("mlp", "embed"), self.dtype, "fc2", init="small_normal")(h)


class SharedModulation(nn.Module):
    """adaLN-single: one ``width -> 6 width`` projection of ``silu(cond)``, shared by every block.

    Returns ``[B, L, 6, width]`` in float32 (each block adds its own table); zero-initialised, so
    with zero tables every gate starts at 0 as in adaLN-Zero.
    """

    width: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, cond: Array) -> Array:
        mods = dense((ADALN_CHUNKS, self.width), ("embed", "modulation", "mlp"), self.dtype, "proj",
                     zero_init=True)(nn.silu(cond))
        return mods.astype(jnp.float32)


class TextProjection(nn.Module):
    """Caption token embeddings ``[B, Lt, D_text]`` -> cross-attention context ``[B, Lt, width]``."""

    width: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, text: Array) -> Array:
        h = dense(self.width, ("text_embed", "mlp"), self.dtype, "fc1")(text.astype(self.dtype))
        h = nn.gelu(h, approximate=True)
        h = dense(self.width, ("mlp", "embed"), self.dtype, "fc2")(h)
        return constrain(h, ("batch", "text_length", "embed"))


class Mlp(nn.Module):
    """Position-wise feed-forward: width -> hidden -> width with tanh-GELU."""

    width: int
    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h = dense(self.hidden, ("embed", "mlp"), self.dtype, "fc1")(x)
        h = constrain(nn.gelu(h, approximate=True), ("batch", "length", "mlp"))
        return dense(self.width, ("mlp", "embed"), self.dtype, "fc2")(h)


class Attention(nn.Module):
    """Multi-head attention of tokens ``x`` over a ``context`` (x itself for self-attention).

    QK-norm (RMS norm of queries and keys) keeps attention logits bounded in bf16
    and at large widths; per head (``qk_norm_axis='head'``) or over the whole
    projected width before the split into heads (``'width'``, as Wan trains it). 3D RoPE is applied when ``rope_axis_dims``
    is given (self-attention over spacetime tokens; never for text keys).
    ``zero_init_output`` makes the layer output 0 at init, for residual branches
    that have no adaLN gate.
    """

    num_heads: int
    head_dim: int
    qk_norm: bool
    implementation: str
    dtype: Any = jnp.float32
    qk_norm_axis: str = "head"  # 'head': RMS over each head's features; 'width': over all heads at once (Wan)
    rope_axis_dims: tuple[int, int, int] | None = None
    rope_theta: float = 10_000.0
    zero_init_output: bool = False
    context_length_axis: str = "length"
    local_implementation: str = "auto"  # what each device runs under 'ring' / 'ulysses'

    @nn.compact
    def __call__(
        self,
        x: Array,
        segment_ids: Array,
        context: Array,
        context_segment_ids: Array,
        positions: Array | None = None,
    ) -> Array:
        width = x.shape[-1]
        heads = (self.num_heads, self.head_dim)
        q_names = ("batch", "length", "heads", "kv")
        kv_names = ("batch", self.context_length_axis, "heads", "kv")
        q = dense(heads, ("embed", "heads", "kv"), self.dtype, "query")(x)
        k = dense(heads, ("embed", "heads", "kv"), self.dtype, "key")(context)
        v = dense(heads, ("embed", "heads", "kv"), self.dtype, "value")(context)
        if self.qk_norm:
            q = self._rms_norm("query_norm")(q)
            k = self._rms_norm("key_norm")(k)
        if self.rope_axis_dims is not None:
            if positions is None:
                raise ValueError("this attention layer uses RoPE: pass positions [B, L, 3]")
            q = apply_rope(q, positions, self.rope_axis_dims, self.rope_theta)
            k = apply_rope(k, positions, self.rope_axis_dims, self.rope_theta)
        q, k, v = constrain(q, q_names), constrain(k, kv_names), constrain(v, kv_names)
        out = dot_product_attention(q, k, v, segment_ids, context_segment_ids, self.implementation,
                                    self.local_implementation)
        out = constrain(out, q_names)
        return dense(
            width, ("heads", "kv", "embed"), self.dtype, "out", contract_dims=2, zero_init=self.zero_init_output
        )(out)

    def _rms_norm(self, name: str) -> nn.RMSNorm:
        over_width = self.qk_norm_axis == "width"
        return nn.RMSNorm(
            epsilon=NORM_EPS,
            dtype=self.dtype,
            param_dtype=jnp.float32,
            reduction_axes=(-2, -1) if over_width else -1,
            feature_axes=(-2, -1) if over_width else -1,
            scale_init=logical(nn.initializers.ones_init(), ("heads", "kv") if over_width else ("kv",)),
            name=name,
        )


class DiTBlock(nn.Module):
    """One transformer block with adaLN-Zero modulation from each token's conditioning vector.

    modulated norm -> self-attention (segment-restricted, QK-norm, 3D RoPE) -> gated residual;
    norm -> cross-attention to the token's own caption -> residual (zero-init output);
    modulated norm -> MLP -> gated residual. Gates start at 0, so the block starts as identity.

    ``modulation='per_block'``: ``cond`` (``[B, L, width]`` per token, and per distinct conditioning:
    :mod:`sorajax.models.condition_slots`) goes through this block's own ``width -> 6 width``
    projection. ``'shared'`` (adaLN-single): ``cond.tokens`` is already the one projection every block
    shares, ``[B, L, 6, width]``, and the block adds its learned ``[6, width]`` table.
    """

    num_heads: int
    mlp_hidden: int
    qk_norm: bool
    rope_axis_dims: tuple[int, int, int]
    rope_theta: float
    implementation: str
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    context_parallel: str = "none"  # 'ring' / 'ulysses': self-attention split over the sequence axis
    modulation: str = "per_block"  # or 'shared': cond is the shared [B, L, 6, width] projection
    qk_norm_axis: str = "head"

    @nn.compact
    def __call__(
        self,
        x: Array,
        cond: Conditioning,
        positions: Array,
        segment_ids: Array,
        text: Array,
        text_segment_ids: Array,
        deterministic: bool = True,
    ) -> Array:
        width = x.shape[-1]
        head_dim = width // self.num_heads
        if self.modulation == "shared":
            table = self.param("modulation_table", logical(nn.initializers.zeros_init(), ("modulation", "embed")),
                               (ADALN_CHUNKS, width), jnp.float32)
            mods = (cond.tokens.astype(jnp.float32) + table).astype(self.dtype)
        else:
            mods = per_condition(self, cond, lambda module, c: dense(
                (ADALN_CHUNKS, width), ("embed", "modulation", "mlp"), self.dtype, "adaln", zero_init=True
            )(nn.silu(c)))
        shift_attn, scale_attn, gate_attn, shift_mlp, scale_mlp, gate_mlp = (
            mods[:, :, i] for i in range(ADALN_CHUNKS)
        )
        drop = nn.Dropout(self.dropout_rate)
        common = dict(num_heads=self.num_heads, head_dim=head_dim, qk_norm=self.qk_norm, dtype=self.dtype,
                      qk_norm_axis=self.qk_norm_axis)
        self_impl = self.implementation if self.context_parallel == "none" else self.context_parallel
        # Captions are short and unsplit: cross-attention stays local (splash wants 128-multiples, so XLA/cuDNN).
        cross_impl = "auto" if self.implementation == "splash" else self.implementation

        h = modulate(layer_norm(self.dtype, "norm_attn", affine=False)(x), shift_attn, scale_attn)
        h = Attention(rope_axis_dims=self.rope_axis_dims, rope_theta=self.rope_theta, name="self_attn",
                      implementation=self_impl, local_implementation=self.implementation, **common)(
            h, segment_ids, h, segment_ids, positions
        )
        x = x + gate_attn * drop(h, deterministic=deterministic)

        h = layer_norm(self.dtype, "norm_cross", affine=True)(x)
        h = Attention(zero_init_output=True, context_length_axis="text_length", name="cross_attn",
                      implementation=cross_impl, **common)(
            h, segment_ids, text, text_segment_ids
        )
        x = x + drop(h, deterministic=deterministic)

        h = modulate(layer_norm(self.dtype, "norm_mlp", affine=False)(x), shift_mlp, scale_mlp)
        h = Mlp(width, self.mlp_hidden, self.dtype, name="mlp")(h)
        x = x + gate_mlp * drop(h, deterministic=deterministic)
        return constrain(x, ("batch", "length", "embed"))


class FinalLayer(nn.Module):
    """adaLN-modulated norm and a zero-initialised linear map to the patch dimension.

    ``kind='adaln'``: shift and scale from a ``width -> 2 width`` projection of ``silu(cond)``;
    ``'table'`` (Wan's head): a learned ``[2, width]`` table plus ``cond`` itself, no projection.
    """

    patch_dim: int
    dtype: Any = jnp.float32
    kind: str = "adaln"

    @nn.compact
    def __call__(self, x: Array, cond: Conditioning) -> Array:
        width = x.shape[-1]
        if self.kind == "table":
            table = self.param("modulation_table", logical(nn.initializers.zeros_init(), ("modulation", "embed")),
                               (2, width), jnp.float32)
            mods = (cond.tokens.astype(jnp.float32)[:, :, None, :] + table).astype(self.dtype)
        else:
            mods = per_condition(self, cond, lambda module, c: dense(
                (2, width), ("embed", "modulation", "mlp"), self.dtype, "adaln", zero_init=True)(nn.silu(c)))
        h = modulate(layer_norm(self.dtype, "norm", affine=False)(x), mods[:, :, 0], mods[:, :, 1])
        return dense(self.patch_dim, ("embed", "patch"), self.dtype, "linear", zero_init=True)(h)
