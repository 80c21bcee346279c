"""The autoencoder's train state and clip batches laid out over a device mesh.

The autoencoder's layers carry no logical names (rules.py explains why), so each
parameter's layout comes from its rank (:func:`sorajax.parallel.rules.vae_param_shardings`):
conv kernels split their output channels over ``fsdp``. Adam's moments have their
parameter's shape and so get the same layout; counters, the RNG key and the latent
statistics are tiny and stay replicated. The state is born sharded (a jitted init
with ``out_shardings``), so no device ever holds the whole of it.

Training batches mix clip sizes (images, videos, several aspect ratios), and how a
batch can be split depends on its shape (``fit_spec`` keeps only dividing axes), so
the step keeps one jitted program per batch shape, each with explicit in/out shardings.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding

from sorajax.parallel.rules import Rules, vae_activation_sharding, vae_param_shardings
from sorajax.parallel.sharded_state import replicated
from sorajax.parallel.steps import MeshStep, sharded_train_step
from sorajax.train.vae_step import VAETrainState

Batch = dict[str, Any]


def vae_state_shardings(abstract_state: VAETrainState, mesh: Mesh, rules: Rules) -> VAETrainState:
    """NamedShardings of a VAETrainState (arrays or ShapeDtypeStructs): params and moments by rank, rest replicated."""
    whole = replicated(mesh)
    return VAETrainState(
        step=whole,
        params=vae_param_shardings(abstract_state.params, mesh, rules),
        opt_state=vae_param_shardings(abstract_state.opt_state, mesh, rules),
        latent_stats=jax.tree.map(lambda _: whole, abstract_state.latent_stats),
        rng=whole,
    )


def init_sharded_vae_state(
    make_state: Callable[[], VAETrainState], mesh: Mesh, rules: Rules
) -> tuple[VAETrainState, VAETrainState]:
    """(state, its shardings): ``make_state()``'s values, computed directly in the sharded layout.

    ``make_state`` is the single-device init (e.g. ``sorajax.train.vae_loop.init_state``
    bound to its model, optimizer and config); it is traced once for shapes, then jitted.
    """
    shardings = vae_state_shardings(jax.eval_shape(make_state), mesh, rules)
    with jax.set_mesh(mesh):
        state = jax.jit(make_state, out_shardings=shardings)()
    return state, shardings


def video_sharding(video_shape: tuple[int, ...], mesh: Mesh, rules: Rules) -> NamedSharding:
    """A clip batch ``[B, T, H, W, C]``: clips over data/fsdp (and rows over ``sequence`` where the rules say so)."""
    if len(video_shape) != 5:
        raise ValueError(f"a video batch is [B, T, H, W, C], got shape {tuple(video_shape)}: batch clips of one size")
    return vae_activation_sharding(video_shape, mesh, rules)


def global_video_batch(batch: Batch, mesh: Mesh, rules: Rules) -> Batch:
    """``{'video': sharded array}`` from a host's copy of the whole batch.

    Every host renders the same global batch (the world generator is seeded per
    batch index) and hands JAX only the slices its own devices hold, so this is
    right for any layout, including rows split over ``sequence``.
    """
    video = np.asarray(batch["video"])
    sharding = video_sharding(video.shape, mesh, rules)
    return {"video": jax.make_array_from_callback(video.shape, sharding, lambda index: video[index])}


class ShardedVAEStep:
    """``train_step(state, batch)`` over the mesh: one program per batch shape, the state kept in its layout."""

    def __init__(self, train_step: Callable, mesh: Mesh, rules: Rules, state_shardings: VAETrainState):
        self.mesh, self.rules, self.state_shardings = mesh, rules, state_shardings
        self._train_step = train_step
        self._by_shape: dict[tuple[int, ...], MeshStep] = {}

    def __call__(self, state: VAETrainState, batch: Batch) -> tuple[VAETrainState, dict[str, jax.Array]]:
        shape = tuple(batch["video"].shape)
        if shape not in self._by_shape:
            batch_sharding = {"video": video_sharding(shape, self.mesh, self.rules)}
            self._by_shape[shape] = sharded_train_step(
                self._train_step, self.mesh, self.rules, self.state_shardings, batch_sharding)
        return self._by_shape[shape](state, batch)


def sharded_eval_step(fn: Callable, mesh: Mesh, rules: Rules) -> Callable:
    """``fn(variables, uint8 video) -> arrays`` over the mesh, returning numpy on every host.

    Clips are split like training batches; results are gathered (replicated), so
    metrics afterwards run on host arrays exactly as in the single-device trainer,
    and on a multi-host job every host gets them.
    """
    step = MeshStep(fn, mesh, rules, out_shardings=replicated(mesh))

    def run(variables: Any, video: Any) -> Any:
        return jax.device_get(step(variables, global_video_batch({"video": video}, mesh, rules)["video"]))

    return run


class ShardedVAETraining(NamedTuple):
    """What the autoencoder trainer needs to run over a mesh."""

    state: VAETrainState  # initial state, born sharded
    shardings: VAETrainState  # its NamedShardings (also the layout evaluation results are put back into)
    train_step: ShardedVAEStep
    to_step_input: Callable[[Batch], Batch]
    mesh: Mesh
    rules: Rules

    def eval_step(self, fn: Callable) -> Callable:
        """``fn(variables, uint8 video)`` run over this mesh (see :func:`sharded_eval_step`)."""
        return sharded_eval_step(fn, self.mesh, self.rules)


def sharded_vae_training(
    make_state: Callable[[], VAETrainState], train_step: Callable, mesh: Mesh, rules: Rules
) -> ShardedVAETraining:
    """The sharded initial state, step and batch placement for ``train_step`` on ``mesh`` under ``rules``."""
    state, shardings = init_sharded_vae_state(make_state, mesh, rules)
    return ShardedVAETraining(
        state=state,
        shardings=shardings,
        train_step=ShardedVAEStep(train_step, mesh, rules, shardings),
        to_step_input=lambda batch: global_video_batch(batch, mesh, rules),
        mesh=mesh,
        rules=rules,
    )
