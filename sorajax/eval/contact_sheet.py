"""Contact sheets: many clips in one PNG, a row per clip, a few frames per row.

Clips may differ in size (native aspect ratios): each cell is centred on a
neutral grey canvas as large as the biggest frame, so nothing is cropped or
stretched.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

_GAP = 2
_CANVAS = 40  # dark grey, distinct from the world's background colours.


def pick_frames(num_frames: int, count: int) -> list[int]:
    """`count` frame indices spread evenly from the first to the last frame."""
    if num_frames <= count:
        return list(range(num_frames))
    return [int(round(i * (num_frames - 1) / (count - 1))) for i in range(count)] if count > 1 else [0]


def contact_sheet(clips: Sequence[np.ndarray], frames_per_row: int = 6) -> np.ndarray:
    """uint8 image [rows*H', cols*W', 3] from uint8 clips [T, H, W, 3] of any sizes."""
    if not clips:
        raise ValueError("contact_sheet needs at least one clip")
    for clip in clips:
        if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
            raise ValueError(f"clips must be uint8 [T, H, W, 3]; got {clip.dtype} {clip.shape}")
    cell_h = max(c.shape[1] for c in clips)
    cell_w = max(c.shape[2] for c in clips)
    cols = min(frames_per_row, max(c.shape[0] for c in clips))
    sheet = np.full((len(clips) * (cell_h + _GAP) - _GAP, cols * (cell_w + _GAP) - _GAP, 3), _CANVAS, np.uint8)
    for row, clip in enumerate(clips):
        _, h, w, _ = clip.shape
        for col, t in enumerate(pick_frames(clip.shape[0], cols)):
            top = row * (cell_h + _GAP) + (cell_h - h) // 2
            left = col * (cell_w + _GAP) + (cell_w - w) // 2
            sheet[top : top + h, left : left + w] = clip[t]
    return sheet
