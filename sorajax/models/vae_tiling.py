"""Coding a video in overlapping spatial tiles, blended, so large frames fit one accelerator's memory.

A 720p clip's decoder activations grow with height x width; decoding latent tiles of a fixed size
bounds them whatever the frame size. Each tile is coded on its own (with the autoencoder's own
chunking in time), and overlapping tiles are blended with linear ramps across the overlap, so no seam
shows. The autoencoder's receptive field is wider than the overlap, so a tiled result is close to, not
equal to, the untiled one (the error is measured in tests and docs); a tile as large as the frame gives
exactly the untiled result. Works for any coder given as a function: ``WanVAE`` and ``CausalVAE`` alike.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Coder = Callable[[np.ndarray], np.ndarray]  # [B, T, H, W, C] -> [B, T', H', W', C']


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Starts of tiles of length ``tile`` covering ``size`` with at least ``overlap`` shared; the last ends at ``size``."""
    if tile >= size:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap {overlap} must be >= 0 and smaller than the tile {tile}")
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def _ramp(start: int, length: int, size: int, overlap: int) -> np.ndarray:
    """Blend weights of one tile along one axis: rising over the overlap with the previous tile, falling before the next."""
    weights = np.ones(length, np.float32)
    ramp = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap if overlap else np.zeros(0, np.float32)
    if start > 0:
        weights[:overlap] = np.minimum(weights[:overlap], ramp)
    if start + length < size:
        weights[length - overlap:] = np.minimum(weights[length - overlap:], ramp[::-1])
    return weights


def code_tiled(code: Coder, x: np.ndarray, tile: int, overlap: int, scale: float) -> np.ndarray:
    """``code`` over spatial tiles of ``x`` [B, T, H, W, C] (``tile``, ``overlap`` in x's pixels), blended.

    ``scale`` is output size over input size in space (8 or 16 for a decoder, 1/8 or 1/16 for an encoder);
    tile and overlap must map to whole output pixels.
    """
    height, width = x.shape[2:4]
    if tile * scale != int(tile * scale) or overlap * scale != int(overlap * scale):
        raise ValueError(f"tile {tile} and overlap {overlap} must map to whole pixels at scale {scale}: "
                         f"use multiples of {int(round(1 / scale)) if scale < 1 else 1}")
    out = weight = None
    for top in tile_starts(height, tile, overlap):
        for left in tile_starts(width, tile, overlap):
            piece = np.asarray(code(x[:, :, top:top + tile, left:left + tile]), np.float32)
            if out is None:
                shape = (*piece.shape[:2], int(height * scale), int(width * scale), piece.shape[-1])
                out, weight = np.zeros(shape, np.float32), np.zeros(shape[2:4], np.float32)
            ot, ol, oh, ow = int(top * scale), int(left * scale), piece.shape[2], piece.shape[3]
            w = np.outer(_ramp(ot, oh, out.shape[2], int(overlap * scale)),
                         _ramp(ol, ow, out.shape[3], int(overlap * scale)))
            out[:, :, ot:ot + oh, ol:ol + ow] += piece * w[None, None, :, :, None]
            weight[ot:ot + oh, ol:ol + ow] += w
    return out / weight[None, None, :, :, None]
