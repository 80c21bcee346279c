"""The one place attention is computed: packed segments in, ``jax.nn.dot_product_attention`` out.

Packed rows hold several samples (NaViT "patch n' pack"); a token may attend
only to keys of its own sample. Every attention in the models goes through
:func:`dot_product_attention`; one ``implementation`` switch picks the backend:

- 'xla': XLA einsums and a softmax with a block-diagonal mask (everywhere), computed as
  ``jax.nn.dot_product_attention``'s XLA path does but heads-major (see :func:`heads_major_attention`);
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

from typing import Any

import jax
import jax.numpy as jnp
from einops import rearrange

from sorajax.models.splash_attention import compiling_for_tpu, splash_attention, splash_blocks
from sorajax.parallel.context_parallel import context_parallel_attention, per_device_attention

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
        def local(q_, k_, v_, q_seg, kv_seg):
            return dot_product_attention(q_, k_, v_, q_seg, kv_seg, local_implementation)

        return context_parallel_attention(q, k, v, q_segment_ids, kv_segment_ids, implementation, local)
    backend = resolve_implementation(implementation, q.dtype, q.shape[-1])
    if backend == "splash":
        if splash_blocks(q.shape[1], k.shape[1])[0] or compiling_for_tpu():
            return per_device_attention(splash_attention, q, k, v, q_segment_ids, kv_segment_ids)
        backend = "xla"  # off TPU, lengths splash cannot tile (e.g. the short example that initialises) use XLA
    allowed = segment_mask(q_segment_ids, kv_segment_ids)
    has_key = jnp.any(allowed, axis=-1, keepdims=True)  # [B, 1, Lq, 1]
    mask = allowed | ~has_key  # a query with nothing to see looks at everything (finite), then is zeroed
    if backend == "xla":
        out = heads_major_attention(q, k, v, mask)
    else:
        out = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=backend)
    query_is_live = jnp.transpose(has_key, (0, 2, 1, 3))  # [B, Lq, 1, 1], broadcasts over heads and features
    return jnp.where(query_is_live, out, jnp.zeros_like(out))


def heads_major_attention(q: Array, k: Array, v: Array, mask: Array) -> Array:
    """Softmax attention of ``[B, L, N, H]`` inputs under a boolean ``[B, 1, Lq, Lk]`` mask, via XLA ops.

    The same arithmetic as ``jax.nn.dot_product_attention(implementation='xla')`` (f32 logits and
    softmax, probabilities cast back to the value dtype, masked logits at -0.7 * float32 max), but
    q, k and v are first laid out heads-major ``[B, N, L, H]`` so that both batched matmuls run on
    contiguous per-head matrices. Why: on CPU the token-major einsums transpose the [B, N, Lq, Lk]
    logits' operands inside the dot, and this layout makes the attention ~20-25% cheaper (forward
    and backward) at Wan's 12 heads of 128 (benchmarks/wan_speed.py). Its gradient is
    :func:`_heads_major_backward`'s.
    """
    qh, kh, vh = (rearrange(x, "b l n h -> b n l h") for x in (q, k, v))
    return rearrange(_heads_major(qh, kh, vh, mask), "b n l h -> b l n h")


def _precision(dtype: Any) -> Any:
    return jax.lax.DotAlgorithmPreset.BF16_BF16_F32 if dtype == jnp.bfloat16 else None


def _heads_major_forward(qh: Array, kh: Array, vh: Array, mask: Array) -> tuple[Array, Array]:
    """(output ``[B, N, Lq, H]``, probabilities ``[B, N, Lq, Lk]`` in v's dtype)."""
    precision = _precision(qh.dtype)
    scaled = qh * jnp.asarray(qh.shape[-1] ** -0.5, qh.dtype)
    logits = jnp.einsum("bnqh,bnkh->bnqk", scaled, kh, precision=precision, preferred_element_type=jnp.float32)
    logits = jnp.where(mask, logits, jnp.float32(-0.7 * jnp.finfo(jnp.float32).max))
    probs = jax.nn.softmax(logits, axis=-1).astype(vh.dtype)
    return jnp.einsum("bnqk,bnkh->bnqh", probs, vh, precision=precision), probs


@jax.custom_vjp
def _heads_major(qh: Array, kh: Array, vh: Array, mask: Array) -> Array:
    return _heads_major_forward(qh, kh, vh, mask)[0]


def _heads_major_fwd(qh: Array, kh: Array, vh: Array, mask: Array) -> tuple[Array, tuple]:
    out, probs = _heads_major_forward(qh, kh, vh, mask)
    return out, (qh, kh, vh, probs, out)


def _heads_major_backward(residuals: tuple, d_out: Array) -> tuple[Array, Array, Array, None]:
    """Softmax attention's gradient with the softmax's row sums taken over the head dim, not the keys.

    Autodiff of the softmax forms ``sum_k P * dP`` over every query-key pair; that sum equals
    ``sum_h dO * O`` (``dP = dO V^T`` and ``O = P V``), which reads [Lq, H] instead of [Lq, Lk] (the
    identity flash attention's backward uses). On CPU the key-length reduction was a tenth of a Wan
    train step. The probabilities are the forward's, saved, as autodiff saves them.
    """
    qh, kh, vh, probs, out = residuals
    precision = _precision(qh.dtype)
    scale = qh.shape[-1] ** -0.5
    d_out = d_out.astype(vh.dtype)
    d_v = jnp.einsum("bnqk,bnqh->bnkh", probs, d_out, precision=precision)
    d_probs = jnp.einsum("bnqh,bnkh->bnqk", d_out, vh, precision=precision, preferred_element_type=jnp.float32)
    row = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1, keepdims=True)
    d_logits = (probs.astype(jnp.float32) * (d_probs - row)).astype(qh.dtype)
    d_q = jnp.einsum("bnqk,bnkh->bnqh", d_logits, kh, precision=precision) * jnp.asarray(scale, qh.dtype)
    scaled = qh * jnp.asarray(scale, qh.dtype)
    d_k = jnp.einsum("bnqk,bnqh->bnkh", d_logits, scaled, precision=precision)
    return d_q, d_k, d_v, None


_heads_major.defvjp(_heads_major_fwd, _heads_major_backward)
