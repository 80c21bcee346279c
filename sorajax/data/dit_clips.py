"""The DiT's clips, world or TFDS, through the one clip pipeline: which records, how they are sized, cached.

`data.source = 'world'`: `num_clips` training records (`eval.num_clips` held out, from the world's
disjoint eval seed range), made at their training sizes, captioned in `data.caption_style`; with
`data.framing='square'` each is centre-cropped to its largest square (nothing scaled or cut in time), as a
dataset's clips are. `'tfds'`: a built dataset, the last `eval_count` records held out, each clip sized
by the data section's pixel budget and framing.
Each host plans, decodes and encodes only its strided share of the records.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from sorajax.data.clip_pipeline import ClipPlanner, PackingConfig, encode_clip_set, host_shard
from sorajax.data.clip_sizing import SizingConfig
from sorajax.data.config import DiTDataConfig
from sorajax.data.latent_cache import LatentClipSet, cache_key, load_or_build
from sorajax.data.world import WorldOptions, WorldSource
from sorajax.runs.paths import PathLike


def dit_clip_planner(data: DiTDataConfig, world: WorldOptions, packing: PackingConfig, seed: int, split: str,
                     eval_clips: int) -> ClipPlanner:
    """This host's records of `split` ('train' or 'eval') with their plans."""
    if data.source == "world":
        count = data.num_clips if split == "train" else eval_clips
        source = WorldSource(data.sizes, seed, world, length=count, split=split, caption_style=data.caption_style)
        return ClipPlanner(source, host_shard(count), _world_sizing(data, packing), packing, seed)
    from sorajax.data.tfds.source import TfdsClipSource  # here: world runs need no TensorFlow (the GPU image has none)

    source = TfdsClipSource(data.tfds_dir)
    records = host_shard(len(source), holdout=data.eval_count, split=split)
    sizing = data.sizing(packing.size_multiple, packing.temporal_factor)
    return ClipPlanner(source, records, sizing, packing, seed + (0 if split == "train" else 1))


def _world_sizing(data: DiTDataConfig, packing: PackingConfig) -> SizingConfig | None:
    """None (whole clips as made) for native framing; for square, the dataset's sizing path cropping only:
    the budget and frame cap are the largest world clip's, so nothing is scaled down or cut in time."""
    if data.framing == "native":
        return None
    sizing = data.sizing(packing.size_multiple, packing.temporal_factor)
    return dataclasses.replace(sizing, pixel_budget=max(h * w for _, h, w in data.sizes),
                               max_frames=max(f for f, _, _ in data.sizes))


def cached_clip_set(planner: ClipPlanner, encode_video: Callable[[np.ndarray], np.ndarray], text_encoder: Any,
                    autoencoder_identity: dict, path: PathLike) -> LatentClipSet:
    """The planner's clips encoded once and cached at `path`; rebuilt when anything they depend on changes.

    `autoencoder_identity` names the latent space (its run's step and config). Clips too big for a row
    are refused before any is encoded.
    """
    planner.check_fit()
    key = cache_key(autoencoder=autoencoder_identity, text=text_encoder.fingerprint, source=planner.source.fingerprint,
                    sizing=repr(planner.sizing), packing=repr(planner.packing), records=planner.records.tolist(),
                    seed=planner.seed)
    return load_or_build(path, key, lambda: encode_clip_set(planner, encode_video, text_encoder, key=key))
