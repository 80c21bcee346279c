"""The DiT train state created directly in its sharded layout (FSDP params and optimizer state).

Nothing is ever materialised on one device: ``jax.eval_shape`` traces the init to
get shapes and logical names, the rules turn those into NamedShardings, and
``jax.jit(init, out_shardings=...)`` makes every device compute only its own
shards. The optimizer state inherits each parameter's logical names (optax maps
over the boxed tree), so Adam moments are split exactly like their weights.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sorajax.parallel.rules import Rules, logical_sharding, logical_shardings
from sorajax.patches import PackedBatch
from sorajax.train.dit_step import DiTTrainState

# Logical names of each PackedBatch field's dimensions.
BATCH_LOGICAL_NAMES: dict[str, tuple[str | None, ...]] = {
    "tokens": ("batch", "length", "patch"),
    "positions": ("batch", "length", None),
    "segment_ids": ("batch", "length"),
    "t": ("batch", "length"),
    "loss_mask": ("batch", "length"),
    "text": ("batch", "text_length", "text_embed"),
    "text_segment_ids": ("batch", "text_length"),
}


def _boxed_state_fn(dit: Any, optimizer: Any, example: PackedBatch, seed: int):
    """A function of nothing that builds the train state with params still in logical boxes."""

    def init() -> DiTTrainState:
        init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
        row = jax.tree.map(lambda x: jnp.zeros((1, *x.shape[1:]), x.dtype), example)  # init needs shapes only
        variables = dit.init(init_rng, row.tokens, row.positions, row.segment_ids, row.t, row.text,
                             row.text_segment_ids)
        params = variables["params"]
        return DiTTrainState(step=jnp.asarray(0, jnp.int32), params=params,
                             ema_params=jax.tree.map(jnp.copy, params),
                             opt_state=optimizer.init(params), rng=state_rng)

    return init


def state_shardings(dit: Any, optimizer: Any, example: PackedBatch, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings of the (unboxed) train state for ``mesh`` and ``rules``."""
    with nn.logical_axis_rules(rules):
        abstract = jax.eval_shape(_boxed_state_fn(dit, optimizer, _first_row(example), 0))
    return logical_shardings(abstract, mesh, rules)


def abstract_sharded_state(dit: Any, optimizer: Any, example: PackedBatch, mesh: Mesh, rules: Rules) -> Any:
    """The train state as ShapeDtypeStructs carrying their shardings: a restore target, or AOT compile input."""
    example = _first_row(example)
    with nn.logical_axis_rules(rules):
        abstract = nn.meta.unbox(jax.eval_shape(_boxed_state_fn(dit, optimizer, example, 0)))
    shardings = state_shardings(dit, optimizer, example, mesh, rules)
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)


def init_sharded_state(
    dit: Any, optimizer: Any, example: PackedBatch, seed: int, mesh: Mesh, rules: Rules
) -> tuple[DiTTrainState, Any]:
    """(state, its shardings): the same values as the single-device init, born sharded.

    ``example`` only gives shapes (its first row is used). Identical to
    ``sorajax.train.dit_loop.init_state`` for the same seed.
    """
    example = _first_row(example)
    shardings = state_shardings(dit, optimizer, example, mesh, rules)
    boxed = _boxed_state_fn(dit, optimizer, example, seed)

    def init() -> DiTTrainState:
        return nn.meta.unbox(boxed())

    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state = jax.jit(init, out_shardings=shardings)()
    return state, shardings


def _first_row(batch: PackedBatch) -> PackedBatch:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype), batch)


def batch_shardings(batch: PackedBatch, mesh: Mesh, rules: Rules) -> PackedBatch:
    """A PackedBatch of NamedShardings: rows over data/fsdp, tokens over sequence."""
    return PackedBatch(**{
        name: logical_sharding(names, getattr(batch, name).shape, mesh, rules)
        for name, names in BATCH_LOGICAL_NAMES.items()
    })


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def bytes_per_device(tree: Any) -> dict[int, int]:
    """Bytes each device holds of a tree of (sharded) arrays: the proof that FSDP splits memory."""
    totals: dict[int, int] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            totals[shard.device.id] = totals.get(shard.device.id, 0) + shard.data.nbytes
    return totals
