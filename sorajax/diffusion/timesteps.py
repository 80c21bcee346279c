"""Noise levels: the training distribution of t (logit-normal, shifted by size) and sampling schedules.

Why a logit-normal: it spends training on the middle of the path, where the velocity is hardest to
predict, and little at t ~ 0 or 1 (as in Esser et al. 2024, "Scaling Rectified Flow Transformers").

Why a size-dependent shift: a video with more tokens carries more redundant evidence about its content,
so the same t destroys relatively less of it; bigger samples need noisier t to reach the same difficulty.
`time_shift(t, s) = s t / (1 + (s - 1) t)` keeps 0 and 1 fixed and divides the signal-to-noise ratio
`((1 - t) / t)^2` by `s^2`. The factor comes from `shift_for_num_tokens`:

    log(shift) is linear in log(num_tokens) between (base_tokens, base_shift) and (max_tokens, max_shift),
    clamped to [base_shift, max_shift] outside that range.

That is a power law `shift ~ num_tokens^k`. k = 1/2 is the SD3 argument for images (SNR of a mean over
n independent pixels grows ~ n); the defaults below use k = 1/3 (256 tokens -> 1, 16384 tokens -> 4)
because consecutive video frames are strongly correlated, so extra frames add less independent evidence
than extra pixels of one frame. All five numbers are config (`TrainingTimeConfig`); sampling must use the
same shift rule for the size it generates (`sampling_timesteps(shift=shift_for_num_tokens(...))`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from sorajax.config_dataclasses import from_mapping

# Keeps logit-normal draws strictly inside (0, 1): sigmoid rounds to exactly 1.0 in float32 beyond ~17.
_OPEN_INTERVAL_EPS = 1e-6


@dataclasses.dataclass(frozen=True)
class TrainingTimeConfig:
    """How training draws each sample's noise level (see the module docstring)."""

    logit_mean: float = 0.0
    logit_std: float = 1.0
    base_tokens: int = 256
    base_shift: float = 1.0
    max_tokens: int = 16384
    max_shift: float = 4.0

    def __post_init__(self) -> None:
        if self.logit_std <= 0:
            raise ValueError(f"logit_std must be > 0, got {self.logit_std}; use e.g. 1.0.")
        if not 0 < self.base_tokens < self.max_tokens:
            raise ValueError(
                f"need 0 < base_tokens < max_tokens, got {self.base_tokens} and {self.max_tokens}; "
                "base_tokens is the size trained at base_shift, max_tokens the size that gets max_shift."
            )
        if not 0 < self.base_shift <= self.max_shift:
            raise ValueError(
                f"need 0 < base_shift <= max_shift, got {self.base_shift} and {self.max_shift}; "
                "bigger samples must get at least as much noise as smaller ones."
            )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> "TrainingTimeConfig":
        """Build from a dict or ml_collections ConfigDict, naming any unknown key."""
        return from_mapping(cls, values, "time")


def sample_logit_normal(
    rng: jax.Array, shape: tuple[int, ...], mean: float = 0.0, std: float = 1.0
) -> jax.Array:
    """t = sigmoid(mean + std * n), n ~ N(0, 1): values in (0, 1) with median sigmoid(mean)."""
    logits = mean + std * jax.random.normal(rng, shape, jnp.float32)
    return jnp.clip(jax.nn.sigmoid(logits), _OPEN_INTERVAL_EPS, 1.0 - _OPEN_INTERVAL_EPS)


def time_shift(t: jax.Array | float, shift: jax.Array | float) -> jax.Array:
    """s t / (1 + (s - 1) t): monotone map of [0, 1] onto itself; s > 1 moves t toward 1 (more noise)."""
    t = jnp.asarray(t, jnp.float32)
    shift = jnp.asarray(shift, jnp.float32)
    return shift * t / (1.0 + (shift - 1.0) * t)


def inverse_time_shift(t_shifted: jax.Array | float, shift: jax.Array | float) -> jax.Array:
    """Undo `time_shift`: it equals time_shift(t', 1 / s)."""
    return time_shift(t_shifted, 1.0 / jnp.asarray(shift, jnp.float32))


def shift_for_num_tokens(
    num_tokens: jax.Array | float,
    base_tokens: float = TrainingTimeConfig.base_tokens,
    base_shift: float = TrainingTimeConfig.base_shift,
    max_tokens: float = TrainingTimeConfig.max_tokens,
    max_shift: float = TrainingTimeConfig.max_shift,
) -> jax.Array:
    """Shift factor for a sample of `num_tokens` tokens: log-log interpolation, clamped (module docstring)."""
    if not 0 < base_tokens < max_tokens or not 0 < base_shift <= max_shift:
        raise ValueError(
            f"need 0 < base_tokens < max_tokens and 0 < base_shift <= max_shift, got tokens "
            f"({base_tokens}, {max_tokens}) and shifts ({base_shift}, {max_shift})."
        )
    log_tokens = jnp.log(jnp.maximum(jnp.asarray(num_tokens, jnp.float32), 1.0))
    fraction = (log_tokens - math.log(base_tokens)) / (math.log(max_tokens) - math.log(base_tokens))
    fraction = jnp.clip(fraction, 0.0, 1.0)
    return jnp.exp(math.log(base_shift) + fraction * (math.log(max_shift) - math.log(base_shift)))


def _shift_from_config(num_tokens: jax.Array, config: TrainingTimeConfig) -> jax.Array:
    return shift_for_num_tokens(
        num_tokens, config.base_tokens, config.base_shift, config.max_tokens, config.max_shift
    )


def tokens_per_segment(segment_ids: jax.Array) -> jax.Array:
    """[B, L + 1] token counts of each segment id 0..L in each row (column 0 counts padding)."""
    length = segment_ids.shape[1]
    count_row = lambda ids: jax.ops.segment_sum(jnp.ones(ids.shape, jnp.float32), ids, num_segments=length + 1)
    return jax.vmap(count_row)(segment_ids.astype(jnp.int32))


def training_t(
    rng: jax.Array,
    segment_ids: jax.Array,
    config: TrainingTimeConfig,
    cond_mask: jax.Array | None = None,
) -> jax.Array:
    """Per-token noise levels [B, L] for a packed batch.

    Every token of a sample (segment) shares one t, drawn logit-normal and shifted for that sample's
    token count (all its tokens, conditioning ones included: the shift follows the video's size).
    Padding (segment 0) and conditioning tokens (`cond_mask` [B, L] true) get t = 0.
    """
    if segment_ids.ndim != 2:
        raise ValueError(f"segment_ids must be [B, L], got shape {segment_ids.shape}.")
    if cond_mask is not None and cond_mask.shape != segment_ids.shape:
        raise ValueError(f"cond_mask {cond_mask.shape} must match segment_ids {segment_ids.shape} ([B, L]).")
    batch, length = segment_ids.shape
    segment_ids = segment_ids.astype(jnp.int32)
    base_t = sample_logit_normal(rng, (batch, length + 1), config.logit_mean, config.logit_std)
    shifted = time_shift(base_t, _shift_from_config(tokens_per_segment(segment_ids), config))
    t = jnp.take_along_axis(shifted, segment_ids, axis=1)
    generated = segment_ids > 0
    if cond_mask is not None:
        generated = generated & ~cond_mask.astype(bool)
    return jnp.where(generated, t, 0.0)


def sampling_timesteps(
    num_steps: int, shift: jax.Array | float = 1.0, start: jax.Array | float = 1.0
) -> jax.Array:
    """[num_steps + 1] noise levels decreasing from `start` (1 = pure noise; < 1 for SDEdit) to exactly 0.

    Steps are uniform in the UNshifted time and then shifted, so a larger shift spends more steps at high
    noise. The grid starts exactly at `start` whatever the shift (its preimage is computed first).
    """
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int (it fixes the array shape), got {num_steps!r}.")
    unshifted_start = inverse_time_shift(start, shift)
    fractions = jnp.linspace(1.0, 0.0, num_steps + 1, dtype=jnp.float32)
    grid = time_shift(unshifted_start * fractions, shift)
    # Pin the ends exactly: 0 must be exactly 0 (samplers finish with an x0 step), start exactly start.
    grid = grid.at[0].set(jnp.asarray(start, jnp.float32))
    return grid.at[-1].set(0.0)
