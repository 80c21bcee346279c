"""Batches of world clips for the autoencoder, as a random-access grain dataset of each host's share.

Each batch has one clip size (the autoencoder is fully convolutional, but a batch is one array),
drawn per batch from the source's sizes, so images (1 frame) and videos of several aspect ratios
are mixed across steps. With `crop = (frames, height, width)` every clip is rendered at its native
size and then cut to a random window of that size: objects keep the scale they have at full size,
while a step costs a fraction of a full clip (the autoencoder only ever sees local context anyway).

Batch j depends only on (seed, j), so the grain iterator's state is a position and resumption is
exact. A host renders only its own clips of batch j (clips `j * batch_size + k` for its share of
k); the global batch is the same whatever the number of hosts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from sorajax.data.world.source import WorldSource



class VideoBatchMaker:
    """Maps a batch index to {'video': uint8 [clips of this host, T, H, W, 3]}."""

    def __init__(self, source: WorldSource, batch_size: int, crop: Sequence[int] | None = None,
                 host: int = 0, num_hosts: int = 1):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if batch_size % num_hosts:
            raise ValueError(f"a batch of {batch_size} clips does not split over {num_hosts} hosts: make "
                             f"data.batch_size a multiple of {num_hosts}")
        self.source, self.batch_size = source, batch_size
        self.crop = None if crop is None else tuple(int(v) for v in crop)
        per_host = batch_size // num_hosts
        self.clips = range(host * per_host, (host + 1) * per_host)

    def size_of(self, batch_index: int) -> tuple[int, int, int]:
        sizes = self.source.sizes
        return sizes[int(np.random.default_rng([self.source.seed, batch_index, 7]).integers(len(sizes)))]

    def __call__(self, batch_index: int) -> dict[str, np.ndarray]:
        size = self.size_of(batch_index)
        first = batch_index * self.batch_size
        videos = [self.source.clip(first + k, size).video for k in self.clips]
        if self.crop is not None:
            videos = [self._random_window(v, np.random.default_rng([self.source.seed, batch_index, 11, k]))
                      for k, v in zip(self.clips, videos)]
        return {"video": np.stack(videos)}

    def _random_window(self, video: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        frames = min(self.crop[0], video.shape[0])
        t0 = int(rng.integers(video.shape[0] - frames + 1))
        y0 = int(rng.integers(video.shape[1] - self.crop[1] + 1))
        x0 = int(rng.integers(video.shape[2] - self.crop[2] + 1))
        return video[t0 : t0 + frames, y0 : y0 + self.crop[1], x0 : x0 + self.crop[2]]
