"""Ring and Ulysses attention equal full segment-masked attention on packed rows (8 fake devices)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.models.attention import dot_product_attention
from sorajax.parallel.mesh import make_mesh
from sorajax.parallel.rules import DIT_RULES

BATCH, LENGTH, HEADS, HEAD_DIM = 2, 32, 4, 8


def _packed_segments() -> np.ndarray:
    """Row 0: segments of 10, 7, 9 tokens then 6 padding; row 1: two segments split mid-shard, no padding."""
    row0 = np.array([1] * 10 + [2] * 7 + [3] * 9 + [0] * 6)
    row1 = np.array([1] * 13 + [2] * 19)
    return np.stack([row0, row1]).astype(np.int32)


def _qkv(seed: int):
    keys = jax.random.split(jax.random.key(seed), 3)
    return [jax.random.normal(k, (BATCH, LENGTH, HEADS, HEAD_DIM), jnp.float32) for k in keys]


def _attend(kind: str, mesh_shape: dict, q, k, v, seg):
    mesh = make_mesh(mesh_shape)

    def f(q, k, v, seg):
        with nn.logical_axis_rules(DIT_RULES):
            return dot_product_attention(q, k, v, seg, seg, kind, local_implementation="xla")

    with jax.set_mesh(mesh):
        return jax.jit(f)(q, k, v, seg)


@pytest.mark.parametrize("kind", ["ring", "ulysses"])
@pytest.mark.parametrize("mesh_shape", [dict(data=2, sequence=4), dict(data=1, sequence=2, tensor=2, fsdp=2)])
def test_context_parallel_equals_full_attention(kind, mesh_shape):
    q, k, v = _qkv(0)
    seg = jnp.asarray(_packed_segments())
    full = dot_product_attention(q, k, v, seg, seg, "xla")
    out = _attend(kind, mesh_shape, q, k, v, seg)
    assert out.shape == (BATCH, LENGTH, HEADS, HEAD_DIM)
    np.testing.assert_allclose(np.asarray(out), np.asarray(full), atol=2e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(out)[0, 26:], 0.0)  # padding queries are exactly zero
    assert float(jnp.abs(out[0, :26]).min()) >= 0 and float(jnp.abs(out[0, :26]).max()) > 0.1


@pytest.mark.parametrize("kind", ["ring", "ulysses"])
def test_context_parallel_gradients_equal_full_attention(kind):
    q, k, v = _qkv(1)
    seg = jnp.asarray(_packed_segments())
    weights = jax.random.normal(jax.random.key(7), q.shape)
    full_grads = jax.grad(lambda *a: jnp.sum(dot_product_attention(*a, seg, seg, "xla") * weights), (0, 1, 2))(q, k, v)
    mesh = make_mesh(dict(data=2, sequence=4))

    def loss(q, k, v):
        with nn.logical_axis_rules(DIT_RULES):
            return jnp.sum(dot_product_attention(q, k, v, seg, seg, kind, local_implementation="xla") * weights)

    with jax.set_mesh(mesh):
        grads = jax.jit(jax.grad(loss, (0, 1, 2)))(q, k, v)
    for got, want in zip(grads, full_grads):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=5e-5, rtol=1e-4)


def test_ring_attention_is_really_split_over_sequence():
    """The compiled ring program passes key/value blocks between devices (collective-permute)."""
    q, k, v = _qkv(2)
    seg = jnp.asarray(_packed_segments())
    mesh = make_mesh(dict(data=2, sequence=4))

    def f(q, k, v, seg):
        with nn.logical_axis_rules(DIT_RULES):
            return dot_product_attention(q, k, v, seg, seg, "ring")

    with jax.set_mesh(mesh):
        text = jax.jit(f).lower(q, k, v, seg).compile().as_text()
    assert "collective-permute" in text


def test_without_a_mesh_ring_falls_back_to_local_attention():
    q, k, v = _qkv(3)
    seg = jnp.asarray(_packed_segments())
    np.testing.assert_allclose(dot_product_attention(q, k, v, seg, seg, "ring"),
                               dot_product_attention(q, k, v, seg, seg, "xla"), atol=1e-6)


def test_ulysses_with_heads_not_divisible_names_the_fix():
    q, k, v = (x[:, :, :2] for x in _qkv(4))  # 2 heads over sequence=4
    seg = jnp.asarray(_packed_segments())
    with pytest.raises(ValueError, match="divisible by sequence"):
        _attend("ulysses", dict(data=2, sequence=4), q, k, v, seg)


def test_splash_without_context_parallelism_runs_per_device_and_equals_full_attention():
    """Splash (a Pallas kernel XLA cannot partition on TPU) under a mesh that shards rows and heads."""
    from sorajax.parallel.context_parallel import per_device_attention

    length = 128  # splash tiles by 128
    keys = jax.random.split(jax.random.key(3), 3)
    q, k, v = (jax.random.normal(key, (BATCH, length, HEADS, HEAD_DIM), jnp.float32) for key in keys)
    seg = np.zeros((BATCH, length), np.int32)
    seg[0, :50], seg[0, 50:100], seg[1, :128] = 1, 2, 1  # row 0 ends in 28 padding tokens
    seg = jnp.asarray(seg)
    full = dot_product_attention(q, k, v, seg, seg, "xla")
    out = _attend_with("splash", dict(data=2, tensor=2, fsdp=2), q, k, v, seg)
    np.testing.assert_allclose(np.asarray(out), np.asarray(full), atol=2e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(out)[0, 100:], 0.0)
    with jax.set_mesh(make_mesh(dict(data=2, sequence=4))), nn.logical_axis_rules(DIT_RULES):
        with pytest.raises(ValueError, match="context_parallel='ring' or 'ulysses'"):
            per_device_attention(lambda *a: a[0], q, k, v, seg, seg)


def _attend_with(implementation: str, mesh_shape: dict, q, k, v, seg):
    mesh = make_mesh(mesh_shape)

    def f(q, k, v, seg):
        with nn.logical_axis_rules(DIT_RULES):
            return dot_product_attention(q, k, v, seg, seg, implementation)

    with jax.set_mesh(mesh):
        return jax.jit(f)(q, k, v, seg)
