"""The device mesh, built from config: axes ('data', 'fsdp', 'sequence', 'tensor').

Config (``config.mesh``, any mapping)::

    data=-1, fsdp=1, sequence=1, tensor=1      # within a slice (ICI); one -1 fills the rest
    dcn_data=1, dcn_fsdp=1, ...                # across slices (DCN, multi-slice); default 1

The mesh axis sizes are the products ``ici * dcn`` per axis. Across slices only
cheap collectives should travel (gradient all-reduce over ``data``), so put the
slice count on ``dcn_data`` and keep fsdp/sequence/tensor inside a slice.

Axes are ``AxisType.Auto`` (GSPMD propagation): JAX 0.12's ``make_mesh`` defaults
to Explicit axes, under which ordinary layers raise ``ShardingTypeError``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, PartitionSpec

from sorajax.config_dataclasses import from_mapping

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "sequence", "tensor")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Mesh axis sizes inside a slice (ICI) and across slices (DCN); -1 means 'whatever is left'."""

    data: int = -1
    fsdp: int = 1
    sequence: int = 1
    tensor: int = 1
    dcn_data: int = 1
    dcn_fsdp: int = 1
    dcn_sequence: int = 1
    dcn_tensor: int = 1

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any] | Any | None) -> MeshConfig:
        """From a dict / ConfigDict (None: every device data-parallel); unknown keys name the valid ones."""
        return cls() if d is None else from_mapping(cls, d, "mesh")

    @property
    def ici(self) -> tuple[int, ...]:
        return (self.data, self.fsdp, self.sequence, self.tensor)

    @property
    def dcn(self) -> tuple[int, ...]:
        return (self.dcn_data, self.dcn_fsdp, self.dcn_sequence, self.dcn_tensor)


def fill_axes(sizes: Sequence[int], total: int, what: str) -> tuple[int, ...]:
    """Replace at most one -1 in ``sizes`` so that their product is ``total``."""
    sizes = [int(s) for s in sizes]
    if any(s == 0 or s < -1 for s in sizes):
        raise ValueError(f"{what} axis sizes must be positive or -1 (fill), got {sizes}")
    free = [i for i, s in enumerate(sizes) if s == -1]
    if len(free) > 1:
        raise ValueError(f"{what} axis sizes {sizes} have more than one -1: only one axis can fill the rest")
    known = math.prod(s for s in sizes if s != -1)
    if free:
        if total % known:
            raise ValueError(f"{what}: {total} devices do not divide by the fixed axis sizes {sizes} (product {known})")
        sizes[free[0]] = total // known
    if math.prod(sizes) != total:
        raise ValueError(
            f"{what} axis sizes {dict(zip(MESH_AXES, sizes))} multiply to {math.prod(sizes)} but there are "
            f"{total} devices: change the sizes or set one to -1"
        )
    return tuple(sizes)


def mesh_shape(config: MeshConfig, num_devices: int, num_slices: int = 1) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(ici_shape, dcn_shape) with -1 filled, for ``num_devices`` spread over ``num_slices`` slices."""
    if num_devices % num_slices:
        raise ValueError(f"{num_devices} devices do not split into {num_slices} equal slices")
    dcn = fill_axes(config.dcn, num_slices, "DCN (across slices)")
    ici = fill_axes(config.ici, num_devices // num_slices, "ICI (within a slice)")
    return ici, dcn


def make_mesh(config: MeshConfig | Mapping[str, Any] | None = None, devices: Sequence[Any] | None = None) -> Mesh:
    """A Mesh over ``devices`` (default: all) with axes :data:`MESH_AXES`, Auto axis types.

    Multi-slice (devices with distinct ``slice_index``) uses a hybrid ICI x DCN layout so
    each DCN axis steps between slices; otherwise the device order follows the
    physical topology where JAX knows it (TPU), else the given order.
    """
    config = config if isinstance(config, MeshConfig) else MeshConfig.from_mapping(config)
    devices = list(jax.devices() if devices is None else devices)
    slices = {getattr(d, "slice_index", 0) for d in devices}
    ici, dcn = mesh_shape(config, len(devices), len(slices))
    if len(slices) > 1:
        grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
    else:
        full = tuple(i * d for i, d in zip(ici, dcn))
        try:
            grid = mesh_utils.create_device_mesh(full, devices)
        except (ValueError, NotImplementedError, AssertionError):  # no known topology (CPU): plain order
            grid = np.asarray(devices, dtype=object).reshape(full)
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def describe(mesh: Mesh) -> str:
    """``data=2 fsdp=4 sequence=1 tensor=1 (8 devices)`` for logs."""
    axes = " ".join(f"{name}={size}" for name, size in mesh.shape.items())
    return f"{axes} ({mesh.size} devices)"


def fit_spec(spec: PartitionSpec, shape: Sequence[int], mesh: Any) -> PartitionSpec:
    """Drop mesh axes from dimensions they do not divide (those dimensions are replicated instead).

    Lets one rule table serve every model size: e.g. 6 heads on tensor=4 stay whole.
    """
    fitted = []
    for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
        names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        kept = []
        for name in names:
            size = mesh.shape[name] * _product(mesh, kept)
            if dim % size == 0:
                kept.append(name)
        fitted.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*fitted)


def _product(mesh: Any, names: Sequence[str]) -> int:
    out = 1
    for name in names:
        out *= mesh.shape[name]
    return out
