"""The autoencoder training loop, readable top to bottom.

    data (world batches, grain) -> jitted train_step -> metrics (TensorBoard + JSONL)
    every eval_every: held-out PSNR/SSIM; every save_every: Orbax checkpoint with the
    data iterator's position. A restarted run resumes from the newest checkpoint.

SIGTERM/SIGINT (preemption, Ctrl-C) stop the loop after the current step and save
a checkpoint first, so no finished step is lost.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from sorajax.data.world import WorldOptions
from sorajax.data.world_batches import world_batch_dataset, world_batch_iterator
from sorajax.eval.vae_eval import collect_latents, evaluate_reconstruction
from sorajax.models.vae import CausalVAE, VAEConfig, compute_latent_stats
from sorajax.train.checkpoint import Checkpointer
from sorajax.train.metrics import MetricsWriter
from sorajax.train.optim import make_optimizer
from sorajax.train.vae_step import VAETrainState, make_reconstruct_step, make_train_step


class StopRequest:
    """Turns SIGTERM/SIGINT into a flag the loop checks between steps."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a notebook worker): no handler.
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        del frame
        if self.requested:  # a second signal means "now".
            raise KeyboardInterrupt
        self.requested = True
        print(f"\nsignal {signum}: finishing this step, saving a checkpoint, then stopping")

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def build_vae(config: ml_collections.ConfigDict) -> CausalVAE:
    return CausalVAE(VAEConfig.from_dict(config.vae.to_dict()))


def init_state(vae: CausalVAE, optimizer: Any, config: ml_collections.ConfigDict) -> VAETrainState:
    frames, height, width = config.data.sizes[0]
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


def _model_fingerprint(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.vae.to_dict(), sort_keys=True, default=str)


def _check_resume_compatible(meta: dict, config: ml_collections.ConfigDict, workdir: str) -> None:
    saved = meta.get("model_fingerprint")
    if saved is not None and saved != _model_fingerprint(config):
        raise ValueError(
            f"the checkpoint in {workdir} was trained with a different autoencoder config "
            f"({saved}); resume with the same config.vae, or pass a new --workdir to start a fresh run"
        )


def heldout_batches(config: ml_collections.ConfigDict, split: str = "eval") -> list[dict[str, np.ndarray]]:
    dataset = world_batch_dataset(
        config.eval.sizes, config.eval.batch_size, config.seed, WorldOptions(**config.world), split=split,
        num_batches=config.eval.num_batches,
    )
    return [dataset[i] for i in range(len(dataset))]


def train_vae(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains (or resumes) the autoencoder in `workdir`; returns the final eval metrics."""
    os.makedirs(workdir, exist_ok=True)
    vae = build_vae(config)
    optimizer = make_optimizer(config.train)
    train_step = jax.jit(make_train_step(vae, optimizer, config.train.kl_weight, config.train.l2_weight), donate_argnums=0)
    reconstruct = jax.jit(make_reconstruct_step(vae))

    dataset = world_batch_dataset(config.data.sizes, config.data.batch_size, config.seed, WorldOptions(**config.world))
    data_iter = world_batch_iterator(dataset, config.data.worker_count)
    state = init_state(vae, optimizer, config)

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.train.keep_checkpoints,
                        save_every=config.train.save_every, async_save=config.train.async_checkpoints)
    if ckpt.latest_step() is not None:
        _check_resume_compatible(ckpt.read_meta(), config, workdir)
        state, meta = ckpt.restore(state, data_iterator=data_iter)
        print(f"resumed from step {int(state.step)} in {workdir}")

    with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
        f.write(config.to_json_best_effort(indent=2))
    writer = MetricsWriter(workdir)
    eval_batches = heldout_batches(config)
    start, last = int(state.step), int(config.train.steps)
    meta = {"model_fingerprint": _model_fingerprint(config), "config": json.loads(config.to_json_best_effort())}
    eval_metrics: dict[str, float] = {}
    t0, seen = time.perf_counter(), 0
    with StopRequest() as stop, tqdm(total=last, initial=start, desc="vae", dynamic_ncols=True) as bar:
        for step in range(start + 1, last + 1):
            batch = next(data_iter)
            state, metrics = train_step(state, {"video": batch["video"]})
            seen += batch["video"].shape[0] * batch["video"].shape[1]
            bar.update(1)
            if step % config.train.log_every == 0 or step == last:
                elapsed = time.perf_counter() - t0
                logged = writer.write_scalars(step, {**metrics, "frames_per_s": seen / max(elapsed, 1e-9)})
                bar.set_postfix(loss=f"{logged['loss']:.4f}", psnr=f"{logged['psnr']:.1f}")
            if step % config.eval.every == 0 or step == last or stop.requested:
                eval_metrics = _evaluate(reconstruct, state, eval_batches, config)
                state = state.replace(latent_stats=eval_metrics.pop("_latent_stats"))
                writer.write_scalars(step, {f"eval/{k}": v for k, v in eval_metrics.items()})
            if ckpt.should_save(step, last) or stop.requested:
                ckpt.save(step, state, data_iterator=data_iter, meta={**meta, "step": step, "eval": eval_metrics})
            if stop.requested:
                break
    ckpt.close()
    writer.close()
    if eval_metrics:
        print("held-out: " + ", ".join(f"{k}={v:.4f}" for k, v in eval_metrics.items() if "/" not in k))
    return eval_metrics


def _evaluate(reconstruct: Any, state: VAETrainState, eval_batches: list, config: ml_collections.ConfigDict) -> dict:
    """Held-out PSNR/SSIM and fresh latent statistics (returned under `_latent_stats`)."""
    variables = state.variables()
    metrics = evaluate_reconstruction(reconstruct, variables, eval_batches)
    stats = compute_latent_stats(collect_latents(reconstruct, variables, heldout_batches(config, split="stats")))
    metrics["_latent_stats"] = stats
    metrics["latent_std_mean"] = float(np.mean(stats["std"]))
    return metrics
