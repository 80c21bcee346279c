"""The one clip pipeline, for the built-in world and a user's TFDS dataset alike.

    a clip source (sorajax.data.clip_source), this host's records
      -> per record a ClipPlan from metadata only (size, crop, frames; `clip_sizing`; the world's
         clips are made at their training size, so their plan is the whole clip)
      -> cached: every clip decoded, resized and encoded once into a `LatentClipSet`
         (`encode_clip_set`), which `sorajax.data.packed_batches` packs into rows
      -> streaming: batch j's clips chosen and rows planned by first-fit-decreasing on planned
         token counts (`PixelBatchMaker`, no decode yet), then decoded in grain workers and
         encoded on the accelerator per step (`BatchEncoder`): for datasets that do not fit in memory

Batch j depends only on (seed, host, j), so the grain iterator's state is a position: saving it
with the model makes a resumed run see exactly the batches it would have seen.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from sorajax.data.clip_sizing import ClipPlan, SizingConfig, apply_plan, latent_token_count, plan_clip
from sorajax.data.clip_source import ClipSource
from sorajax.data.latent_cache import LatentClipSet
from sorajax.models.text_encoder import TextEmbeddingCache, TextEncoder, caption_arrays
from sorajax.patches import PackedBatch, Sample, check_patch, pack, plan_rows

log = logging.getLogger(__name__)



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
    skipped_records: tuple[int, ...] = ()  # records chosen for this batch that no longer decode (left out)


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
    """Caption tokens per caption that packing budgets for: the real ones, or all positions (`caption_arrays`)."""
    _, mask = text_encoder.tokenize(list(captions))
    if getattr(text_encoder, "padded_context", False):
        return np.full(len(mask), np.shape(mask)[1], np.int64)
    return np.asarray(mask, bool).sum(axis=1).astype(np.int64)


class ClipPlanner:
    """Every record's plan and token count, from metadata only; `sizing` None keeps whole clips as they are."""

    def __init__(self, source: ClipSource, records: np.ndarray, sizing: SizingConfig | None, packing: PackingConfig,
                 seed: int):
        self.source, self.sizing, self.packing, self.seed = source, sizing, packing, int(seed)
        self.records = np.asarray(records, np.int64)
        if self.records.size == 0:
            raise ValueError("no records to read: the source or this host's shard is empty")
        if sizing is not None and sizing.size_multiple % packing.size_multiple:
            raise ValueError(
                f"sizing.size_multiple={sizing.size_multiple} must be a multiple of {packing.size_multiple} "
                f"(autoencoder factor {packing.spatial_factor} x patch {packing.patch[1:]})"
            )
        self.plans = [self._plan(int(r)) for r in self.records]
        self.skipped: set[int] = set()  # records met that no longer decode (see `load_or_skip`)
        self.token_counts = np.array([latent_token_count(p, packing.spatial_factor, packing.temporal_factor,
                                                         packing.patch) for p in self.plans])

    def _plan(self, record: int) -> ClipPlan:
        info = self.source.info(record)
        if self.sizing is not None:
            return plan_clip(record, info.num_frames, info.height, info.width, info.fps, self.sizing, self.seed)
        m = self.packing.size_multiple
        if info.height % m or info.width % m:
            raise ValueError(f"clip {info.key} is {info.height}x{info.width}, not a multiple of {m} pixels (the "
                             f"autoencoder's x{self.packing.spatial_factor} x patch {self.packing.patch[1:]}): "
                             f"use clip sizes in multiples of {m}")
        return ClipPlan(record, tuple(range(info.num_frames)), (0, 0, info.height, info.width), info.height, info.width)

    def check_fit(self, text_counts: np.ndarray | None = None) -> None:
        """Refuse a clip that cannot fit a row (before anything is decoded); caption lengths when given."""
        packing = self.packing
        too_long = self.token_counts > packing.seq_len
        if text_counts is not None:
            too_long |= text_counts > packing.text_len
        if too_long.any():
            i = int(np.flatnonzero(too_long)[0])
            p = self.plans[i]
            caption = "" if text_counts is None else f" with {text_counts[i]} caption tokens"
            raise ValueError(
                f"record {p.index} becomes {p.num_frames}x{p.height}x{p.width} = {self.token_counts[i]} tokens"
                f"{caption}, more than a row holds (seq_len={packing.seq_len}, text_len={packing.text_len}): raise "
                "data.seq_len / data.text_len, or use smaller clips (data.sizes, or pixel_budget / max_frames)"
            )

    def load_or_skip(self, position: int) -> np.ndarray | None:
        """The training clip of `self.records[position]` (its planned frames, cropped and resized), or None for a
        record whose bytes no longer decode (rotted or damaged after the build): it is left out and the run goes
        on; each such record is logged once, with its shard, and kept in `self.skipped`."""
        plan = self.plans[position]
        try:
            frames = self.source.frames(plan.index, plan.frame_indices)
        except Exception as error:  # noqa: BLE001 - any decode failure of one record: a checksum, a codec
            if plan.index not in self.skipped:
                self.skipped.add(plan.index)
                shard = getattr(self.source, "shard_name", lambda index: "its source")(plan.index)
                log.warning("skipping record %d (%s) in %s: it no longer decodes (%s: %s); rebuild the dataset with "
                            "`python -m sorajax.build_dataset` to get it back", plan.index,
                            self.source.info(plan.index).key, shard, type(error).__name__,
                            " ".join(str(error).split())[:200])
            return None
        return apply_plan(frames, plan)

    def load(self, position: int) -> np.ndarray:
        """`load_or_skip`, for callers that need this very clip: a record that no longer decodes is an error."""
        clip = self.load_or_skip(position)
        if clip is None:
            index = self.plans[position].index
            raise ValueError(f"record {index} ({self.source.info(index).key}) no longer decodes; rebuild the "
                             "dataset with `python -m sorajax.build_dataset`")
        return clip

    def caption(self, position: int) -> str:
        return self.source.caption(int(self.records[position]))


class PixelBatchMaker:
    """Maps a batch index to a `PixelBatch` packed to fill `rows` rows of `seq_len` tokens (streaming)."""

    def __init__(self, planner: ClipPlanner, text_counts: np.ndarray, seed: int, stream: int = 0):
        self.planner, self.packing = planner, planner.packing
        self.seed, self.stream = int(seed), int(stream)
        self.text_counts = np.asarray(text_counts, np.int64)
        if self.text_counts.shape != planner.records.shape:
            raise ValueError(f"got {self.text_counts.size} caption token counts for {planner.records.size} records; "
                             "give one each")
        planner.check_fit(self.text_counts)
        self.candidates = min(planner.records.size, 2 * self.packing.rows
                              * max(1, self.packing.seq_len // max(int(planner.token_counts.min()), 1)))

    def select(self, batch_index: int) -> list[int]:
        """Positions (into the planner's records) of the clips of batch `batch_index`, in packing order."""
        rng = np.random.default_rng([self.seed, self.stream, int(batch_index)])
        pool = rng.choice(self.planner.records.size, size=self.candidates, replace=False)
        plan = plan_rows(self.planner.token_counts[pool], self.text_counts[pool], self.packing.seq_len,
                         self.packing.text_len)
        return [int(pool[i]) for row in plan[: self.packing.rows] for i in row]

    def __call__(self, batch_index: int) -> PixelBatch:
        clips = {i: self.planner.load_or_skip(i) for i in self.select(batch_index)}
        kept = [i for i, clip in clips.items() if clip is not None]
        if not kept:
            raise ValueError(f"no clip of batch {batch_index} decodes (records "
                             f"{sorted(self.planner.records[list(clips)].tolist())}): the dataset is damaged; rebuild "
                             "it with `python -m sorajax.build_dataset`")
        return PixelBatch(videos=[clips[i] for i in kept], captions=[self.planner.caption(i) for i in kept],
                          record_indices=self.planner.records[kept],
                          skipped_records=tuple(int(self.planner.records[i]) for i, c in clips.items() if c is None))



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
    return caption_arrays(cache.encoder, *cache.encode(list(captions)))


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


def encode_clip_set(planner: ClipPlanner, encode_video: Callable[[np.ndarray], np.ndarray],
                    text_encoder: TextEncoder, key: str = "", batch_size: int = 16) -> LatentClipSet:
    """Every clip of the planner's records, decoded, resized and encoded once (the cached path).

    Clips are made and encoded a batch of one size at a time, so host memory holds latents, not pixels.
    """
    count = planner.records.size
    by_size: dict[tuple[int, int, int], list[int]] = {}
    for position, plan in enumerate(planner.plans):
        by_size.setdefault((plan.num_frames, plan.height, plan.width), []).append(position)
    latents: list[np.ndarray | None] = [None] * count
    captions = [""] * count
    with tqdm(total=count, desc="encoding clips", dynamic_ncols=True) as bar:
        for _, positions in sorted(by_size.items()):
            for start in range(0, len(positions), batch_size):
                loaded = {i: planner.load_or_skip(i) for i in positions[start : start + batch_size]}
                chunk = [i for i, video in loaded.items() if video is not None]  # damaged records left out
                if chunk:
                    encoded = np.asarray(encode_video(np.stack([loaded[i] for i in chunk])), np.float32)
                    for i, latent in zip(chunk, encoded):
                        latents[i], captions[i] = latent, planner.caption(i)
                bar.update(len(loaded))
    kept = [i for i in range(count) if latents[i] is not None]
    if not kept:
        raise ValueError(f"no record of {planner.source.fingerprint} decodes: rebuild the dataset with "
                         "`python -m sorajax.build_dataset`")
    texts = _caption_embeddings(TextEmbeddingCache(text_encoder), [captions[i] for i in kept])
    keys = [planner.source.info(int(planner.records[i])).key for i in kept]
    return LatentClipSet(latents=[latents[i] for i in kept], texts=texts, captions=[captions[i] for i in kept],
                         keys=keys, key=key, skipped=sorted(planner.skipped))


def packing_efficiency_of(maker: PixelBatchMaker, num_batches: int) -> float:
    """Share of token slots holding real tokens over `num_batches` planned batches (no decoding)."""
    used = sum(int(maker.planner.token_counts[maker.select(j)].sum()) for j in range(num_batches))
    return used / (num_batches * maker.packing.rows * maker.packing.seq_len)
