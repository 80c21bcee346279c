"""Rasteriser for the procedural world: signed distances, antialiased coverage, front-to-back compositing.

Every shape is a signed distance function (negative inside) evaluated in pixels, and its coverage
of a pixel is `clip(0.5 - d, 0, 1)`: a one-pixel ramp that antialiases edges even for tiny objects.
The occluder (an axis-aligned wall) uses its exact box-filter coverage.

Layers are composited front to back: the wall first, then objects in list order (object 0, the
main object, is in front), background last. Walking that order keeps a per-pixel "still
transparent" map, which is exactly what visibility needs: the visible part of an object is its
coverage times what is still transparent when it is reached.

Work is vectorised over frames and pixels; frames are processed in chunks of about 1M pixels and
each object only over the box it can touch, so memory stays flat for long or large clips.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from einops import rearrange

# Shape geometry in units of the object's radius r:
# (left, right, up, down) half-extents measured from the position point, and area / r**2.
# The position point is the area centroid, so a pixel-mask centroid lands on it.
_SQUARE_HALF = 0.9
_DIAMOND_RADIUS = 1.2  # |x| + |y| <= 1.2 r
_TRIANGLE_CIRCUMRADIUS = 1.35  # equilateral, apex up
_CROSS_ARM, _CROSS_HALF_WIDTH = 1.0, 0.35
_SQRT3 = math.sqrt(3.0)

SHAPE_EXTENTS: dict[str, tuple[float, float, float, float]] = {
    "circle": (1.0, 1.0, 1.0, 1.0),
    "square": (_SQUARE_HALF,) * 4,
    "diamond": (_DIAMOND_RADIUS,) * 4,
    "triangle": (
        _TRIANGLE_CIRCUMRADIUS * _SQRT3 / 2,
        _TRIANGLE_CIRCUMRADIUS * _SQRT3 / 2,
        _TRIANGLE_CIRCUMRADIUS,
        _TRIANGLE_CIRCUMRADIUS / 2,
    ),
    "cross": (_CROSS_ARM,) * 4,
}

SHAPE_AREAS: dict[str, float] = {
    "circle": math.pi,
    "square": (2 * _SQUARE_HALF) ** 2,
    "diamond": 2 * _DIAMOND_RADIUS**2,
    "triangle": 3 * _SQRT3 / 4 * _TRIANGLE_CIRCUMRADIUS**2,
    "cross": 8 * _CROSS_ARM * _CROSS_HALF_WIDTH - 4 * _CROSS_HALF_WIDTH**2,
}

_MAX_CHUNK_PIXELS = 1 << 20


def _box_distance(dx: np.ndarray, dy: np.ndarray, half_x: float, half_y: float) -> np.ndarray:
    qx = np.abs(dx) - half_x
    qy = np.abs(dy) - half_y
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    return outside + np.minimum(np.maximum(qx, qy), 0.0)


def shape_distance(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Signed distance (pixels, negative inside) from offsets to the shape's centroid."""
    if shape == "circle":
        return np.hypot(dx, dy) - radius
    if shape == "square":
        return _box_distance(dx, dy, _SQUARE_HALF * radius, _SQUARE_HALF * radius)
    if shape == "diamond":
        return (np.abs(dx) + np.abs(dy) - _DIAMOND_RADIUS * radius) / math.sqrt(2.0)
    if shape == "triangle":
        # Max over the three edge half-planes; each edge sits at the inradius (R / 2).
        big_r = _TRIANGLE_CIRCUMRADIUS * radius
        slanted = (_SQRT3 / 2) * np.abs(dx) - 0.5 * dy
        return np.maximum(slanted, dy) - big_r / 2
    if shape == "cross":
        arm, half_width = _CROSS_ARM * radius, _CROSS_HALF_WIDTH * radius
        return np.minimum(_box_distance(dx, dy, arm, half_width), _box_distance(dx, dy, half_width, arm))
    raise ValueError(f"Unknown shape {shape!r}; choose from {sorted(SHAPE_EXTENTS)}.")


@dataclasses.dataclass(frozen=True)
class RenderObject:
    """One object to draw: its track in image units (short-side units, y down)."""

    shape: str
    radius: float  # units
    rgb: tuple[int, int, int]
    centres: np.ndarray  # [T, 2] image units


@dataclasses.dataclass(frozen=True)
class RenderOccluder:
    rgb: tuple[int, int, int]
    rects: np.ndarray  # [T, 4] (x0, y0, x1, y1) image units


@dataclasses.dataclass(frozen=True)
class RenderedClip:
    """Frames plus per-object pixel sums ([num_objects, T]) measured while compositing."""

    frames: np.ndarray  # uint8 [T, H, W, 3]
    coverage: np.ndarray  # summed coverage of each object inside the frame, pixels
    visible: np.ndarray  # summed coverage that reaches the viewer, pixels
    behind_occluder: np.ndarray  # summed coverage hidden by the wall, pixels


def _interval_overlap(lo: np.ndarray, hi: np.ndarray, size: int) -> np.ndarray:
    """[t, size] overlap of pixel cells [j, j+1] with intervals [lo, hi] (pixels)."""
    cells = np.arange(size, dtype=np.float32)
    return np.clip(
        np.minimum(cells[None] + 1.0, hi[:, None]) - np.maximum(cells[None], lo[:, None]), 0.0, 1.0
    )


def _texture(
    strength: float, waves: np.ndarray, camera_x: np.ndarray, height: int, width: int
) -> np.ndarray | None:
    """[t, H, W] faint plane waves anchored to the world (they slide with a camera pan), or None."""
    if strength <= 0.0 or len(waves) == 0:
        return None
    unit = float(min(height, width))
    xs = (np.arange(width, dtype=np.float32) + 0.5) / unit
    ys = (np.arange(height, dtype=np.float32) + 0.5) / unit
    kx, ky, phase = (np.asarray(waves[:, i], np.float32) for i in range(3))
    # sin(a + b) = sin a cos b + cos a sin b: a rank-2K product per frame instead of per-pixel trig.
    a = kx[None, None, :] * (xs[None, :, None] + camera_x[:, None, None]) + phase  # [t, W, K]
    b = ky[None, :] * ys[:, None]  # [H, K]
    along_x = np.concatenate([np.sin(a), np.cos(a)], axis=-1) * (strength / len(waves))  # [t, W, 2K]
    along_y = np.concatenate([np.cos(b), np.sin(b)], axis=-1)  # [H, 2K]
    return np.matmul(along_y[None], rearrange(along_x, "t w k -> t k w"))  # [t, H, W]


def render(
    height: int,
    width: int,
    background_rgb: tuple[int, int, int],
    objects: list[RenderObject],
    occluder: RenderOccluder | None,
    camera_x: np.ndarray,
    texture_strength: float = 0.0,
    texture_waves: np.ndarray | None = None,
) -> RenderedClip:
    """Draw a clip. `objects` are front to back; `camera_x` [T] shifts the background texture."""
    num_frames = camera_x.shape[0]
    unit = float(min(height, width))
    waves = np.zeros((0, 3), np.float32) if texture_waves is None else np.asarray(texture_waves)
    bg = np.asarray(background_rgb, np.float32)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    stats = np.zeros((3, len(objects), num_frames), np.float64)
    chunk = max(1, _MAX_CHUNK_PIXELS // (height * width))
    xs = np.arange(width, dtype=np.float32) + 0.5
    ys = np.arange(height, dtype=np.float32) + 0.5
    for start in range(0, num_frames, chunk):
        stop = min(start + chunk, num_frames)
        t = stop - start
        # Channel-first while compositing: whole-plane ops instead of a slow size-3 inner axis.
        colour = np.zeros((3, t, height, width), np.float32)
        if occluder is not None:
            rects = occluder.rects[start:stop].astype(np.float32) * unit
            wall = _interval_overlap(rects[:, 1], rects[:, 3], height)[:, :, None] * _interval_overlap(
                rects[:, 0], rects[:, 2], width
            )[:, None, :]
            for c in range(3):
                colour[c] += wall * float(occluder.rgb[c])
            clear = 1.0 - wall
        else:
            wall = np.zeros((t, height, width), np.float32)
            clear = np.ones((t, height, width), np.float32)
        for k, obj in enumerate(objects):
            centres = obj.centres[start:stop].astype(np.float32) * unit  # [t, 2] pixels
            radius = obj.radius * unit
            left, right, up, down = (e * radius + 1.0 for e in SHAPE_EXTENTS[obj.shape])
            x0 = int(np.clip(np.floor(centres[:, 0].min() - left), 0, width))
            x1 = int(np.clip(np.ceil(centres[:, 0].max() + right), 0, width))
            y0 = int(np.clip(np.floor(centres[:, 1].min() - up), 0, height))
            y1 = int(np.clip(np.ceil(centres[:, 1].max() + down), 0, height))
            if x0 >= x1 or y0 >= y1:
                continue
            dx = xs[None, None, x0:x1] - centres[:, 0, None, None]
            dy = ys[None, y0:y1, None] - centres[:, 1, None, None]
            cover = np.clip(0.5 - shape_distance(obj.shape, dx, dy, radius), 0.0, 1.0)
            window = (slice(None), slice(y0, y1), slice(x0, x1))
            seen = cover * clear[window]
            for c in range(3):
                colour[c][window] += seen * float(obj.rgb[c])
            clear[window] *= 1.0 - cover
            stats[0, k, start:stop] = cover.sum(axis=(1, 2))
            stats[1, k, start:stop] = seen.sum(axis=(1, 2))
            stats[2, k, start:stop] = (cover * wall[window]).sum(axis=(1, 2))
        texture = _texture(texture_strength, waves, camera_x[start:stop].astype(np.float32), height, width)
        seen_texture = None if texture is None else clear * (texture * 255.0)
        for c in range(3):
            colour[c] += clear * bg[c]
            if seen_texture is not None:
                colour[c] += seen_texture
        colour += 0.5  # round half up when truncating to uint8 below
        rounded = np.clip(colour, 0.0, 255.0, out=colour).astype(np.uint8)
        frames[start:stop] = rearrange(rounded, "c t h w -> t h w c")
    return RenderedClip(frames=frames, coverage=stats[0], visible=stats[1], behind_occluder=stats[2])
