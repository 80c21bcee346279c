"""Packed DiT training batches from a latent clip set, as a random-access grain dataset.

Batch `j` draws candidate clips with an RNG seeded by `(seed, stream, j)`, plans rows by
first-fit-decreasing (`patches.plan_rows`) and keeps the `rows` fullest rows, so images and videos
of every size and aspect ratio share rows (NaViT packing) and padding stays small. Because batch `j`
depends only on those numbers, the grain iterator's state is a position and resumption is exact.
On a multi-host job each host packs only its own rows (`rows` = its share) from its own clips with
its own `stream` (the process index); JAX assembles the global batch from the hosts' rows.

Conditioning masks (`mask_rates`, see `sorajax.conditioning`): each chosen sample may get a random
frame or region mask; its given tokens are packed clean with `loss_mask = False`, so the train step
keeps them at t = 0 and out of the loss. The masks come from a second RNG (one more seed word): the
clip choice is unchanged, and with every rate 0 (the default) the batches are exactly the unmasked ones.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from sorajax.conditioning import MaskRates, sample_training_mask
from sorajax.data.latent_cache import LatentClipSet
from sorajax.patches import PackedBatch, Sample, num_patches, pack, plan_rows



class PackedBatchMaker:
    """Maps a batch index to a numpy `PackedBatch` of `rows` rows of `seq_len` tokens."""

    def __init__(self, clips: LatentClipSet, rows: int, seq_len: int, text_len: int, patch: Sequence[int], seed: int,
                 mask_rates: MaskRates | None = None, stream: int = 0):
        if len(clips) == 0:
            raise ValueError("the latent clip set is empty: encode at least one clip (data.num_clips >= 1)")
        self.clips, self.rows, self.seq_len, self.text_len = clips, rows, seq_len, text_len
        self.patch, self.seed, self.stream = tuple(patch), seed, stream
        self.mask_rates = mask_rates or MaskRates()
        self.token_counts = np.array([num_patches(l.shape, self.patch) for l in clips.latents])
        self.text_counts = np.array([t.shape[0] for t in clips.texts])
        too_long = np.flatnonzero((self.token_counts > seq_len) | (self.text_counts > text_len))
        if too_long.size:
            i = int(too_long[0])
            raise ValueError(
                f"clip {i} has {self.token_counts[i]} tokens and {self.text_counts[i]} caption tokens, more than "
                f"a row holds (seq_len={seq_len}, text_len={text_len}): raise them or train on smaller clips"
            )
        # Enough candidates to fill every row even if all were the largest clips, with slack for choice.
        self.candidates = min(len(clips), 2 * rows * max(1, seq_len // max(int(self.token_counts.min()), 1)))

    def select(self, batch_index: int) -> list[int]:
        """Clip indices of batch `batch_index`, in packing order."""
        rng = np.random.default_rng([self.seed, self.stream, batch_index])
        pool = rng.choice(len(self.clips), size=self.candidates, replace=False)
        plan = plan_rows(self.token_counts[pool], self.text_counts[pool], self.seq_len, self.text_len)
        return [int(pool[i]) for row in plan[: self.rows] for i in row]

    def __call__(self, batch_index: int) -> PackedBatch:
        chosen = self.select(batch_index)
        mask_rng = np.random.default_rng([self.seed, self.stream, batch_index, 1])
        samples = [
            Sample(latent=self.clips.latents[i], text=self.clips.texts[i],
                   cond_mask=sample_training_mask(mask_rng, self.clips.latents[i].shape, self.mask_rates, self.patch))
            for i in chosen
        ]
        batch, _ = pack(samples, self.seq_len, self.text_len, self.patch, rows=self.rows)
        return batch
