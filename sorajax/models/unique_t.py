"""Per-token functions of ``t`` computed once per distinct value of ``t`` in each row.

Every token carries its own noise level, but a row holds few distinct levels: one per sample when
sampling or training plainly, two with clean conditioning frames, one per frame with per-frame noise.
The timestep MLP and Wan's shared ``width -> 6 width`` modulation are functions of ``t`` alone, so running
them on every token repeats the same rows ~L times (at Wan's 1.3B width and 1,950 tokens, 14% of a
train step's FLOPs). :func:`unique_per_row` finds each row's distinct values into a fixed number of
slots (shapes stay static under jit); the caller computes its function on the slots and
:func:`expand_rows` puts the results back on the tokens. Results are the per-token ones, row for row
(the same arithmetic on the same inputs); where a row has more distinct values than slots the caller
takes its per-token path instead (``DiT`` does so with ``nn.cond``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from einops import repeat

Array = jax.Array


def unique_per_row(t: Array, slots: int) -> tuple[Array, Array, Array]:
    """Each row's distinct values of ``t [B, L]``.

    Returns ``(values [B, slots], index [B, L], fits)``: ``values[b, index[b, l]] == t[b, l]`` wherever
    ``fits`` (a scalar bool: every row has at most ``slots`` distinct values); unused slots repeat the
    row's first value, so whatever is computed on them stays finite.
    """
    if t.ndim != 2 or slots < 1:
        raise ValueError(f"unique_per_row wants t [B, L] and slots >= 1, got t {t.shape} and slots {slots}")
    order = jnp.argsort(t, axis=-1)
    ordered = jnp.take_along_axis(t, order, axis=-1)
    starts = jnp.concatenate([jnp.ones_like(ordered[:, :1], bool), ordered[:, 1:] != ordered[:, :-1]], axis=-1)
    slot_of_ordered = jnp.cumsum(starts, axis=-1) - 1
    index = jnp.take_along_axis(slot_of_ordered, jnp.argsort(order, axis=-1), axis=-1)
    rows = jnp.arange(t.shape[0])[:, None]
    values = repeat(ordered[:, 0], "b -> b k", k=slots).at[rows, slot_of_ordered].set(ordered, mode="drop")
    fits = jnp.all(slot_of_ordered[:, -1] < slots)
    return values, index, fits


def expand_rows(table: Array, index: Array) -> Array:
    """``table [B, slots, ...]`` -> ``[B, L, ...]``: each token gets its slot's entry."""
    index = index.reshape(*index.shape, *(1,) * (table.ndim - 2))
    return jnp.take_along_axis(table, index, axis=1)
