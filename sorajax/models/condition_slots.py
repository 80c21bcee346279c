"""Per-token conditioning computed once per distinct conditioning of each row.

Every token carries its own noise level ``t``, and with a caption pool its conditioning also depends
on its sample (segment). But a row holds few distinct ``(segment, t)`` pairs: one per sample when
sampling or training plainly, two with clean conditioning frames, one per frame with per-frame noise.
The timestep MLP, the caption pool's output layer and every adaLN projection (``width -> 6 width`` in
each block) are functions of that pair alone, so running them on every token repeats the same rows
~L / samples times: in the world DiT that is a quarter of the step's FLOPs, at Wan's 1.3B width 14%.

:func:`unique_per_row` finds each row's distinct key tuples into a fixed number of slots (shapes stay
static under jit); :class:`Conditioning` carries the per-token vectors together with the per-slot
ones, and :func:`per_condition` runs a projection on the slots and gathers the results onto the
tokens. Results are the per-token ones, row for row (the same arithmetic on the same inputs). Where a
row has more distinct pairs than slots, ``nn.cond`` takes the per-token path at run time.
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import repeat
from flax import struct

Array = jax.Array


def unique_per_row(keys: Sequence[Array], slots: int) -> tuple[tuple[Array, ...], Array, Array]:
    """Each row's distinct tuples of ``keys`` (each ``[B, L]``, compared lexicographically).

    Returns ``(values, index [B, L], fits)``: ``values`` holds one ``[B, slots]`` array per key, with
    ``values[i][b, index[b, l]] == keys[i][b, l]`` wherever ``fits`` (a scalar bool: every row has at
    most ``slots`` distinct tuples). Unused slots repeat the row's first tuple, so whatever is computed
    on them stays finite.
    """
    keys = tuple(keys)
    if not keys or any(k.ndim != 2 or k.shape != keys[0].shape for k in keys) or slots < 1:
        raise ValueError(f"unique_per_row wants keys of one shape [B, L] and slots >= 1, got shapes "
                         f"{[k.shape for k in keys]} and slots {slots}")
    iota = jax.lax.broadcasted_iota(jnp.int32, keys[0].shape, 1)
    *ordered, order = jax.lax.sort((*keys, iota), dimension=1, num_keys=len(keys))
    changed = jnp.zeros_like(ordered[0][:, 1:], bool)
    for key in ordered:
        changed = changed | (key[:, 1:] != key[:, :-1])
    starts = jnp.concatenate([jnp.ones_like(changed[:, :1]), changed], axis=-1)
    slot_of_ordered = jnp.cumsum(starts, axis=-1) - 1
    index = jnp.take_along_axis(slot_of_ordered, jnp.argsort(order, axis=-1), axis=-1)
    rows = jnp.arange(keys[0].shape[0])[:, None]
    values = tuple(repeat(key[:, 0], "b -> b k", k=slots).at[rows, slot_of_ordered].set(key, mode="drop")
                   for key in ordered)
    fits = jnp.all(slot_of_ordered[:, -1] < slots)
    return values, index, fits


def expand_rows(table: Array, index: Array) -> Array:
    """``table [B, slots, ...]`` -> ``[B, L, ...]``: each token gets its slot's entry."""
    index = index.reshape(*index.shape, *(1,) * (table.ndim - 2))
    return jnp.take_along_axis(table, index, axis=1)


@struct.dataclass
class Conditioning:
    """What the blocks are conditioned on: ``tokens [B, L, ...]`` always; with slots, also the same
    vectors per distinct conditioning (``slots [B, S, ...]``, each token's ``index [B, L]``) and
    ``fits``, whether every row's conditioning found a slot (else only ``tokens`` is right)."""

    tokens: Array
    slots: Array | None = None
    index: Array | None = None
    fits: Array | None = None


def per_condition(module: nn.Module, cond: Conditioning, project: Callable[[nn.Module, Array], Array]) -> Array:
    """``project`` (a function of one token's conditioning) on every token, computed per slot where all
    rows fit; ``project(module, x)`` creates its layers under ``module`` (both paths share them)."""
    if cond.slots is None:
        return project(module, cond.tokens)

    def per_slot(module: nn.Module, cond: Conditioning) -> Array:
        return expand_rows(project(module, cond.slots), cond.index)

    def per_token(module: nn.Module, cond: Conditioning) -> Array:
        return project(module, cond.tokens)

    return nn.cond(cond.fits, per_slot, per_token, module, cond)
