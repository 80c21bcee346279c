"""Segment-masked attention: matches a naive reference, never NaN, backend selection."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.models.attention import dot_product_attention, resolve_implementation, segment_mask

HEADS, HEAD_DIM = 2, 8


def _qkv(seed: int, lq: int, lkv: int, batch: int = 2):
    kq, kk, kv = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(kq, (batch, lq, HEADS, HEAD_DIM))
    k = jax.random.normal(kk, (batch, lkv, HEADS, HEAD_DIM))
    v = jax.random.normal(kv, (batch, lkv, HEADS, HEAD_DIM))
    return q, k, v


def _naive_attention(q, k, v, q_seg, kv_seg):
    """Plain numpy softmax over the allowed keys only; zero for queries with none."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    q_seg, kv_seg = np.asarray(q_seg), np.asarray(kv_seg)
    out = np.zeros_like(q)
    for b in range(q.shape[0]):
        for i in range(q.shape[1]):
            allowed = (kv_seg[b] == q_seg[b, i]) & (q_seg[b, i] > 0)
            if not allowed.any():
                continue
            for n in range(q.shape[2]):
                logits = k[b, allowed, n] @ q[b, i, n] / np.sqrt(q.shape[-1])
                weights = np.exp(logits - logits.max())
                out[b, i, n] = (weights / weights.sum()) @ v[b, allowed, n]
    return out


SELF_SEGMENTS = jnp.asarray([[1, 1, 1, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1]], jnp.int32)


def test_segment_mask_values():
    mask = segment_mask(jnp.asarray([[1, 1, 2, 0]]), jnp.asarray([[1, 2, 2, 0, 0]]))
    assert mask.shape == (1, 1, 4, 5) and mask.dtype == jnp.bool_
    expected = np.array(
        [[1, 0, 0, 0, 0], [1, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]], bool
    )
    np.testing.assert_array_equal(mask[0, 0], expected)


def test_self_attention_matches_naive_reference():
    q, k, v = _qkv(0, 7, 7)
    out = dot_product_attention(q, k, v, SELF_SEGMENTS, SELF_SEGMENTS, "xla")
    assert out.shape == q.shape
    np.testing.assert_allclose(out, _naive_attention(q, k, v, SELF_SEGMENTS, SELF_SEGMENTS), atol=1e-5)
    # Padding queries produce exactly zero.
    np.testing.assert_array_equal(out[0, 5:], 0.0)


def test_cross_attention_matches_naive_reference_including_empty_caption():
    q, k, v = _qkv(1, 7, 5)
    # Row 0: sample 2 has no text tokens at all -> its queries see nothing and output zero.
    text_segments = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], jnp.int32)
    out = dot_product_attention(q, k, v, SELF_SEGMENTS, text_segments, "auto")
    np.testing.assert_allclose(out, _naive_attention(q, k, v, SELF_SEGMENTS, text_segments), atol=1e-5)
    np.testing.assert_array_equal(out[0, 3:5], 0.0)
    assert float(jnp.max(jnp.abs(out[0, :3]))) > 1e-3


def test_fully_padded_row_has_finite_outputs_and_gradients():
    q, k, v = _qkv(2, 7, 7)
    segments = SELF_SEGMENTS.at[0].set(0)  # row 0 is all padding

    def loss(q, k, v):
        return jnp.sum(dot_product_attention(q, k, v, segments, segments, "xla") ** 2)

    out = dot_product_attention(q, k, v, segments, segments, "xla")
    assert bool(jnp.all(jnp.isfinite(out)))
    np.testing.assert_array_equal(out[0], 0.0)
    grads = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
    for g in grads:
        assert bool(jnp.all(jnp.isfinite(g)))
    # Real queries in row 1 do get gradient; padding row 0 gets none.
    assert float(jnp.max(jnp.abs(grads[0][1]))) > 0
    np.testing.assert_array_equal(grads[0][0], 0.0)


def test_padding_keys_do_not_affect_real_queries():
    q, k, v = _qkv(3, 7, 7)
    changed_k = k.at[0, 5:].set(1e3)
    changed_v = v.at[0, 5:].set(-1e3)
    a = dot_product_attention(q, k, v, SELF_SEGMENTS, SELF_SEGMENTS)
    b = dot_product_attention(q, changed_k, changed_v, SELF_SEGMENTS, SELF_SEGMENTS)
    np.testing.assert_allclose(a[0, :5], b[0, :5], atol=1e-6)


def test_bfloat16_inputs_work_and_stay_close():
    q, k, v = _qkv(4, 7, 7)
    ref = dot_product_attention(q, k, v, SELF_SEGMENTS, SELF_SEGMENTS)
    low = dot_product_attention(*(a.astype(jnp.bfloat16) for a in (q, k, v)), SELF_SEGMENTS, SELF_SEGMENTS, "auto")
    assert low.dtype == jnp.bfloat16
    np.testing.assert_allclose(low.astype(jnp.float32), ref, atol=5e-2)


def test_implementation_selection():
    if jax.default_backend() == "gpu":
        pytest.skip("checks CPU fallbacks")
    assert resolve_implementation("auto", jnp.bfloat16, 64) == "xla"
    assert resolve_implementation("xla", jnp.float32, 64) == "xla"
    with pytest.raises(ValueError, match="needs a GPU"):
        resolve_implementation("cudnn", jnp.bfloat16, 64)
    with pytest.raises(ValueError, match="unknown"):
        resolve_implementation("flash", jnp.float32, 64)


def test_shape_mismatch_errors():
    q, k, v = _qkv(5, 7, 7)
    with pytest.raises(ValueError, match="segment ids"):
        dot_product_attention(q, k, v, SELF_SEGMENTS[:, :6], SELF_SEGMENTS)
    with pytest.raises(ValueError, match="attention wants"):
        dot_product_attention(q, k[:, :, :1], v, SELF_SEGMENTS, SELF_SEGMENTS)


@pytest.mark.parametrize("dtype, atol", [(jnp.float32, 2e-5), (jnp.bfloat16, 6e-2)])
def test_xla_gradient_equals_autodiff_of_jax_attention(dtype, atol):
    """The 'xla' path's hand-written backward equals autodiff of jax.nn.dot_product_attention (packed
    self-attention with padding, and cross-attention where one sample has no caption tokens)."""
    text_segments = jnp.asarray([[1, 1, 1, 0, 0], [1, 1, 1, 1, 0]], jnp.int32)
    for lkv, kv_segments in ((7, SELF_SEGMENTS), (5, text_segments)):
        q, k, v = (a.astype(dtype) for a in _qkv(5, 7, lkv))
        weights = jax.random.normal(jax.random.key(6), q.shape, jnp.float32)
        mask = segment_mask(SELF_SEGMENTS, kv_segments)
        live = jnp.any(mask, axis=-1, keepdims=True)

        def reference(q, k, v):
            out = jax.nn.dot_product_attention(q, k, v, mask=mask | ~live, implementation="xla")
            return jnp.where(jnp.transpose(live, (0, 2, 1, 3)), out, 0)

        def ours(q, k, v):
            return dot_product_attention(q, k, v, SELF_SEGMENTS, kv_segments, "xla")

        grads = [jax.grad(lambda *a: jnp.sum(f(*a).astype(jnp.float32) * weights), argnums=(0, 1, 2))(q, k, v)
                 for f in (ours, reference)]
        for mine, expected in zip(*grads):
            assert mine.dtype == dtype
            np.testing.assert_allclose(np.asarray(mine, np.float32), np.asarray(expected, np.float32), atol=atol)
            assert float(jnp.max(jnp.abs(expected.astype(jnp.float32)))) > 0.1
