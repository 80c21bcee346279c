"""Logical axis rules (logical name -> mesh axes) as plain config data, for the DiT and the autoencoder.

The models name their dimensions ('batch', 'length', 'embed', ...); these tables
say which mesh axis each name is split over. A config may replace the table
(``config.parallel.rules = [["embed", "fsdp"], ...]``); anything a rule table
leaves out is replicated.

Autoencoder parameters are not annotated inside the model (convolutions are
small next to activations), so :data:`VAE_PARAM_RULES` names their dimensions by
kernel rank: a 3D conv kernel ``[kt, kh, kw, c_in, c_out]`` is FSDP-split on
``c_out``; activations ``[B, T, H, W, C]`` split batch on data/fsdp and height on
``sequence`` (spatial parallelism for large frames).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sorajax.models.dit import DIT_LOGICAL_AXIS_RULES
from sorajax.parallel.mesh import fit_spec

Rules = tuple[tuple[str, Any], ...]

# The DiT's table lives next to the model (dit.py); extra names used by the scale options.
DIT_RULES: Rules = (*DIT_LOGICAL_AXIS_RULES, ("layers", None))

VAE_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("frames", None),
    ("height", "sequence"),
    ("width", None),
    ("channels", None),
    ("kernel_t", None),
    ("kernel_h", None),
    ("kernel_w", None),
    ("conv_in", None),
    ("conv_out", "fsdp"),
)

# Logical names of an autoencoder parameter's dimensions, by rank (conv kernels are rank 5).
# Each name appears once per array: Flax refuses a spec that repeats a logical name.
VAE_PARAM_RULES: dict[int, tuple[str, ...]] = {
    5: ("kernel_t", "kernel_h", "kernel_w", "conv_in", "conv_out"),
    2: ("conv_in", "conv_out"),
    1: ("channels",),
}
VAE_ACTIVATION_NAMES = ("batch", "frames", "height", "width", "channels")


def rules_from_config(rules: Sequence[Sequence[Any]] | None, default: Rules) -> Rules:
    """A rule table from config data (list of [name, axis | [axes] | None]) or the default."""
    if rules is None:
        return default
    table = []
    for entry in rules:
        if len(entry) != 2 or not isinstance(entry[0], str):
            raise ValueError(f"a logical axis rule is [name, mesh_axis_or_axes_or_None], got {entry!r}")
        axes = entry[1]
        table.append((entry[0], tuple(axes) if isinstance(axes, (list, tuple)) else axes))
    return tuple(table)


def logical_shardings(abstract_tree: Any, mesh: Mesh, rules: Rules) -> Any:
    """NamedShardings for an (abstract) tree whose leaves may be ``nn.Partitioned`` boxes.

    Boxed leaves get their logical names mapped through ``rules``; plain leaves are
    replicated. The result has the UNBOXED tree's structure.
    """
    specs = nn.get_partition_spec(abstract_tree)
    mesh_specs = nn.logical_to_mesh(specs, rules)
    shapes = nn.meta.unbox(abstract_tree)
    return jax.tree.map(
        lambda spec, leaf: NamedSharding(mesh, fit_spec(spec, leaf.shape, mesh)),
        mesh_specs, shapes, is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def logical_sharding(names: Sequence[str | None], shape: Sequence[int], mesh: Mesh, rules: Rules) -> NamedSharding:
    """The sharding of one array whose dimensions have logical ``names``."""
    spec = nn.logical_to_mesh_axes(tuple(names), rules)
    return NamedSharding(mesh, fit_spec(spec, shape, mesh))


def vae_param_shardings(params: Any, mesh: Mesh, rules: Rules = VAE_RULES) -> Any:
    """Shardings for autoencoder parameters (plain arrays or shape structs), named by rank."""

    def one(leaf: Any) -> NamedSharding:
        names = VAE_PARAM_RULES.get(len(leaf.shape), (None,) * len(leaf.shape))
        return logical_sharding(names, leaf.shape, mesh, rules)

    return jax.tree.map(one, params)


def vae_activation_sharding(shape: Sequence[int], mesh: Mesh, rules: Rules = VAE_RULES) -> NamedSharding:
    """Sharding of a video batch ``[B, T, H, W, C]`` for the autoencoder."""
    return logical_sharding(VAE_ACTIVATION_NAMES, shape, mesh, rules)
