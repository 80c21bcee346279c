"""Caption attention pooling: a softmax over each caption's own tokens only, equal to the mean at zero logits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.models.caption_pooling import segment_softmax_pool
from sorajax.models.dit import DiTConfig

# Two captions packed in one text row (3 and 2 tokens), then one padding token.
TEXT_SEGMENTS = np.array([[1, 1, 1, 2, 2, 0]], np.int32)


def _values(seed: int = 0, heads: int = 2, dim: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(1, 6, heads, dim)).astype(np.float32)


def test_zero_logits_give_each_captions_own_mean():
    values = _values()
    pooled = np.asarray(segment_softmax_pool(jnp.zeros((1, 6, 2)), jnp.asarray(values), jnp.asarray(TEXT_SEGMENTS)))
    for j in range(3):
        np.testing.assert_allclose(pooled[0, j], values[0, :3].mean(axis=0), atol=1e-6)
    for j in (3, 4):
        np.testing.assert_allclose(pooled[0, j], values[0, 3:5].mean(axis=0), atol=1e-6)
    np.testing.assert_array_equal(pooled[0, 5], 0.0)


def test_a_dominant_logit_picks_its_token_and_never_crosses_captions():
    values = _values(1)
    logits = np.zeros((1, 6, 2), np.float32)
    logits[0, 1, 0] = 50.0  # head 0 of caption 1 looks at token 1
    logits[0, 4, 1] = 50.0  # head 1 of caption 2 looks at token 4
    logits[0, 5, :] = 1e4  # padding: must be ignored however large
    pooled = np.asarray(segment_softmax_pool(jnp.asarray(logits), jnp.asarray(values), jnp.asarray(TEXT_SEGMENTS)))
    np.testing.assert_allclose(pooled[0, 0, 0], values[0, 1, 0], atol=1e-5)
    np.testing.assert_allclose(pooled[0, 0, 1], values[0, :3, 1].mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(pooled[0, 3, 1], values[0, 4, 1], atol=1e-5)
    np.testing.assert_allclose(pooled[0, 3, 0], values[0, 3:5, 0].mean(axis=0), atol=1e-5)
    assert bool(np.all(np.isfinite(pooled)))


def test_gradients_are_finite_with_text_padding():
    values = jnp.asarray(_values(2))
    grad = jax.grad(lambda lg: segment_softmax_pool(lg, values, jnp.asarray(TEXT_SEGMENTS)).sum())(jnp.ones((1, 6, 2)))
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_bad_caption_pool_settings_name_the_fix():
    with pytest.raises(ValueError, match="caption_pool 'max' is unknown"):
        DiTConfig(caption_pool="max")
    with pytest.raises(ValueError, match="caption_pool_heads=5 must be >= 1 and divide width 384"):
        DiTConfig(caption_pool_heads=5)
