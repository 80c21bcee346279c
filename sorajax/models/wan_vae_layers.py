"""Wan's autoencoder layers that differ from sorajax's own (``vae_layers.py``).

Why separate layers and not switches on sorajax's: the causal 3D convolution with its cache of the
last two input frames is the same computation, and is reused as is (``CausalConv3d``). The rest is
not, and mixing it into sorajax's blocks would put a Wan branch in nearly every one of them:

* the norm is an L2 normalisation over each pixel's channels times ``sqrt(C)`` (sorajax's per-pixel
  RMS norm has an epsilon inside the root: 1e-5 off);
* spatial downsampling pads right/bottom only, then a stride-2 3x3 conv (sorajax pads both sides);
* temporal resampling lets the video's first frame BYPASS its time convolution (sorajax sends it
  through with a zero past), and the upsampling's time convolution sees a zero in frame 0's slot;
* 2.2's level shortcuts (space/time-to-channel means, channel repeats + depth-to-space) and pixel
  patchify with Wan's channel order (c, pw, ph).

Every block keeps sorajax's chunk contract: ``y, new_cache = block(x, cache)``, ``cache=None`` at the
video's start, and a whole clip gives the same result as its chunks fed one after another. Kernels
are 5D ``[kt, kh, kw, c_in, c_out]`` (1x1x1 convs are dense ``[c_in, c_out]``), so the autoencoder's
rank-based logical axis names (``PARAM_AXES_BY_RANK``) apply unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange, reduce, repeat

from sorajax.models.vae_layers import (
    attend_within_frames,
    Array,
    Cache,
    CausalConv3d,
    _flat_lecun_normal,
    sub_cache,
)

Padding = tuple[tuple[int, int], tuple[int, int]]


class WanRMSNorm(nn.Module):
    """``x / max(|x|, 1e-12) * sqrt(C) * scale`` over each pixel's channels, in float32."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        channels = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
        x32 = x.astype(jnp.float32)
        norm = jnp.sqrt(jnp.sum(jnp.square(x32), axis=-1, keepdims=True))
        return (x32 / jnp.maximum(norm, 1e-12) * math.sqrt(channels) * scale).astype(x.dtype)


class FrameConv(nn.Module):
    """A convolution with no padding in time (the caller brings the past) and explicit spatial padding.

    Computed as a sum of per-tap 2D convolutions, like ``CausalConv3d`` (faster on XLA's CPU).
    Fewer input frames than the kernel give zero output frames (the first chunk of a strided conv).
    """

    features: int
    kernel: tuple[int, int, int]
    strides: tuple[int, int, int] = (1, 1, 1)
    padding: Padding = ((0, 0), (0, 0))
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kt = self.kernel[0]
        st = self.strides[0]
        shape = (*self.kernel, x.shape[-1], self.features)
        kernel = self.param("kernel", _flat_lecun_normal, shape, jnp.float32).astype(self.dtype)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(self.dtype)
        x = x.astype(self.dtype)
        out_frames = max((x.shape[1] - kt) // st + 1, 0)
        y = bias
        for tap in range(kt):
            frames = x[:, tap : tap + st * max(out_frames - 1, 0) + 1 : st][:, :out_frames]
            y = y + _frames_conv2d(frames, kernel[tap], self.strides[1:], self.padding)
        return y


def _frames_conv2d(x: Array, kernel: Array, strides: tuple[int, int], padding: Padding) -> Array:
    """One 2D convolution applied to every frame of ``[B, T, H, W, C]`` (T may be 0)."""
    batch, frames = x.shape[:2]
    flat = rearrange(x, "b t h w c -> (b t) h w c")
    if frames == 0:  # XLA needs a non-empty batch to infer the output size; slice it away after
        flat = jnp.zeros((1, *x.shape[2:]), x.dtype)
    y = jax.lax.conv_general_dilated(flat, kernel, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return rearrange(y[: batch * frames], "(b t) h w c -> b t h w c", b=batch, t=frames)


class WanResBlock(nn.Module):
    """norm, SiLU, causal 3x3x3 conv, norm, SiLU, causal conv; a 1x1x1 shortcut when channels change."""

    features: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, cache: Cache = None) -> tuple[Array, Cache]:
        h = nn.silu(WanRMSNorm(name="norm1")(x))
        h, cache1 = CausalConv3d(self.features, dtype=self.dtype, name="conv1")(h, sub_cache(cache, "conv1"))
        h = nn.silu(WanRMSNorm(name="norm2")(h))
        h, cache2 = CausalConv3d(self.features, dtype=self.dtype, name="conv2")(h, sub_cache(cache, "conv2"))
        skip = x.astype(self.dtype)
        if x.shape[-1] != self.features:
            skip = nn.Dense(self.features, dtype=self.dtype, param_dtype=jnp.float32, name="skip")(skip)
        return skip + h, {"conv1": cache1, "conv2": cache2}


class WanFrameAttention(nn.Module):
    """Single-head attention over each frame's pixels (Wan's norm first); per frame, so causal."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return attend_within_frames(x, WanRMSNorm(name="norm")(x), self.dtype)


class WanDownsample(nn.Module):
    """Halve space (pad right/bottom, 3x3 stride 2, per frame), then time if ``temporal``.

    Time: a (3, 1, 1) stride-2 conv over windows ``(y0, y1, y2), (y2, y3, y4), ...``; the video's
    first frame passes through unchanged. The cache is the last frame seen (the next window's first).
    """

    features: int
    temporal: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, cache: Cache = None) -> tuple[Array, Cache]:
        y = FrameConv(self.features, (1, 3, 3), (1, 2, 2), ((0, 1), (0, 1)), self.dtype, name="space_conv")(x)
        if not self.temporal:
            return y, None
        seq = y if cache is None else jnp.concatenate([cache.astype(y.dtype), y], axis=1)
        if seq.shape[1] % 2 == 0:
            raise ValueError(f"temporal downsampling got {y.shape[1]} frames: send 1 + 2k frames first, then 2k")
        out = FrameConv(self.features, (3, 1, 1), (2, 1, 1), dtype=self.dtype, name="time_conv")(seq)
        if cache is None:
            out = jnp.concatenate([y[:, :1], out], axis=1)
        return out, y[:, -1:]


class WanUpsample(nn.Module):
    """Double time if ``temporal``, then space (nearest x2, 3x3 conv per frame to ``features``).

    Time: a causal (3, 1, 1) conv makes 2C channels per frame, unfolded into two frames; the video's
    first frame bypasses it (one frame out) and its slot in the conv's past is zero. The cache holds
    the conv's last two input frames (with that zero).
    """

    features: int
    temporal: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, cache: Cache = None) -> tuple[Array, Cache]:
        h, new_cache = x, None
        if self.temporal:
            if cache is None:
                past = jnp.zeros((x.shape[0], 3, *x.shape[2:]), x.dtype)  # two frames of past, frame 0 zeroed
                seq = jnp.concatenate([past, x[:, 1:]], axis=1)
            else:
                seq = jnp.concatenate([cache.astype(x.dtype), x], axis=1)
            new_cache = seq[:, -2:]
            t = FrameConv(2 * x.shape[-1], (3, 1, 1), dtype=self.dtype, name="time_conv")(seq)
            t = rearrange(t, "b t h w (two c) -> b (t two) h w c", two=2)
            h = jnp.concatenate([x[:, :1].astype(t.dtype), t[:, 2:]], axis=1) if cache is None else t
        h = repeat(h, "b t h w c -> b t (h two_h) (w two_w) c", two_h=2, two_w=2)
        h = FrameConv(self.features, (1, 3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, name="space_conv")(h)
        return h, new_cache


# ---- Wan2.2's parameter-free level shortcuts and pixel patches ----------------------------------
def avg_down(x: Array, features: int, factor_t: int, factor_s: int) -> Array:
    """Space/time-to-channel (order c, t, h, w), then the mean over groups of consecutive channels.

    Time is zero-padded in front to a multiple of ``factor_t``: a video's first frame is averaged
    with a zero frame, later chunks (even lengths) are not padded, so chunks equal the whole clip.
    """
    pad = (factor_t - x.shape[1] % factor_t) % factor_t
    if pad:
        x = jnp.concatenate([jnp.zeros((x.shape[0], pad, *x.shape[2:]), x.dtype), x], axis=1)
    x = rearrange(x, "b (t ft) (h fh) (w fw) c -> b t h w (c ft fh fw)", ft=factor_t, fh=factor_s, fw=factor_s)
    return reduce(x, "b t h w (o g) -> b t h w o", "mean", o=features)


def dup_up(x: Array, features: int, factor_t: int, factor_s: int, starts_video: bool) -> Array:
    """Channel repeat, then channel-to-space/time (the inverse layout of :func:`avg_down`).

    At the video's start the first ``factor_t - 1`` frames are dropped (the first latent frame stands
    for one frame).
    """
    repeats = features * factor_t * factor_s * factor_s // x.shape[-1]
    x = repeat(x, "b t h w c -> b t h w (c r)", r=repeats)
    x = rearrange(x, "b t h w (o ft fh fw) -> b (t ft) (h fh) (w fw) o", ft=factor_t, fh=factor_s, fw=factor_s)
    return x[:, factor_t - 1 :] if starts_video else x


def patchify(x: Array, patch: int) -> Array:
    """Fold ``patch x patch`` pixels into channels in Wan's order (c, pw, ph)."""
    return rearrange(x, "b t (h ph) (w pw) c -> b t h w (c pw ph)", ph=patch, pw=patch)


def unpatchify(x: Array, patch: int) -> Array:
    """Inverse of :func:`patchify`."""
    return rearrange(x, "b t h w (c pw ph) -> b t (h ph) (w pw) c", ph=patch, pw=patch)
