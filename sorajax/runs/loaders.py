"""Inference loaders: a run's weights for sampling, restored alone.

`python -m sorajax.generate` needs a DiT's EMA weights and an autoencoder's weights and latent
statistics. A training checkpoint also holds the raw weights and the optimizer's moments (for
Adam, two more copies), so restoring the whole state would cost three to four times the memory
the sampler needs. These loaders build the restore target from the model (shapes only, via
``jax.eval_shape``) and ask Orbax for just those entries (a partial restore), optionally laid
out over a device mesh. A run whose optimizer state was stripped loads the same way.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections
from etils import epath

from sorajax.models.vae import CausalVAE, VAEConfig, abstract_variables
from sorajax.runs.checkpoints import CheckpointNotFoundError, checkpoints_dir, read_run_meta, restore_run_part
from sorajax.runs.paths import PathLike, RunLink, run_path

TRAIN_VAE = "python -m sorajax.train_vae --config=configs/vae_tiny.py"
TRAIN_DIT = "python -m sorajax.train_dit (or python -m sorajax.main)"
WEIGHTS = ("ema_params", "params")


@dataclasses.dataclass(frozen=True)
class TrainedAutoencoder:
    """An autoencoder ready to encode and decode: model, {params, latent_stats}, and where it came from."""

    vae: CausalVAE
    variables: dict[str, Any]
    config: ml_collections.ConfigDict  # the run's whole config (its world, eval sizes, ...)
    step: int
    run: epath.Path


def load_autoencoder(run: PathLike, step: int | None = None) -> TrainedAutoencoder:
    """The autoencoder of `run` (newest checkpoint unless `step`): weights and latent statistics only."""
    run = run_path(run)
    meta = read_run_meta(run, step, TRAIN_VAE)
    config = ml_collections.ConfigDict(meta["config"])
    vae_config = VAEConfig.from_dict(config.vae)
    shapes = abstract_variables(vae_config)
    target = {"params": shapes["params"], "latent_stats": shapes["latent_stats"]}
    variables, _ = restore_run_part(run, int(meta["step"]), TRAIN_VAE, target)
    return TrainedAutoencoder(CausalVAE(vae_config), variables, config, int(meta["step"]), run)


def load_weights(run: PathLike, step: int | None, abstract_params: Any, weights: str = "ema_params") -> Any:
    """One weight tree of a DiT run (`ema_params` or `params`), restored into `abstract_params`' structure."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights {weights!r} are not saved by the trainer: use one of {WEIGHTS}")
    restored, _ = restore_run_part(run, step, TRAIN_DIT, {weights: abstract_params})
    return restored[weights]


def find_linked_run(link: RunLink, base: PathLike, what: str) -> epath.Path:
    """The first of `link`'s candidate paths (relative to `base` first) that holds checkpoints."""
    candidates = link.candidates(base)
    for path in candidates:
        if checkpoints_dir(path).is_dir():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise CheckpointNotFoundError(
        f"the {what} run that {base} was trained with is not at {tried}: move it back beside the run "
        f"(or to that path), or pass its directory explicitly"
    )
