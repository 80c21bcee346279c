"""The one place attention is computed: packed segments in, ``jax.nn.dot_product_attention`` out.

Packed rows hold several samples (NaViT "patch n' pack"); a token may attend
only to keys of its own sample. Every attention in the models goes through
:func:`dot_product_attention`; one ``implementation`` switch picks the backend:

- 'xla': ``jax.nn.dot_product_attention`` with a block-diagonal mask (everywhere);
- 'cudnn': cuDNN flash attention (GPU, half precision); 'auto': cuDNN where it can run, else XLA;
- 'splash': Pallas splash attention with segment ids (TPU; interpreted elsewhere, for tests);
- 'ring' / 'ulysses': context parallelism over the ``sequence`` mesh axis
  (``sorajax.parallel.context_parallel``), each device running ``local_implementation``.

Masking rule: query ``i`` may see key ``j`` iff both are in the same segment
and the segment id is > 0 (0 is padding). A query that may see no key at all
(a padding query, or a sample whose caption has no tokens) would give a softmax
over nothing; instead it is allowed to see every key, which keeps the softmax
and its gradient finite on every backend, and its output is then set to zero.
Real tokens never see another sample or padding.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array

LOCAL_IMPLEMENTATIONS = ("xla", "cudnn", "auto", "splash")
CONTEXT_PARALLEL_IMPLEMENTATIONS = ("ring", "ulysses")
IMPLEMENTATIONS = (*LOCAL_IMPLEMENTATIONS, *CONTEXT_PARALLEL_IMPLEMENTATIONS)
# cuDNN's fused attention handles half precision and head dims up to 128 in steps of 8.
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
_CUDNN_MAX_HEAD_DIM = 128


def segment_mask(q_segment_ids: Array, kv_segment_ids: Array) -> Array:
    """Boolean ``[B, 1, Lq, Lkv]``: True where a query may attend to a key (same segment, not padding)."""
    if q_segment_ids.ndim != 2 or kv_segment_ids.ndim != 2 or q_segment_ids.shape[0] != kv_segment_ids.shape[0]:
        raise ValueError(
            f"segment ids must be [B, Lq] and [B, Lkv] with the same B; got {q_segment_ids.shape} and "
            f"{kv_segment_ids.shape}"
        )
    q = q_segment_ids[:, :, None]
    kv = kv_segment_ids[:, None, :]
    return ((q == kv) & (q > 0))[:, None, :, :]


def resolve_implementation(implementation: str, dtype: Any, head_dim: int) -> str:
    """The concrete backend ('xla', 'cudnn' or 'splash') for a local one ('xla', 'cudnn', 'auto', 'splash').

    'auto' picks cuDNN only where it can run: a GPU backend, half-precision
    inputs and a supported head dim; everywhere else XLA.
    """
    if implementation not in LOCAL_IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {implementation!r} is unknown: use one of {IMPLEMENTATIONS}")
    if implementation == "splash":
        return "splash"
    on_gpu = jax.default_backend() == "gpu"
    if implementation == "cudnn":
        if not on_gpu:
            raise ValueError(
                f"attention implementation 'cudnn' needs a GPU, but JAX's backend is {jax.default_backend()!r}: "
                "use 'auto' (cuDNN on GPU, XLA elsewhere) or 'xla'"
            )
        return "cudnn"
    if implementation == "auto":
        cudnn_ok = (
            on_gpu
            and jnp.dtype(dtype) in [jnp.dtype(d) for d in _CUDNN_DTYPES]
            and head_dim % 8 == 0
            and head_dim <= _CUDNN_MAX_HEAD_DIM
        )
        return "cudnn" if cudnn_ok else "xla"
    return "xla"


def dot_product_attention(
    q: Array,
    k: Array,
    v: Array,
    q_segment_ids: Array,
    kv_segment_ids: Array,
    implementation: str = "xla",
    local_implementation: str = "auto",
) -> Array:
    """Softmax attention restricted to segments; layout ``[B, L, heads, head_dim]`` (BTNH).

    Args:
      q: queries ``[B, Lq, N, H]``; k, v: keys and values ``[B, Lkv, N, H]`` (same dtype).
      q_segment_ids: ``[B, Lq]`` int, 0 = padding, 1..n = sample within the row.
      kv_segment_ids: ``[B, Lkv]`` int, same numbering (token ids for self-attention,
        text segment ids for cross-attention).
      implementation: 'xla', 'cudnn', 'auto' (see :func:`resolve_implementation`), 'splash',
        or 'ring' / 'ulysses' (self-attention split over the ``sequence`` mesh axis).
      local_implementation: what 'ring' / 'ulysses' run on each device's part
        ('ulysses' uses it; 'ring' has its own online-softmax block loop).

    Returns:
      ``[B, Lq, N, H]`` in q's dtype; rows of queries with no visible key are zero.
    """
    if q.ndim != 4 or k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(
            f"attention wants q [B, Lq, N, H] and k, v [B, Lkv, N, H] with matching B, N, H; "
            f"got q {q.shape}, k {k.shape}, v {v.shape}"
        )
    if q_segment_ids.shape != q.shape[:2] or kv_segment_ids.shape != k.shape[:2]:
        raise ValueError(
            f"segment ids {q_segment_ids.shape} / {kv_segment_ids.shape} do not match q {q.shape[:2]} / "
            f"k {k.shape[:2]} in [B, L]"
        )
    if implementation in CONTEXT_PARALLEL_IMPLEMENTATIONS:
        from sorajax.parallel.context_parallel import context_parallel_attention  # the parallel package needs models

        def local(q_, k_, v_, q_seg, kv_seg):
            return dot_product_attention(q_, k_, v_, q_seg, kv_seg, local_implementation)

        return context_parallel_attention(q, k, v, q_segment_ids, kv_segment_ids, implementation, local)
    backend = resolve_implementation(implementation, q.dtype, q.shape[-1])
    if backend == "splash":
        return splash_attention(q, k, v, q_segment_ids, kv_segment_ids)
    allowed = segment_mask(q_segment_ids, kv_segment_ids)
    has_key = jnp.any(allowed, axis=-1, keepdims=True)  # [B, 1, Lq, 1]
    mask = allowed | ~has_key  # a query with nothing to see looks at everything (finite), then is zeroed
    out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=backend)
    query_is_live = jnp.transpose(has_key, (0, 2, 1, 3))  # [B, Lq, 1, 1], broadcasts over heads and features
    return jnp.where(query_is_live, out, jnp.zeros_like(out))


def _compiling_for_tpu() -> bool:
    """True when the program targets TPU: the active mesh's devices (AOT from a CPU host) or the backend."""
    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and getattr(mesh, "abstract_device", None) is not None:
        return mesh.abstract_device.platform == "tpu"
    return jax.default_backend() == "tpu"


# Splash builds its block mask in numpy when the kernel is made: (L / block)^2 entries per head. At
# 512-token blocks a one-minute 1080p row (2.9 M tokens) would need 33 M entries and the compile
# never finished; capping the grid keeps mask building to seconds at any length.
MAX_SPLASH_GRID = 1024


def splash_blocks(length: int) -> tuple[int, int]:
    """(mask block, compute block) for a splash sequence of ``length``; (0, 0) if 128 does not divide it.

    The mask block is the largest of 512/256/128 that divides ``length`` with at most
    ``MAX_SPLASH_GRID`` blocks, else the smallest multiple of 128 dividing it that meets the cap.
    The compute block (the score tile the kernel holds) is at most 512 and divides the mask block.
    """
    if length <= 0 or length % 128:
        return 0, 0
    block = next((b for b in (512, 256, 128) if length % b == 0 and length // b <= MAX_SPLASH_GRID), 0)
    if not block:
        block = next(b for b in range(128, length + 1, 128) if length % b == 0 and length // b <= MAX_SPLASH_GRID)
    return block, next(c for c in (512, 256, 128) if block % c == 0)


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


def _lazy_full_mask(shape: tuple[int, int]) -> Any:
    """splash's FullMask, except that a block is answered in O(1).

    splash classifies every (q block, kv block) pair by building it with ``np.ones``: L^2
    booleans in all, 8.6e12 for a 2.9 M-token row, which kept a 1080p compile busy for hours.
    Segment ids do the real masking here, so every block is simply full.
    """
    return _lazy_full_mask_class()(shape)


def splash_attention(q: Array, k: Array, v: Array, q_segment_ids: Array, kv_segment_ids: Array) -> Array:
    """Pallas TPU splash attention with segment ids; blockwise, so the score matrix is never stored.

    Off TPU the kernel runs in Pallas interpret mode (slow; for checking numerics).
    Needs query and key lengths that are multiples of 128 on TPU. Every query must
    see at least one key (true for self-attention: a token sees itself); padding
    queries (segment 0) see only padding and are zeroed afterwards.
    """
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask

    on_tpu = _compiling_for_tpu()
    lq, lkv, heads = q.shape[1], k.shape[1], q.shape[2]
    (bq, _), (bkv, ckv) = splash_blocks(lq), splash_blocks(lkv)
    if on_tpu and not (bq and bkv):
        raise ValueError(
            f"splash attention on TPU needs sequence lengths divisible by 128, got q {lq} and kv {lkv}: "
            "pad the packed rows (data.seq_len) to a multiple of 128, or use attention_impl='xla'"
        )
    bq, bkv, ckv = (bq or lq), (bkv or lkv), (ckv or lkv)
    sizes = splash.BlockSizes(block_q=bq, block_kv=bkv, block_kv_compute=ckv, block_q_dkv=bq, block_kv_dkv=bkv,
                              block_kv_dkv_compute=ckv, block_q_dq=bq, block_kv_dq=bkv)
    mask = splash_mask.MultiHeadMask([_lazy_full_mask((lq, lkv)) for _ in range(heads)])
    kernel = splash.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=not on_tpu)
    to_heads_first = lambda x: jnp.transpose(x, (0, 2, 1, 3))  # noqa: E731  BTNH -> BNTH
    scale = 1.0 / jnp.sqrt(jnp.asarray(q.shape[-1], q.dtype))
    segments = splash.SegmentIds(q=q_segment_ids.astype(jnp.int32), kv=kv_segment_ids.astype(jnp.int32))
    out = jax.vmap(lambda q_, k_, v_, seg: kernel(q_, k_, v_, segment_ids=seg))(
        to_heads_first(q * scale), to_heads_first(k), to_heads_first(v), segments
    )
    out = jnp.transpose(out, (0, 2, 1, 3)).astype(q.dtype)
    return jnp.where((q_segment_ids > 0)[:, :, None, None], out, jnp.zeros_like(out))
