"""The fixed-noise validation loss: comparable across steps and runs, used by trainers and evaluations.

Training's loss draws t and noise at random; a held-out curve needs the same batches, the same
noise and the same levels every time. Each level puts every generated token at that t (the rest
clean), and the prediction is scored against the target of the run's own prediction kind.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp

from sorajax.diffusion.flow import add_noise, flow_matching_loss, prediction_target
from sorajax.diffusion.sampling import Denoiser
from sorajax.patches import PackedBatch

DEFAULT_LEVELS = (0.2, 0.5, 0.8)


def fixed_level_loss(denoise: Denoiser, params: Any, batch: PackedBatch, noise: jax.Array, level: float | jax.Array,
                     prediction: str = "velocity") -> jax.Array:
    """Flow-matching loss of `batch`'s generated tokens noised with `noise` to t = `level`."""
    tokens = jnp.asarray(batch.tokens, jnp.float32)
    t = jnp.where(batch.loss_mask, level, 0.0).astype(jnp.float32)
    pred = denoise(params, add_noise(tokens, noise, t), t, batch)
    return flow_matching_loss(pred, prediction_target(tokens, noise, prediction), batch.loss_mask)[0]


def validation_loss(denoise: Denoiser, params: Any, batch: PackedBatch, noise_seed: jax.Array,
                    levels: Sequence[float] = DEFAULT_LEVELS, prediction: str = "velocity") -> jax.Array:
    """Mean of :func:`fixed_level_loss` over `levels`, with noise drawn from `noise_seed` (the batch's index)."""
    noise = jax.random.normal(jax.random.PRNGKey(noise_seed), jnp.shape(batch.tokens), jnp.float32)
    return jnp.mean(jnp.stack([fixed_level_loss(denoise, params, batch, noise, level, prediction)
                               for level in levels]))
