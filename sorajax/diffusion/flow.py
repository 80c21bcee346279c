"""Rectified-flow algebra: noising, regression targets, prediction-type conversions and the masked loss.

Convention (shared by the whole project): `x_t = (1 - t) x_0 + t eps`, `t = 0` is clean data and `t = 1`
is pure noise. Everything here works on token arrays `x [B, L, P]` with a noise level per token
`t [B, L]` (a scalar or `[B]` also broadcasts), so one packed row can hold samples at different noise
levels and clean conditioning tokens (`t = 0`) next to noisy ones.

Prediction kinds. The denoiser's default output is the velocity `v = eps - x_0` (the time derivative of
`x_t`). It may instead predict `x_0` ("x0") or the noise ("epsilon"); samplers always integrate a
velocity, so `prediction_to_velocity` converts. Training compares a prediction with the target OF ITS
OWN KIND (`prediction_target`): converting an x0-prediction to a velocity before the loss would weight
errors by `1 / t^2`, which explodes near clean tokens.

Loss normalisation. `flow_matching_loss` defaults to the per-token mean: every generated token weighs
the same, so a long video contributes more than an image in the same batch (that is where its compute
went). `per_sample_weighting=True` gives every sample (packed segment) equal weight regardless of size.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

PredictionKind = Literal["velocity", "x0", "epsilon"]
PREDICTION_KINDS: tuple[str, ...] = ("velocity", "x0", "epsilon")

# Denominators t and (1 - t) are clamped to at least this when converting predictions, so conversions stay
# finite at t = 0 (clean tokens) and t = 1 (pure noise), where the other kinds carry no velocity information.
DEFAULT_SAFE_EPS = 1e-4


def _broadcast_t(t: jax.Array | float, x: jax.Array) -> jax.Array:
    """Append trailing unit axes to `t` ([B, L], [B] or scalar) so it broadcasts against `x` ([B, L, P])."""
    t = jnp.asarray(t, dtype=x.dtype)
    if t.ndim > x.ndim or t.shape != x.shape[: t.ndim]:
        raise ValueError(
            f"noise level t of shape {t.shape} does not lead the data shape {x.shape}; "
            "pass t as [B, L] (per token), [B] (per row) or a scalar for x of shape [B, L, P]."
        )
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


def _check_kind(kind: str) -> None:
    if kind not in PREDICTION_KINDS:
        raise ValueError(f"unknown prediction kind {kind!r}; use one of {PREDICTION_KINDS}.")


def add_noise(x0: jax.Array, noise: jax.Array, t: jax.Array | float) -> jax.Array:
    """The point `x_t = (1 - t) x_0 + t eps` on the straight path from data to noise."""
    tb = _broadcast_t(t, x0)
    return (1.0 - tb) * x0 + tb * noise


def velocity_target(x0: jax.Array, noise: jax.Array) -> jax.Array:
    """d x_t / d t = eps - x_0: the same for every t, which is what makes the paths straight."""
    return noise - x0


def x0_from_velocity(x_t: jax.Array, velocity: jax.Array, t: jax.Array | float) -> jax.Array:
    """x_0 = x_t - t v (exact for every t, no division)."""
    return x_t - _broadcast_t(t, x_t) * velocity


def noise_from_velocity(x_t: jax.Array, velocity: jax.Array, t: jax.Array | float) -> jax.Array:
    """eps = x_t + (1 - t) v (exact for every t, no division)."""
    return x_t + (1.0 - _broadcast_t(t, x_t)) * velocity


def velocity_from_x0(
    x_t: jax.Array, x0: jax.Array, t: jax.Array | float, safe_eps: float = DEFAULT_SAFE_EPS
) -> jax.Array:
    """v = (x_t - x_0) / t; t is clamped to >= safe_eps because an x0-prediction says nothing about v at t = 0."""
    tb = _broadcast_t(t, x_t)
    return (x_t - x0) / jnp.maximum(tb, safe_eps)


def velocity_from_noise(
    x_t: jax.Array, noise: jax.Array, t: jax.Array | float, safe_eps: float = DEFAULT_SAFE_EPS
) -> jax.Array:
    """v = (eps - x_t) / (1 - t); 1 - t is clamped to >= safe_eps (an eps-prediction is ill-posed at t = 1).

    At t = 1 the input IS the noise, so an epsilon-predicting network cannot tell anything about x_0 there;
    the clamp keeps the number finite, but it amplifies the network's error by 1 / safe_eps. Prefer the
    velocity or x0 kinds when sampling starts from pure noise.
    """
    one_minus_t = 1.0 - _broadcast_t(t, x_t)
    return (noise - x_t) / jnp.maximum(one_minus_t, safe_eps)


def prediction_to_velocity(
    prediction: jax.Array,
    x_t: jax.Array,
    t: jax.Array | float,
    kind: PredictionKind = "velocity",
    safe_eps: float = DEFAULT_SAFE_EPS,
) -> jax.Array:
    """Turn a network output of the given kind into the velocity the samplers integrate."""
    _check_kind(kind)
    if kind == "velocity":
        return prediction
    if kind == "x0":
        return velocity_from_x0(x_t, prediction, t, safe_eps)
    return velocity_from_noise(x_t, prediction, t, safe_eps)


def velocity_to_prediction(
    velocity: jax.Array, x_t: jax.Array, t: jax.Array | float, kind: PredictionKind = "velocity"
) -> jax.Array:
    """Inverse of `prediction_to_velocity` (exact: these directions need no division)."""
    _check_kind(kind)
    if kind == "velocity":
        return velocity
    if kind == "x0":
        return x0_from_velocity(x_t, velocity, t)
    return noise_from_velocity(x_t, velocity, t)


def prediction_target(x0: jax.Array, noise: jax.Array, kind: PredictionKind = "velocity") -> jax.Array:
    """What a network of this prediction kind is trained to output (see the module docstring)."""
    _check_kind(kind)
    if kind == "velocity":
        return velocity_target(x0, noise)
    if kind == "x0":
        return x0
    return noise


def _segment_means(
    values: jax.Array, counts_mask: jax.Array, segment_ids: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Per (row, segment) mean of `values` [B, L] over tokens where counts_mask, and whether it had any.

    Segment ids are bounded by L (a segment holds at least one token), so B * (L + 1) bins cover every
    possible segment without a static segment count; memory is linear in the batch size.
    """
    batch, length = values.shape
    bins = batch * (length + 1)
    flat_ids = (segment_ids + (length + 1) * jnp.arange(batch)[:, None]).reshape(-1)
    sums = jax.ops.segment_sum((values * counts_mask).reshape(-1), flat_ids, num_segments=bins)
    counts = jax.ops.segment_sum(counts_mask.reshape(-1), flat_ids, num_segments=bins)
    has_tokens = counts > 0
    return sums / jnp.maximum(counts, 1.0), has_tokens


def flow_matching_loss(
    prediction: jax.Array,
    target: jax.Array,
    loss_mask: jax.Array,
    segment_ids: jax.Array | None = None,
    per_sample_weighting: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Masked mean squared error between prediction and target, both [B, L, P].

    Each token's error is first averaged over the feature dim P. Default: mean over the tokens where
    `loss_mask` [B, L] is true (normalised by their number). `per_sample_weighting=True`: mean per sample
    (packed segment of `segment_ids` [B, L]; each row is one sample when segment_ids is None), then mean
    over the samples that have loss tokens. Returns (loss, aux); a batch without loss tokens gives loss 0.
    aux: `num_loss_tokens`, `num_samples` (samples with loss tokens) and `per_token_loss` [B, L] (0 off-mask).
    """
    if prediction.shape != target.shape or prediction.ndim != 3:
        raise ValueError(
            f"prediction {prediction.shape} and target {target.shape} must both be [B, L, P] of the same shape."
        )
    if loss_mask.shape != prediction.shape[:2]:
        raise ValueError(f"loss_mask {loss_mask.shape} must be [B, L] = {prediction.shape[:2]} (one flag per token).")
    if segment_ids is not None and segment_ids.shape != loss_mask.shape:
        raise ValueError(f"segment_ids {segment_ids.shape} must be [B, L] = {loss_mask.shape}, like loss_mask.")

    mask = loss_mask.astype(jnp.float32)
    # Select (not multiply) before squaring, so NaN/inf on masked-out tokens (padding garbage) reach
    # neither the loss nor its gradient.
    difference = jnp.where(loss_mask[..., None], prediction.astype(jnp.float32) - target.astype(jnp.float32), 0.0)
    per_token = jnp.mean(difference**2, axis=-1)
    num_tokens = jnp.sum(mask)

    if segment_ids is None:
        segment_ids = jnp.ones(loss_mask.shape, jnp.int32)
    sample_means, sample_has_tokens = _segment_means(per_token, mask, segment_ids.astype(jnp.int32))
    num_samples = jnp.sum(sample_has_tokens.astype(jnp.float32))

    if per_sample_weighting:
        loss = jnp.sum(jnp.where(sample_has_tokens, sample_means, 0.0)) / jnp.maximum(num_samples, 1.0)
    else:
        loss = jnp.sum(per_token) / jnp.maximum(num_tokens, 1.0)
    aux = {"num_loss_tokens": num_tokens, "num_samples": num_samples, "per_token_loss": per_token}
    return loss, aux
