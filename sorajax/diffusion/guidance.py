"""Classifier-free guidance (CFG), negative prompts, and the training-time caption dropout it relies on.

CFG extrapolates from an unconditional velocity toward the conditional one:
`v = v_uncond + scale * (v_cond - v_uncond)`; scale 1 is the plain conditional model, scale 0 the
unconditional one, > 1 follows the caption more closely. A NEGATIVE PROMPT is just a different
unconditional branch: the uncond rows get the negative prompt's text instead of the null caption, so
guidance pushes away from it.

The null caption. Training replaces a dropped sample's caption embeddings by ZEROS and keeps its text
mask / text segment ids unchanged (`drop_captions`); sampling builds the uncond branch the same way
(`null_caption_like`). Why zeros with the mask kept: every packed sample keeps at least one text token,
so cross-attention never sees an empty key set (no all-masked softmax rows, no NaN), and the packing of
text is identical for dropped and kept captions. With all-zero inputs every null token produces the same
key and value, so as long as the denoiser adds no position information to text tokens, its output does
not depend on how many null tokens there are: any length >= 1 is the same "empty caption".

Both branches always run as ONE network call on 2B rows (conditional rows first): one pass per step
and one code path; a run short of memory samples fewer prompts per call instead.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from sorajax.diffusion.samplers import CarriedVelocityFn, VelocityFn

# denoise_fn(x_t [N, L, P], t_tokens [N, L], inputs) -> velocity [N, L, P]; `inputs` is any pytree of
# arrays with leading dim N (text embeddings, text segment ids, positions, segment ids, ...).
DenoiseFn = Callable[[jax.Array, jax.Array, Any], jax.Array]
# The same with state carried from call to call: (x_t, t_tokens, inputs, carry) -> (velocity, carry).
CarriedDenoiseFn = Callable[[jax.Array, jax.Array, Any, Any], tuple[jax.Array, Any]]


def _scale_for(scale: jax.Array | float, v: jax.Array) -> jax.Array:
    """A scalar scale, or one per row [B], broadcast against v [B, L, P]."""
    scale = jnp.asarray(scale, v.dtype)
    if scale.ndim == 1:
        if scale.shape[0] != v.shape[0]:
            raise ValueError(f"per-row guidance scale has {scale.shape[0]} entries for a batch of {v.shape[0]}.")
        return scale.reshape((-1,) + (1,) * (v.ndim - 1))
    if scale.ndim != 0:
        raise ValueError(f"guidance scale must be a scalar or [B], got shape {scale.shape}.")
    return scale


def combine_guidance(v_cond: jax.Array, v_uncond: jax.Array, scale: jax.Array | float) -> jax.Array:
    """v_uncond + scale * (v_cond - v_uncond)."""
    if v_cond.shape != v_uncond.shape:
        raise ValueError(f"cond {v_cond.shape} and uncond {v_uncond.shape} velocities must have the same shape.")
    return v_uncond + _scale_for(scale, v_cond) * (v_cond - v_uncond)


def _concat_rows(first: Any, second: Any) -> Any:
    def concat(a, b):
        if jnp.shape(a) != jnp.shape(b):
            raise ValueError(
                f"cond and uncond inputs differ in shape ({jnp.shape(a)} vs {jnp.shape(b)}); pad the negative "
                "or null caption to the conditional caption's length so both branches batch together."
            )
        return jnp.concatenate([a, b], axis=0)

    return jax.tree.map(concat, first, second)


def guided_velocity_fn(denoise_fn: DenoiseFn, cond_inputs: Any, uncond_inputs: Any,
                       scale: jax.Array | float) -> VelocityFn:
    """A sampler velocity_fn(x_t, t_tokens) applying CFG around `denoise_fn`.

    `cond_inputs` / `uncond_inputs` are pytrees of the same structure and shapes: the caption (and any other
    per-row input) for each branch; for a negative prompt, put its text in `uncond_inputs`. Both branches
    run as ONE call on 2B rows (rows [:B] conditional, [B:] unconditional): one network pass per step.
    """
    carried = guided_carried_velocity_fn(lambda x, t, inputs, carry: (denoise_fn(x, t, inputs), carry),
                                         cond_inputs, uncond_inputs, scale)
    return lambda x_t, t_tokens: carried(x_t, t_tokens, ())[0]


def guided_carried_velocity_fn(denoise_fn: CarriedDenoiseFn, cond_inputs: Any, uncond_inputs: Any,
                               scale: jax.Array | float) -> CarriedVelocityFn:
    """`guided_velocity_fn` for a denoiser that carries state from call to call (the DiT's step cache): the
    state covers the 2B rows of the one batched call, so each branch's rows keep their own."""

    def velocity_fn(x_t: jax.Array, t_tokens: jax.Array, carry: Any) -> tuple[jax.Array, Any]:
        both, carry = denoise_fn(
            jnp.concatenate([x_t, x_t], axis=0),
            jnp.concatenate([t_tokens, t_tokens], axis=0),
            _concat_rows(cond_inputs, uncond_inputs),
            carry,
        )
        v_cond, v_uncond = jnp.split(both, 2, axis=0)
        return combine_guidance(v_cond, v_uncond, scale), carry

    return velocity_fn


def null_caption_like(text: jax.Array, text_segments: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The unconditional caption matching training's dropout: zero embeddings, same mask/segment ids."""
    return jnp.zeros_like(text), text_segments


def drop_captions(
    rng: jax.Array, text: jax.Array, text_segments: jax.Array, rate: float
) -> tuple[jax.Array, jax.Array]:
    """Replace each sample's caption by the null caption with probability `rate` (for CFG training).

    text [B, Lt, D]; text_segments [B, Lt] is either a bool/0-1 mask (one caption per row) or the packed
    text segment ids (0 = padding, 1..n = the caption of sample n in the row; each sample is dropped
    independently). Returns (text with dropped captions zeroed, dropped [B, Lt] bool per text token);
    the mask / segment ids are unchanged by design (see the module docstring).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"caption dropout rate must be in [0, 1], got {rate}; typical is 0.1.")
    if text.ndim != 3 or text_segments.shape != text.shape[:2]:
        raise ValueError(f"need text [B, Lt, D] and text_segments [B, Lt], got {text.shape} and {text_segments.shape}.")
    segment_ids = text_segments.astype(jnp.int32)
    batch, length = segment_ids.shape
    # One uniform per possible (row, segment id); ids are bounded by Lt, so no segment count is needed.
    drop_segment = jax.random.uniform(rng, (batch, length + 1)) < rate
    dropped = jnp.take_along_axis(drop_segment, segment_ids, axis=1) & (segment_ids > 0)
    return jnp.where(dropped[..., None], jnp.zeros_like(text), text), dropped
