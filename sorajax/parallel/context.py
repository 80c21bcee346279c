"""The device mesh and rule table a program runs under, with the few things every caller does with them.

Always a mesh: one device is a 1x1x1x1 mesh, so a trainer, a sampler or a test has one code path
whether it runs on a laptop CPU, 8 fake devices or a pod slice.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
from jax.sharding import Mesh

from sorajax.parallel.distributed import global_batch, initialize_multihost
from sorajax.parallel.mesh import MeshConfig, describe, make_mesh
from sorajax.parallel.rules import Rules
from sorajax.parallel.sharding import NamesFor, abstract_sharded, init_sharded, tree_shardings
from sorajax.parallel.steps import MeshStep, replicated_step


@dataclasses.dataclass(frozen=True)
class MeshContext:
    mesh: Mesh
    rules: Rules
    # Batch shardings by (names, structure, shapes): `put` runs every step, and a run has few batch shapes.
    _batch_shardings: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def create(cls, config: MeshConfig | None, rules: Rules, devices: Any = None) -> "MeshContext":
        """Joins a multi-host job when there is one (before any device is touched), then builds the mesh."""
        if devices is None:
            initialize_multihost()
        return cls(make_mesh(config or MeshConfig(), devices), rules)

    def describe(self) -> str:
        return describe(self.mesh)

    def init(self, init: Callable[[], Any], names_for: NamesFor | None = None, shardings: Any = None) -> tuple[Any, Any]:
        """(``init()``'s value, its shardings), born sharded over the mesh (see ``sharding.init_sharded``)."""
        return init_sharded(init, self.mesh, self.rules, names_for, shardings)

    def abstract(self, init: Callable[[], Any], names_for: NamesFor | None = None) -> tuple[Any, Any]:
        """(``init()``'s ShapeDtypeStructs with their shardings, the shardings), traced only: a restore target
        that costs no compile or compute (a resumed run never needs the initial values)."""
        abstract = abstract_sharded(init, self.mesh, self.rules, names_for)
        return abstract, jax.tree.map(lambda x: x.sharding, abstract)

    def shardings(self, tree: Any, names_for: NamesFor | None = None) -> Any:
        return tree_shardings(tree, self.mesh, self.rules, names_for)

    def put(self, local: Any, names_for: NamesFor) -> Any:
        """This host's rows of a batch (numpy) -> global arrays laid out by the batch's logical names."""
        leaves, structure = jax.tree.flatten(local)
        key = (names_for, structure, tuple((x.shape, str(x.dtype)) for x in leaves))
        if key not in self._batch_shardings:
            shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct((x.shape[0] * jax.process_count(), *x.shape[1:]),
                                                                 x.dtype), local)
            self._batch_shardings[key] = self.shardings(shapes, names_for)
        return global_batch(local, self._batch_shardings[key])

    def jit_replicated(self, fn: Callable) -> MeshStep:
        """``fn`` over the mesh, outputs replicated (evaluation: numbers every host can read)."""
        return replicated_step(fn, self.mesh, self.rules)
