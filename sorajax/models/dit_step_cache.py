"""The DiT's step cache: skip most of the transformer when its input barely changed since the last call.

Why: a sampler calls the DiT 10-50 times on inputs that move a little between neighbouring noise
levels, and the residual the blocks add moves little too. First-block caching (the idea behind
TeaCache / MagCache / first-block caching in diffusion toolkits) measures that change cheaply: it
always runs block 0, compares the residual block 0 added with the one it added at the last FULL
evaluation (relative L1), and below a threshold skips blocks 1..N-1, adding instead the residual
they added at that evaluation. The reference stays the last full evaluation, so a run of skips is
bounded by the total drift from it, not by the step-to-step change.

How it runs under jit: the cache is the DiT's mutable variable collection ``step_cache``
(:func:`init_step_cache` builds it; ``sorajax.diffusion.sampling`` carries it through the solver
loop as a pytree), and the skip is one ``flax.linen.cond``, so a whole sampling run is still one
program. The cache is active only when that collection is passed to ``DiT.apply``; otherwise the
DiT runs exactly as without this module.

Rows decide together: the cache holds each row's own residuals (under classifier-free guidance
the conditional and unconditional rows each keep theirs), but one call either skips for all rows
or for none, because skipping must drop the blocks' compute for the whole batch. It skips only
when EVERY row's change is below the threshold (padding tokens do not count). ``calls`` and
``skips`` count the evaluations, for reports (block evaluations skipped = skips * (depth - 1)).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

STEP_CACHE = "step_cache"
_FIELDS = ("first_residual", "rest_residual", "valid", "threshold", "calls", "skips")


def init_step_cache(rows: int, length: int, width: int, dtype: Any, threshold: float) -> dict[str, jax.Array]:
    """The empty cache for `rows` x `length` tokens of a DiT `width` wide (computing in `dtype`).

    `threshold`: relative L1 change of block 0's residual below which the other blocks are skipped
    (> 0; the first call always runs in full). It is an array, so changing it does not recompile.
    """
    if not threshold > 0:
        raise ValueError(f"step cache threshold must be > 0 (0 turns the cache off: do not build one), got {threshold}")
    zeros = jnp.zeros((rows, length, width), dtype)
    return {"first_residual": zeros, "rest_residual": zeros, "valid": jnp.zeros((), bool),
            "threshold": jnp.float32(threshold), "calls": jnp.zeros((), jnp.int32), "skips": jnp.zeros((), jnp.int32)}


@dataclasses.dataclass(frozen=True)
class StepCacheStats:
    """What the cache did over one sampling run: DiT calls, calls that skipped, and the DiT's depth."""

    calls: int
    skips: int
    depth: int

    @classmethod
    def of(cls, cache: dict[str, jax.Array], depth: int) -> "StepCacheStats":
        return cls(int(cache["calls"]), int(cache["skips"]), depth)

    @property
    def skipped_blocks(self) -> float:
        """The share of block evaluations skipped (each skip still runs block 0)."""
        return self.skips * (self.depth - 1) / max(1, self.calls * self.depth)


def relative_change(residual: jax.Array, reference: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """Per row [B]: mean |residual - reference| / mean |reference| over the row's real tokens."""
    mask = (segment_ids > 0)[..., None].astype(jnp.float32)
    difference = jnp.sum(jnp.abs(residual.astype(jnp.float32) - reference.astype(jnp.float32)) * mask, axis=(1, 2))
    size = jnp.sum(jnp.abs(reference.astype(jnp.float32)) * mask, axis=(1, 2))
    return difference / jnp.maximum(size, jnp.finfo(jnp.float32).tiny)


def has_step_cache(module: nn.Module) -> bool:
    """Whether this call was given a step cache (a collection passed to ``apply``, not created at init)."""
    return module.has_variable(STEP_CACHE, "first_residual")


def blocks_with_step_cache(module: nn.Module, x: jax.Array, first: Callable[[jax.Array], jax.Array],
                           rest: Callable[[jax.Array], jax.Array], segment_ids: jax.Array) -> jax.Array:
    """`rest(first(x))`, or `first(x)` plus the cached residual of `rest` when block 0's residual barely changed.

    `first` and `rest` create and run the blocks inside `module`'s compact scope (so their parameters are
    the same as without the cache); `rest` runs inside a ``flax.linen.cond``.
    """
    state = {name: module.variable(STEP_CACHE, name) for name in _FIELDS}
    if state["first_residual"].value.shape != x.shape:
        raise ValueError(f"step cache holds {state['first_residual'].value.shape} activations but the DiT sees {x.shape}: "
                         "build it with init_step_cache(rows, length, width, ...) for this batch")
    after_first = first(x)
    first_residual = after_first - x
    change = relative_change(first_residual, state["first_residual"].value, segment_ids)
    skip = state["valid"].value & (jnp.max(change) < state["threshold"].value)
    cached_rest = state["rest_residual"].value.astype(x.dtype)
    out = nn.cond(skip, lambda _, h: h + cached_rest, lambda _, h: rest(h), module, after_first)
    # The reference stays the last full evaluation's (a skip refreshes nothing).
    state["first_residual"].value = jnp.where(skip, state["first_residual"].value, first_residual)
    state["rest_residual"].value = jnp.where(skip, cached_rest, out - after_first)
    state["valid"].value = jnp.ones((), bool)
    state["calls"].value = state["calls"].value + 1
    state["skips"].value = state["skips"].value + skip.astype(jnp.int32)
    return out


def per_block_params(params: dict[str, Any], depth: int) -> dict[str, Any]:
    """A ``scan_layers`` DiT's parameters (``blocks/block`` [layers, ...]) in the per-block layout ``block_i``.

    Why: the cache runs block 0 on its own and the others under one cond, which the scanned layout (one
    stacked module) cannot split; sampling loses nothing by unrolling the blocks.
    """
    flat = dict(params)
    stacked = flat.pop("blocks")
    for i in range(depth):
        flat[f"block_{i}"] = jax.tree.map(lambda leaf: leaf[i], stacked["block"])
        if "place" in stacked:
            flat[f"place_{i}"] = jax.tree.map(lambda leaf: leaf[i], stacked["place"])
    return flat
