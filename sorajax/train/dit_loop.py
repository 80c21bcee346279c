"""The DiT trainer: cached world latents -> packed batches -> pure train step, in the shared loop.

    autoencoder (frozen, from config.vae_workdir) + text encoder (frozen)
      -> latent clip set (encoded once, cached in the run directory)
      -> packed batches (grain, NaViT rows of mixed sizes) -> train_step -> checkpoints
Evaluation is the rectified-flow loss of fixed held-out batches at fixed noise
levels, for the raw and the EMA weights, and the layout-word gap: how much worse
the EMA weights denoise those batches at high noise when every caption's place
and direction words are mirrored (`sorajax.eval.caption_layout`; 0 = not read).

With ``config.mesh`` (sorajax.parallel.mesh.MeshConfig fields) the state is created
sharded over that mesh, the step is jitted with in/out shardings, and each host
feeds only its rows; without it, everything runs on one device exactly as before.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from sorajax.conditioning import MaskRates
from sorajax.data.latent_cache import LatentClipSet, cache_key, encode_world_clips, load_or_build, make_latent_encoder
from sorajax.data.packed_batches import packed_batch_dataset
from sorajax.data.clip_pipeline import PixelBatch, batch_iterator
from sorajax.data.tfds_training import tfds_latent_clip_set, tfds_streaming_batches
from sorajax.data.world import WorldOptions
from sorajax.diffusion.timesteps import TrainingTimeConfig
from sorajax.eval.caption_layout import LAYOUT_LEVELS, mirrored_clip_set
from sorajax.models.build import build_dit, build_text_encoder
from sorajax.models.vae_pretrained import TrainedVAE, load_trained_vae
from sorajax.parallel.distributed import global_batch, host_rows, initialize_multihost
from sorajax.parallel.mesh import describe, make_mesh
from sorajax.parallel.rules import DIT_RULES, rules_from_config
from sorajax.parallel.sharded_state import batch_shardings, init_sharded_state
from sorajax.parallel.steps import MeshStep, sharded_train_step
from sorajax.train.checkpoint import Checkpointer
from sorajax.train.dit_step import DiTTrainState, make_train_step, make_validation_loss
from sorajax.train.loop import LoopSettings, fingerprint, resume, run_loop
from sorajax.train.metrics import MetricsWriter
from sorajax.train.optim import make_optimizer
from sorajax.train.run_config import record_run_config
from sorajax.train.warm_start import warm_start


def latent_clip_set(config: ml_collections.ConfigDict, trained: TrainedVAE, text_encoder: Any, workdir: str,
                    split: str, count: int) -> LatentClipSet:
    """The run's encoded clips for `split`, cached in `workdir/latents_<split>.npz`."""
    key = cache_key(vae_step=trained.step, vae=trained.config.vae.to_dict(), text=text_encoder.fingerprint,
                    world=config.world.to_dict(), sizes=config.data.sizes, count=count, seed=config.seed, split=split)
    encode = make_latent_encoder(trained.vae, trained.variables)
    return load_or_build(
        os.path.join(workdir, f"latents_{split}.npz"), key,
        lambda: encode_world_clips(encode, text_encoder, config.data.sizes, count, config.seed,
                                   WorldOptions(**config.world), split=split, key=key),
    )


def init_state(dit: Any, optimizer: Any, example: Any, seed: int) -> DiTTrainState:
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
    variables = dit.init(init_rng, example.tokens[:1], example.positions[:1], example.segment_ids[:1],
                         example.t[:1], example.text[:1], example.text_segment_ids[:1])
    params = jax.tree.map(jnp.asarray, variables["params"])
    params = jax.tree.map(lambda x: x.unbox() if hasattr(x, "unbox") else x, params,
                          is_leaf=lambda x: hasattr(x, "unbox"))
    # The EMA starts as a copy: aliasing the same buffers would break the step's buffer donation.
    return DiTTrainState(step=jnp.asarray(0, jnp.int32), params=params, ema_params=jax.tree.map(jnp.copy, params),
                         opt_state=optimizer.init(params), rng=state_rng)


def _sharded_setup(config: ml_collections.ConfigDict, dit: Any, optimizer: Any, step_fn: Any, validation_fn: Any,
                   example: Any) -> tuple[DiTTrainState, Any, Any, Any]:
    """(initial state, train step, batch -> step input, validation loss), all over ``config.mesh``."""
    mesh = make_mesh(config.mesh)
    rules = rules_from_config(config.get("parallel", {}).get("rules"), DIT_RULES)
    print(f"mesh: {describe(mesh)}")
    state, shardings = init_sharded_state(dit, optimizer, example, config.seed, mesh, rules)
    batch_sharding = batch_shardings(example, mesh, rules)
    rows = host_rows(example.tokens.shape[0])

    def to_step_input(batch: Any) -> Any:  # every host builds the global batch; each feeds its own rows
        return global_batch(jax.tree.map(lambda x: x[rows], batch), batch_sharding)

    return (state, sharded_train_step(step_fn, mesh, rules, shardings, batch_sharding), to_step_input,
            MeshStep(validation_fn, mesh, rules))


def _count_items(batch: Any) -> int:
    """Throughput unit: tokens of a packed batch, clips of a streamed pixel batch."""
    return len(batch.videos) if isinstance(batch, PixelBatch) else int(np.count_nonzero(batch.segment_ids))


def model_fingerprint(config: ml_collections.ConfigDict) -> str:
    return fingerprint({"model": config.model.to_dict(), "patch": list(config.patch),
                        "text_encoder": config.text_encoder.to_dict(), "prediction": config.prediction})


def train_dit(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains (or resumes) the DiT in `workdir`; returns the final eval metrics."""
    if config.get("mesh") is not None:
        initialize_multihost()  # before any device is touched; a no-op for a single process
    os.makedirs(workdir, exist_ok=True)
    trained = load_trained_vae(config.vae_workdir)
    text_encoder = build_text_encoder(config.text_encoder)
    use_tfds = config.data.get("source", "world") == "tfds"  # a user's dataset (python -m sorajax.data.build)
    # Streaming: decode + encode every batch in the loop instead of caching the train set's latents.
    streaming = use_tfds and not config.data.get("cache_latents", True)
    if use_tfds:
        train_clips = None if streaming else tfds_latent_clip_set(config, trained, text_encoder, workdir, "train")
        eval_clips = tfds_latent_clip_set(config, trained, text_encoder, workdir, "eval")
    else:
        train_clips = latent_clip_set(config, trained, text_encoder, workdir, "train", config.data.num_clips)
        eval_clips = latent_clip_set(config, trained, text_encoder, workdir, "eval", config.eval.num_clips)

    dit = build_dit(config.model, config.patch, trained.vae.config.latent_channels, text_encoder.dim)
    optimizer = make_optimizer(config.train)
    time_config = TrainingTimeConfig.from_mapping(config.time)
    step_fn = make_train_step(dit, optimizer, time_config, config.train.caption_dropout, config.train.ema_decay,
                              config.prediction)

    if streaming:  # conditioning masks are mixed in by the cached path only
        pixel_data, encode_pixels = tfds_streaming_batches(config, trained, text_encoder)
        data_iter = batch_iterator(pixel_data, config.data.get("worker_count", 0))
    else:
        data = packed_batch_dataset(train_clips, config.data.rows, config.data.seq_len, config.data.text_len,
                                    config.patch, config.seed,
                                    mask_rates=MaskRates.from_mapping(config.get("conditioning")))
        data_iter = iter(data.to_iter_dataset())
    eval_data = packed_batch_dataset(eval_clips, config.data.rows, config.data.seq_len, config.data.text_len,
                                     config.patch, config.seed + 1, num_batches=2)
    eval_batches = [eval_data[i] for i in range(len(eval_data))]
    # The same batches with place/direction words mirrored: their loss gap says whether layout words are read.
    mirror_data = packed_batch_dataset(mirrored_clip_set(eval_clips, text_encoder), config.data.rows,
                                       config.data.seq_len, config.data.text_len, config.patch, config.seed + 1,
                                       num_batches=2)
    mirror_batches = [mirror_data[i] for i in range(len(mirror_data))]
    if not all(np.array_equal(a.segment_ids, b.segment_ids) for a, b in zip(eval_batches, mirror_batches)):
        raise RuntimeError("mirrored-caption eval batches are packed differently from the true ones; the "
                           "layout-word gap would compare different clips")

    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), max_to_keep=config.train.keep_checkpoints,
                        save_every=config.train.save_every, async_save=config.train.async_checkpoints)
    fp = model_fingerprint(config)
    validation_fn = make_validation_loss(dit, prediction=config.prediction)
    high_noise_fn = make_validation_loss(dit, levels=LAYOUT_LEVELS, prediction=config.prediction)
    if config.get("mesh") is None:
        initial = init_state(dit, optimizer, eval_batches[0], config.seed)
        train_step, to_step_input = jax.jit(step_fn, donate_argnums=0), lambda batch: batch
        validation_loss, high_noise_loss = jax.jit(validation_fn), jax.jit(high_noise_fn)
    else:
        initial, train_step, to_step_input, validation_loss = _sharded_setup(
            config, dit, optimizer, step_fn, validation_fn, eval_batches[0])
        high_noise_loss = MeshStep(high_noise_fn, validation_loss.mesh, validation_loss.rules)
    if streaming:
        feed_step = to_step_input
        to_step_input = lambda batch: feed_step(encode_pixels(batch))  # noqa: E731
    if config.train.get("init_from") and ckpt.latest_step() is None:  # fine-tuning; a restart resumes its own
        initial = warm_start(initial, config.train.init_from, fp, trained.step)
    state = resume(ckpt, initial, data_iter, fp, workdir, "DiT")
    record_run_config(workdir, config, int(state.step) if ckpt.latest_step() is not None else None)

    def evaluate(state: DiTTrainState) -> tuple[DiTTrainState, dict]:
        def mean_loss(params):
            return float(np.mean([validation_loss(params, b, i) for i, b in enumerate(eval_batches)]))
        def layout_gap(params):  # same clips, same noise; only the place/direction words differ
            return float(np.mean([high_noise_loss(params, m, i) - high_noise_loss(params, b, i)
                                  for i, (b, m) in enumerate(zip(eval_batches, mirror_batches))]))
        return state, {"val_loss": mean_loss(state.params), "val_loss_ema": mean_loss(state.ema_params),
                       "val_layout_gap_ema": layout_gap(state.ema_params)}

    meta = {"model_fingerprint": fp, "config": json.loads(config.to_json_best_effort()),
            "vae_step": trained.step, "text_encoder": text_encoder.fingerprint}
    settings = LoopSettings("dit", config.train.steps, config.train.log_every, config.eval.every, meta)
    writer = MetricsWriter(workdir)
    try:
        _, eval_metrics = run_loop(
            settings, state, train_step, data_iter, to_step_input, ckpt, writer, evaluate=evaluate,
            count_items=_count_items,
        )
    finally:  # close files and finish pending async saves even when a step fails.
        ckpt.close()
        writer.close()
    if eval_metrics:
        print("held-out: " + ", ".join(f"{k}={v:.4f}" for k, v in eval_metrics.items()))
    return eval_metrics
