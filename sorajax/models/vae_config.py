"""The autoencoder's configuration: its shape, derived sizes, and the logical names of its dimensions.

Kept apart from the modules (``vae.py``) so that shapes can be checked, and restore targets and
shardings built, from a config alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from sorajax.config_dataclasses import from_mapping

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


class ClipGeometry:
    """Clip <-> latent sizes and their checks, for any config with ``temporal_factor``,
    ``spatial_factor`` and ``latent_channels`` (sorajax's own autoencoder and Wan's share them)."""

    temporal_factor: int
    spatial_factor: int
    latent_channels: int

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


@dataclasses.dataclass(frozen=True)
class VAEConfig(ClipGeometry):
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
        return from_mapping(cls, d, "vae")

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


def smallest_clip_shape(config: VAEConfig) -> tuple[int, int, int, int, int]:
    """[1, 1, s, s, 3]: one frame of one latent pixel, enough to create every weight (their shapes and
    initial values do not depend on the clip size)."""
    side = config.spatial_factor
    return (1, 1, side, side, config.image_channels)
