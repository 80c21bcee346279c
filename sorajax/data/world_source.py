"""A grain random-access data source that streams world clips without limit.

Record i is generated on demand from (seed, i): nothing is stored, any index can be read in any
order, and two workers reading the same index get the same bytes. `__len__` is 2**31 - 1 (the
largest index grain's samplers handle as a plain int32), which no training run exhausts; pass
`length` for a finite epoch. The source holds only plain values (a frozen `WorldOptions`, ints,
tuples), so grain can pickle it into worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sorajax.data.world import check_clip_size, generate_clip
from sorajax.data.world_options import WorldOptions

UNLIMITED_LENGTH = 2**31 - 1
_SIZE_STREAM = 1  # extra entropy word so the size draw never reuses the scene's random stream


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
    """grain RandomAccessDataSource of procedural clips; see module docstring.

    Each record picks one of `sizes` (with `size_weights`, uniform by default) from (seed, index)
    and returns a dict: "video" uint8 [T, H, W, 3], "caption" (descriptive), "caption_terse",
    "facts" (JSON string, `ClipFacts.from_json` reads it), "index", "num_frames", "height", "width".
    """

    def __init__(
        self,
        sizes: Sequence[tuple[int, int, int]] | tuple[int, int, int],
        seed: int = 0,
        options: WorldOptions | None = None,
        length: int = UNLIMITED_LENGTH,
        size_weights: Sequence[float] | None = None,
    ):
        self.sizes = _normalise_sizes(sizes)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
            raise ValueError(f"length must be a positive int, got {length!r}; the default is {UNLIMITED_LENGTH}.")
        self.seed = int(seed)
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

    def size_of(self, index: int) -> tuple[int, int, int]:
        """The (num_frames, height, width) record `index` will have, without rendering it."""
        if len(self.sizes) == 1:
            return self.sizes[0]
        rng = np.random.default_rng([self.seed, int(index), _SIZE_STREAM])
        return self.sizes[int(rng.choice(len(self.sizes), p=self.size_weights))]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"WorldSource index must be an int, got {type(index).__name__}.")
        if not 0 <= index < self.length:
            raise IndexError(f"WorldSource index {index} is outside [0, {self.length}).")
        num_frames, height, width = self.size_of(index)
        clip = generate_clip(self.seed, num_frames, height, width, self.options, index=int(index))
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

    def __repr__(self) -> str:
        # grain checkpoints a DataLoader by this string, so it must pin down every record.
        return (
            f"WorldSource(sizes={list(self.sizes)}, seed={self.seed}, length={self.length}, "
            f"size_weights={list(self.size_weights)}, options={self.options!r})"
        )
