"""Train and sampling steps jitted with explicit in/out shardings (the modern ``pjit``).

Both wrappers trace the model under the logical axis rules and run under
``jax.set_mesh(mesh)``, so every ``with_logical_constraint`` inside the model
becomes a real sharding constraint and context-parallel attention finds the
``sequence`` axis. The single-device step functions are reused unchanged: the
sharded program computes the same numbers, only laid out over the mesh.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from sorajax.diffusion.guidance import guided_velocity_fn, null_caption_like
from sorajax.diffusion.samplers import sample
from sorajax.parallel.rules import Rules
from sorajax.parallel.sharded_state import replicated
from sorajax.patches import PackedBatch


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


def sharded_train_step(
    train_step: Callable, mesh: Mesh, rules: Rules, state_shardings: Any, batch_shardings: PackedBatch,
    donate: bool = True,
) -> MeshStep:
    """``train_step(state, batch) -> (state, metrics)`` with the state kept in its sharded layout.

    The state is donated (updated in place); metrics come back replicated.
    """
    return MeshStep(
        train_step, mesh, rules,
        in_shardings=(state_shardings, batch_shardings),
        out_shardings=(state_shardings, replicated(mesh)),
        donate_argnums=(0,) if donate else (),
    )


def sample_packed(
    dit: Any, params: Any, batch: PackedBatch, noise: jax.Array, timesteps: jax.Array, guidance: float,
    method: str = "euler",
) -> jax.Array:
    """Generate the ``loss_mask`` tokens of a packed batch from ``noise``; all others held at ``batch.tokens``.

    Classifier-free guidance with the null caption (zero embeddings) when ``guidance != 1``.
    Returns tokens ``[B, L, P]`` (padding keeps its input values).
    """

    def denoise(x_t: jax.Array, t_tokens: jax.Array, row_inputs: Any) -> jax.Array:
        text, text_segments, positions, segment_ids = row_inputs
        return dit.apply({"params": params}, x_t, positions, segment_ids, t_tokens, text, text_segments)

    layout = (batch.positions, batch.segment_ids)  # per-row inputs travel with the rows CFG doubles
    caption = (batch.text, batch.text_segment_ids, *layout)
    if guidance == 1.0:
        velocity = lambda x_t, t_tokens: denoise(x_t, t_tokens, caption)  # noqa: E731
    else:
        null = (*null_caption_like(batch.text, batch.text_segment_ids), *layout)
        velocity = guided_velocity_fn(denoise, caption, null, guidance)
    tokens = batch.tokens.astype(jnp.float32)
    return sample(velocity, noise.astype(jnp.float32), timesteps, method=method,
                  cond_mask=~batch.loss_mask, x_cond=tokens)


def sharded_sampler(
    dit: Any, mesh: Mesh, rules: Rules, param_shardings: Any, batch_shardings: PackedBatch,
    guidance: float = 1.0, method: str = "euler",
) -> MeshStep:
    """``sampler(params, batch, noise, timesteps) -> tokens`` over the mesh; tokens laid out like ``batch.tokens``."""

    def run(params: Any, batch: PackedBatch, noise: jax.Array, timesteps: jax.Array) -> jax.Array:
        return sample_packed(dit, params, batch, noise, timesteps, guidance, method)

    return MeshStep(
        run, mesh, rules,
        in_shardings=(param_shardings, batch_shardings, batch_shardings.tokens, replicated(mesh)),
        out_shardings=batch_shardings.tokens,
    )
