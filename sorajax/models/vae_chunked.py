"""Encode and decode videos of any length in causal temporal chunks.

Every time-mixing layer of :class:`~sorajax.models.vae.CausalVAE` is causal and
takes a cache of the frames before, so a video can be processed a few frames
at a time with the cache carried from chunk to chunk. Memory then depends on
the chunk size, not the video length, and the result equals the whole-clip
encode/decode (the cache makes the two the same computation).

Chunks line up with latent frames: the first chunk is 1 frame (-> 1 latent
frame), every later chunk is ``f * chunk_latents`` frames (-> ``chunk_latents``
latent frames), with ``f`` the temporal factor (4 by default). The chunk step
functions are jitted once per chunk shape: one trace for the first chunk, one
for the steady state, and at most one more for a shorter final chunk.

Streaming versions take any iterable of frame (or latent) chunks of ANY sizes,
re-cut them into aligned chunks, and yield results as soon as they are ready.

With ``tile`` set, ``encode`` / ``decode`` also cut space: each overlapping tile of ``tile`` latent
pixels is coded through the time chunks on its own and the tiles are blended
(:func:`~sorajax.models.vae_tiling.code_tiled`), so the peak is one chunk of one tile whatever the
frame size. A tile that covers the frame is exactly the untiled result; smaller tiles are close to it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sorajax.models.vae import CausalVAE, denormalize_latents, normalize_latents
from sorajax.models.vae_layers import Array, Cache
from sorajax.models.vae_tiling import code_tiled


@functools.partial(jax.jit, static_argnums=0)
def _encode_step(vae: CausalVAE, variables: Mapping[str, Any], frames: Array, cache: Cache):
    return vae.apply(variables, frames, cache, method="encode_chunk")


@functools.partial(jax.jit, static_argnums=0)
def _decode_step(vae: CausalVAE, variables: Mapping[str, Any], latents: Array, cache: Cache):
    return vae.apply(variables, latents, cache, method="decode_chunk")


def _recut(chunks: Iterable[Array], first: int, size: int, what: str) -> Iterator[Array]:
    """Re-cut chunks along axis 1 into one chunk of ``first`` then chunks of ``size`` (last may be shorter).

    Holds at most one pending input chunk plus one output chunk, so memory stays bounded.
    """
    pending: list[Array] = []
    held = 0
    target = first
    for chunk in chunks:
        if np.ndim(chunk) != 5:
            raise ValueError(
                f"each {what} chunk must be [B, T, H, W, C] (5 dims), got shape {np.shape(chunk)}: "
                "add a batch axis with chunk[None]"
            )
        pending.append(chunk)
        held += chunk.shape[1]
        while held >= target:
            joined = pending[0] if len(pending) == 1 else jnp.concatenate(pending, axis=1)
            yield joined[:, :target]
            rest = joined[:, target:]
            pending = [rest] if rest.shape[1] else []
            held -= target
            target = size
    if pending:
        yield pending[0] if len(pending) == 1 else jnp.concatenate(pending, axis=1)


class ChunkedCodec:
    """Chunked / streaming encoder-decoder around a :class:`CausalVAE` and its variables.

    ``chunk_latents`` latent frames are produced (or consumed) per step after the
    first; larger chunks are faster per frame but use more memory. ``tile`` (latent pixels, None:
    whole frames) and ``tile_overlap`` (latent pixels shared by neighbouring tiles, None: a quarter
    of the tile) cut space as well in ``encode`` / ``decode``.
    """

    def __init__(self, vae: CausalVAE, variables: Mapping[str, Any], chunk_latents: int = 1,
                 tile: int | None = None, tile_overlap: int | None = None):
        if chunk_latents < 1:
            raise ValueError(f"chunk_latents must be >= 1, got {chunk_latents}")
        self.vae = vae
        self.variables = variables
        self.chunk_latents = chunk_latents
        self.config = vae.config
        self.tile, self.tile_overlap = checked_tile(tile, tile_overlap)

    @property
    def chunk_frames(self) -> int:
        """Frames per chunk after the first (the first chunk is one frame)."""
        return self.config.temporal_factor * self.chunk_latents

    # ---- streaming ---------------------------------------------------------------------------
    def stream_encode(self, frame_chunks: Iterable[Array]) -> Iterator[tuple[Array, Array]]:
        """Yield posterior ``(mean, logvar)`` chunks of a video given as frame chunks of any sizes.

        Yields 1 latent frame for the first frame, then ``chunk_latents`` per ``chunk_frames``
        frames. The total frame count must be ``1 + f*k``.
        """
        f = self.config.temporal_factor
        cache: Cache = None
        seen = 0
        for frames in _recut(frame_chunks, 1, self.chunk_frames, "video"):
            seen += frames.shape[1]
            if cache is not None and frames.shape[1] % f:
                self.config.validate_frames(seen)  # raises, naming the frame count and the fix
            mean, logvar, cache = _encode_step(self.vae, self.variables, frames, cache)
            yield mean, logvar
        if cache is None:
            raise ValueError("the video had no frames: pass at least one chunk with one frame")

    def stream_decode(self, latent_chunks: Iterable[Array]) -> Iterator[Array]:
        """Yield frame chunks decoded from latent chunks of any sizes (1 frame first, then ``chunk_frames``)."""
        cache: Cache = None
        for latents in _recut(latent_chunks, 1, self.chunk_latents, "latent"):
            frames, cache = _decode_step(self.vae, self.variables, latents, cache)
            yield frames
        if cache is None:
            raise ValueError("no latent frames were given: pass at least one chunk with one latent frame")

    def stream_encode_normalized(self, frame_chunks: Iterable[Array]) -> Iterator[Array]:
        """Like :meth:`stream_encode`, yielding posterior means normalised by the stored latent stats."""
        stats = self._stats()
        for mean, _ in self.stream_encode(frame_chunks):
            yield normalize_latents(mean, stats)

    def stream_decode_normalized(self, latent_chunks: Iterable[Array]) -> Iterator[Array]:
        """Like :meth:`stream_decode` for latents normalised by the stored latent stats."""
        stats = self._stats()
        return self.stream_decode(denormalize_latents(z, stats) for z in latent_chunks)

    # ---- whole arrays, computed chunk by chunk ---------------------------------------------
    def encode(self, video: Array) -> tuple[Array, Array]:
        """Same as ``vae.apply(variables, video, method=CausalVAE.encode)``, chunk by chunk (and tile by tile)."""
        self._check_video(video)
        if self.tile is None:
            return self._encode_whole_frames(video)
        side = self.config.spatial_factor
        both = code_tiled(lambda x: jnp.concatenate(self._encode_whole_frames(x), axis=-1), np.asarray(video),
                          self.tile * side, self.tile_overlap * side, 1 / side)
        mean, logvar = np.split(both, 2, axis=-1)
        return jnp.asarray(mean), jnp.asarray(logvar)

    def decode(self, latents: Array) -> Array:
        """Same as ``vae.apply(variables, latents, method=CausalVAE.decode)``, chunk by chunk (and tile by tile)."""
        if self.tile is None:
            return self._decode_whole_frames(latents)
        pixels = code_tiled(self._decode_whole_frames, np.asarray(latents), self.tile, self.tile_overlap,
                            self.config.spatial_factor)
        return jnp.asarray(pixels)

    def _encode_whole_frames(self, video: Array) -> tuple[Array, Array]:
        means, logvars = zip(*self.stream_encode(self._split(video, 1, self.chunk_frames)))
        return jnp.concatenate(means, axis=1), jnp.concatenate(logvars, axis=1)

    def _decode_whole_frames(self, latents: Array) -> Array:
        return jnp.concatenate(list(self.stream_decode(self._split(latents, 1, self.chunk_latents))), axis=1)

    def encode_normalized(self, video: Array) -> Array:
        return normalize_latents(self.encode(video)[0], self._stats())

    def decode_normalized(self, latents: Array) -> Array:
        return self.decode(denormalize_latents(latents, self._stats()))

    # ---- helpers -------------------------------------------------------------------------------
    def _check_video(self, video: Array) -> None:
        if np.ndim(video) != 5:
            raise ValueError(
                f"video must be [B, T, H, W, 3] (5 dims), got shape {np.shape(video)}: add a batch axis with video[None]"
            )
        self.config.validate_video_shape(*video.shape[1:4])

    @staticmethod
    def _split(x: Array, first: int, size: int) -> Iterator[Array]:
        yield x[:, :first]
        for start in range(first, x.shape[1], size):
            yield x[:, start : start + size]

    def _stats(self) -> dict[str, Array]:
        if "latent_stats" not in self.variables:
            raise ValueError(
                "variables have no 'latent_stats' collection: pass the full variables from vae.init "
                "(or add stats with with_latent_stats(variables, compute_latent_stats(latents)))"
            )
        return self.variables["latent_stats"]


def checked_tile(tile: int | None, overlap: int | None) -> tuple[int | None, int]:
    """``(tile, overlap)`` in latent pixels, the overlap defaulting to a quarter of the tile; a one-line error if unusable."""
    if tile is None:
        return None, 0
    overlap = tile // 4 if overlap is None else overlap
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"tile {tile} with overlap {overlap} latent pixels cannot cover a frame: use a tile >= 1 "
                         "and an overlap in [0, tile), e.g. --tile=32 --tile_overlap=8 (None: whole frames)")
    return tile, overlap


def encode_chunked(vae: CausalVAE, variables: Mapping[str, Any], video: Array, chunk_latents: int = 1):
    """Posterior ``(mean, logvar)`` of ``video``, computed in causal chunks (equals whole-clip encode)."""
    return ChunkedCodec(vae, variables, chunk_latents).encode(video)


def decode_chunked(vae: CausalVAE, variables: Mapping[str, Any], latents: Array, chunk_latents: int = 1) -> Array:
    """Pixels decoded from ``latents`` in causal chunks (equals whole-clip decode)."""
    return ChunkedCodec(vae, variables, chunk_latents).decode(latents)


def stream_encode(
    vae: CausalVAE, variables: Mapping[str, Any], frame_chunks: Iterable[Array], chunk_latents: int = 1
) -> Iterator[tuple[Array, Array]]:
    """Generator form of :func:`encode_chunked` for videos too long to hold in memory."""
    return ChunkedCodec(vae, variables, chunk_latents).stream_encode(frame_chunks)


def stream_decode(
    vae: CausalVAE, variables: Mapping[str, Any], latent_chunks: Iterable[Array], chunk_latents: int = 1
) -> Iterator[Array]:
    """Generator form of :func:`decode_chunked`: yields frame chunks."""
    return ChunkedCodec(vae, variables, chunk_latents).stream_decode(latent_chunks)
