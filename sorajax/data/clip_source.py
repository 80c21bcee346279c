"""What every clip source answers, the built-in world and a user's TFDS dataset alike.

Two questions: what is record i (size, frame rate, key) without decoding it, and what are its
frames at given indices (and its caption). Packing plans rows from `info` alone, so it never
decodes a clip it does not use. Sources hold only paths and plain values and open files lazily,
so grain can pickle them into worker processes.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class ClipInfo:
    num_frames: int
    height: int
    width: int
    fps: float
    key: str


class ClipSource(Protocol):
    def __len__(self) -> int: ...

    @property
    def fingerprint(self) -> str:
        """What identifies the records' content: a cache made from them stays valid while it is the same."""
        ...

    def info(self, index: int) -> ClipInfo: ...

    def caption(self, index: int) -> str: ...

    def frames(self, index: int, frame_indices: Sequence[int]) -> np.ndarray: ...
