"""Batches of built-in-world clips for training the autoencoder, as a grain dataset.

Each batch has one clip size (the autoencoder is fully convolutional, but a batch
is one array), drawn per batch from `sizes`, so images (1 frame) and videos of
several aspect ratios are mixed across steps. With `crop = (frames, height,
width)` every clip is rendered at its native size and then cut to a random window
of that size: objects keep the scale they have at full size, while a step costs a
fraction of a full clip (the autoencoder only ever sees local context anyway). Batch `j` depends only on
`(seed, j)`: the dataset is random access, so its grain iterator state is just a
position, which the checkpoint stores for exact resumption.
"""

from __future__ import annotations

from typing import Sequence

import grain
import numpy as np

from sorajax.data.world import WorldOptions, generate_clip

# Seeds for different splits live in disjoint ranges so held-out clips are never trained on.
SPLIT_SEED_OFFSETS = {"train": 0, "eval": 1_000_003_000, "stats": 1_500_007_000}
ENDLESS = 2**31 - 1


def _check_sizes(sizes: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    if not sizes:
        raise ValueError("data.sizes is empty: give at least one (frames, height, width) triple")
    out = []
    for size in sizes:
        if len(size) != 3:
            raise ValueError(f"data.sizes entries are (frames, height, width); got {tuple(size)}")
        out.append(tuple(int(v) for v in size))
    return out


class WorldClipBatch:
    """Maps a batch index to a dict with `video` uint8 [B, T, H, W, 3] and captions."""

    def __init__(
        self, sizes: Sequence[Sequence[int]], batch_size: int, seed: int, options: WorldOptions,
        split: str = "train", crop: Sequence[int] | None = None,
    ):
        if split not in SPLIT_SEED_OFFSETS:
            raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLIT_SEED_OFFSETS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sizes = _check_sizes(sizes)
        self.batch_size = batch_size
        self.seed = seed + SPLIT_SEED_OFFSETS[split]
        self.options = options
        self.crop = None if crop is None else tuple(int(v) for v in crop)
        if self.crop is not None and (len(self.crop) != 3 or min(self.crop) < 1):
            raise ValueError(f"crop is (frames, height, width) with positive sides, got {crop}")
        for frames, height, width in self.sizes if self.crop else ():
            if height < self.crop[1] or width < self.crop[2]:
                raise ValueError(f"crop {self.crop} is larger than clip size {(frames, height, width)}: lower the crop")

    def size_of(self, batch_index: int) -> tuple[int, int, int]:
        rng = np.random.default_rng([self.seed, batch_index, 7])
        return self.sizes[int(rng.integers(len(self.sizes)))]

    def __call__(self, batch_index: int) -> dict[str, np.ndarray]:
        frames, height, width = self.size_of(batch_index)
        first = batch_index * self.batch_size
        clips = [
            generate_clip(self.seed, frames, height, width, self.options, index=first + k)
            for k in range(self.batch_size)
        ]
        videos = [c.video for c in clips]
        if self.crop is not None:
            rng = np.random.default_rng([self.seed, batch_index, 11])
            videos = [self._random_window(v, rng) for v in videos]
        return {
            "video": np.stack(videos),
            "caption": np.array([c.caption for c in clips], dtype=object),
        }


    def _random_window(self, video: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        frames = min(self.crop[0], video.shape[0])
        t0 = int(rng.integers(video.shape[0] - frames + 1))
        y0 = int(rng.integers(video.shape[1] - self.crop[1] + 1))
        x0 = int(rng.integers(video.shape[2] - self.crop[2] + 1))
        return video[t0 : t0 + frames, y0 : y0 + self.crop[1], x0 : x0 + self.crop[2]]


def world_batch_dataset(
    sizes: Sequence[Sequence[int]], batch_size: int, seed: int, options: WorldOptions,
    split: str = "train", num_batches: int = ENDLESS, crop: Sequence[int] | None = None,
) -> grain.MapDataset:
    """A random-access grain dataset of `num_batches` world batches (endless by default)."""
    return grain.MapDataset.range(num_batches).map(WorldClipBatch(sizes, batch_size, seed, options, split, crop))


def world_batch_iterator(dataset: grain.MapDataset, worker_count: int = 0):
    """A checkpointable iterator; `worker_count > 0` renders batches in background processes."""
    iter_ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))
    if worker_count > 0:
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(iter_ds)
