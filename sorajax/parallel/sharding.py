"""Shardings for ANY pytree from logical axis names, and state that is born sharded.

A leaf's logical names come from one of two places: a Flax ``Partitioned`` box (parameters made
with ``nn.with_logical_partitioning``), or a caller's ``names_for(path, leaf)`` (arrays a model
names by convention, such as a batch's fields or convolution kernels by rank). The rules turn
names into mesh axes; ``fit_spec`` drops an axis from a dimension it does not divide, so one table
serves every size. Leaves with no names are replicated.

``init_sharded`` traces an init function once for shapes, then runs it under ``jax.jit`` with
those output shardings, so every device computes only its own shards and no device ever holds
the whole state (optax maps over the boxed tree, so Adam's moments are split like their weights).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sorajax.parallel.mesh import fit_spec
from sorajax.parallel.rules import Rules

NamesFor = Callable[[tuple, Any], Sequence[str | None] | None]


def _is_box(x: Any) -> bool:
    return isinstance(x, nn.meta.AxisMetadata)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def logical_sharding(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Rules) -> NamedSharding:
    """The sharding of one array whose dimensions have logical ``names``."""
    spec = nn.logical_to_mesh_axes(tuple(names), rules)
    return NamedSharding(mesh, fit_spec(spec, shape, mesh))


def tree_shardings(tree: Any, mesh: Mesh, rules: Rules, names_for: NamesFor | None = None) -> Any:
    """NamedShardings for a tree of arrays or ShapeDtypeStructs, some possibly in logical boxes.

    The result has the UNBOXED tree's structure. Boxed leaves use their own names; other leaves
    ``names_for(path, leaf)`` (None or no function: replicated).
    """

    def one(path: tuple, leaf: Any) -> NamedSharding:
        if _is_box(leaf):
            names = leaf.get_partition_spec()
            return NamedSharding(mesh, fit_spec(nn.logical_to_mesh_axes(tuple(names), rules), leaf.value.shape, mesh))
        names = None if names_for is None else names_for(path, leaf)
        if names is None:
            return replicated(mesh)
        return logical_sharding(names, leaf.shape, mesh, rules)

    return jax.tree_util.tree_map_with_path(one, tree, is_leaf=_is_box)


def with_shardings(tree: Any, shardings: Any) -> Any:
    """ShapeDtypeStructs of `tree`'s leaves carrying `shardings` (restore targets, AOT compile inputs)."""
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def abstract_sharded(init: Callable[[], Any], mesh: Mesh, rules: Rules, names_for: NamesFor | None = None) -> Any:
    """What ``init()`` returns, as ShapeDtypeStructs with their shardings; nothing is computed."""
    with nn.logical_axis_rules(rules):
        boxed = jax.eval_shape(init)
    return with_shardings(nn.meta.unbox(boxed), tree_shardings(boxed, mesh, rules, names_for))


def init_sharded(init: Callable[[], Any], mesh: Mesh, rules: Rules, names_for: NamesFor | None = None,
                 shardings: Any = None) -> tuple[Any, Any]:
    """(``init()``'s value unboxed, its shardings): the same numbers as a plain call, born sharded.

    `shardings`: the ones ``abstract_sharded`` already gave for this init (not traced again)."""
    if shardings is None:
        with nn.logical_axis_rules(rules):
            shardings = tree_shardings(jax.eval_shape(init), mesh, rules, names_for)
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        state = jax.jit(lambda: nn.meta.unbox(init()), out_shardings=shardings)()
    return state, shardings


def bytes_per_device(tree: Any) -> dict[int, int]:
    """Bytes each device holds of a tree of (sharded) arrays: the proof that FSDP splits memory."""
    totals: dict[int, int] = {}
    for leaf in jax.tree.leaves(tree):
        for shard in leaf.addressable_shards:
            totals[shard.device.id] = totals.get(shard.device.id, 0) + shard.data.nbytes
    return totals
