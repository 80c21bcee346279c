"""UniPC for flow matching: the solver Wan samples with by default (Zhao et al. 2023, "UniPC").

A multistep predictor-corrector in the log-SNR variable ``lambda = log((1 - t) / t)`` of the
rectified-flow path ``x = (1 - t) x0 + t eps``, on the network's data prediction ``D = x - t v``.
Each step first corrects the sample it arrived at with the new prediction (UniC, of the previous
step's order), then predicts the next sample (UniP: second order once two predictions exist, first
order into the last noise level), in the B(h) = e^h - 1 form ("bh2"), as diffusers'
``UniPCMultistepScheduler`` with flow sigmas does. One network evaluation per step.

Ends are limits of the formulas: a start at t = 1 (lambda = -inf) or an end at t = 0 (+inf) make the
ratios ``r`` infinite or zero, which the closed-form 2x2 solve below turns into vanishing corrections,
so sorajax's grids (starting at exactly 1) and Wan's (``wan_sigmas``: starting at 1 - 1e-6) both work.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

TRAIN_TIMESTEPS = 1000


def _wan_sigmas64(steps: int, shift: float) -> np.ndarray:
    if steps < 1:
        raise ValueError(f"a sampling grid needs at least 1 step, got {steps}")
    sigmas = np.linspace(1.0, 1.0 / TRAIN_TIMESTEPS, steps + 1)[:-1]
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    if abs(sigmas[0] - 1.0) < 1e-6:
        sigmas[0] -= 1e-6
    return np.concatenate([sigmas, [0.0]])


def wan_sigmas(steps: int, shift: float) -> np.ndarray:
    """Wan's sampling grid (diffusers' flow sigmas): N levels from 1 to 1/1000, shifted, the first
    nudged below 1, then 0; float32 as its scheduler keeps them. Compare ``timesteps.sampling_timesteps``."""
    return _wan_sigmas64(steps, shift).astype(np.float32)


def wan_network_times(steps: int, shift: float) -> np.ndarray:
    """The noise level the NETWORK is shown at each level of ``wan_sigmas``: floor(1000 sigma) / 1000.

    Why: Wan's and diffusers' schedulers hand the transformer integer timesteps (int64 of 1000 sigma,
    computed in float64) while the solver steps with the exact sigmas; reproducing their samples needs both.
    """
    return (np.floor(_wan_sigmas64(steps, shift) * TRAIN_TIMESTEPS) / TRAIN_TIMESTEPS).astype(np.float32)


def _log_snr(t: jax.Array) -> jax.Array:
    return jnp.log1p(-t) - jnp.log(t)


def _coefficients(t_from: jax.Array, t_to: jax.Array, t_older: jax.Array):
    """(B(h), b1, b2, r): the step's exponential factor, order-1/2 right-hand sides, older point's ratio."""
    lam_from = _log_snr(t_from)
    h = _log_snr(t_to) - lam_from
    b_h = jnp.expm1(-h)  # e^-h - 1 (data prediction), also h*phi_1
    phi = b_h / -h - 1.0
    b1 = phi / b_h
    b2 = (phi / -h - 0.5) * 2.0 / b_h
    r = (_log_snr(t_older) - lam_from) / h
    return b_h, b1, b2, r


def _update(x: jax.Array, t_from: jax.Array, t_to: jax.Array, b_h: jax.Array, d0: jax.Array,
            residual: jax.Array) -> jax.Array:
    """``x' = (t'/t) x - (1 - t') B(h) (D0 + residual)`` (the first two terms are the exact first-order step)."""
    return (t_to / t_from) * x - (1.0 - t_to) * b_h * (d0 + residual)


def unipc(velocity_fn: Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, Any]], x: jax.Array,
          timesteps: jax.Array, cond: Any, carry: Any) -> tuple[jax.Array, Any]:
    """UniPC-2 over ``timesteps`` (decreasing, ending at 0); ``cond`` holds given tokens and ``carry`` is
    threaded through the network calls (``samplers``: ``velocity_fn(x, t, carry) -> (v, carry)``)."""
    n = timesteps.shape[0] - 1

    def t_at(i):
        return timesteps[jnp.clip(i, 0, n)]

    def body(i, state):
        x, last_x, d_prev, d_prev2, carry = state
        t = t_at(i)
        v, carry = velocity_fn(x, cond.token_t(t), carry)
        d = x - t * v
        # UniC: correct the sample reached by the last step (from t_at(i - 1)) with the new prediction.
        b_h, b1, b2, r = _coefficients(t_at(i - 1), t, t_at(i - 2))
        first = _update(last_x, t_at(i - 1), t, b_h, d_prev, 0.5 * (d - d_prev))
        rho0 = jnp.where(jnp.isfinite(r), (b1 - b2) / (1.0 - r), 0.0)  # the 2x2 solve, closed form
        older = jnp.where(jnp.isfinite(r) & (r != 0), (d_prev2 - d_prev) / r, 0.0)
        second = _update(last_x, t_at(i - 1), t, b_h, d_prev, rho0 * older + (b1 - rho0) * (d - d_prev))
        last_order = jnp.minimum(i, 2)  # the order the previous step predicted with (at most 2, 1 at step 1)
        corrected = cond.hold(jnp.where(last_order >= 2, second, first))
        x = jnp.where((i > 0) & (t_at(i - 1) != t), corrected, x)  # nothing to correct after a zero-length step
        # UniP: predict the next sample; first order at the first and the last step.
        b_h, _, _, r = _coefficients(t, t_at(i + 1), t_at(i - 1))
        d1 = jnp.where(jnp.isfinite(r) & (r != 0), (d_prev - d) / r, 0.0)
        second_order = (i > 0) & (i < n - 1)
        x_next = cond.hold(_update(x, t, t_at(i + 1), b_h, d, jnp.where(second_order, 0.5 * d1, 0.0)))
        x_next = jnp.where(t_at(i + 1) == t, x, x_next)  # a zero-length step leaves x exactly as it is
        return x_next, x, d, d_prev, carry

    zeros = jnp.zeros_like(x)
    x, *_, carry = jax.lax.fori_loop(0, n, body, (x, x, zeros, zeros, carry))
    return x, carry
