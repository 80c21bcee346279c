"""The autoencoder trainer: its parts for the one runner.

World clips (this host's share of each batch) -> pure train step. Evaluation (held-out PSNR/SSIM)
also re-measures the per-channel latent statistics stored with the weights, so every checkpoint's
`latent_stats` match its encoder.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np

from sorajax.config_dataclasses import check_sections
from sorajax.data.config import VideoDataConfig
from sorajax.data.iterators import batch_dataset, batch_iterator
from sorajax.data.video_batches import VideoBatchMaker
from sorajax.data.world import WorldOptions, WorldSource
from sorajax.eval.vae_eval import collect_latents, evaluate_reconstruction, make_encode, make_scores
from sorajax.memory_estimate import check_fits, check_host_fits, estimate_vae_training
from sorajax.models.vae import CausalVAE, abstract_variables, compute_latent_stats
from sorajax.models.vae_config import PARAM_AXES_BY_RANK, VIDEO_AXES, VAEConfig
from sorajax.parallel.context import MeshContext
from sorajax.parallel.mesh import MeshConfig
from sorajax.parallel.rules import VAE_RULES, Rules, rules_from_config
from sorajax.runs.paths import PathLike, run_path
from sorajax.runs.records import fingerprint
from sorajax.train.config import VAEEvalConfig, VAETrainConfig
from sorajax.train.optim import make_optimizer
from sorajax.train.runner import Trainer, run_training
from sorajax.train.vae_step import init_state, make_train_step

TRAIN_COMMAND = "python -m sorajax.train_vae --config=configs/vae_tiny.py"
_EVAL_SEED_STRIDE = 7919  # each eval size draws its clips from its own seed


@dataclasses.dataclass(frozen=True)
class VAERunConfig:
    """Every section an autoencoder run reads, validated once (see `from_config`)."""

    seed: int
    vae: VAEConfig
    world: WorldOptions
    data: VideoDataConfig
    train: VAETrainConfig
    eval: VAEEvalConfig
    mesh: MeshConfig
    rules: Rules

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "VAERunConfig":
        check_sections(config, {"seed", "vae", "world", "data", "train", "eval", "mesh", "parallel"}, "autoencoder")
        return cls(seed=int(config.seed), vae=VAEConfig.from_dict(config.vae),
                   world=WorldOptions(**config.get("world", {})), data=VideoDataConfig.from_mapping(config.data),
                   train=VAETrainConfig.from_mapping(config.train), eval=VAEEvalConfig.from_mapping(config.eval),
                   mesh=MeshConfig.from_mapping(config.get("mesh")),
                   rules=rules_from_config(config, VAE_RULES))


def video_axes(path: tuple, leaf: Any) -> tuple:
    """A clip batch's logical names (clips over data/fsdp, rows over sequence where the rules say so)."""
    if len(leaf.shape) != 5:
        raise ValueError(f"a video batch is [B, T, H, W, C], got shape {tuple(leaf.shape)}: batch clips of one size")
    return VIDEO_AXES


def state_axes(path: tuple, leaf: Any) -> tuple | None:
    """Weights and their Adam moments by rank (conv kernels split on output channels); the rest replicated."""
    if path[0].name in ("params", "opt_state"):
        return PARAM_AXES_BY_RANK.get(len(leaf.shape))
    return None


def held_out_batches(cfg: VAERunConfig, count: int, split: str = "eval") -> list[dict[str, np.ndarray]]:
    """`count` batches of this host's clips of every eval size, from a seed per size (held-out or statistics)."""
    batches = []
    for k, size in enumerate(cfg.eval.sizes):
        source = WorldSource([size], cfg.seed + _EVAL_SEED_STRIDE * k, cfg.world, split=split)
        maker = VideoBatchMaker(source, cfg.eval.batch_size, host=jax.process_index(), num_hosts=jax.process_count())
        batches += [maker(i) for i in range(count)]
    return batches


def _check_batch_fits(cfg: VAERunConfig, ctx: MeshContext) -> None:
    """Refuse a batch that cannot fit, before any clip is rendered: its clips on the host (rendered at their size,
    then cropped), and one training step on the device."""
    largest = max(cfg.data.sizes, key=lambda size: size[0] * size[1] * size[2])
    check_host_fits(cfg.data.batch_size * int(np.prod(largest)) * 3 * 4,
                    f"rendering data.batch_size={cfg.data.batch_size} clips of {'x'.join(map(str, largest))}",
                    "use a smaller data.batch_size or smaller data.sizes")
    frames, height, width = largest if cfg.data.crop is None else (min(largest[0], cfg.data.crop[0]), *cfg.data.crop[1:])
    check_fits(estimate_vae_training(cfg.vae, abstract_variables(cfg.vae)["params"], cfg.data.batch_size, frames,
                                     height, width, ctx.mesh))


def train_vae(config: ml_collections.ConfigDict, workdir: PathLike) -> dict[str, float]:
    """Trains (or resumes) the autoencoder in `workdir`; returns the final eval metrics."""
    cfg = VAERunConfig.from_config(config)  # every section checked before any work
    ctx = MeshContext.create(cfg.mesh, cfg.rules)
    vae = CausalVAE(cfg.vae)
    optimizer = make_optimizer(cfg.train)
    _check_batch_fits(cfg, ctx)
    source = WorldSource(cfg.data.sizes, cfg.seed, cfg.world)
    maker = VideoBatchMaker(source, cfg.data.batch_size, cfg.data.crop, jax.process_index(), jax.process_count())
    batches = batch_iterator(batch_dataset(maker), cfg.data.worker_count, prefetch_threads=0)
    scores, encode = ctx.jit_replicated(make_scores(vae)), ctx.jit_replicated(make_encode(vae))
    held_out = [ctx.put(b, video_axes) for b in held_out_batches(cfg, cfg.eval.num_batches)]
    stats_clips = [ctx.put(b, video_axes) for b in held_out_batches(cfg, cfg.eval.num_batches, "stats")]

    def evaluate(state: Any) -> tuple[Any, dict[str, float]]:
        """Held-out PSNR/SSIM; also refreshes the latent statistics stored with the weights."""
        variables = state.variables()
        metrics = evaluate_reconstruction(scores, variables, held_out)
        stats = compute_latent_stats(collect_latents(encode, variables, stats_clips))
        metrics["latent_std_mean"] = float(np.mean(stats["std"]))
        return state.replace(latent_stats=stats), metrics

    trainer = Trainer(
        name="autoencoder", train_command=TRAIN_COMMAND, init_state=lambda: init_state(vae, optimizer, cfg.seed),
        train_step=make_train_step(vae, optimizer, cfg.train.kl_weight, cfg.train.l2_weight,
                                   cfg.train.noise_ramp_steps),
        batches=batches, batch_axes=video_axes, fingerprint=fingerprint(config.vae), meta={},
        evaluate=evaluate, eval_every=cfg.eval.every, state_axes=state_axes,
        count_items=lambda batch: batch["video"].shape[0] * batch["video"].shape[1],
    )
    metrics = run_training(ctx, trainer, cfg.train, run_path(workdir), config)
    if metrics:
        print("held-out: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if "/" not in k))
    return metrics
