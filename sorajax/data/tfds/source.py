"""A dataset built by `python -m sorajax.build_dataset` as a clip source (sorajax.data.clip_source).

Sizes, frame rates and captions come from `clip_index.json` (re-captioning rewrites it), so
planning reads no frames; frames are decoded from the array_record shards on first use, in
whichever process reads (grain workers included).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from sorajax.data.clip_source import ClipInfo
from sorajax.data.tfds.builder import CLIP_INDEX_FILE, SPLIT, find_dataset_dir, write_clip_index
from sorajax.data.tfds.media_files import decode_frames


class TfdsClipSource:
    """The records of one built dataset, by record index."""

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
                        self._index["fps"][i], self._index["key"][i])

    def caption(self, index: int) -> str:
        return self._index["caption"][int(index)]

    def record(self, index: int) -> dict:
        if self._records is None:
            import tensorflow_datasets as tfds

            self._records = tfds.builder_from_directory(str(self.dataset_dir)).as_data_source(SPLIT)
        return self._records[int(index)]

    def shard_name(self, index: int) -> str:
        """The array_record file holding record `index` (named when a record is damaged)."""
        import tensorflow_datasets as tfds

        split = tfds.builder_from_directory(str(self.dataset_dir)).info.splits[SPLIT]
        shard = int(np.searchsorted(np.cumsum(split.shard_lengths), int(index), side="right"))
        return str(self.dataset_dir / split.filenames[min(shard, len(split.filenames) - 1)])

    def frames(self, index: int, frame_indices: Sequence[int]) -> np.ndarray:
        record = self.record(index)
        return decode_frames(record["frames"], record["frame_offsets"], frame_indices)

    @property
    def fingerprint(self) -> str:
        """The dataset and its clip index's time: re-captioning rewrites the index, so caches go stale."""
        index = self.dataset_dir / CLIP_INDEX_FILE
        return f"{self.dataset_dir}@{index.stat().st_mtime_ns if index.exists() else 0}"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_records": None}

    def __repr__(self) -> str:
        return f"TfdsClipSource({str(self.dataset_dir)!r}, {len(self)} records)"
