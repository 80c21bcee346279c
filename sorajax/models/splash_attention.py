"""Pallas TPU splash attention over packed segments, at any row length up to a minute of 1080p.

Segment ids do all the masking; the splash mask itself is full. Two limits shape the call:
- splash prefetches per-block tables ((q blocks) x (kv blocks), int16 + int8) into the TPU core's
  1 MiB scalar memory. A 718 x 718 grid (a 2.9 M-token row in 4,096-token blocks) needed 1.08 MB
  and did not compile; so queries are split into chunks, each a separate kernel call over ALL
  keys, with at most ``MAX_GRID_ENTRIES`` blocks per call. Chunks are independent (softmax is per
  query), so the result is exact.
- vector memory (64 MiB on v5p): 8,192-token q blocks with 512-key tiles spilled 238 MB of
  registers; blocks stay at <= 512 queries and <= 2,048 keys (512-key tiles).
Off TPU the kernel runs in Pallas interpret mode (slow; for checking numerics).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from einops import rearrange

Array = jax.Array

MAX_GRID_ENTRIES = 131_072  # per kernel call: 384 KB of block tables, well inside 1 MiB


def _largest_dividing(length: int, candidates: tuple[int, ...]) -> int:
    return next((b for b in candidates if length % b == 0), 0)


def splash_blocks(q_length: int, kv_length: int) -> tuple[int, int, int, int]:
    """(q block, kv block, kv compute tile, q chunks) for one splash call; zeros if 128 does not divide a length.

    The q block is the largest of 512/256/128 dividing ``q_length``, the kv block the largest of
    2048..128 dividing ``kv_length``, the tile at most 512. ``q chunks`` is the fewest equal query
    chunks (in whole q blocks) that keep each call's grid within ``MAX_GRID_ENTRIES``.
    """
    if q_length <= 0 or kv_length <= 0 or q_length % 128 or kv_length % 128:
        return 0, 0, 0, 0
    bq = _largest_dividing(q_length, (512, 256, 128))
    bkv = _largest_dividing(kv_length, (2048, 1024, 512, 256, 128))
    tile = _largest_dividing(bkv, (512, 256, 128))
    q_blocks, kv_blocks = q_length // bq, kv_length // bkv
    chunks = next(c for c in range(1, q_blocks + 1)
                  if q_blocks % c == 0 and (q_blocks // c) * kv_blocks <= MAX_GRID_ENTRIES)
    return bq, bkv, tile, chunks


class _AllTrueBlock:
    """One block of a full mask, not materialised: splash's mask scan only asks ``.any()`` and ``.all()``."""

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape

    def any(self) -> bool:
        return True

    def all(self) -> bool:
        return True


@functools.cache
def _lazy_full_mask_class() -> type:
    """One class for every head and call: splash dedupes equal masks, and FullMask equality checks the class."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask

    class LazyFullMask(splash_mask.FullMask):
        def __getitem__(self, idx: Any) -> _AllTrueBlock:
            rows, cols = idx
            return _AllTrueBlock((len(range(*rows.indices(self.shape[0]))), len(range(*cols.indices(self.shape[1])))))

    return LazyFullMask


def lazy_full_mask(shape: tuple[int, int]) -> Any:
    """splash's FullMask, except that a block is answered in O(1).

    splash classifies every (q block, kv block) pair by building it with ``np.ones``: L^2
    booleans in all, 8.6e12 for a 2.9 M-token row, which kept a 1080p compile busy for hours.
    """
    return _lazy_full_mask_class()(shape)


def compiling_for_tpu() -> bool:
    """True when the program targets TPU: the active mesh's devices (AOT from a CPU host) or the backend."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and getattr(mesh, "abstract_device", None) is not None:
        return mesh.abstract_device.platform == "tpu"
    return jax.default_backend() == "tpu"


def splash_attention(q: Array, k: Array, v: Array, q_segment_ids: Array, kv_segment_ids: Array) -> Array:
    """Softmax attention within segments, layout ``[B, L, heads, head_dim]``; padding queries give zeros.

    Needs query and key lengths that are multiples of 128 (``dot_product_attention`` falls back
    to XLA off TPU for others). Every query must see at least one key (true for self-attention).
    """
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask

    on_tpu = compiling_for_tpu()
    lq, lkv, heads = q.shape[1], k.shape[1], q.shape[2]
    bq, bkv, tile, chunks = splash_blocks(lq, lkv)
    if not bq:
        raise ValueError(
            f"splash attention needs sequence lengths divisible by 128, got q {lq} and kv {lkv}: "
            "pad the packed rows (data.seq_len) to a multiple of 128, or use attention_impl='xla'"
        )
    chunk_len = lq // chunks
    sizes = splash.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=tile, block_q_dkv=bq, block_kv_dkv=bkv,
                              block_kv_dkv_compute=tile, block_q_dq=bq, block_kv_dq=bkv)
    mask = splash_mask.MultiHeadMask([lazy_full_mask((chunk_len, lkv)) for _ in range(heads)])
    kernel = splash.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=not on_tpu)
    scale = 1.0 / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
    k_heads, v_heads = rearrange(k, "b l n h -> b n l h"), rearrange(v, "b l n h -> b n l h")
    kv_ids = kv_segment_ids.astype(jnp.int32)

    def one_chunk(q_chunk: Array, q_ids: Array) -> Array:  # [B, n, chunk_len, h], [B, chunk_len]
        return jax.vmap(lambda q_, k_, v_, qs, ks: kernel(q_, k_, v_, segment_ids=splash.SegmentIds(q=qs, kv=ks)))(
            q_chunk, k_heads, v_heads, q_ids, kv_ids)

    q_chunks = rearrange(q * scale, "b (c l) n h -> c b n l h", c=chunks)
    id_chunks = rearrange(q_segment_ids.astype(jnp.int32), "b (c l) -> c b l", c=chunks)
    out = jax.lax.map(lambda args: one_chunk(*args), (q_chunks, id_chunks))
    out = rearrange(out, "c b n l h -> b (c l) n h").astype(q.dtype)
    return jnp.where((q_segment_ids > 0)[:, :, None, None], out, jnp.zeros_like(out))
