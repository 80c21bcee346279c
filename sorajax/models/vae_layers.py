"""Building blocks of the causal video autoencoder.

Every block that looks along time is *causal* and *chunkable*: it is called as
``y, new_cache = block(x, cache)`` where ``x`` is the next run of frames
``[B, T, H, W, C]`` and ``cache`` holds what the block must remember from the
frames before (for a causal convolution: its last ``kernel_t - 1`` input frames).

``cache=None`` means "this chunk starts the video". The past before the first
frame is zeros (the same as zero padding), so an image is simply a one-frame
video with a blank past, and calling a block on a whole clip is exactly the
same computation as calling it on the clip's first chunk and then feeding each
later chunk with the cache returned by the previous call.

Normalisation is per frame (GroupNorm over one frame's H, W and channel group,
never across time); statistics pooled over time would make a chunk's output
depend on frames in other chunks, and chunked output would drift from the
whole-clip output.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from einops import rearrange, reduce, repeat

Array = jax.Array
Cache = Any  # a pytree of arrays (nested dicts), or None at the start of a video


def sub_cache(cache: Cache, name: str) -> Cache:
    """The part of a composite block's cache that belongs to child ``name``."""
    return None if cache is None else cache[name]


class CausalConv3d(nn.Module):
    """3D convolution that sees only the current and past frames.

    Time is padded on the past side only, with the cached previous input frames
    (zeros at the start of the video). Space is zero-padded 'same'. With a
    temporal stride ``s`` the output windows are aligned to END at the last
    frame of the chunk, which makes ``1 + s*m`` frames map to ``1 + m``
    outputs for a whole clip (the first frame gets a window of its own) and
    ``s*m`` frames map to ``m`` outputs for any later chunk.
    """

    features: int
    kernel: tuple[int, int, int] = (3, 3, 3)
    strides: tuple[int, int, int] = (1, 1, 1)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, cache: Cache = None) -> tuple[Array, Cache]:
        kt, kh, kw = self.kernel
        st = self.strides[0]
        x = x.astype(self.dtype)
        new_cache = None
        if kt > 1:
            if cache is None:
                cache = jnp.zeros((x.shape[0], kt - 1, *x.shape[2:]), self.dtype)
            x = jnp.concatenate([cache.astype(self.dtype), x], axis=1)
            new_cache = x[:, x.shape[1] - (kt - 1):]
        if x.shape[1] < kt:
            raise ValueError(
                f"CausalConv3d got {x.shape[1]} frames (with cache) for a temporal kernel of {kt}: "
                "pass the cache returned by the previous chunk, or cache=None for the first chunk"
            )
        # Drop leading frames so the strided windows end exactly at the last frame.
        x = x[:, (x.shape[1] - kt) % st:]
        out_frames = (x.shape[1] - kt) // st + 1
        kernel = self.param("kernel", _flat_lecun_normal, (kt, kh, kw, x.shape[-1], self.features), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
        # A sum of per-tap 2D convolutions: the same maths as one 3D convolution, but
        # XLA's CPU 2D convolutions are several times faster than its 3D ones.
        y = bias.astype(self.dtype)
        for tap in range(kt):
            frames = x[:, tap : tap + st * (out_frames - 1) + 1 : st]
            y = y + _conv2d_per_frame(frames, kernel[tap].astype(self.dtype), self.strides[1:])
        return y, new_cache


def _flat_lecun_normal(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
    """LeCun-normal for a conv kernel, drawn as a ``[fan_in, fan_out]`` matrix and reshaped.

    The same distribution as ``lecun_normal()(key, shape)`` (fan-in is the product of all but the
    last axis either way), but XLA on CPU compiles the 5D draw ~25x slower than the 2D one.
    """
    fan_in = int(np.prod(shape[:-1]))
    return nn.initializers.lecun_normal()(key, (fan_in, shape[-1]), dtype).reshape(shape)


def _conv2d_per_frame(x: Array, kernel: Array, strides: tuple[int, int]) -> Array:
    """'Same'-padded 2D convolution applied to every frame of ``[B, T, H, W, C]``."""
    kh, kw = kernel.shape[:2]
    batch = x.shape[0]
    y = jax.lax.conv_general_dilated(
        rearrange(x, "b t h w c -> (b t) h w c"),
        kernel,
        window_strides=strides,
        padding=((kh // 2, kh // 2), (kw // 2, kw // 2)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return rearrange(y, "(b t) h w c -> b t h w c", b=batch)


class FrameGroupNorm(nn.Module):
    """Normalisation that never pools over time, so chunked coding stays exact.

    ``num_groups > 0``: GroupNorm over each frame's pixels and channel groups.
    ``num_groups == 0``: RMS norm over the channels of each pixel (no pooling over
    space either). ``num_groups < 0``: no normalisation (identity). Per-frame GroupNorm subtracts every group's frame mean, and with
    few channels per group that mean IS a flat background's colour; the per-pixel
    RMS norm keeps it, which small models on flat-coloured scenes need.
    Statistics are computed in float32 even when the network runs in bfloat16.
    """

    num_groups: int
    epsilon: float = 1e-6

    @nn.compact
    def __call__(self, x: Array) -> Array:
        if self.num_groups < 0:
            return x
        if self.num_groups == 0:
            x32 = x.astype(jnp.float32)
            scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), jnp.float32)
            rms = jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.epsilon)
            return (x32 * rms * scale).astype(x.dtype)
        batch = x.shape[0]
        frames = rearrange(x, "b t h w c -> (b t) h w c").astype(jnp.float32)
        normed = nn.GroupNorm(
            num_groups=self.num_groups, epsilon=self.epsilon, dtype=jnp.float32, name="norm"
        )(frames)
        return rearrange(normed, "(b t) h w c -> b t h w c", b=batch).astype(x.dtype)


class CausalResBlock(nn.Module):
    """Pre-norm residual block of two causal 3D convolutions."""

    features: int
    num_groups: int
    temporal_kernel: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array, cache: Cache = None) -> tuple[Array, Cache]:
        kernel = (self.temporal_kernel, 3, 3)
        h = nn.silu(FrameGroupNorm(self.num_groups, name="norm1")(x))
        h, cache1 = CausalConv3d(self.features, kernel, dtype=self.dtype, name="conv1")(
            h, sub_cache(cache, "conv1")
        )
        h = nn.silu(FrameGroupNorm(self.num_groups, name="norm2")(h))
        h, cache2 = CausalConv3d(self.features, kernel, dtype=self.dtype, name="conv2")(
            h, sub_cache(cache, "conv2")
        )
        skip = x.astype(self.dtype)
        if x.shape[-1] != self.features:
            skip = nn.Dense(self.features, dtype=self.dtype, param_dtype=jnp.float32, name="skip")(skip)
        return skip + h, {"conv1": cache1, "conv2": cache2}


def attend_within_frames(x: Array, normed: Array, dtype: Any) -> Array:
    """``x`` plus single-head attention among each frame's pixels of ``normed`` (never across time, so
    the autoencoder stays causal). Call inside a compact module: it adds that module's 'qkv' and 'out'."""
    batch, _, height, width, channels = x.shape
    qkv = nn.Dense(3 * channels, dtype=dtype, param_dtype=jnp.float32, name="qkv")(normed.astype(dtype))
    qkv = rearrange(qkv, "b t h w (three n d) -> three (b t) (h w) n d", three=3, n=1)
    out = jax.nn.dot_product_attention(qkv[0], qkv[1], qkv[2])
    out = rearrange(out, "(b t) (h w) n d -> b t h w (n d)", b=batch, h=height, w=width)
    out = nn.Dense(channels, dtype=dtype, param_dtype=jnp.float32, name="out")(out)
    return x.astype(dtype) + out


class FrameSelfAttention(nn.Module):
    """Single-head self-attention over the pixels of each frame separately.

    Attending within a frame only keeps the block causal and chunkable; time
    mixing is left to the causal convolutions.
    """

    num_groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return attend_within_frames(x, FrameGroupNorm(self.num_groups, name="norm")(x), self.dtype)


class Downsample(nn.Module):
    """Halve space and/or time with one strided causal convolution.

    Temporal halving uses a causal kernel of 3 with stride 2, so frames
    ``[f0, f1, f2, f3, f4, ...]`` become ``[g(0, 0, f0), g(f0, f1, f2), g(f2, f3, f4), ...]``:
    the first frame is summarised alone, then every later pair (plus one
    frame of context from the past).
    """

    features: int
    spatial: bool
    temporal: bool
    dtype: Any = jnp.float32

    shortcut: bool = False

    @nn.compact
    def __call__(self, x: Array, cache: Cache = None) -> tuple[Array, Cache]:
        kernel = (3 if self.temporal else 1, 3, 3)
        s = 2 if self.spatial else 1
        strides = (2 if self.temporal else 1, s, s)
        y, new_cache = CausalConv3d(self.features, kernel, strides, dtype=self.dtype, name="conv")(x, cache)
        if self.shortcut:
            y = y + match_channels(pool_shortcut(x, self.spatial, self.temporal, cache is None), self.features)
        return y, new_cache


class Upsample(nn.Module):
    """Inverse of :class:`Downsample`: double time and/or space.

    Time: a causal convolution makes two frames' worth of channels per latent
    frame, which are unfolded into two frames (depth-to-space in time); at the
    start of the video the first of the pair is dropped, so latents
    ``[z0, z1, ..., zm]`` become ``1 + 2m`` frames ``[u(z0), a(z1), b(z1), ...]``.
    Space: nearest-neighbour x2 followed by a causal convolution
    (``temporal_kernel`` x 3 x 3, the kernel of the level it feeds).
    """

    features: int
    spatial: bool
    temporal: bool
    temporal_kernel: int = 3
    dtype: Any = jnp.float32
    shortcut: bool = False

    @nn.compact
    def __call__(self, x: Array, cache: Cache = None) -> tuple[Array, Cache]:
        new_cache = {}
        h = x
        if self.temporal:
            h, new_cache["time"] = CausalConv3d(2 * self.features, dtype=self.dtype, name="time_conv")(
                h, sub_cache(cache, "time")
            )
            h = rearrange(h, "b t h w (two c) -> b (t two) h w c", two=2)
            if cache is None:  # start of the video: the first latent frame stands for one frame
                h = h[:, 1:]
        if self.spatial:
            h = repeat(h, "b t h w c -> b t (h two_h) (w two_w) c", two_h=2, two_w=2)
            kernel = (self.temporal_kernel, 3, 3)
            h, new_cache["space"] = CausalConv3d(self.features, kernel, dtype=self.dtype, name="space_conv")(
                h, sub_cache(cache, "space")
            )
        if self.shortcut:
            h = h + match_channels(unpool_shortcut(x, self.spatial, self.temporal, cache is None), self.features)
        return h, new_cache


# ---- parameter-free shortcuts around resampling -----------------------------------------------
# A strided convolution must LEARN to pass a region's colour to the next level; until it has, a
# small object's colour is lost. Adding a fixed average-pool (down) / repeat (up) path beside each
# resampling convolution gives the network that information from the first step, and the
# convolutions learn the residual. Both paths are causal in time and chunk exactly like the
# convolutions they sit beside: at the start of a video the first frame is summarised alone.


def pool_shortcut(x: Array, spatial: bool, temporal: bool, starts_video: bool) -> Array:
    """Average over 2x2 pixels and/or causal frame pairs, matching `Downsample`'s output grid."""
    if temporal:
        first, rest = (x[:, :1], x[:, 1:]) if starts_video else (x[:, :0], x)
        if rest.shape[1] % 2:
            raise ValueError(f"temporal pooling needs pairs of frames after the first, got {rest.shape[1]}")
        x = jnp.concatenate([first, reduce(rest, "b (t two) h w c -> b t h w c", "mean", two=2)], axis=1)
    if spatial:
        x = reduce(x, "b t (h p) (w q) c -> b t h w c", "mean", p=2, q=2)
    return x


def unpool_shortcut(x: Array, spatial: bool, temporal: bool, starts_video: bool) -> Array:
    """Repeat every frame twice (the video's first latent frame once) and/or every pixel 2x2."""
    if temporal:
        x = repeat(x, "b t h w c -> b (t two) h w c", two=2)
        if starts_video:
            x = x[:, 1:]
    if spatial:
        x = repeat(x, "b t h w c -> b t (h p) (w q) c", p=2, q=2)
    return x


def match_channels(x: Array, features: int) -> Array:
    """Channel count to `features` without parameters: mean over groups, or repeat."""
    channels = x.shape[-1]
    if channels == features:
        return x
    if channels > features and channels % features == 0:
        return reduce(x, "... (f g) -> ... f", "mean", f=features)
    if features % channels == 0:
        return repeat(x, "... c -> ... (r c)", r=features // channels)
    raise ValueError(f"a shortcut cannot map {channels} channels to {features}: use channel counts that divide")
