"""3D RoPE: relative-position property, norm preservation, axis split."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.models.rope import apply_rope, rope_angles, rope_axis_dims

AXIS_DIMS = (4, 6, 6)  # head_dim 16
HEAD_DIM = sum(AXIS_DIMS)


def _random_qk(seed: int, length: int = 5, heads: int = 2) -> tuple[jax.Array, jax.Array]:
    kq, kk = jax.random.split(jax.random.key(seed))
    shape = (1, length, heads, HEAD_DIM)
    return jax.random.normal(kq, shape), jax.random.normal(kk, shape)


def _scores(q, k, pq, pk):
    return jnp.einsum("blnh,bmnh->bnlm", apply_rope(q, pq, AXIS_DIMS), apply_rope(k, pk, AXIS_DIMS))


@pytest.mark.parametrize("shift", [(3, 0, 0), (0, -5, 0), (0, 0, 17), (7, 2, -11)])
def test_scores_depend_only_on_relative_positions(shift):
    q, k = _random_qk(0)
    rng = np.random.default_rng(1)
    pq = jnp.asarray(rng.integers(0, 20, size=(1, 5, 3)), jnp.int32)
    pk = jnp.asarray(rng.integers(0, 20, size=(1, 5, 3)), jnp.int32)
    d = jnp.asarray(shift, jnp.int32)
    base = _scores(q, k, pq, pk)
    shifted = _scores(q, k, pq + d, pk + d)
    np.testing.assert_allclose(shifted, base, rtol=1e-4, atol=1e-4)


def test_each_axis_changes_scores():
    """A relative offset along any single axis must change the scores (every axis is actually encoded)."""
    q, k = _random_qk(2)
    p = jnp.zeros((1, 5, 3), jnp.int32)
    base = _scores(q, k, p, p)
    for axis in range(3):
        moved = p.at[..., axis].set(3)
        changed = _scores(q, k, moved, p)
        assert float(jnp.max(jnp.abs(changed - base))) > 1e-2, f"axis {axis} has no effect"


def test_rope_preserves_norm_and_is_identity_at_origin():
    q, _ = _random_qk(3)
    positions = jnp.asarray(np.random.default_rng(4).integers(0, 50, size=(1, 5, 3)), jnp.int32)
    rotated = apply_rope(q, positions, AXIS_DIMS)
    assert rotated.shape == q.shape and rotated.dtype == q.dtype
    np.testing.assert_allclose(jnp.linalg.norm(rotated, axis=-1), jnp.linalg.norm(q, axis=-1), rtol=1e-5)
    np.testing.assert_allclose(apply_rope(q, jnp.zeros_like(positions), AXIS_DIMS), q, atol=1e-6)
    assert float(jnp.max(jnp.abs(rotated - q))) > 1e-2


def test_rope_keeps_bfloat16():
    q, _ = _random_qk(5)
    positions = jnp.ones((1, 5, 3), jnp.int32)
    out = apply_rope(q.astype(jnp.bfloat16), positions, AXIS_DIMS)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), apply_rope(q, positions, AXIS_DIMS), atol=3e-2)


def test_angles_follow_the_axis_split():
    positions = jnp.asarray([[[1, 10, 100]]], jnp.int32)
    angles = rope_angles(positions, AXIS_DIMS, theta=10_000.0)[0, 0]
    assert angles.shape == (HEAD_DIM // 2,)
    # The first pair of each axis slice has frequency 1, so its angle is that axis's position.
    np.testing.assert_allclose(np.asarray(angles)[[0, 2, 5]], [1.0, 10.0, 100.0], rtol=1e-6)


def test_axis_dims_split():
    assert rope_axis_dims(64, (2, 3, 3)) == (16, 24, 24)
    assert rope_axis_dims(16, (2, 3, 3)) == (4, 6, 6)
    assert rope_axis_dims(72, (2, 3, 3)) == (18, 26, 28)
    assert rope_axis_dims(24, (1, 1, 1)) == (8, 8, 8)
    for head_dim in (8, 30, 72, 128):
        dims = rope_axis_dims(head_dim, (2, 3, 3))
        assert sum(dims) == head_dim and all(d % 2 == 0 for d in dims)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="head_dim must be even"):
        rope_axis_dims(15, (2, 3, 3))
    with pytest.raises(ValueError, match="3 non-negative"):
        rope_axis_dims(16, (1, 1))
    q, _ = _random_qk(6)
    with pytest.raises(ValueError, match="sum to"):
        apply_rope(q, jnp.zeros((1, 5, 3), jnp.int32), (4, 4, 4))
