"""The attention switch: splash (Pallas, interpreted off TPU) equals XLA on packed segments; bad names fail clearly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sorajax.config_loading import load_config
from sorajax.models import splash_attention as splash_module
from sorajax.models.attention import IMPLEMENTATIONS, dot_product_attention
from sorajax.models.splash_attention import MAX_GRID_ENTRIES, lazy_full_mask, splash_blocks


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


def test_splash_blocks_fit_a_one_minute_1080p_row_in_scalar_memory():
    # Per call, the (q blocks) x (kv blocks) tables must fit the TPU core's 1 MiB scalar memory.
    for variant in ("XL_720p", "XL_1080p_60s"):
        length = load_config(f"configs/dit_scale.py:{variant}").data.seq_len
        bq, bkv, tile, chunks = splash_blocks(length, length)
        assert bq in (128, 256, 512) and bkv % tile == 0 and tile <= 512 and length % bkv == 0, variant
        assert (length // bq) % chunks == 0 and (length // bq // chunks) * (length // bkv) <= MAX_GRID_ENTRIES
        assert length % 16 == 0  # 16-way sequence shards
    assert splash_blocks(2_949_120, 2_949_120) == (512, 2048, 512, 64)  # 64 calls of 46,080 queries
    assert splash_blocks(256, 256) == (256, 256, 256, 1)
    assert splash_blocks(216_000, 216_000)[0] == 0  # not a multiple of 128: splash cannot run it on TPU


def test_chunked_splash_equals_xla(monkeypatch):
    monkeypatch.setattr(splash_module, "MAX_GRID_ENTRIES", 3)  # 384 tokens = 3 x 3 blocks of 128: 3 query chunks
    assert splash_module.splash_blocks(384, 384) == (128, 128, 128, 3)
    q, k, v, seg = _inputs(length=384)
    want = dot_product_attention(q, k, v, seg, seg, "xla")
    got = jax.jit(splash_module.splash_attention)(q, k, v, seg, seg)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(got)[0, 240:], 0.0)


def test_splash_full_mask_is_shared_across_heads_and_never_materialised():
    length = 2_949_120
    first, second = lazy_full_mask((length, length)), lazy_full_mask((length, length))
    assert first == second and hash(first) == hash(second)  # splash keeps one mask for all heads
    block = first[(slice(0, 512), slice(2048, 4096))]
    assert not isinstance(block, np.ndarray) and block.shape == (512, 2048) and block.any() and block.all()


def test_splash_lengths_it_cannot_tile_use_xla_off_tpu_and_fail_clearly_when_called_directly():
    q, k, v, seg = _inputs(length=16)  # e.g. the short example that initialises a model
    np.testing.assert_allclose(np.asarray(dot_product_attention(q, k, v, seg, seg, "splash")),
                               np.asarray(dot_product_attention(q, k, v, seg, seg, "xla")), atol=1e-6)
    with pytest.raises(ValueError, match="divisible by 128"):
        splash_module.splash_attention(q, k, v, seg, seg)
