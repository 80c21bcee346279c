"""The DiT trainer: the denoiser's parts for the one runner.

    autoencoder (frozen, its run's weights) + text encoder (frozen)
      -> this host's clips (world or TFDS) encoded once and cached in the run, or streamed
      -> packed batches (grain, NaViT rows of mixed sizes) -> pure train step
Evaluation is the fixed-noise validation loss of held-out packed batches, for the raw and the EMA
weights, and the layout-word gap: how much worse the EMA weights denoise those batches at high
noise when every caption's place and direction words are mirrored (`sorajax.eval.caption_layout`;
0 = not read).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from sorajax.conditioning import MaskRates
from sorajax.config_dataclasses import check_sections
from sorajax.data.clip_pipeline import (
    BatchEncoder,
    PackingConfig,
    PixelBatch,
    PixelBatchMaker,
    caption_token_counts,
)
from sorajax.data.config import DiTDataConfig
from sorajax.data.dit_clips import cached_clip_set, dit_clip_planner
from sorajax.data.iterators import batch_dataset, batch_iterator
from sorajax.data.latent_cache import LatentClipSet, make_latent_encoder
from sorajax.data.packed_batches import PackedBatchMaker
from sorajax.data.world import WorldOptions
from sorajax.diffusion.sampling import packed_denoiser
from sorajax.diffusion.validation import validation_loss
from sorajax.eval.caption_layout import LAYOUT_LEVELS, mirrored_clip_set
from sorajax.memory_estimate import check_fits, estimate_dit_training
from sorajax.models.build import build_text_encoder
from sorajax.models.dit import DiT, abstract_params
from sorajax.models.lora import init_adapters, parameter_count, target_kernels
from sorajax.parallel.context import MeshContext
from sorajax.parallel.distributed import host_rows
from sorajax.parallel.mesh import MeshConfig
from sorajax.parallel.rules import DIT_RULES, Rules, rules_from_config
from sorajax.parallel.sharding import with_shardings
from sorajax.patches import PackedBatch, packed_batch_axes
from sorajax.runs.dit_spec import SECTIONS, DiTSpec
from sorajax.runs.loaders import LORA_BASE_KEY, LORA_KEY, TrainedAutoencoder, load_autoencoder, load_lora_base
from sorajax.runs.paths import PathLike, RunLink, run_path
from sorajax.runs.writer_lock import hold_run
from sorajax.train.config import DiTEvalConfig, DiTTrainConfig
from sorajax.train.dit_step import init_state, make_train_step, own_weights
from sorajax.train.lora_run import lora_fingerprint, merged_weights, resolve_base
from sorajax.train.optim import make_optimizer
from sorajax.train.runner import Trainer, check_resumable, run_training

TRAIN_COMMAND = "python -m sorajax.train_dit"
EVAL_BATCHES = 2


@dataclasses.dataclass(frozen=True)
class DiTRunConfig:
    """Every section a DiT run reads, validated once (see `from_config`)."""

    spec: DiTSpec
    seed: int
    vae_workdir: str
    world: WorldOptions
    data: DiTDataConfig
    train: DiTTrainConfig
    eval: DiTEvalConfig
    conditioning: MaskRates
    mesh: MeshConfig
    rules: Rules

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "DiTRunConfig":
        check_sections(config, {*SECTIONS, "seed", "vae_workdir", "world", "data", "train", "eval", "conditioning",
                                "mesh", "parallel"}, "DiT")
        if not config.get("vae_workdir"):
            raise ValueError("vae_workdir is empty: pass the autoencoder's run, e.g. --config.vae_workdir=runs/main/vae")
        return cls(spec=DiTSpec.from_config(config), seed=int(config.seed), vae_workdir=str(config.vae_workdir),
                   world=WorldOptions(**config.get("world", {})), data=DiTDataConfig.from_mapping(config.data),
                   train=DiTTrainConfig.from_mapping(config.train), eval=DiTEvalConfig.from_mapping(config.eval),
                   conditioning=MaskRates.from_mapping(config.get("conditioning")),
                   mesh=MeshConfig.from_mapping(config.get("mesh")),
                   rules=rules_from_config(config, DIT_RULES))


def _count_items(batch: Any) -> int:
    """Throughput unit: tokens of a packed batch, clips of a streamed pixel batch."""
    return len(batch.videos) if isinstance(batch, PixelBatch) else int(np.count_nonzero(batch.segment_ids))


class _ClipData:
    """This host's training batches and held-out batches, from the run's clips."""

    def __init__(self, cfg: DiTRunConfig, autoencoder: TrainedAutoencoder, text_encoder: Any, run: Any):
        vae = autoencoder.vae.config
        rows = host_rows(cfg.data.rows)
        self.packing = PackingConfig(rows=rows.stop - rows.start, seq_len=cfg.data.seq_len, text_len=cfg.data.text_len,
                                     patch=cfg.spec.patch, spatial_factor=vae.spatial_factor,
                                     temporal_factor=vae.temporal_factor)
        self.encode = make_latent_encoder(autoencoder.vae, autoencoder.variables)
        identity = {"run_step": autoencoder.step, "vae": autoencoder.config.vae.to_dict()}
        stream = jax.process_index()

        def clips(split: str) -> LatentClipSet:
            planner = dit_clip_planner(cfg.data, cfg.world, self.packing, cfg.seed, split, cfg.eval.num_clips)
            name = f"latents_{split}" + (f"_host{stream}" if jax.process_count() > 1 else "") + ".npz"
            return cached_clip_set(planner, self.encode, text_encoder, identity, run / name)

        self.prepare = lambda batch: batch  # noqa: E731
        self.skipped: set[int] = set()  # training records that no longer decode: left out, counted in the metrics
        if cfg.data.cache_latents:
            train_clips = clips("train")
            self.skipped.update(train_clips.skipped)
            maker = PackedBatchMaker(train_clips, self.packing.rows, cfg.data.seq_len, cfg.data.text_len,
                                     cfg.spec.patch, cfg.seed, cfg.conditioning, stream=stream)
            self.batches = batch_iterator(batch_dataset(maker), cfg.data.worker_count)
        else:  # streaming: decode in workers, encode every step (conditioning masks come with the cached path)
            planner = dit_clip_planner(cfg.data, cfg.world, self.packing, cfg.seed, "train", cfg.eval.num_clips)
            counts = caption_token_counts(text_encoder, [planner.caption(i) for i in range(planner.records.size)])
            maker = PixelBatchMaker(planner, counts, cfg.seed, stream=stream)
            self.batches = batch_iterator(batch_dataset(maker), cfg.data.worker_count)
            encode_batch = BatchEncoder(self.encode, text_encoder, self.packing)

            def prepare(batch: PixelBatch) -> PackedBatch:  # runs in this process: the workers' skips counted here
                self.skipped.update(batch.skipped_records)
                return encode_batch(batch)

            self.prepare = prepare
        held_out = clips("eval")
        self.eval_batches = self._fixed_batches(held_out, cfg, stream)
        # The same batches with place/direction words mirrored: their loss gap says whether layout words are read.
        self.mirror_batches = self._fixed_batches(mirrored_clip_set(held_out, text_encoder), cfg, stream)
        if not all(np.array_equal(a.segment_ids, b.segment_ids) for a, b in zip(self.eval_batches, self.mirror_batches)):
            raise RuntimeError("mirrored-caption eval batches are packed differently from the true ones; the "
                               "layout-word gap would compare different clips")

    def _fixed_batches(self, clips: LatentClipSet, cfg: DiTRunConfig, stream: int) -> list[PackedBatch]:
        maker = PackedBatchMaker(clips, self.packing.rows, cfg.data.seq_len, cfg.data.text_len, cfg.spec.patch,
                                 cfg.seed + 1, stream=stream)
        return [maker(i) for i in range(EVAL_BATCHES)]


def train_dit(config: ml_collections.ConfigDict, workdir: PathLike) -> dict[str, float]:
    """Trains (or resumes) the DiT in `workdir`; returns the final eval metrics."""
    cfg = DiTRunConfig.from_config(config)  # every section checked before any work
    run = run_path(workdir)
    with hold_run(run):  # before the clips are encoded into the run's latent caches
        return _train_dit(cfg, config, run)


def _train_dit(cfg: DiTRunConfig, config: ml_collections.ConfigDict, run: Any) -> dict[str, float]:
    ctx = MeshContext.create(cfg.mesh, cfg.rules)
    autoencoder = load_autoencoder(cfg.vae_workdir)
    text_encoder = build_text_encoder(cfg.spec.text_encoder)
    model = DiT(cfg.spec.dit_config(autoencoder.vae.config.latent_channels, text_encoder.dim))
    denoise = packed_denoiser(model)
    check_fits(estimate_dit_training(model.config, nn.meta.unbox(abstract_params(model.config)), cfg.data.rows,
                                     cfg.data.seq_len, cfg.data.text_len, not cfg.train.lora.enabled, ctx.mesh))
    lora = cfg.train.lora
    fingerprint = lora_fingerprint(cfg.spec.fingerprint, lora) if lora.enabled else cfg.spec.fingerprint
    check_resumable(run, "dit", fingerprint)  # a changed model is refused before the clips are encoded
    data = _ClipData(cfg, autoencoder, text_encoder, run)  # refused above rather than after encoding every clip
    optimizer = make_optimizer(cfg.train)
    meta, frozen, weights = {}, None, own_weights
    if lora.enabled:  # the base is frozen (restored sharded, never saved); the state holds only adapters
        boxed = abstract_params(model.config)
        kernels = target_kernels(boxed, lora)  # targets that match nothing are refused before any weight is read
        base = resolve_base(cfg.train.init_from, run, cfg.spec.fingerprint, TRAIN_COMMAND)
        target = with_shardings(nn.meta.unbox(boxed), ctx.shardings(boxed))
        frozen, weights = load_lora_base(base, run, lora.base_weights, target, TRAIN_COMMAND), merged_weights(lora)
        meta = {LORA_KEY: lora.to_dict(), LORA_BASE_KEY: base}
        adapters = jax.eval_shape(lambda: init_adapters(boxed, lora, jax.random.PRNGKey(0)))
        print(f"LoRA rank {lora.rank} (scale {lora.scale:g}) on {len(kernels)} kernels: "
              f"{parameter_count(adapters):,} trainable parameters, base {parameter_count(boxed):,} frozen "
              f"({base['run']['absolute']} step {base['step']}, {lora.base_weights})")
    step = make_train_step(denoise, optimizer, cfg.spec.time, cfg.train.caption_dropout, cfg.train.ema_decay,
                           cfg.spec.prediction, weights)
    loss = ctx.jit_replicated(lambda frozen, params, batch, seed: validation_loss(
        denoise, weights(frozen, params), batch, seed, prediction=cfg.spec.prediction))
    high_noise = ctx.jit_replicated(lambda frozen, params, batch, seed: validation_loss(
        denoise, weights(frozen, params), batch, seed, LAYOUT_LEVELS, cfg.spec.prediction))
    eval_batches = [ctx.put(b, packed_batch_axes) for b in data.eval_batches]
    mirror_batches = [ctx.put(b, packed_batch_axes) for b in data.mirror_batches]

    def evaluate(state: Any) -> tuple[Any, dict[str, float]]:
        def mean_loss(params: Any) -> float:
            return float(np.mean([loss(frozen, params, b, i) for i, b in enumerate(eval_batches)]))

        gap = np.mean([high_noise(frozen, state.ema_params, m, i) - high_noise(frozen, state.ema_params, b, i)
                       for i, (b, m) in enumerate(zip(eval_batches, mirror_batches))])
        return state, {"val_loss": mean_loss(state.params), "val_loss_ema": mean_loss(state.ema_params),
                       "val_layout_gap_ema": float(gap)}

    trainer = Trainer(
        name="dit", train_command=TRAIN_COMMAND,
        init_state=lambda: init_state(model, optimizer, data.eval_batches[0], cfg.seed, lora),
        train_step=step, batches=data.batches, batch_axes=packed_batch_axes, fingerprint=fingerprint,
        meta={"vae_step": autoencoder.step, "autoencoder": RunLink.between(autoencoder.run, run).to_json(),
              "text_encoder": text_encoder.fingerprint, **meta},
        evaluate=evaluate, eval_every=cfg.eval.every, count_items=_count_items, prepare_batch=data.prepare,
        warm_start_checks={"vae_step": autoencoder.step}, frozen=() if frozen is None else (frozen,),
        data_metrics=lambda: {"data_skipped_records": len(data.skipped)},
    )
    # LoRA reads its base above; a full fine-tune copies init_from's weights into the state.
    metrics = run_training(ctx, trainer, cfg.train, run, config, init_from="" if lora.enabled else cfg.train.init_from)
    if metrics:
        print("held-out: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    return metrics
