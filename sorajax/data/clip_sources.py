"""Random-access clip sources the pipeline reads: a built TFDS dataset, or the built-in world.

Both answer the same two questions: what is record i (size, fps, caption) without decoding it,
and what are its frames at given indices. Sources hold only paths and plain values and open
files lazily, so grain can pickle them into worker processes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from sorajax.data.media_files import decode_frames
from sorajax.data.tfds_builder import CLIP_INDEX_FILE, SPLIT, find_dataset_dir, write_clip_index
from sorajax.data.world import generate_clip
from sorajax.data.world_options import WorldOptions
from sorajax.data.world_source import WorldSource

WORLD_FPS = 8.0  # the rate world clips are written at (sorajax.generate's default)


@dataclasses.dataclass(frozen=True)
class ClipInfo:
    num_frames: int
    height: int
    width: int
    fps: float
    caption: str
    key: str


class ClipSource(Protocol):
    def __len__(self) -> int: ...

    def info(self, index: int) -> ClipInfo: ...

    def frames(self, index: int, frame_indices: Sequence[int]) -> np.ndarray: ...


class TfdsClipSource:
    """A `sorajax.data.build` dataset. Captions come from `clip_index.json`, which re-captioning updates."""

    def __init__(self, data_dir: str | Path):
        self.dataset_dir = find_dataset_dir(data_dir)
        index_path = self.dataset_dir / CLIP_INDEX_FILE
        index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.is_file() else write_clip_index(self.dataset_dir)
        self._index = {k: list(v) for k, v in index.items()}
        if not self._index["key"]:
            raise ValueError(f"dataset {self.dataset_dir} has no records; rebuild it from a folder with usable files")
        self._records = None

    def __len__(self) -> int:
        return len(self._index["key"])

    def info(self, index: int) -> ClipInfo:
        i = int(index)
        return ClipInfo(self._index["num_frames"][i], self._index["height"][i], self._index["width"][i],
                        self._index["fps"][i], self._index["caption"][i], self._index["key"][i])

    def record(self, index: int) -> dict:
        if self._records is None:  # opened on first use, in whichever process reads
            import tensorflow_datasets as tfds

            self._records = tfds.builder_from_directory(str(self.dataset_dir)).as_data_source(SPLIT)
        return self._records[int(index)]

    def frames(self, index: int, frame_indices: Sequence[int]) -> np.ndarray:
        record = self.record(index)
        return decode_frames(record["frames"], record["frame_offsets"], frame_indices)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_records": None}

    def __repr__(self) -> str:
        return f"TfdsClipSource({str(self.dataset_dir)!r}, {len(self)} records)"


class WorldClipSource:
    """The built-in world as a finite clip source (`length` records of `WorldSource`'s sizes)."""

    def __init__(self, sizes: Sequence[Sequence[int]], length: int, seed: int = 0, options: WorldOptions | None = None):
        self._world = WorldSource([tuple(s) for s in sizes], seed=seed, options=options, length=length)

    def __len__(self) -> int:
        return len(self._world)

    @functools.lru_cache(maxsize=64)
    def _clip(self, index: int):
        num_frames, height, width = self._world.size_of(index)
        return generate_clip(self._world.seed, num_frames, height, width, self._world.options, index=index)

    def info(self, index: int) -> ClipInfo:
        num_frames, height, width = self._world.size_of(int(index))
        caption = self._clip(int(index)).caption
        return ClipInfo(num_frames, height, width, WORLD_FPS if num_frames > 1 else 0.0, caption, f"world/{index}")

    def frames(self, index: int, frame_indices: Sequence[int]) -> np.ndarray:
        return self._clip(int(index)).video[list(frame_indices)]

    def __repr__(self) -> str:
        return f"WorldClipSource({self._world!r})"
