"""Causal 3D-convolutional video autoencoder (the report's "video compression network").

A video ``[B, T, H, W, 3]`` in [-1, 1] with ``T = 1 + f*k`` frames (``f`` the
temporal factor, 4 by default) is encoded to a diagonal Gaussian over latents
``[B, 1 + k, H/s, W/s, latent_channels]`` (``s`` the spatial factor, 8 by
default); the first frame is encoded on its own, so an image is a valid
one-frame video and its latent is the first latent frame of any video that
starts with it. Everything along time is causal, so long videos can be coded
in chunks with a carried cache (see ``vae_chunked.py``) and give exactly the
whole-clip result.

Latents fed to the diffusion model are normalised with per-channel statistics
stored next to the weights in the ``latent_stats`` variable collection
(``mean``/``std``, initialised to 0/1): measure them with
:func:`compute_latent_stats` on encoded training clips and store them with
:func:`with_latent_stats`.

Presets (parameter counts measured by ``tests/test_vae.py``):
  * ``VAEConfig.tiny()`` — channels 32/64/128, 1 res block, 8 latent channels, /8 space,
    /4 time, per-frame convolutions at full resolution, no attention: 9.20 M parameters,
    ~340 GFLOP per training step on a 4 x 9 x 64 x 64 batch (forward + backward; ~5 s on 2
    CPU cores): sized for training on 64x64 clips on a CPU. ``temporal_kernels=(1, 1, 3)``
    cuts that to ~240 GFLOP.
  * ``VAEConfig()`` (default) — channels 128/256/512/512, 2 res blocks, 16 latent channels,
    /8 space, /4 time, 3D kernels everywhere, mid-block attention: 258.8 M parameters
    (the scale of published causal video VAEs; for accelerators).

Design decisions: the past before frame 0 is zeros (not a replicated first frame), so a
video's first latent depends on its first frame only; normalisation is per frame; temporal
downsampling is a causal stride-2 convolution whose windows end on the chunk's last frame,
and upsampling unfolds two frames per latent frame and drops the first at the video start.
Causal convolutions run as a sum of per-tap 2D convolutions, which XLA on CPU executes
several times faster than a 3D convolution (same maths, same parameters).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sorajax.models.vae_config import VAEConfig, smallest_clip_shape
from sorajax.models.vae_layers import (
    Array,
    Cache,
    CausalConv3d,
    CausalResBlock,
    Downsample,
    FrameGroupNorm,
    FrameSelfAttention,
    Upsample,
    match_channels,
    sub_cache,
)

def _check_rank_and_channels(x: Array, channels: int, what: str) -> None:
    if x.ndim != 5:
        raise ValueError(
            f"{what} must be [B, T, H, W, C] (5 dims), got shape {tuple(x.shape)}: "
            "add a batch axis with x[None] (and a time axis x[:, None] for single images)"
        )
    if x.shape[-1] != channels:
        raise ValueError(
            f"{what} has {x.shape[-1]} channels in its last axis, expected {channels}: "
            "pass channels-last data with the right channel count"
        )


class CausalEncoder(nn.Module):
    """Pixels ``[B, T, H, W, 3]`` -> Gaussian moments ``[B, t, h, w, 2*latent_channels]``."""

    config: VAEConfig

    @nn.compact
    def __call__(self, x: Array, cache: Cache = None) -> tuple[Array, Cache]:
        cfg, dtype = self.config, self.config.compute_dtype
        kt = cfg.level_temporal_kernel
        new: dict[str, Cache] = {}
        h, new["conv_in"] = CausalConv3d(cfg.base_channels, (kt(0), 3, 3), dtype=dtype, name="conv_in")(
            x, sub_cache(cache, "conv_in")
        )
        for i, mult in enumerate(cfg.channel_multipliers):
            for j in range(cfg.num_res_blocks):
                name = f"level{i}_res{j}"
                block = CausalResBlock(cfg.base_channels * mult, cfg.norm_groups, kt(i), dtype, name=name)
                h, new[name] = block(h, sub_cache(cache, name))
            if cfg.spatial_downsample[i] or cfg.temporal_downsample[i]:
                name = f"level{i}_down"
                down = Downsample(
                    cfg.base_channels * mult, cfg.spatial_downsample[i], cfg.temporal_downsample[i], dtype,
                    shortcut=cfg.shortcuts, name=name,
                )
                h, new[name] = down(h, sub_cache(cache, name))
        h, new = _middle(cfg, h, cache, new)
        features = h
        h = nn.silu(FrameGroupNorm(cfg.norm_groups, name="norm_out")(h))
        moments, new["conv_out"] = CausalConv3d(
            2 * cfg.latent_channels, (kt(-1), 3, 3), dtype=dtype, name="conv_out"
        )(h, sub_cache(cache, "conv_out"))
        if cfg.shortcuts:  # onto the mean only; the log-variance stays the conv's
            mean_shortcut = match_channels(features, cfg.latent_channels)
            moments = moments + jnp.concatenate([mean_shortcut, jnp.zeros_like(mean_shortcut)], axis=-1)
        return moments, new


class CausalDecoder(nn.Module):
    """Latents ``[B, t, h, w, latent_channels]`` -> pixels ``[B, T, H, W, 3]`` (about [-1, 1])."""

    config: VAEConfig

    @nn.compact
    def __call__(self, z: Array, cache: Cache = None) -> tuple[Array, Cache]:
        cfg, dtype = self.config, self.config.compute_dtype
        kt = cfg.level_temporal_kernel
        top = cfg.base_channels * cfg.channel_multipliers[-1]
        new: dict[str, Cache] = {}
        h, new["conv_in"] = CausalConv3d(top, (kt(-1), 3, 3), dtype=dtype, name="conv_in")(
            z, sub_cache(cache, "conv_in")
        )
        if cfg.shortcuts:
            h = h + match_channels(z.astype(h.dtype), top)
        h, new = _middle(cfg, h, cache, new)
        for i in reversed(range(len(cfg.channel_multipliers))):
            channels = cfg.base_channels * cfg.channel_multipliers[i]
            if cfg.spatial_downsample[i] or cfg.temporal_downsample[i]:
                name = f"level{i}_up"
                up = Upsample(
                    channels, cfg.spatial_downsample[i], cfg.temporal_downsample[i], kt(i), dtype,
                    shortcut=cfg.shortcuts, name=name,
                )
                h, new[name] = up(h, sub_cache(cache, name))
            for j in range(cfg.num_res_blocks + 1):
                name = f"level{i}_res{j}"
                block = CausalResBlock(channels, cfg.norm_groups, kt(i), dtype, name=name)
                h, new[name] = block(h, sub_cache(cache, name))
        h = nn.silu(FrameGroupNorm(cfg.norm_groups, name="norm_out")(h))
        pixels, new["conv_out"] = CausalConv3d(cfg.image_channels, (kt(0), 3, 3), dtype=dtype, name="conv_out")(
            h, sub_cache(cache, "conv_out")
        )
        return pixels.astype(jnp.float32), new


def _middle(cfg: VAEConfig, h: Array, cache: Cache, new: dict[str, Cache]) -> tuple[Array, dict[str, Cache]]:
    """Middle block shared by encoder and decoder layouts: res, [frame attention], res.

    Called from inside a compact ``__call__``, so the modules it makes are named children of the caller.
    """
    channels, dtype, kt = h.shape[-1], cfg.compute_dtype, cfg.level_temporal_kernel(-1)
    h, new["mid_res0"] = CausalResBlock(channels, cfg.norm_groups, kt, dtype, name="mid_res0")(
        h, sub_cache(cache, "mid_res0")
    )
    if cfg.mid_attention:
        h = FrameSelfAttention(cfg.norm_groups, dtype, name="mid_attn")(h)
    h, new["mid_res1"] = CausalResBlock(channels, cfg.norm_groups, kt, dtype, name="mid_res1")(
        h, sub_cache(cache, "mid_res1")
    )
    return h, new


class WholeClipCoder:
    """Whole-clip coding written once, from a coder's chunk methods (``CausalVAE`` and ``WanVAE``).

    A subclass supplies ``config`` (image and latent channels, shape checks), ``encode_chunk``,
    ``decode_chunk`` and ``_stats``; the whole clip is then its first (and only) chunk.
    """

    def __call__(self, x: Array, sample_posterior: bool = True) -> tuple[Array, Array, Array]:
        """Encode, sample the posterior (rng stream 'sample'), decode: ``(recon, mean, logvar)``."""
        mean, logvar = self.encode(x)
        z = mean
        if sample_posterior:
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(self.make_rng("sample"), mean.shape)
        return self.decode(z), mean, logvar

    def encode(self, x: Array) -> tuple[Array, Array]:
        """Posterior ``(mean, logvar)``, each ``[B, t, h, w, latent_channels]`` float32."""
        _check_rank_and_channels(x, self.config.image_channels, "video")
        self.config.validate_video_shape(*x.shape[1:4])
        mean, logvar, _ = self.encode_chunk(x, None)
        return mean, logvar

    def decode(self, z: Array) -> Array:
        """Pixels ``[B, 1 + f*(t-1), H, W, 3]`` from latents ``[B, t, h, w, c]``."""
        _check_rank_and_channels(z, self.config.latent_channels, "latents")
        x, _ = self.decode_chunk(z, None)
        return x

    def encode_normalized(self, x: Array) -> Array:
        """Posterior mean normalised per channel by the stored ``latent_stats``."""
        mean, _ = self.encode(x)
        return normalize_latents(mean, self._stats())

    def decode_normalized(self, z: Array) -> Array:
        """Inverse of :meth:`encode_normalized` followed by :meth:`decode`."""
        return self.decode(denormalize_latents(z, self._stats()))


class CausalVAE(WholeClipCoder, nn.Module):
    """Encoder + diagonal-Gaussian posterior + decoder, with stored latent statistics.

    ``cache=None`` in the ``*_chunk`` methods means "this chunk starts the video".
    """

    config: VAEConfig

    def setup(self) -> None:
        self.encoder = CausalEncoder(self.config)
        self.decoder = CausalDecoder(self.config)
        # Declared only when present so that apply({'params': ...}) works for encode/decode.
        if self.is_initializing() or self.has_variable("latent_stats", "mean"):
            c = self.config.latent_channels
            self.stats_mean = self.variable("latent_stats", "mean", jnp.zeros, (c,), jnp.float32)
            self.stats_std = self.variable("latent_stats", "std", jnp.ones, (c,), jnp.float32)
        else:
            self.stats_mean = self.stats_std = None

    # ---- causal chunks ---------------------------------------------------------------------
    def encode_chunk(self, x: Array, cache: Cache) -> tuple[Array, Array, Cache]:
        """Encode the next frames of a video: ``(mean, logvar, new_cache)``.

        The first chunk (``cache=None``) has ``1 + f*k`` frames, later chunks ``f*k``.
        """
        _check_rank_and_channels(x, self.config.image_channels, "video chunk")
        f = self.config.temporal_factor
        if cache is None:
            self.config.validate_frames(x.shape[1])
        elif x.shape[1] == 0 or x.shape[1] % f:
            raise ValueError(
                f"a chunk after the first must have a positive multiple of {f} frames, got {x.shape[1]}: "
                f"send 1 frame (or 1 + {f}k) first, then chunks of {f}k frames"
            )
        self.config.validate_video_shape(1, *x.shape[2:4])
        moments, new_cache = self.encoder(x, cache)
        moments = moments.astype(jnp.float32)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        logvar = jnp.clip(logvar, self.config.logvar_min, self.config.logvar_max)
        return mean, logvar, new_cache

    def decode_chunk(self, z: Array, cache: Cache) -> tuple[Array, Cache]:
        """Decode the next latent frames: ``1 + f*(n-1)`` frames for the first chunk, ``f*n`` later."""
        _check_rank_and_channels(z, self.config.latent_channels, "latent chunk")
        if z.shape[1] == 0:
            raise ValueError("latent chunk has 0 frames: send at least one latent frame per chunk")
        return self.decoder(z, cache)

    def _stats(self) -> dict[str, Array]:
        if self.stats_mean is None:
            raise ValueError(
                "variables have no 'latent_stats' collection: pass the full variables from vae.init "
                "(or add stats with with_latent_stats(variables, compute_latent_stats(latents)))"
            )
        return {"mean": self.stats_mean.value, "std": self.stats_std.value}


# ---- pure helpers on latents and variables -----------------------------------------------------
def kl_divergence(mean: Array, logvar: Array) -> Array:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per example ``[B]``, averaged over latent elements.

    Averaging (not summing) keeps the weight of the KL term independent of the clip size,
    which matters when training on native, varying sizes.
    """
    kl = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
    return jnp.mean(kl.reshape(kl.shape[0], -1), axis=-1)


def compute_latent_stats(latents: Array | Sequence[Array]) -> dict[str, Array]:
    """Per-channel mean and std over every axis but the last.

    Accepts one array ``[..., C]`` or a sequence of arrays of different sizes (native-size clips).
    """
    arrays = [latents] if hasattr(latents, "shape") else list(latents)
    if not arrays:
        raise ValueError("compute_latent_stats got no latents: pass at least one encoded clip")
    flat = [np.asarray(a, np.float64).reshape(-1, np.shape(a)[-1]) for a in arrays]
    if len({f.shape[-1] for f in flat}) != 1:
        raise ValueError("latents disagree on the channel count (last axis): encode them with the same VAE")
    count = sum(f.shape[0] for f in flat)
    mean = sum(f.sum(0) for f in flat) / count
    var = sum(np.square(f - mean).sum(0) for f in flat) / count
    std = np.maximum(np.sqrt(var), 1e-6)
    return {"mean": jnp.asarray(mean, jnp.float32), "std": jnp.asarray(std, jnp.float32)}


def with_latent_stats(variables: Mapping[str, Any], stats: Mapping[str, Array]) -> dict[str, Any]:
    """Return a copy of ``variables`` whose ``latent_stats`` are ``stats`` (``mean``/``std``)."""
    if set(stats) != {"mean", "std"}:
        raise ValueError(f"stats must have exactly keys 'mean' and 'std', got {sorted(stats)}")
    out = dict(variables)
    if "latent_stats" in variables:
        expected = np.shape(variables["latent_stats"]["mean"])
        for key in ("mean", "std"):
            if np.shape(stats[key]) != expected:
                raise ValueError(
                    f"stats[{key!r}] has shape {np.shape(stats[key])}, expected {expected} "
                    "(one value per latent channel): compute them with compute_latent_stats"
                )
    out["latent_stats"] = {k: jnp.asarray(stats[k], jnp.float32) for k in ("mean", "std")}
    return out


def normalize_latents(z: Array, stats: Mapping[str, Array]) -> Array:
    return (z - stats["mean"]) / stats["std"]


def denormalize_latents(z: Array, stats: Mapping[str, Array]) -> Array:
    return z * stats["std"] + stats["mean"]


def abstract_variables(config: VAEConfig) -> dict[str, Any]:
    """Shapes of ``params`` and ``latent_stats`` without allocating them (a restore target).

    Convolution weights do not depend on the clip size, so the smallest valid clip (one frame of one
    latent pixel) traces them.
    """
    model = CausalVAE(config)
    dummy = jnp.zeros(smallest_clip_shape(config), jnp.float32)
    keys = {"params": jax.random.key(0), "sample": jax.random.key(1)}
    return jax.eval_shape(lambda: dict(model.init(keys, dummy)))


def pixels_from_uint8(video: Array) -> Array:
    """uint8 [0, 255] -> float32 [-1, 1] (the autoencoder's input); done on device so copies stay uint8."""
    return video.astype(jnp.float32) / 127.5 - 1.0
