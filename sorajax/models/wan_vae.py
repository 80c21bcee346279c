"""Wan's causal video autoencoder (2.1 and 2.2), exact to diffusers' ``AutoencoderKLWan``.

A video ``[B, T, H, W, 3]`` in [-1, 1], ``T = 1 + 4k``, is encoded to a diagonal Gaussian over
latents ``[B, 1 + k, H/s, W/s, z]`` (2.1: s 8, z 16; 2.2: s 16, z 48) and decoded back to a video
clamped to [-1, 1]. :class:`WanVAE` has the public methods of sorajax's
:class:`~sorajax.models.vae.CausalVAE` (``encode``, ``decode``, ``*_normalized``, ``*_chunk``) and
the same ``latent_stats`` collection, so :class:`~sorajax.models.vae_chunked.ChunkedCodec` and the
pipeline drive either one.

Chunking: diffusers runs the encoder on 1 frame, then 4 at a time, and the decoder on one latent
frame at a time, carrying each causal conv's last two input frames. Here every layer takes a cache,
so any chunking that keeps the temporal alignment (a first chunk of ``1 + 4k`` frames, then
multiples of 4; latents in any runs) gives the same result, whole-clip coding included.
Weights come from a diffusers checkpoint through ``wan_vae_keys.load_wan_vae``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from sorajax.models.vae import WholeClipCoder, _check_rank_and_channels
from sorajax.models.vae_layers import Array, Cache, CausalConv3d, sub_cache
from sorajax.models.wan_vae_config import WanVAEConfig, smallest_wan_clip_shape
from sorajax.models.wan_vae_layers import (
    WanDownsample,
    WanFrameAttention,
    WanResBlock,
    WanRMSNorm,
    WanUpsample,
    avg_down,
    dup_up,
    patchify,
    unpatchify,
)


def _middle(h: Array, cache: Cache, new: dict[str, Cache], dtype: Any) -> Array:
    """res, frame attention, res (called inside a compact ``__call__``: children of the caller)."""
    channels = h.shape[-1]
    h, new["mid_res0"] = WanResBlock(channels, dtype, name="mid_res0")(h, sub_cache(cache, "mid_res0"))
    h = WanFrameAttention(dtype, name="mid_attn")(h)
    h, new["mid_res1"] = WanResBlock(channels, dtype, name="mid_res1")(h, sub_cache(cache, "mid_res1"))
    return h


class WanEncoder(nn.Module):
    """Pixels ``[B, T, H, W, 3]`` -> ``[B, t, h, w, 2z]`` (before ``quant_conv``)."""

    config: WanVAEConfig

    @nn.compact
    def __call__(self, x: Array, cache: Cache = None) -> tuple[Array, Cache]:
        cfg, dtype = self.config, self.config.compute_dtype
        dims, levels = cfg.encoder_channels, len(cfg.channel_multipliers)
        new: dict[str, Cache] = {}
        if cfg.patch_size > 1:
            x = patchify(x, cfg.patch_size)
        h, new["conv_in"] = CausalConv3d(dims[0], dtype=dtype, name="conv_in")(x, sub_cache(cache, "conv_in"))
        for i in range(levels):
            level_in = h
            for j in range(cfg.num_res_blocks):
                name = f"down{i}_res{j}"
                h, new[name] = WanResBlock(dims[i + 1], dtype, name=name)(h, sub_cache(cache, name))
            last = i == levels - 1
            temporal = not last and cfg.temporal_downsample[i]
            if not last:
                name = f"down{i}_resample"
                h, new[name] = WanDownsample(dims[i + 1], temporal, dtype, name=name)(h, sub_cache(cache, name))
            if cfg.residual:
                h = h + avg_down(level_in, dims[i + 1], 2 if temporal else 1, 1 if last else 2).astype(h.dtype)
        h = _middle(h, cache, new, dtype)
        h = nn.silu(WanRMSNorm(name="norm_out")(h))
        h, new["conv_out"] = CausalConv3d(2 * cfg.latent_channels, dtype=dtype, name="conv_out")(
            h, sub_cache(cache, "conv_out")
        )
        return h, new


class WanDecoder(nn.Module):
    """Latents ``[B, t, h, w, z]`` (after ``post_quant_conv``) -> pixels ``[B, T, H, W, 3]`` (unclamped)."""

    config: WanVAEConfig

    @nn.compact
    def __call__(self, z: Array, cache: Cache = None) -> tuple[Array, Cache]:
        cfg, dtype = self.config, self.config.compute_dtype
        dims, levels = cfg.decoder_channels, len(cfg.channel_multipliers)
        starts_video = cache is None
        new: dict[str, Cache] = {}
        h, new["conv_in"] = CausalConv3d(dims[0], dtype=dtype, name="conv_in")(z, sub_cache(cache, "conv_in"))
        h = _middle(h, cache, new, dtype)
        for i in range(levels):
            level_in = h
            for j in range(cfg.num_res_blocks + 1):
                name = f"up{i}_res{j}"
                h, new[name] = WanResBlock(dims[i + 1], dtype, name=name)(h, sub_cache(cache, name))
            if i == levels - 1:
                continue
            temporal = cfg.temporal_upsample[i]
            # 2.1 halves the channels at each upsample (the next level's first block widens them again).
            out = dims[i + 1] if cfg.residual else dims[i + 1] // 2
            name = f"up{i}_resample"
            h, new[name] = WanUpsample(out, temporal, dtype, name=name)(h, sub_cache(cache, name))
            if cfg.residual:
                h = h + dup_up(level_in, out, 2 if temporal else 1, 2, starts_video).astype(h.dtype)
        h = nn.silu(WanRMSNorm(name="norm_out")(h))
        h, new["conv_out"] = CausalConv3d(cfg.pixel_channels, dtype=dtype, name="conv_out")(
            h, sub_cache(cache, "conv_out")
        )
        if cfg.patch_size > 1:
            h = unpatchify(h, cfg.patch_size)
        return h.astype(jnp.float32), new


class WanVAE(WholeClipCoder, nn.Module):
    """Encoder, ``quant_conv``, diagonal Gaussian, ``post_quant_conv``, decoder; stored latent statistics.

    ``cache=None`` in the ``*_chunk`` methods means "this chunk starts the video".
    """

    config: WanVAEConfig

    def setup(self) -> None:
        cfg, dtype = self.config, self.config.compute_dtype
        self.encoder = WanEncoder(cfg)
        self.decoder = WanDecoder(cfg)
        self.quant_conv = nn.Dense(2 * cfg.latent_channels, dtype=dtype, param_dtype=jnp.float32)
        self.post_quant_conv = nn.Dense(cfg.latent_channels, dtype=dtype, param_dtype=jnp.float32)
        if self.is_initializing() or self.has_variable("latent_stats", "mean"):
            self.stats_mean = self.variable("latent_stats", "mean", lambda: config_stats(cfg)["mean"])
            self.stats_std = self.variable("latent_stats", "std", lambda: config_stats(cfg)["std"])
        else:
            self.stats_mean = self.stats_std = None

    # ---- causal chunks ---------------------------------------------------------------------
    def encode_chunk(self, x: Array, cache: Cache) -> tuple[Array, Array, Cache]:
        """The next frames: ``1 + 4k`` for the first chunk (``cache=None``), ``4k`` later."""
        cfg = self.config
        _check_rank_and_channels(x, cfg.image_channels, "video chunk")
        if cache is None:
            cfg.validate_frames(x.shape[1])
        elif x.shape[1] == 0 or x.shape[1] % cfg.temporal_factor:
            raise ValueError(f"a chunk after the first must have a positive multiple of {cfg.temporal_factor} "
                             f"frames, got {x.shape[1]}: send 1 frame (or 1 + {cfg.temporal_factor}k) first")
        cfg.validate_video_shape(1, *x.shape[2:4])
        h, new_cache = self.encoder(x, cache)
        moments = self.quant_conv(h).astype(jnp.float32)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, cfg.logvar_min, cfg.logvar_max), new_cache

    def decode_chunk(self, z: Array, cache: Cache) -> tuple[Array, Cache]:
        """The next latent frames: ``1 + 4(n-1)`` frames for the first chunk, ``4n`` later."""
        _check_rank_and_channels(z, self.config.latent_channels, "latent chunk")
        if z.shape[1] == 0:
            raise ValueError("latent chunk has 0 frames: send at least one latent frame per chunk")
        x, new_cache = self.decoder(self.post_quant_conv(z.astype(self.config.compute_dtype)), cache)
        return jnp.clip(x, -1.0, 1.0), new_cache

    def _stats(self) -> dict[str, Array]:
        if self.stats_mean is None:  # params alone: the config's published statistics
            return config_stats(self.config)
        return {"mean": self.stats_mean.value, "std": self.stats_std.value}


def abstract_wan_variables(config: WanVAEConfig) -> dict[str, Any]:
    """Shapes of ``params`` and ``latent_stats`` without allocating them (seconds, even full size)."""
    dummy = jnp.zeros(smallest_wan_clip_shape(config), jnp.float32)
    keys = {"params": jax.random.key(0), "sample": jax.random.key(1)}
    return jax.eval_shape(lambda: dict(WanVAE(config).init(keys, dummy)))


def wan_variables(config: WanVAEConfig, params: Any) -> dict[str, Any]:
    """Full variables (``params`` + the config's ``latent_stats``), as ChunkedCodec and the pipeline take."""
    return {"params": params, "latent_stats": config_stats(config)}


def config_stats(config: WanVAEConfig) -> dict[str, Array]:
    """The config's per-channel latent ``mean`` / ``std`` as float32 arrays."""
    return {"mean": jnp.asarray(config.latents_mean, jnp.float32), "std": jnp.asarray(config.latents_std, jnp.float32)}
