"""What the DiT trainer needs from a TFDS dataset, built from a config's `data` block.

`config.data.source == 'tfds'` selects it (see configs/dit_tfds.py). Keys read here:
`tfds_dir`, `pixel_budget`, `framing` ('native' | 'square': the report's framing ablation),
`max_frames`, `frame_counts`, `target_fps`, `allow_upscale`, `eval_count` (records held out,
taken from the end of the dataset), `rows`, `seq_len`, `text_len`, `cache_latents`,
`worker_count`, and `config.patch`, `config.seed`.

Each host (jax.process_index of jax.process_count) plans, decodes and encodes only its own
strided share of the records, and draws its batches from a stream seeded by its index.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections

from sorajax.data.clip_pipeline import (
    BatchEncoder,
    PackingConfig,
    PixelBatchMaker,
    caption_token_counts,
    encode_clip_set,
    host_shard,
    pixel_batch_dataset,
    sizing_from_config,
)
from sorajax.data.clip_sources import TfdsClipSource
from sorajax.data.latent_cache import LatentClipSet, cache_key, load_or_build, make_latent_encoder
from sorajax.data.tfds_builder import CLIP_INDEX_FILE


def packing_config(config: ml_collections.ConfigDict, vae_config: Any) -> PackingConfig:
    return PackingConfig(rows=int(config.data.rows), seq_len=int(config.data.seq_len), text_len=int(config.data.text_len),
                         patch=tuple(config.patch), spatial_factor=vae_config.spatial_factor,
                         temporal_factor=vae_config.temporal_factor)


def tfds_batch_maker(config: ml_collections.ConfigDict, vae_config: Any, text_encoder: Any, split: str) -> PixelBatchMaker:
    """This host's `PixelBatchMaker` over the dataset at `config.data.tfds_dir` ('train' or 'eval')."""
    source = TfdsClipSource(config.data.tfds_dir)
    packing = packing_config(config, vae_config)
    records = host_shard(len(source), holdout=int(config.data.eval_count), split=split)
    counts = caption_token_counts(text_encoder, [source.info(int(r)).caption for r in records])
    seed = int(config.seed) + (0 if split == "train" else 1)
    return PixelBatchMaker(source, records, sizing_from_config(config.data, packing), packing, counts, seed,
                           stream=jax.process_index())


def tfds_latent_clip_set(config: ml_collections.ConfigDict, trained: Any, text_encoder: Any, workdir: str,
                         split: str) -> LatentClipSet:
    """This host's clips of `split`, encoded once and cached in `workdir` (rebuilt when anything changes).

    Drop-in for `dit_loop.latent_clip_set` when `config.data.source == 'tfds'`.
    """
    vae_config = trained.vae.config
    maker = tfds_batch_maker(config, vae_config, text_encoder, split)
    index_file = maker.source.dataset_dir / CLIP_INDEX_FILE  # re-captioning rewrites it
    key = cache_key(vae_step=trained.step, vae=trained.config.vae.to_dict(), text=text_encoder.fingerprint,
                    dataset=str(maker.source.dataset_dir), index_mtime=os.path.getmtime(index_file),
                    sizing=repr(maker.sizing), records=maker.records.tolist(), seed=maker.seed)
    path = os.path.join(workdir, f"latents_tfds_{split}_host{jax.process_index()}.npz")
    encode = make_latent_encoder(trained.vae, trained.variables)
    return load_or_build(path, key, lambda: encode_clip_set(maker, encode, text_encoder, key=key))


def tfds_streaming_batches(config: ml_collections.ConfigDict, trained: Any, text_encoder: Any, split: str = "train"):
    """(grain MapDataset of `PixelBatch`, `BatchEncoder` that turns one into a `PackedBatch`).

    For datasets too big to cache: iterate with `clip_pipeline.batch_iterator(ds, config.data.worker_count)`
    (checkpoint that iterator) and call the encoder on each batch in the training loop.
    """
    maker = tfds_batch_maker(config, trained.vae.config, text_encoder, split)
    encoder = BatchEncoder(make_latent_encoder(trained.vae, trained.variables), text_encoder, maker.packing)
    return pixel_batch_dataset(maker), encoder
