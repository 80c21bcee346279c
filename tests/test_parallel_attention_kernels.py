"""The attention switch: splash (Pallas, interpreted off TPU) equals XLA on packed segments; bad names fail clearly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.config_loading import load_config
from sorajax.models.attention import IMPLEMENTATIONS, MAX_SPLASH_GRID, dot_product_attention, splash_blocks


def _inputs(length: int = 256, heads: int = 2, head_dim: int = 16):
    keys = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(key, (1, length, heads, head_dim)) for key in keys)
    seg = np.zeros((1, length), np.int32)
    seg[0, :100], seg[0, 100:130], seg[0, 130:240] = 1, 2, 3  # three samples, 16 padding tokens
    return q, k, v, jnp.asarray(seg)


def test_splash_attention_matches_xla_with_segments():
    q, k, v, seg = _inputs()
    want = dot_product_attention(q, k, v, seg, seg, "xla")
    got = jax.jit(lambda *a: dot_product_attention(*a, "splash"))(q, k, v, seg, seg)
    assert got.shape == want.shape == (1, 256, 2, 16)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(got)[0, 240:], 0.0)


def test_switch_lists_every_backend_and_rejects_unknown_names():
    assert set(IMPLEMENTATIONS) == {"xla", "cudnn", "auto", "splash", "ring", "ulysses"}
    q, k, v, seg = _inputs(length=8)
    with pytest.raises(ValueError, match="use one of"):
        dot_product_attention(q, k, v, seg, seg, "flash")


def test_splash_blocks_cover_a_one_minute_1080p_row_with_a_small_mask_grid():
    # The mask grid is built in numpy when the kernel is made; 512-token blocks at 2.9 M tokens never compiled.
    for variant in ("XL_720p", "XL_1080p_60s"):
        length = load_config(f"configs/dit_scale.py:{variant}").data.seq_len
        block, compute = splash_blocks(length)
        assert block % 128 == 0 and length % block == 0 and length // block <= MAX_SPLASH_GRID, (variant, block)
        assert compute in (128, 256, 512) and block % compute == 0
        assert length % 16 == 0  # 16-way sequence shards
    assert splash_blocks(2_940_928) == (4096, 512)
    assert splash_blocks(256) == (256, 256) and splash_blocks(4096) == (512, 512)  # short rows keep small blocks
    assert splash_blocks(216_000) == (0, 0)  # not a multiple of 128: splash cannot run it on TPU


def test_splash_full_mask_is_shared_across_heads_and_never_materialised():
    from sorajax.models.attention import _lazy_full_mask

    length = 2_940_928
    first, second = _lazy_full_mask((length, length)), _lazy_full_mask((length, length))
    assert first == second and hash(first) == hash(second)  # splash keeps one mask for all heads
    block = first[(slice(0, 4096), slice(4096, 8192))]
    assert not isinstance(block, np.ndarray) and block.shape == (4096, 4096) and block.any() and block.all()
