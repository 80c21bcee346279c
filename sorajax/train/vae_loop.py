"""The autoencoder trainer: world batches -> pure train step, in the shared loop.

Evaluation (held-out PSNR/SSIM) also refreshes the per-channel latent statistics
stored with the weights, so every checkpoint's `latent_stats` match its encoder.

With ``config.mesh`` (sorajax.parallel.mesh.MeshConfig fields) the train state is
created sharded by the autoencoder's rules (``config.parallel.rules`` or VAE_RULES),
clips are split over data/fsdp and the step is jitted with in/out shardings;
without it, everything runs on one device exactly as before.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sorajax.data.world import WorldOptions
from sorajax.data.world_batches import world_batch_dataset, world_batch_iterator
from sorajax.eval.vae_eval import collect_latents, evaluate_reconstruction
from sorajax.models.vae import CausalVAE, VAEConfig, compute_latent_stats
from sorajax.parallel.distributed import initialize_multihost
from sorajax.parallel.mesh import describe, make_mesh
from sorajax.parallel.rules import VAE_RULES, rules_from_config
from sorajax.parallel.vae_sharding import ShardedVAETraining, sharded_vae_training
from sorajax.train.checkpoint import Checkpointer
from sorajax.train.loop import LoopSettings, fingerprint, resume, run_loop
from sorajax.train.metrics import MetricsWriter
from sorajax.train.optim import make_optimizer
from sorajax.train.run_config import record_run_config
from sorajax.train.vae_step import VAETrainState, make_encode_step, make_reconstruct_step, make_train_step


def build_vae(config: ml_collections.ConfigDict) -> CausalVAE:
    return CausalVAE(VAEConfig.from_dict(config.vae.to_dict()))


def init_state(vae: CausalVAE, optimizer: Any, config: ml_collections.ConfigDict) -> VAETrainState:
    frames, height, width = config.data.crop or config.data.sizes[0]
    rng = jax.random.PRNGKey(config.seed)
    init_rng, sample_rng, state_rng = jax.random.split(rng, 3)
    dummy = jnp.zeros((1, frames, height, width, 3), jnp.float32)
    variables = vae.init({"params": init_rng, "sample": sample_rng}, dummy)
    params = variables["params"]
    return VAETrainState(
        step=jnp.asarray(0, jnp.int32),
        params=params,
        opt_state=optimizer.init(params),
        latent_stats=variables["latent_stats"],
        rng=state_rng,
    )


def heldout_batches(config: ml_collections.ConfigDict, split: str = "eval") -> list[dict[str, np.ndarray]]:
    """`eval.num_batches` batches of EVERY eval size, from a seed range disjoint from training."""
    batches = []
    for k, size in enumerate(config.eval.sizes):
        dataset = world_batch_dataset(
            [size], config.eval.batch_size, config.seed + 7919 * k, WorldOptions(**config.world), split=split,
            num_batches=config.eval.num_batches,
        )
        batches += [dataset[i] for i in range(len(dataset))]
    return batches


def _sharded_setup(config: ml_collections.ConfigDict, vae: CausalVAE, optimizer: Any,
                   step_fn: Any) -> ShardedVAETraining:
    """Initial state, train step and batch placement over ``config.mesh``."""
    mesh = make_mesh(config.mesh)
    rules = rules_from_config(config.get("parallel", {}).get("rules"), VAE_RULES)
    print(f"mesh: {describe(mesh)}")
    return sharded_vae_training(lambda: init_state(vae, optimizer, config), step_fn, mesh, rules)


def train_vae(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains (or resumes) the autoencoder in `workdir`; returns the final eval metrics."""
    if config.get("mesh") is not None:
        initialize_multihost()  # before any device is touched; a no-op for a single process
    os.makedirs(workdir, exist_ok=True)
    vae = build_vae(config)
    optimizer = make_optimizer(config.train)
    step_fn = make_train_step(vae, optimizer, config.train.kl_weight, config.train.l2_weight,
                              config.train.noise_ramp_steps)
    if config.get("mesh") is None:
        initial, train_step = init_state(vae, optimizer, config), jax.jit(step_fn, donate_argnums=0)
        to_step_input = lambda batch: {"video": batch["video"]}  # noqa: E731
        place_stats = lambda stats: stats  # noqa: E731
        reconstruct = jax.jit(make_reconstruct_step(vae))
        encode = jax.jit(make_encode_step(vae))
    else:
        sharded = _sharded_setup(config, vae, optimizer, step_fn)
        initial, train_step, to_step_input = sharded.state, sharded.train_step, sharded.to_step_input
        place_stats = lambda stats: jax.device_put(stats, sharded.shardings.latent_stats)  # noqa: E731
        reconstruct = sharded.eval_step(make_reconstruct_step(vae))
        encode = sharded.eval_step(make_encode_step(vae))

    dataset = world_batch_dataset(
        config.data.sizes, config.data.batch_size, config.seed, WorldOptions(**config.world), crop=config.data.crop
    )
    data_iter = world_batch_iterator(dataset, config.data.worker_count)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.train.keep_checkpoints,
                        save_every=config.train.save_every, async_save=config.train.async_checkpoints)
    model_fingerprint = fingerprint(config.vae)
    state = resume(ckpt, initial, data_iter, model_fingerprint, workdir, "autoencoder")
    record_run_config(workdir, config, int(state.step) if ckpt.latest_step() is not None else None)

    eval_batches = heldout_batches(config)
    stats_batches = heldout_batches(config, split="stats")

    def evaluate(state: VAETrainState) -> tuple[VAETrainState, dict]:
        """Held-out PSNR/SSIM; also refreshes the latent statistics stored with the weights."""
        variables = state.variables()
        metrics = evaluate_reconstruction(reconstruct, variables, eval_batches)
        stats = compute_latent_stats(collect_latents(encode, variables, stats_batches))
        metrics["latent_std_mean"] = float(np.mean(stats["std"]))
        return state.replace(latent_stats=place_stats(stats)), metrics

    settings = LoopSettings(
        name="vae", total_steps=config.train.steps, log_every=config.train.log_every, eval_every=config.eval.every,
        meta={"model_fingerprint": model_fingerprint, "config": json.loads(config.to_json_best_effort())},
    )
    writer = MetricsWriter(workdir)
    try:
        _, eval_metrics = run_loop(
            settings, state, train_step, data_iter, to_step_input, ckpt, writer,
            evaluate=evaluate, count_items=lambda batch: batch["video"].shape[0] * batch["video"].shape[1],
        )
    finally:  # close files and finish pending async saves even when a step fails.
        ckpt.close()
        writer.close()
    if eval_metrics:
        print("held-out: " + ", ".join(f"{k}={v:.4f}" for k, v in eval_metrics.items() if "/" not in k))
    return eval_metrics
