"""The grain pipeline for real data: clip source -> plan -> decode -> resize -> (encode) -> PackedBatch.

    records (TFDS or the world), this host's shard
      -> per record a ClipPlan from metadata only (size, crop, frames; `clip_sizing`)
      -> batch j: candidates drawn with RNG (seed, host, j), rows planned by first-fit-decreasing
         on planned token counts, the first `rows` rows kept  (NaViT packing, no decode yet)
      -> decode just the planned frames, crop, resize          (grain workers: `PixelBatch`)
      -> autoencoder + text encoder on the accelerator, `pack`  (main process: `BatchEncoder`)

Batch j depends only on (seed, host, j), so the grain iterator's state is a position: saving it
with the model (`sorajax.train.checkpoint`) makes a resumed run see exactly the batches it would
have seen. Two ways to feed a trainer:
- streaming: `pixel_batch_dataset` + `BatchEncoder` (decode in worker processes, encode per step);
  nothing is precomputed, so it scales to datasets that do not fit in memory;
- cached: `encode_clip_set` encodes the host's clips once into a `LatentClipSet`, which
  `sorajax.data.packed_batches` packs (what the tiny CPU runs use: encoding costs more than a step).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Sequence

import grain
import numpy as np

from sorajax.data.clip_sizing import ClipPlan, SizingConfig, apply_plan, latent_token_count, plan_clip
from sorajax.data.clip_sources import ClipSource
from sorajax.data.latent_cache import LatentClipSet
from sorajax.models.text_encoder import TextEmbeddingCache, TextEncoder
from sorajax.patches import PackedBatch, Sample, check_patch, pack, plan_rows

log = logging.getLogger(__name__)
ENDLESS = 2**31 - 1


@dataclasses.dataclass(frozen=True)
class PackingConfig:
    rows: int
    seq_len: int
    text_len: int
    patch: tuple[int, int, int] = (1, 2, 2)
    spatial_factor: int = 8  # the autoencoder's
    temporal_factor: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch", check_patch(self.patch))
        if self.rows < 1 or self.seq_len < 1 or self.text_len < 1:
            raise ValueError(f"rows, seq_len and text_len must be >= 1, got {self.rows}, {self.seq_len}, {self.text_len}")

    @property
    def size_multiple(self) -> int:
        """Pixel sides must be multiples of this: the autoencoder's factor x the patch."""
        return self.spatial_factor * int(np.lcm(self.patch[1], self.patch[2]))


@dataclasses.dataclass
class PixelBatch:
    """The decoded clips of one batch, in packing order (host memory, picklable between processes)."""

    videos: list[np.ndarray]  # uint8 [T, H, W, 3] each
    captions: list[str]
    record_indices: np.ndarray  # int64 [n]


def host_shard(num_records: int, process_index: int | None = None, process_count: int | None = None,
               holdout: int = 0, split: str = "train") -> np.ndarray:
    """Record indices this host reads: a strided share of train (all but the last `holdout`) or eval."""
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    if not 0 <= holdout < num_records:
        raise ValueError(f"holdout={holdout} must leave training records out of {num_records}; lower it")
    if split not in ("train", "eval"):
        raise ValueError(f"split {split!r} is unknown; use 'train' or 'eval'")
    records = np.arange(num_records - holdout) if split == "train" else np.arange(num_records - holdout, num_records)
    shard = records[process_index::process_count]
    if shard.size == 0:
        raise ValueError(
            f"host {process_index} of {process_count} gets no {split} records out of {records.size}: "
            "the dataset needs at least one record per host"
        )
    return shard


def caption_token_counts(text_encoder: TextEncoder, captions: Sequence[str]) -> np.ndarray:
    """Real caption tokens per caption (what packing budgets for text)."""
    _, mask = text_encoder.tokenize(list(captions))
    return np.asarray(mask, bool).sum(axis=1).astype(np.int64)


class PixelBatchMaker:
    """Maps a batch index to a `PixelBatch` packed to fill `rows` rows of `seq_len` tokens."""

    def __init__(self, source: ClipSource, records: np.ndarray, sizing: SizingConfig, packing: PackingConfig,
                 text_counts: np.ndarray, seed: int, stream: int = 0):
        self.source, self.sizing, self.packing = source, sizing, packing
        self.records = np.asarray(records, np.int64)
        self.seed, self.stream = int(seed), int(stream)
        if self.records.size == 0:
            raise ValueError("no records to read: the source or this host's shard is empty")
        if sizing.size_multiple % packing.size_multiple:
            raise ValueError(
                f"sizing.size_multiple={sizing.size_multiple} must be a multiple of {packing.size_multiple} "
                f"(autoencoder factor {packing.spatial_factor} x patch {packing.patch[1:]})"
            )
        self.plans = [self._plan(int(r)) for r in self.records]
        self.token_counts = np.array([latent_token_count(p, packing.spatial_factor, packing.temporal_factor, packing.patch)
                                      for p in self.plans])
        self.text_counts = np.asarray(text_counts, np.int64)
        if self.text_counts.shape != self.records.shape:
            raise ValueError(f"got {self.text_counts.size} caption token counts for {self.records.size} records; give one each")
        self._check_fit()
        self.candidates = min(self.records.size,
                              2 * packing.rows * max(1, packing.seq_len // max(int(self.token_counts.min()), 1)))

    def _plan(self, record: int) -> ClipPlan:
        info = self.source.info(record)
        return plan_clip(record, info.num_frames, info.height, info.width, info.fps, self.sizing, self.seed)

    def _check_fit(self) -> None:
        too_long = np.flatnonzero((self.token_counts > self.packing.seq_len) | (self.text_counts > self.packing.text_len))
        if too_long.size:
            i = int(too_long[0])
            p = self.plans[i]
            raise ValueError(
                f"record {p.index} becomes {p.num_frames}x{p.height}x{p.width} = {self.token_counts[i]} tokens with "
                f"{self.text_counts[i]} caption tokens, more than a row holds (seq_len={self.packing.seq_len}, "
                f"text_len={self.packing.text_len}): raise them, or lower pixel_budget / max_frames"
            )

    def select(self, batch_index: int) -> list[int]:
        """Positions (into `self.records`) of the clips of batch `batch_index`, in packing order."""
        rng = np.random.default_rng([self.seed, self.stream, int(batch_index)])
        pool = rng.choice(self.records.size, size=self.candidates, replace=False)
        plan = plan_rows(self.token_counts[pool], self.text_counts[pool], self.packing.seq_len, self.packing.text_len)
        return [int(pool[i]) for row in plan[: self.packing.rows] for i in row]

    def load(self, position: int) -> np.ndarray:
        plan = self.plans[position]
        try:
            frames = self.source.frames(plan.index, plan.frame_indices)
        except Exception as error:  # a file that changed or rotted after the build
            raise ValueError(
                f"record {plan.index} ({self.source.info(plan.index).key}) no longer decodes ({error}); "
                "rebuild the dataset with `python -m sorajax.data.build`"
            ) from error
        return apply_plan(frames, plan)

    def __call__(self, batch_index: int) -> PixelBatch:
        chosen = self.select(batch_index)
        return PixelBatch(
            videos=[self.load(i) for i in chosen],
            captions=[self.source.info(int(self.records[i])).caption for i in chosen],
            record_indices=self.records[chosen],
        )


def pixel_batch_dataset(maker: PixelBatchMaker, num_batches: int = ENDLESS) -> grain.MapDataset:
    return grain.MapDataset.range(num_batches).map(maker)


def batch_iterator(dataset: grain.MapDataset, worker_count: int = 0, buffer_size: int = 2) -> grain.DatasetIterator:
    """A checkpointable iterator; with workers, decoding runs in `worker_count` processes."""
    iter_ds = dataset.to_iter_dataset()
    if worker_count > 0:
        from absl import flags

        if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; scripts without app.run have none
            flags.FLAGS.mark_as_parsed()
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count,
                                                                   per_worker_buffer_size=buffer_size))
    return iter(iter_ds)


def _encode_by_size(videos: Sequence[np.ndarray], encode_video: Callable[[np.ndarray], np.ndarray],
                    batch_size: int) -> list[np.ndarray]:
    """Encodes clips grouped by shape (one compiled program per size), results in input order."""
    latents: list[np.ndarray | None] = [None] * len(videos)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, video in enumerate(videos):
        groups.setdefault(video.shape, []).append(i)
    for _, members in sorted(groups.items()):
        for start in range(0, len(members), batch_size):
            chunk = members[start : start + batch_size]
            encoded = np.asarray(encode_video(np.stack([videos[i] for i in chunk])), np.float32)
            for i, latent in zip(chunk, encoded):
                latents[i] = latent
    return latents  # type: ignore[return-value]


def _caption_embeddings(cache: TextEmbeddingCache, captions: Sequence[str]) -> list[np.ndarray]:
    embeddings, masks = cache.encode(list(captions))
    return [np.asarray(e[m], np.float32) for e, m in zip(embeddings, masks)]


class BatchEncoder:
    """`PixelBatch` -> `PackedBatch` with the frozen autoencoder and text encoder (main process)."""

    def __init__(self, encode_video: Callable[[np.ndarray], np.ndarray], text_encoder: TextEncoder,
                 packing: PackingConfig, batch_size: int = 16):
        self.encode_video, self.packing, self.batch_size = encode_video, packing, batch_size
        self.text_cache = TextEmbeddingCache(text_encoder)

    def __call__(self, batch: PixelBatch) -> PackedBatch:
        latents = _encode_by_size(batch.videos, self.encode_video, self.batch_size)
        texts = _caption_embeddings(self.text_cache, batch.captions)
        samples = [Sample(latent=l, text=t) for l, t in zip(latents, texts)]
        packed, _ = pack(samples, self.packing.seq_len, self.packing.text_len, self.packing.patch, rows=self.packing.rows)
        return packed


def encode_clip_set(maker: PixelBatchMaker, encode_video: Callable[[np.ndarray], np.ndarray],
                    text_encoder: TextEncoder, key: str = "", batch_size: int = 16) -> LatentClipSet:
    """Every clip of the maker's shard, planned, decoded and encoded once (the cached path)."""
    videos = [maker.load(i) for i in range(maker.records.size)]
    captions = [maker.source.info(int(r)).caption for r in maker.records]
    latents = _encode_by_size(videos, encode_video, batch_size)
    texts = _caption_embeddings(TextEmbeddingCache(text_encoder), captions)
    keys = [maker.source.info(int(r)).key for r in maker.records]
    return LatentClipSet(latents=latents, texts=texts, captions=captions, terse_captions=list(captions),
                         facts=keys, key=key)


def packing_efficiency_of(maker: PixelBatchMaker, num_batches: int) -> float:
    """Share of token slots holding real tokens over `num_batches` planned batches (no decoding)."""
    used = sum(int(maker.token_counts[maker.select(j)].sum()) for j in range(num_batches))
    return used / (num_batches * maker.packing.rows * maker.packing.seq_len)


def sizing_from_config(data: Any, packing: PackingConfig) -> SizingConfig:
    """`SizingConfig` from a config's `data` block; sides snap to the autoencoder x patch multiple."""
    return SizingConfig(
        pixel_budget=int(data.pixel_budget), size_multiple=packing.size_multiple, framing=str(data.framing),
        allow_upscale=bool(data.get("allow_upscale", False)), max_frames=int(data.max_frames),
        frame_counts=tuple(int(n) for n in data.get("frame_counts", ())),
        target_fps=None if data.get("target_fps") is None else float(data.target_fps),
        temporal_factor=packing.temporal_factor,
    )
