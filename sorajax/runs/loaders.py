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

import jax
import ml_collections
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec

from sorajax.models.lora import LoraConfig, merge
from sorajax.models.vae import CausalVAE, VAEConfig, abstract_variables
from sorajax.runs.checkpoints import CheckpointNotFoundError, checkpoints_dir, open_run, read_run_meta, restore_run_part
from sorajax.runs.paths import PathLike, RunLink, run_path

TRAIN_VAE = "python -m sorajax.train_vae --config=configs/vae_tiny.py"
TRAIN_DIT = "python -m sorajax.train_dit (or python -m sorajax.main)"
WEIGHTS = ("ema_params", "params")
LORA_KEY, LORA_BASE_KEY = "lora", "lora_base"  # a LoRA run's checkpoint meta: its LoraConfig and its base


@dataclasses.dataclass(frozen=True)
class TrainedAutoencoder:
    """An autoencoder ready to encode and decode: model, {params, latent_stats}, and where it came from."""

    vae: CausalVAE
    variables: dict[str, Any]
    config: ml_collections.ConfigDict  # the run's whole config (its world, eval sizes, ...)
    step: int
    run: epath.Path


RUN_KINDS = {"autoencoder": ("vae", TRAIN_VAE), "DiT": ("model", TRAIN_DIT)}  # the config section each kind has


def check_run_kind(meta: dict, kind: str, run: PathLike) -> None:
    """Refuse a run of the other kind (a DiT run where an autoencoder is expected, or back) in one line."""
    section, command = RUN_KINDS[kind]
    config = meta.get("config", {})
    if section not in config:
        other = next((name for name, (key, _) in RUN_KINDS.items() if key in config), None)
        found = f"{_a(other)} run" if other else "not a run made by sorajax's trainers"
        raise ValueError(f"{run} is {found}, but {_a(kind)} run is needed here (its config has no '{section}' "
                         f"section): pass a run made by `{command}`")


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def load_autoencoder(run: PathLike, step: int | None = None) -> TrainedAutoencoder:
    """The autoencoder of `run` (newest checkpoint unless `step`): weights and latent statistics only."""
    run = run_path(run)
    meta = read_run_meta(run, step, TRAIN_VAE)
    check_run_kind(meta, "autoencoder", run)
    config = ml_collections.ConfigDict(meta["config"])
    vae, shapes = _autoencoder_model(config.vae.to_dict())
    target = {"params": shapes["params"], "latent_stats": shapes["latent_stats"]}
    variables, restored_meta = restore_run_part(run, step, TRAIN_VAE, target)  # an older step if this one is damaged
    return TrainedAutoencoder(vae, variables, config, int(restored_meta["step"]), run)


def _autoencoder_model(fields: dict[str, Any]) -> tuple[Any, Any]:
    """(model, abstract variables) of a run's `vae` section: sorajax's CausalVAE, or Wan's (kind 'wan',
    written by `sorajax.convert`)."""
    if fields.get("kind") == "wan":
        from sorajax.models.wan_vae import WanVAE, abstract_wan_variables
        from sorajax.models.wan_vae_config import WanVAEConfig

        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items() if k != "kind"}
        config = WanVAEConfig(**fields)
        return WanVAE(config), abstract_wan_variables(config)
    config = VAEConfig.from_dict(fields)
    return CausalVAE(config), abstract_variables(config)


def saved_weights(meta: dict, weights: str) -> str:
    """The weight tree to read for `weights`: a converted run saves only `params` (no EMA exists)."""
    return weights if weights in meta.get("weight_trees", WEIGHTS) else "params"


def load_weights(run: PathLike, step: int | None, abstract_params: Any, weights: str = "ema_params") -> Any:
    """One weight tree of a DiT run (`ema_params` or `params`), restored into `abstract_params`' structure.

    A LoRA run's tree is its base's weights with the run's adapters (raw or EMA) merged in.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights {weights!r} are not saved by the trainer: use one of {WEIGHTS}")
    meta = read_run_meta(run, step, TRAIN_DIT)
    check_run_kind(meta, "DiT", run)
    if LORA_KEY in meta:
        return _merged_lora_weights(run, int(meta["step"]), meta, abstract_params, weights)
    stored = saved_weights(meta, weights)
    restored, _ = restore_run_part(run, step, TRAIN_DIT, {stored: abstract_params})
    return restored[stored]


def load_lora_base(base: dict, run: PathLike, weights: str, target: Any, train_command: str = TRAIN_DIT) -> Any:
    """The frozen base of LoRA run `run` (its meta entry `base`: link, step): weight tree `weights`, restored
    into `target` (ShapeDtypeStructs; with shardings to come back sharded)."""
    source = find_linked_run(RunLink.from_json(base["run"]), run, "LoRA base")
    weights = saved_weights(read_run_meta(source, int(base["step"]), train_command), weights)
    restored, _ = restore_run_part(source, int(base["step"]), train_command, {weights: target})
    return restored[weights]


def _merged_lora_weights(run: PathLike, step: int, meta: dict, abstract_params: Any, weights: str) -> Any:
    lora = LoraConfig.from_mapping(meta[LORA_KEY])
    base = load_lora_base(meta[LORA_BASE_KEY], run, lora.base_weights, abstract_params)
    ckpt = open_run(run, step, TRAIN_DIT)
    try:  # the adapters' shapes as saved: the params tree alone does not say which kernel axes are inputs
        adapters = ckpt.restore_part({weights: ckpt.saved_shapes(weights, step)}, step=step)[weights]
    finally:
        ckpt.close()
    sharding = jax.tree.leaves(base)[0].sharding
    if isinstance(sharding, NamedSharding):  # a base laid out over a mesh: the (small) adapters replicated on it
        adapters = jax.device_put(adapters, NamedSharding(sharding.mesh, PartitionSpec()))
    return merge(base, adapters, lora.scale)


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
