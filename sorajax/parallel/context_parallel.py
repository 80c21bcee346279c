"""Context (sequence) parallel attention: tokens split over the ``sequence`` mesh axis.

Two exact schemes, both honouring packed segment ids (a token sees only keys of
its own sample; padding sees nothing and outputs zero):

- ring: each device keeps its query block and passes its key/value block (and
  their segment ids) around the ring with ``ppermute``; an online softmax (running
  max, denominator, weighted sum in float32) folds in one block per hop, so the
  full ``L x L`` score matrix never exists. Any head count; ``s`` hops.
- ulysses: two all-to-alls swap "all heads, L/s tokens" for "heads/s, all tokens";
  a normal local attention (XLA, cuDNN or splash) runs on full sequences, then the
  swap is undone. Needs heads (per tensor shard) divisible by the sequence size.

Both run inside ``jax.shard_map`` over the mesh set by ``jax.set_mesh``; the
mesh axes of each dimension come from the active logical axis rules, so batch
stays on data/fsdp and heads on tensor. With no mesh, or a sequence axis of size
1, attention runs locally unchanged.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from sorajax.parallel.mesh import fit_spec

Array = jax.Array
LocalAttention = Callable[[Array, Array, Array, Array, Array], Array]
CONTEXT_PARALLEL_KINDS = ("ring", "ulysses")
_QKV_NAMES = ("batch", "length", "heads", "kv")


def ring_attention_shard(q: Array, k: Array, v: Array, q_seg: Array, kv_seg: Array, axis: str, size: int) -> Array:
    """Per-device ring attention body (call inside shard_map); blocks ``[B, L/s, N, H]``."""
    out_dtype = q.dtype
    q = q.astype(jnp.float32) * (1.0 / math.sqrt(q.shape[-1]))
    batch, length, heads, _ = q.shape
    running_max = jnp.full((batch, heads, length), -jnp.inf, jnp.float32)
    denominator = jnp.zeros((batch, heads, length), jnp.float32)
    weighted = jnp.zeros((batch, heads, length, q.shape[-1]), jnp.float32)
    q_live = q_seg > 0
    shift = [(i, (i + 1) % size) for i in range(size)]

    def hop(_, carry):
        k, v, kv_seg, running_max, denominator, weighted = carry
        scores = jnp.einsum("bqnh,bknh->bnqk", q, k.astype(jnp.float32))
        allowed = (q_seg[:, None, :, None] == kv_seg[:, None, None, :]) & q_live[:, None, :, None]
        scores = jnp.where(allowed, scores, -jnp.inf)
        new_max = jnp.maximum(running_max, scores.max(axis=-1))
        safe_max = jnp.where(jnp.isfinite(new_max), new_max, 0.0)  # rows that saw nothing yet stay at 0
        probs = jnp.exp(scores - safe_max[..., None])
        rescale = jnp.exp(running_max - safe_max)
        denominator = denominator * rescale + probs.sum(axis=-1)
        weighted = weighted * rescale[..., None] + jnp.einsum("bnqk,bknh->bnqh", probs, v.astype(jnp.float32))
        k, v, kv_seg = (jax.lax.ppermute(x, axis, shift) for x in (k, v, kv_seg))
        return k, v, kv_seg, new_max, denominator, weighted

    carry = (k, v, kv_seg, running_max, denominator, weighted)
    *_, denominator, weighted = jax.lax.fori_loop(0, size, hop, carry)
    out = jnp.where(denominator[..., None] > 0, weighted / jnp.maximum(denominator, 1e-30)[..., None], 0.0)
    return jnp.transpose(out, (0, 2, 1, 3)).astype(out_dtype)


def ulysses_attention_shard(
    q: Array, k: Array, v: Array, q_seg: Array, kv_seg: Array, axis: str, size: int, local: LocalAttention
) -> Array:
    """Per-device Ulysses body: all-to-all to full sequences over a head subset, attend, swap back."""
    if q.shape[2] % size:
        raise ValueError(
            f"ulysses attention splits the {q.shape[2]} local heads over sequence={size} devices, which does not "
            "divide: choose num_heads divisible by sequence (x tensor), or use context_parallel='ring'"
        )
    to_heads = lambda x: jax.lax.all_to_all(x, axis, split_axis=2, concat_axis=1, tiled=True)  # noqa: E731
    gather = lambda s: jax.lax.all_gather(s, axis, axis=1, tiled=True)  # noqa: E731
    out = local(to_heads(q), to_heads(k), to_heads(v), gather(q_seg), gather(kv_seg))
    return jax.lax.all_to_all(out, axis, split_axis=1, concat_axis=2, tiled=True)


def context_parallel_attention(
    q: Array, k: Array, v: Array, q_seg: Array, kv_seg: Array, kind: str, local: LocalAttention
) -> Array:
    """Self-attention with tokens split over the mesh axis that the rules give 'length'.

    ``local(q, k, v, q_seg, kv_seg)`` is the single-device attention used when there is
    nothing to split (and by Ulysses on the gathered sequences).
    """
    if kind not in CONTEXT_PARALLEL_KINDS:
        raise ValueError(f"context parallel kind {kind!r} is unknown: use one of {CONTEXT_PARALLEL_KINDS}")
    if q.shape[1] != k.shape[1]:
        raise ValueError(
            f"{kind} attention is for self-attention over the sequence (q and k of equal length), got "
            f"{q.shape[1]} and {k.shape[1]}: use a local implementation for cross-attention"
        )
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return local(q, k, v, q_seg, kv_seg)
    spec = fit_spec(nn.logical_to_mesh_axes(_QKV_NAMES), q.shape, mesh)
    axis = spec[1]
    if axis is None or not isinstance(axis, str) or mesh.shape[axis] == 1:
        return local(q, k, v, q_seg, kv_seg)
    size = mesh.shape[axis]
    seg_spec = PartitionSpec(spec[0], axis)
    if kind == "ring":
        body = lambda *a: ring_attention_shard(*a, axis=axis, size=size)  # noqa: E731
    else:
        body = lambda *a: ulysses_attention_shard(*a, axis=axis, size=size, local=local)  # noqa: E731
    sharded = jax.shard_map(
        body, mesh=mesh, in_specs=(spec, spec, spec, seg_spec, seg_spec), out_specs=spec, check_vma=False
    )
    return sharded(q, k, v, q_seg, kv_seg)


def per_device_attention(attend: LocalAttention, q: Array, k: Array, v: Array, q_seg: Array, kv_seg: Array) -> Array:
    """``attend`` on each device's own rows and heads, for kernels XLA cannot partition (splash).

    Under a mesh with the batch or heads sharded and the sequence whole, a Pallas kernel must be
    called per device (``shard_map``); attention over whole rows needs nothing from other devices.
    Without a mesh, or inside another ``shard_map`` (Ulysses' gathered sequences), it is called directly.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or getattr(mesh, "manual_axes", ()):
        return attend(q, k, v, q_seg, kv_seg)
    q_spec = fit_spec(nn.logical_to_mesh_axes(_QKV_NAMES), q.shape, mesh)
    kv_spec = fit_spec(nn.logical_to_mesh_axes(_QKV_NAMES), k.shape, mesh)
    if any(spec[1] is not None and mesh.shape[spec[1]] > 1 for spec in (q_spec, kv_spec) if isinstance(spec[1], str)):
        raise ValueError("attention over a sequence split across devices needs context_parallel='ring' or 'ulysses'")
    q_spec = kv_spec = PartitionSpec(q_spec[0], None, q_spec[2], q_spec[3])  # same rows and heads for k, v
    seg_spec = PartitionSpec(q_spec[0], None)
    sharded = jax.shard_map(attend, mesh=mesh, in_specs=(q_spec, kv_spec, kv_spec, seg_spec, seg_spec),
                            out_specs=q_spec, check_vma=False)
    return sharded(q, k, v, q_seg, kv_seg)
