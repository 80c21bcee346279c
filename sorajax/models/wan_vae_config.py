"""Configuration of Wan's video autoencoder (versions 2.1 and 2.2), apart from its modules.

The fields follow diffusers' ``AutoencoderKLWan`` config under sorajax's names, so a checkpoint's
``config.json`` converts one to one (:meth:`WanVAEConfig.from_diffusers`) and shapes, restore targets
and shardings can be built from a config alone. Clip/latent sizes and their checks are the ones of
sorajax's own autoencoder (:class:`~sorajax.models.vae_config.ClipGeometry`), so the pipeline and the
chunked codec use either through the same calls.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from sorajax.config_dataclasses import from_mapping
from sorajax.models.vae_config import ClipGeometry

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# Published per-channel latent statistics (diffusers' configs of Wan2.1 and Wan2.2-TI2V-5B).
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)


@dataclasses.dataclass(frozen=True)
class WanVAEConfig(ClipGeometry):
    """Shape of a Wan autoencoder. Frozen, so it can be a linen module attribute.

    Encoder level ``i`` runs ``num_res_blocks`` residual blocks at ``base_channels *
    channel_multipliers[i]`` channels, then (all levels but the last) halves space, and time where
    ``temporal_downsample[i]``. ``residual`` (2.2) adds the parameter-free level shortcuts and keeps
    the channels at every upsample (2.1 halves them); ``patch_size`` (2.2) folds 2x2 pixels into
    channels before the encoder and back after the decoder.
    """

    base_channels: int = 96
    decoder_base_channels: int = 0  # 0: the same as base_channels
    channel_multipliers: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)
    latent_channels: int = 16
    residual: bool = False
    patch_size: int = 1
    image_channels: int = 3
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD
    dtype: str = "float32"
    logvar_min: float = -30.0
    logvar_max: float = 20.0

    def __post_init__(self) -> None:
        levels = len(self.channel_multipliers)
        if levels < 1:
            raise ValueError("channel_multipliers is empty: give at least one level, e.g. (1, 2, 4, 4)")
        if len(self.temporal_downsample) != levels - 1:
            raise ValueError(f"temporal_downsample has {len(self.temporal_downsample)} entries for {levels} levels: "
                             f"give {levels - 1} (one per downsampling level, the last level has none)")
        for name in ("base_channels", "num_res_blocks", "latent_channels", "patch_size", "image_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.decoder_base_channels < 0:
            raise ValueError(f"decoder_base_channels must be >= 0 (0 = base_channels), "
                             f"got {self.decoder_base_channels}")
        for name in ("latents_mean", "latents_std"):
            if len(getattr(self, name)) != self.latent_channels:
                raise ValueError(f"{name} has {len(getattr(self, name))} values for {self.latent_channels} latent "
                                 "channels: give one per channel")
        if any(s <= 0 for s in self.latents_std):
            raise ValueError("latents_std has a value <= 0: every channel's std must be positive")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not supported: use one of {sorted(_DTYPES)}")
        if not self.residual and any(c % 2 for c in self.decoder_channels[1:-1]):
            raise ValueError(f"decoder channels {self.decoder_channels} must be even (2.1 upsamples halve them): "
                             "choose an even decoder_base_channels")

    # ---- presets -------------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> WanVAEConfig:
        """``wan2.1`` (4x8x8, z 16, 127 M parameters) or ``wan2.2`` (TI2V-5B: 4x16x16, z 48, 705 M)."""
        presets = {
            "wan2.1": {},
            "wan2.2": {"base_channels": 160, "decoder_base_channels": 256, "latent_channels": 48, "residual": True,
                       "patch_size": 2, "latents_mean": WAN22_LATENTS_MEAN, "latents_std": WAN22_LATENTS_STD},
        }
        if name not in presets:
            raise ValueError(f"unknown Wan VAE preset {name!r}: use one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | Any) -> WanVAEConfig:
        """Build from a dict or ml_collections ConfigDict; unknown keys are an error."""
        return from_mapping(cls, d, "Wan VAE")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_diffusers(cls, raw: Mapping[str, Any], **overrides: Any) -> WanVAEConfig:
        """From an ``AutoencoderKLWan`` ``config.json`` (diffusers' defaults for absent fields)."""
        if raw.get("attn_scales"):
            raise ValueError(f"attn_scales {raw['attn_scales']} is not supported (Wan's releases use []): "
                             "convert a released Wan VAE")
        patch = raw.get("patch_size") or 1
        in_channels = raw.get("in_channels", 3)
        if in_channels != raw.get("out_channels", 3) or in_channels % (patch * patch):
            raise ValueError(f"in_channels {in_channels} / out_channels {raw.get('out_channels', 3)} do not fit "
                             f"patch_size {patch}: convert a released Wan VAE")
        fields = {
            "base_channels": raw.get("base_dim", 96),
            "decoder_base_channels": raw.get("decoder_base_dim") or 0,
            "channel_multipliers": tuple(raw.get("dim_mult", (1, 2, 4, 4))),
            "num_res_blocks": raw.get("num_res_blocks", 2),
            "temporal_downsample": tuple(bool(t) for t in raw.get("temperal_downsample", (False, True, True))),
            "latent_channels": raw.get("z_dim", 16),
            "residual": bool(raw.get("is_residual", False)),
            "patch_size": patch,
            "image_channels": in_channels // (patch * patch),
            "latents_mean": tuple(float(v) for v in raw.get("latents_mean", WAN21_LATENTS_MEAN)),
            "latents_std": tuple(float(v) for v in raw.get("latents_std", WAN21_LATENTS_STD)),
        }
        config = cls(**{**fields, **overrides})
        factors = {"scale_factor_spatial": config.spatial_factor, "scale_factor_temporal": config.temporal_factor}
        for name, derived in factors.items():
            if raw.get(name) not in (None, derived):
                raise ValueError(f"{name} {raw[name]} disagrees with the layout's factor {derived}: "
                                 "the config.json is inconsistent; convert a released Wan VAE")
        return config

    # ---- derived shapes --------------------------------------------------------------------
    @property
    def version(self) -> str:
        """``wan2.2`` for the residual layout, else ``wan2.1`` (the key layout follows it)."""
        return "wan2.2" if self.residual else "wan2.1"

    @property
    def spatial_factor(self) -> int:
        return self.patch_size * 2 ** (len(self.channel_multipliers) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_downsample)

    @property
    def compute_dtype(self) -> Any:
        return _DTYPES[self.dtype]

    @property
    def encoder_channels(self) -> tuple[int, ...]:
        """Channels after conv_in, then after each level."""
        return tuple(self.base_channels * m for m in (1, *self.channel_multipliers))

    @property
    def decoder_channels(self) -> tuple[int, ...]:
        """Channels after conv_in (and the middle), then of each level's residual blocks."""
        base = self.decoder_base_channels or self.base_channels
        return tuple(base * m for m in (self.channel_multipliers[-1], *reversed(self.channel_multipliers)))

    @property
    def temporal_upsample(self) -> tuple[bool, ...]:
        return tuple(reversed(self.temporal_downsample))

    @property
    def pixel_channels(self) -> int:
        """Channels the encoder sees and the decoder makes (pixels after the patchify)."""
        return self.image_channels * self.patch_size**2


def smallest_wan_clip_shape(config: WanVAEConfig) -> tuple[int, int, int, int, int]:
    """[1, 1, s, s, 3]: one frame of one latent pixel, enough to create every weight."""
    side = config.spatial_factor
    return (1, 1, side, side, config.image_channels)
