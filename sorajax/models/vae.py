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

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from sorajax.config_dataclasses import from_mapping
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

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# The autoencoder's side of sharding: logical names of its dimensions (sorajax.parallel.rules.VAE_RULES
# maps them to mesh axes). Its layers create plain parameters, so they are named by rank: a 3D conv
# kernel [kt, kh, kw, c_in, c_out], a dense kernel [c_in, c_out], a bias or norm scale [c].
PARAM_AXES_BY_RANK: dict[int, tuple[str, ...]] = {
    5: ("kernel_t", "kernel_h", "kernel_w", "conv_in", "conv_out"),
    2: ("conv_in", "conv_out"),
    1: ("channels",),
}
VIDEO_AXES = ("batch", "frames", "height", "width", "channels")  # a clip batch [B, T, H, W, C]


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Shape of the autoencoder. Frozen, so it can be a linen module attribute.

    Level ``i`` runs ``num_res_blocks`` residual blocks at
    ``base_channels * channel_multipliers[i]`` channels, then halves space if
    ``spatial_downsample[i]`` and time if ``temporal_downsample[i]``.
    """

    base_channels: int = 128
    channel_multipliers: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    spatial_downsample: tuple[bool, ...] = (True, True, True, False)
    temporal_downsample: tuple[bool, ...] = (False, True, True, False)
    latent_channels: int = 16
    norm_groups: int = 32
    mid_attention: bool = True
    temporal_kernels: tuple[int, ...] = ()
    # Parameter-free average/repeat paths beside every resampling conv and at the latent
    # (vae_layers.pool_shortcut): small objects' colours reach the latent from the first step.
    shortcuts: bool = False
    image_channels: int = 3
    dtype: str = "float32"
    logvar_min: float = -30.0
    logvar_max: float = 20.0

    def __post_init__(self) -> None:
        levels = len(self.channel_multipliers)
        if levels == 0:
            raise ValueError("channel_multipliers is empty: give at least one level, e.g. (1, 2, 4)")
        for name in ("spatial_downsample", "temporal_downsample"):
            if len(getattr(self, name)) != levels:
                raise ValueError(
                    f"{name} has {len(getattr(self, name))} entries but channel_multipliers has {levels}: "
                    "give one bool per level"
                )
        if self.num_res_blocks < 0:
            raise ValueError(f"num_res_blocks must be >= 0, got {self.num_res_blocks}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not supported: use one of {sorted(_DTYPES)}")
        if self.norm_groups < -1:
            raise ValueError(
                f"norm_groups must be >= -1 (-1 = no norm, 0 = per-pixel RMS norm, n = GroupNorm), got {self.norm_groups}"
            )
        for mult in self.channel_multipliers if self.norm_groups > 0 else ():
            if (self.base_channels * mult) % self.norm_groups:
                raise ValueError(
                    f"{self.base_channels * mult} channels are not divisible by norm_groups={self.norm_groups}: "
                    "choose norm_groups dividing every level's channel count"
                )
        if self.temporal_kernels and len(self.temporal_kernels) != levels:
            raise ValueError(
                f"temporal_kernels has {len(self.temporal_kernels)} entries but channel_multipliers has {levels}: "
                "give one kernel size per level, or () for 3 everywhere"
            )
        if any(k < 1 for k in self.temporal_kernels):
            raise ValueError(f"temporal_kernels must be >= 1, got {self.temporal_kernels}")

    # ---- presets -------------------------------------------------------------------------
    @classmethod
    def tiny(cls, **overrides: Any) -> VAEConfig:
        """Small enough to train on 64x64 clips on a 2-core CPU (9.20 M params)."""
        base = dict(
            base_channels=32,
            channel_multipliers=(1, 2, 4),
            num_res_blocks=1,
            spatial_downsample=(True, True, True),
            temporal_downsample=(False, True, True),
            latent_channels=8,
            norm_groups=8,
            mid_attention=False,
            # Per-frame convolutions at full resolution, 3D below: ~30% fewer FLOPs than 3 everywhere.
            temporal_kernels=(1, 3, 3),
        )
        base.update(overrides)
        return cls(**base)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | Any) -> VAEConfig:
        """Build from a dict or ml_collections ConfigDict; unknown keys are an error."""
        return from_mapping(cls, d, "VAE")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ---- derived shapes --------------------------------------------------------------------
    @property
    def spatial_factor(self) -> int:
        return 2 ** sum(self.spatial_downsample)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    @property
    def compute_dtype(self) -> Any:
        return _DTYPES[self.dtype]

    def level_temporal_kernel(self, level: int) -> int:
        """Temporal kernel of the convolutions at ``level`` (-1: the middle block)."""
        return self.temporal_kernels[level] if self.temporal_kernels else 3

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames for a clip of ``num_frames`` (= 1 + f*k) frames."""
        self.validate_frames(num_frames)
        return 1 + (num_frames - 1) // self.temporal_factor

    def video_frames(self, latent_frames: int) -> int:
        """Frames decoded from ``latent_frames`` latent frames."""
        if latent_frames < 1:
            raise ValueError(f"need at least 1 latent frame, got {latent_frames}")
        return 1 + (latent_frames - 1) * self.temporal_factor

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``(t, h, w, c)`` of the latent of a ``[num_frames, height, width, 3]`` clip."""
        self.validate_video_shape(num_frames, height, width)
        s = self.spatial_factor
        return self.latent_frames(num_frames), height // s, width // s, self.latent_channels

    def validate_frames(self, num_frames: int) -> None:
        f = self.temporal_factor
        if num_frames < 1 or (num_frames - 1) % f:
            shorter = 1 + max(num_frames - 1, 0) // f * f
            raise ValueError(
                f"got {num_frames} frames; the autoencoder needs 1 + {f}k frames "
                f"(e.g. {shorter} or {shorter + f}): trim or pad the clip"
            )

    def validate_video_shape(self, num_frames: int, height: int, width: int) -> None:
        """Raise a ValueError naming the fix if a clip of this size cannot be encoded."""
        self.validate_frames(num_frames)
        s = self.spatial_factor
        for name, size in (("height", height), ("width", width)):
            if size < s or size % s:
                lower = size // s * s
                options = f"{lower} or {lower + s}" if lower >= s else f"{lower + s}"
                raise ValueError(
                    f"{name} {size} is not divisible by the spatial factor {s}: resize to {options}"
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


class CausalVAE(nn.Module):
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

    def __call__(self, x: Array, sample_posterior: bool = True) -> tuple[Array, Array, Array]:
        """Encode, sample the posterior (rng stream 'sample'), decode: ``(recon, mean, logvar)``."""
        mean, logvar = self.encode(x)
        z = mean
        if sample_posterior:
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(self.make_rng("sample"), mean.shape)
        return self.decode(z), mean, logvar

    # ---- whole clip ------------------------------------------------------------------------
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


def smallest_clip_shape(config: VAEConfig) -> tuple[int, int, int, int, int]:
    """[1, 1, s, s, 3]: one frame of one latent pixel, enough to create every weight (their shapes and
    initial values do not depend on the clip size)."""
    side = config.spatial_factor
    return (1, 1, side, side, config.image_channels)


def pixels_from_uint8(video: Array) -> Array:
    """uint8 [0, 255] -> float32 [-1, 1] (the autoencoder's input); done on device so copies stay uint8."""
    return video.astype(jnp.float32) / 127.5 - 1.0
