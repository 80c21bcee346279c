"""Functions jitted over a mesh under a rule table: the modern ``pjit``, for any step.

``MeshStep`` traces the function under the logical axis rules and runs it under
``jax.set_mesh(mesh)``, so every ``with_logical_constraint`` inside a model becomes a real
sharding constraint and context-parallel attention finds the ``sequence`` axis. Inputs keep the
shardings they carry (place them with ``parallel.distributed.global_batch`` or ``init_sharded``);
outputs get the ones asked for. A single device is a 1x1x1x1 mesh, so the same step runs there.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
from jax.sharding import Mesh

from sorajax.parallel.rules import Rules
from sorajax.parallel.sharding import replicated


class MeshStep:
    """A jitted function bound to a mesh and rule table; call it, or ``lower`` it for AOT compiles."""

    def __init__(self, fn: Callable, mesh: Mesh, rules: Rules, **jit_kwargs: Any):
        def traced(*args):
            with nn.logical_axis_rules(rules):
                return fn(*args)

        self.mesh, self.rules = mesh, rules
        self._jitted = jax.jit(traced, **jit_kwargs)

    def __call__(self, *args: Any) -> Any:
        with jax.set_mesh(self.mesh):
            return self._jitted(*args)

    def lower(self, *args: Any) -> Any:
        """``jax.stages.Lowered`` for abstract args (ShapeDtypeStructs with shardings)."""
        with jax.set_mesh(self.mesh):
            return self._jitted.lower(*args)


def state_step(step: Callable, mesh: Mesh, rules: Rules, state_shardings: Any, donate: bool = True) -> MeshStep:
    """``step(state, batch) -> (state, metrics)`` with the state kept in its layout, metrics replicated.

    The state is donated (updated in place); the batch keeps the sharding it was placed with.
    """
    return MeshStep(step, mesh, rules, out_shardings=(state_shardings, replicated(mesh)),
                    donate_argnums=(0,) if donate else ())


def replicated_step(fn: Callable, mesh: Mesh, rules: Rules) -> MeshStep:
    """``fn(...)`` over the mesh with every output replicated (evaluation: metrics every host can read)."""
    return MeshStep(fn, mesh, rules, out_shardings=replicated(mesh))
