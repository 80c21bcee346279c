"""Where a clip of native size lands in training: its pixel size, crop and which frames are kept.

Why a pure module: the packing planner must know every clip's token count BEFORE decoding it,
so size and frame choice are functions of the stored metadata (size, fps, frame count) and
(seed, record index) only. The decoder then applies exactly the same plan.

- Space, framing 'native' (the report's choice): scale the clip to about `pixel_budget` pixels
  keeping its aspect ratio, never upscaling unless asked, and snap each side to a multiple of
  `size_multiple` (the autoencoder's spatial factor x the patch size) by scaling to COVER the
  snapped size and centre-cropping the few leftover pixels, so objects are never stretched.
- Space, framing 'square' (the ablation baseline): centre-crop the largest square, scale it
  to the side that fits the budget.
- Time: resample to `target_fps` (None keeps the native rate; no frame is ever repeated to
  raise the rate), then keep 1 + 4k frames: the most allowed by `max_frames` / `frame_counts`
  and the clip's length, starting at a seeded random offset.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from PIL import Image

FRAMINGS = ("native", "square")


@dataclasses.dataclass(frozen=True)
class SizingConfig:
    pixel_budget: int = 256 * 256
    size_multiple: int = 16
    framing: str = "native"
    allow_upscale: bool = False
    max_frames: int = 17
    frame_counts: tuple[int, ...] = ()  # allowed frame counts (each 1 + k*temporal_factor); () = any
    target_fps: float | None = None
    temporal_factor: int = 4

    def __post_init__(self) -> None:
        if self.framing not in FRAMINGS:
            raise ValueError(f"framing {self.framing!r} is unknown; use 'native' (any aspect) or 'square' (centre crop)")
        if self.size_multiple < 1 or self.pixel_budget < self.size_multiple**2:
            raise ValueError(
                f"pixel_budget={self.pixel_budget} must hold at least one {self.size_multiple}x{self.size_multiple} "
                f"block; raise pixel_budget or lower size_multiple"
            )
        for n in (self.max_frames, *self.frame_counts):
            if n < 1 or (n - 1) % self.temporal_factor:
                raise ValueError(
                    f"frame count {n} is not 1 + {self.temporal_factor}k; the autoencoder needs e.g. 1, 5, 9, 17"
                )
        if self.target_fps is not None and not self.target_fps > 0:
            raise ValueError(f"target_fps must be positive or None (keep native), got {self.target_fps}")


@dataclasses.dataclass(frozen=True)
class ClipPlan:
    """How record `index` becomes a training clip: frames to decode, crop box, output size."""

    index: int
    frame_indices: tuple[int, ...]
    crop: tuple[int, int, int, int]  # (top, left, height, width) in native pixels, cut before resizing
    height: int
    width: int

    @property
    def num_frames(self) -> int:
        return len(self.frame_indices)


def _snap(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def native_size(height: int, width: int, cfg: SizingConfig) -> tuple[int, int]:
    """Output (H, W): about `pixel_budget` pixels, aspect kept, sides multiples of `size_multiple`."""
    m = cfg.size_multiple
    scale = math.sqrt(cfg.pixel_budget / (height * width))
    if not cfg.allow_upscale:
        scale = min(scale, 1.0)
    out_h, out_w = _snap(height * scale, m), _snap(width * scale, m)
    while out_h * out_w > cfg.pixel_budget and max(out_h, out_w) > m:  # rounding up may overshoot
        if out_h / height >= out_w / width and out_h > m:
            out_h -= m
        else:
            out_w -= m
    if not cfg.allow_upscale:  # never upscale past native because of rounding either
        out_h = min(out_h, max(m, height // m * m))
        out_w = min(out_w, max(m, width // m * m))
    return out_h, out_w


def _cover_crop(height: int, width: int, out_h: int, out_w: int) -> tuple[int, int, int, int]:
    """Largest centred box of aspect out_h:out_w inside the frame (scaling it gives no stretch)."""
    if height * out_w > width * out_h:  # frame is relatively taller: trim top and bottom
        crop_w, crop_h = width, min(height, round(width * out_h / out_w))
    else:
        crop_h, crop_w = height, min(width, round(height * out_w / out_h))
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def spatial_plan(height: int, width: int, cfg: SizingConfig) -> tuple[tuple[int, int, int, int], int, int]:
    """(crop box, out_h, out_w) for a native `height x width` frame under `cfg.framing`."""
    if cfg.framing == "square":
        side = min(height, width)
        limit = side if not cfg.allow_upscale else math.inf
        out = max(cfg.size_multiple, int(min(math.sqrt(cfg.pixel_budget), limit)) // cfg.size_multiple * cfg.size_multiple)
        return ((height - side) // 2, (width - side) // 2, side, side), out, out
    out_h, out_w = native_size(height, width, cfg)
    return _cover_crop(height, width, out_h, out_w), out_h, out_w


def frame_count(available: int, cfg: SizingConfig) -> int:
    """The most frames allowed: 1 + k*temporal_factor, <= available and max_frames (and in frame_counts)."""
    cap = min(available, cfg.max_frames)
    if cfg.frame_counts:
        fitting = [n for n in cfg.frame_counts if n <= cap]
        if fitting:
            return max(fitting)
    return 1 + (cap - 1) // cfg.temporal_factor * cfg.temporal_factor


def temporal_plan(num_frames: int, fps: float, cfg: SizingConfig, rng: np.random.Generator) -> tuple[int, ...]:
    """Source frame indices of the kept frames, evenly spaced at the target rate from a random start."""
    step = 1.0
    if cfg.target_fps is not None and fps > 0:
        step = max(fps / cfg.target_fps, 1.0)
    available = int((num_frames - 1) // step) + 1
    count = frame_count(available, cfg)
    span = (count - 1) * step
    start = float(rng.uniform(0.0, num_frames - 1 - span)) if num_frames - 1 - span > 0 else 0.0
    indices = np.minimum(np.round(start + step * np.arange(count)).astype(int), num_frames - 1)
    return tuple(int(i) for i in indices)


def plan_clip(index: int, num_frames: int, height: int, width: int, fps: float, cfg: SizingConfig,
              seed: int) -> ClipPlan:
    """The full plan of record `index`, deterministic in (seed, index)."""
    rng = np.random.default_rng([seed, index, 29])
    crop, out_h, out_w = spatial_plan(height, width, cfg)
    return ClipPlan(index, temporal_plan(num_frames, fps, cfg, rng), crop, out_h, out_w)


def apply_plan(frames: np.ndarray, plan: ClipPlan) -> np.ndarray:
    """Decoded frames (already the plan's frame indices) uint8 [T, H, W, 3] -> cropped, resized uint8."""
    top, left, crop_h, crop_w = plan.crop
    if frames.shape[1:3] == (crop_h, crop_w) == (plan.height, plan.width):  # a whole clip at its size
        return frames
    out = []
    for frame in frames:
        image = Image.fromarray(np.ascontiguousarray(frame[top : top + crop_h, left : left + crop_w]))
        if image.size != (plan.width, plan.height):
            image = image.resize((plan.width, plan.height), Image.Resampling.BICUBIC, reducing_gap=3.0)
        out.append(np.asarray(image))
    return np.stack(out)


def latent_token_count(plan: ClipPlan, spatial_factor: int, temporal_factor: int, patch: Sequence[int]) -> int:
    """Tokens the clip will have after the autoencoder and patching (time padded up to pt)."""
    pt, ph, pw = patch
    t = 1 + (plan.num_frames - 1) // temporal_factor
    return -(-t // pt) * (plan.height // spatial_factor // ph) * (plan.width // spatial_factor // pw)
