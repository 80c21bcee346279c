"""Conditioning computed per distinct (segment, t) gives the per-token results (sorajax.models.condition_slots)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.models.dit import DiT, DiTConfig
from sorajax.models.condition_slots import expand_rows, unique_per_row


def test_unique_per_row_values_index_and_fits():
    t = jnp.asarray([[0.5, 0.0, 0.5, 0.25, 0.0], [0.9, 0.9, 0.9, 0.9, 0.9]], jnp.float32)
    (values,), index, fits = unique_per_row((t,), 3)
    np.testing.assert_array_equal(values, np.asarray([[0.0, 0.25, 0.5], [0.9, 0.9, 0.9]], np.float32))
    np.testing.assert_array_equal(index, [[2, 0, 2, 1, 0], [0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(expand_rows(values, index), t)
    table = jnp.stack([values, -values], axis=-1)  # trailing feature dims follow the slot
    np.testing.assert_array_equal(expand_rows(table, index), jnp.stack([t, -t], axis=-1))
    assert bool(fits)
    assert not bool(unique_per_row((t,), 2)[2])  # the first row has three values


def test_unique_per_row_over_two_keys_is_lexicographic():
    segments = jnp.asarray([[2, 1, 2, 1, 0, 2]], jnp.int32)
    t = jnp.asarray([[0.5, 0.5, 0.0, 0.5, 0.5, 0.5]], jnp.float32)
    (slot_segments, slot_t), index, fits = unique_per_row((segments, t), 4)
    np.testing.assert_array_equal(slot_segments, [[0, 1, 2, 2]])
    np.testing.assert_array_equal(slot_t, np.asarray([[0.5, 0.5, 0.0, 0.5]], np.float32))
    np.testing.assert_array_equal(index, [[3, 1, 2, 1, 0, 3]])
    assert bool(fits) and not bool(unique_per_row((segments, t), 3)[2])


def test_unique_per_row_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"keys of one shape \[B, L\] and slots >= 1"):
        unique_per_row((jnp.zeros((4,)),), 2)
    with pytest.raises(ValueError, match=r"keys of one shape"):
        unique_per_row((jnp.zeros((1, 4)), jnp.zeros((1, 5))), 2)


def test_negative_condition_slots_is_refused():
    with pytest.raises(ValueError, match="condition_slots must be >= 0"):
        DiTConfig(condition_slots=-1)


# The world DiT's own layout (per-block adaLN, attention pool, unrolled) and Wan's (shared modulation, no pool)
# under scanned, rematerialised layers.
@pytest.mark.parametrize("modulation, caption_pool, scan", [("per_block", "attention", False), ("shared", "none", True)])
def test_dit_per_distinct_conditioning_equals_per_token(modulation, caption_pool, scan):
    config = DiTConfig(patch_dim=8, text_dim=12, width=16, depth=2, num_heads=2, modulation=modulation,
                       caption_pool=caption_pool, final_layer="table" if modulation == "shared" else "adaln",
                       frame_position=False, condition_slots=6, scan_layers=scan,
                       remat_policy="full" if scan else "none")
    rng = np.random.default_rng(0)
    b, length = 2, 12
    tokens = jnp.asarray(rng.normal(size=(b, length, 8)), jnp.float32)
    positions = jnp.asarray(rng.integers(0, 4, size=(b, length, 3)), jnp.int32)
    segments = jnp.asarray([[1] * 6 + [2] * 5 + [0]] * b, jnp.int32)
    text = jnp.asarray(rng.normal(size=(b, 5, 12)), jnp.float32)
    text_segments = jnp.asarray([[1, 1, 2, 2, 2]] * b, jnp.int32)
    few = jnp.asarray(np.where(np.arange(length) % 3 == 0, 0.0, 0.7) + np.array([[0.0], [0.1]]), jnp.float32)  # 5 pairs
    many = jnp.asarray(rng.uniform(size=(b, length)), jnp.float32)  # more values than slots: per token
    params = DiT(config).init(jax.random.key(0), tokens, positions, segments, few, text, text_segments)["params"]
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape), params)
    def loss(p, t, cfg):
        return jnp.sum(DiT(cfg).apply({"params": p}, tokens, positions, segments, t, text, text_segments) ** 2)

    step = jax.jit(jax.value_and_grad(loss), static_argnums=2)  # one compile per config, both t's
    for t in (few, many):
        per_value = step(params, t, config)
        per_token = step(params, t, dataclasses.replace(config, condition_slots=0))
        np.testing.assert_allclose(per_value[0], per_token[0], rtol=1e-6)
        # Against the largest gradient anywhere: some leaves' true gradients are exactly 0 (a softmax's
        # shift-invariant key bias), and their computed ~1e-9 is rounding on either path.
        scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(per_token[1]))
        for got, want in zip(jax.tree.leaves(per_value[1]), jax.tree.leaves(per_token[1])):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * scale)
