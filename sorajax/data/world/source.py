"""The one source of built-in-world clips: a grain random-access source with train and held-out splits.

Record i of a split is generated on demand from (seed + the split's offset, i): nothing is stored,
any index can be read in any order, and two workers reading the same index get the same bytes.
Splits draw from disjoint seed ranges, so held-out clips are never trained on. Each record's size
is drawn from `sizes` by (seed, i); `clip(i, size)` renders record i at another size (the
autoencoder's batches share one size). `__len__` is 2**31 - 1 (the largest index grain's samplers
handle as a plain int32) unless `length` is given. The autoencoder trainer, the DiT's latent cache,
the samples and the tests all read the world through this class.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from sorajax.data.clip_source import ClipInfo
from sorajax.data.iterators import ENDLESS
from sorajax.data.world.options import WorldOptions
from sorajax.data.world.scene import Clip, check_clip_size, generate_clip

UNLIMITED_LENGTH = ENDLESS
SPLIT_SEED_OFFSETS = {"train": 0, "eval": 1_000_003_000, "stats": 1_500_007_000}
WORLD_FPS = 8.0  # the rate world clips are written at (sorajax.generate's default)
_SIZE_STREAM = 1  # extra entropy word so the size draw never reuses the scene's random stream
CAPTION_STYLES = ("descriptive", "terse")


def _normalise_sizes(sizes: Any) -> tuple[tuple[int, int, int], ...]:
    if isinstance(sizes, tuple) and len(sizes) == 3 and all(isinstance(v, (int, np.integer)) for v in sizes):
        sizes = [sizes]
    try:
        sizes = [tuple(s) for s in sizes]
    except TypeError:
        raise ValueError(
            f"sizes must be a list of (num_frames, height, width) triples, got {sizes!r}; "
            "e.g. sizes=[(17, 64, 64), (1, 64, 96)]."
        ) from None
    if not sizes:
        raise ValueError("sizes is empty; give at least one (num_frames, height, width) triple.")
    out = []
    for size in sizes:
        if len(size) != 3:
            raise ValueError(f"Clip size {size!r} is not a (num_frames, height, width) triple; fix that entry.")
        out.append(check_clip_size(*size))
    return tuple(out)


class WorldSource:
    """Procedural clips of one split; see the module docstring.

    `__getitem__` gives a dict: "video" uint8 [T, H, W, 3], "caption" (descriptive), "caption_terse",
    "facts" (JSON string, `ClipFacts.from_json` reads it), "index", "num_frames", "height", "width".
    `caption_style` picks which of the two `caption(i)` gives a trainer ('terse': the captioning ablation).
    """

    def __init__(
        self,
        sizes: Sequence[tuple[int, int, int]] | tuple[int, int, int],
        seed: int = 0,
        options: WorldOptions | None = None,
        length: int = UNLIMITED_LENGTH,
        size_weights: Sequence[float] | None = None,
        split: str = "train",
        caption_style: str = "descriptive",
    ):
        self.sizes = _normalise_sizes(sizes)
        if caption_style not in CAPTION_STYLES:
            raise ValueError(f"unknown caption style {caption_style!r}; use one of {CAPTION_STYLES}")
        self.caption_style = caption_style
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
            raise ValueError(f"length must be a positive int, got {length!r}; the default is {UNLIMITED_LENGTH}.")
        if split not in SPLIT_SEED_OFFSETS:
            raise ValueError(f"unknown world split {split!r}; use one of {sorted(SPLIT_SEED_OFFSETS)}")
        self.split = split
        self.seed = int(seed) + SPLIT_SEED_OFFSETS[split]
        self.length = int(length)
        self.options = WorldOptions() if options is None else options
        if not isinstance(self.options, WorldOptions):
            raise ValueError(
                f"options must be a WorldOptions, got {type(self.options).__name__}; use WorldOptions(**cfg)."
            )
        if size_weights is None:
            self.size_weights = tuple(1.0 / len(self.sizes) for _ in self.sizes)
        else:
            weights = np.asarray(size_weights, np.float64)
            if weights.shape != (len(self.sizes),) or np.any(weights < 0) or weights.sum() <= 0:
                raise ValueError(
                    f"size_weights {list(size_weights)} must be {len(self.sizes)} non-negative numbers "
                    "with a positive sum, one per entry of sizes."
                )
            self.size_weights = tuple(float(w) for w in weights / weights.sum())

    def __len__(self) -> int:
        return self.length

    def _check_index(self, index: Any) -> int:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"WorldSource index must be an int, got {type(index).__name__}.")
        if not 0 <= index < self.length:
            raise IndexError(f"WorldSource index {index} is outside [0, {self.length}).")
        return int(index)

    def size_of(self, index: int) -> tuple[int, int, int]:
        """The (num_frames, height, width) record `index` has, without rendering it."""
        if len(self.sizes) == 1:
            return self.sizes[0]
        rng = np.random.default_rng([self.seed, int(index), _SIZE_STREAM])
        return self.sizes[int(rng.choice(len(self.sizes), p=self.size_weights))]

    @functools.lru_cache(maxsize=64)
    def clip(self, index: int, size: tuple[int, int, int] | None = None) -> Clip:
        """Record `index` rendered at its own size, or at `size` (same scene, rescaled)."""
        index = self._check_index(index)
        num_frames, height, width = self.size_of(index) if size is None else size
        return generate_clip(self.seed, num_frames, height, width, self.options, index=index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        clip = self.clip(self._check_index(index))
        num_frames, height, width = clip.video.shape[:3]
        return {
            "video": clip.video,
            "caption": clip.caption,
            "caption_terse": clip.caption_terse,
            "facts": clip.facts.to_json(),
            "index": int(index),
            "num_frames": num_frames,
            "height": height,
            "width": width,
        }

    # ---- the ClipSource protocol (sorajax.data.clip_source) --------------------------------------
    @property
    def fingerprint(self) -> str:
        return repr(self)

    def info(self, index: int) -> ClipInfo:
        num_frames, height, width = self.size_of(self._check_index(index))
        return ClipInfo(num_frames, height, width, WORLD_FPS if num_frames > 1 else 0.0, f"world/{self.split}/{index}")

    def caption(self, index: int) -> str:
        clip = self.clip(int(index))
        return clip.caption_terse if self.caption_style == "terse" else clip.caption

    def frames(self, index: int, frame_indices: Sequence[int]) -> np.ndarray:
        return self.clip(int(index)).video[list(frame_indices)]

    def __repr__(self) -> str:
        # grain checkpoints a DataLoader by this string, so it must pin down every record. The caption style is
        # named only when it is not the default, so runs and latent caches made before it existed still match.
        style = "" if self.caption_style == "descriptive" else f", caption_style={self.caption_style!r}"
        return (
            f"WorldSource(sizes={list(self.sizes)}, seed={self.seed}, split={self.split!r}, length={self.length}, "
            f"size_weights={list(self.size_weights)}, options={self.options!r}{style})"
        )
