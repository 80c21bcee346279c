"""Loading a trained autoencoder from a run directory, for inference and later trainers.

A run directory (`--workdir` of `sorajax.train_vae`) holds Orbax checkpoints whose
metadata carries the config they were trained with, so the model is rebuilt from
the checkpoint alone: no need to remember which config file made it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from sorajax.models.vae import CausalVAE, VAEConfig
from sorajax.train.checkpoint import restore_run


class TrainedVAE(NamedTuple):
    vae: CausalVAE
    variables: dict[str, Any]  # {'params': ..., 'latent_stats': ...}
    config: ml_collections.ConfigDict
    step: int


def load_trained_vae(workdir: str, step: int | None = None) -> TrainedVAE:
    """Rebuilds the autoencoder saved in `workdir` (newest checkpoint unless `step`)."""
    state, meta = restore_run(workdir, step, "python -m sorajax.train_vae --config=configs/vae_tiny.py")
    config = ml_collections.ConfigDict(meta["config"])
    vae = CausalVAE(VAEConfig.from_dict(config.vae.to_dict()))
    variables = {
        "params": jax.tree.map(jnp.asarray, state["params"]),
        "latent_stats": jax.tree.map(jnp.asarray, state["latent_stats"]),
    }
    return TrainedVAE(vae=vae, variables=variables, config=config, step=int(meta["step"]))
