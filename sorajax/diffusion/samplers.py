"""ODE samplers for the rectified-flow probability flow dx/dt = v(x, t), integrated from t = 1 (or an
SDEdit start) down to t = 0 over a given, decreasing `timesteps` array.

All samplers are pure functions built on `jax.lax.fori_loop`, so a whole sampling run jits into one
program; `timesteps` is an input array (its length fixes the step count, its values may change freely).

Network evaluations (NFE) for N = len(timesteps) - 1 steps ending at t = 0:
- "euler":    N            (first order)
- "heun":     2N - 1       (Euler predictor + trapezoid corrector; the last step, into t = 0, is plain
                            Euler, because the velocity at t = 0 is never needed and is where x0- and
                            eps-parameterised networks are least defined)
- "dpmpp_2m": N            (second order from the second step on, reusing the previous x0 estimate)
- "unipc":    N            (UniPC predictor-corrector, Wan's default solver: ``diffusion/unipc.py``)

DPM-Solver++(2M) in flow terms. With alpha_t = 1 - t, sigma_t = t, lambda_t = log(alpha_t / sigma_t) and
the data prediction D = x_t - t v, the exact-exponential first-order step from t to t' reduces to
`x' = (t'/t) x + ((t - t')/t) D` (which equals an Euler step in x: the paths are straight). The 2M step
replaces D by `D + (D - D_prev) / (2 r)`, r = (lambda_t - lambda_prev) / (lambda_t' - lambda_t).
Ends: at the t = 1 start lambda = -inf, so r = inf and the correction vanishes (first order, exactly the
limit of the formula); the step into t = 0 (lambda = +inf) is first order, x' = D ("lower order final").

Conditioning: tokens with `cond_mask` [B, L] true are held at `x_cond` and shown to the network with
t = 0 at EVERY evaluation, including Heun's predictor; only the other tokens are integrated. Padding of a
packed batch can be passed the same way (as conditioning tokens with x_cond = 0).

State carried between evaluations: every solver loops over a `CarriedVelocityFn`, ``(x, t, carry) ->
(v, carry)``, and threads `carry` (any pytree, e.g. the DiT's step cache) through its loop in the order
the network is called, so a denoiser that remembers its last evaluation works with every solver alike.
`sample` is the stateless form (``carry = ()``: the same program as a loop without it).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from sorajax.diffusion.flow import add_noise
from sorajax.diffusion.unipc import unipc

# velocity_fn(x_t [B, L, P], t_tokens [B, L]) -> velocity [B, L, P]
VelocityFn = Callable[[jax.Array, jax.Array], jax.Array]
# carried_velocity_fn(x_t, t_tokens, carry) -> (velocity, carry); carry is any pytree, () for none.
CarriedVelocityFn = Callable[[jax.Array, jax.Array, Any], tuple[jax.Array, Any]]
SAMPLER_METHODS: tuple[str, ...] = ("euler", "heun", "dpmpp_2m", "unipc")


def num_function_evals(method: str, num_steps: int, ends_at_zero: bool = True) -> int:
    """How many times `sample` calls the network for `num_steps` steps (see the module docstring)."""
    if method not in SAMPLER_METHODS:
        raise ValueError(f"unknown sampler method {method!r}; use one of {SAMPLER_METHODS}.")
    if method == "heun":
        return 2 * num_steps - (1 if ends_at_zero else 0)
    return num_steps


def sdedit_start(x_input: jax.Array, noise: jax.Array, strength: jax.Array | float) -> jax.Array:
    """SDEdit's starting point: the input noised to t = strength (then sample from `strength` to 0).

    strength 0 keeps the input exactly; strength 1 is pure noise (ordinary generation).
    """
    return add_noise(x_input, noise, strength)


class _Conditioner:
    """Holds conditioning tokens at their clean values and builds per-token t for the network."""

    def __init__(self, x_init: jax.Array, cond_mask: jax.Array | None, x_cond: jax.Array | None):
        if x_init.ndim != 3:
            raise ValueError(f"x_init must be tokens [B, L, P], got shape {x_init.shape}.")
        if (cond_mask is None) != (x_cond is None):
            raise ValueError("pass cond_mask and x_cond together (the mask says which tokens, x_cond their values).")
        if cond_mask is not None:
            if cond_mask.shape != x_init.shape[:2]:
                raise ValueError(f"cond_mask {cond_mask.shape} must be [B, L] = {x_init.shape[:2]}.")
            if x_cond.shape != x_init.shape:
                raise ValueError(f"x_cond {x_cond.shape} must have the token shape of x_init {x_init.shape}.")
            x_cond = x_cond.astype(x_init.dtype)
        self.mask = None if cond_mask is None else cond_mask.astype(bool)
        self.x_cond = x_cond
        self.token_shape = x_init.shape[:2]

    def hold(self, x: jax.Array) -> jax.Array:
        if self.mask is None:
            return x
        return jnp.where(self.mask[..., None], self.x_cond, x)

    def token_t(self, t: jax.Array) -> jax.Array:
        t_tokens = jnp.broadcast_to(t.astype(jnp.float32), self.token_shape)
        if self.mask is None:
            return t_tokens
        return jnp.where(self.mask, 0.0, t_tokens)


def _step_or_stay(t: jax.Array, t_next: jax.Array, x: jax.Array, x_new: jax.Array) -> jax.Array:
    """A zero-length step (e.g. SDEdit with strength 0) must leave x exactly unchanged."""
    return jnp.where(t_next == t, x, x_new)


def _euler(velocity_fn: CarriedVelocityFn, x: jax.Array, timesteps: jax.Array, cond: _Conditioner,
           carry: Any) -> tuple[jax.Array, Any]:
    def body(i, state):
        x, carry = state
        t, t_next = timesteps[i], timesteps[i + 1]
        v, carry = velocity_fn(x, cond.token_t(t), carry)
        x_new = cond.hold(x + (t_next - t).astype(x.dtype) * v)
        return _step_or_stay(t, t_next, x, x_new), carry

    return jax.lax.fori_loop(0, timesteps.shape[0] - 1, body, (x, carry))


def _heun(velocity_fn: CarriedVelocityFn, x: jax.Array, timesteps: jax.Array, cond: _Conditioner,
          carry: Any) -> tuple[jax.Array, Any]:
    def body(i, state):
        x, carry = state
        t, t_next = timesteps[i], timesteps[i + 1]
        dt = (t_next - t).astype(x.dtype)
        v, carry = velocity_fn(x, cond.token_t(t), carry)
        x_euler = cond.hold(x + dt * v)

        def corrector(predicted):
            x_pred, carry = predicted
            v_next, carry = velocity_fn(x_pred, cond.token_t(t_next), carry)
            return cond.hold(x + dt * 0.5 * (v + v_next)), carry

        x_new, carry = jax.lax.cond(t_next > 0, corrector, lambda predicted: predicted, (x_euler, carry))
        return _step_or_stay(t, t_next, x, x_new), carry

    return jax.lax.fori_loop(0, timesteps.shape[0] - 1, body, (x, carry))


def _log_snr_ratio(t: jax.Array) -> jax.Array:
    """lambda_t = log((1 - t) / t), equal to -inf at t = 1 and +inf at t = 0."""
    return jnp.log1p(-t) - jnp.log(t)


def _dpmpp_2m(velocity_fn: CarriedVelocityFn, x: jax.Array, timesteps: jax.Array, cond: _Conditioner,
              carry: Any) -> tuple[jax.Array, Any]:
    timesteps = timesteps.astype(jnp.float32)

    def body(i, state):
        x, data_prev, carry = state
        t, t_next = timesteps[i], timesteps[i + 1]
        t_prev = timesteps[jnp.maximum(i - 1, 0)]
        v, carry = velocity_fn(x, cond.token_t(t), carry)
        data = x - t.astype(x.dtype) * v  # D = x0 estimate

        # r = h_prev / h; the correction D + (D - D_prev) / (2 r) is second order. It is switched off
        # (first order) on the first step, after the t = 1 start (h_prev = inf), and into t = 0 (h = inf).
        second_order = (i > 0) & (t_prev < 1.0) & (t_next > 0.0) & (t_prev > t) & (t > t_next)
        safe = lambda value: jnp.where(second_order, value, 0.5)
        h = _log_snr_ratio(safe(t_next)) - _log_snr_ratio(safe(t))
        h_prev = _log_snr_ratio(safe(t)) - _log_snr_ratio(safe(t_prev))
        correction_weight = jnp.where(second_order, h / (2.0 * jnp.where(second_order, h_prev, 1.0)), 0.0)
        data_eff = data + correction_weight.astype(x.dtype) * (data - data_prev)

        # x' = (t'/t) x + ((t - t')/t) D; at t' = 0 this is exactly D.
        ratio = (t_next / jnp.maximum(t, 1e-12)).astype(x.dtype)
        x_new = cond.hold(ratio * x + (1.0 - ratio) * data_eff)
        return _step_or_stay(t, t_next, x, x_new), data, carry

    x, _, carry = jax.lax.fori_loop(0, timesteps.shape[0] - 1, body, (x, jnp.zeros_like(x), carry))
    return x, carry


_SOLVERS = {"euler": _euler, "heun": _heun, "dpmpp_2m": _dpmpp_2m, "unipc": unipc}


def sample(
    velocity_fn: VelocityFn,
    x_init: jax.Array,
    timesteps: jax.Array,
    *,
    method: str = "euler",
    cond_mask: jax.Array | None = None,
    x_cond: jax.Array | None = None,
) -> jax.Array:
    """Integrate x_init [B, L, P] at t = timesteps[0] down to timesteps[-1] (normally 0); returns x_0.

    `velocity_fn(x_t, t_tokens)` sees t_tokens [B, L]: the step's time on generated tokens, 0 on
    conditioning tokens (`cond_mask` [B, L] with clean values `x_cond` [B, L, P], held at every step).
    Wrap the call in `jax.jit` (with velocity_fn closed over or static) to compile the whole loop.
    """
    x, _ = sample_carrying(lambda x, t, carry: (velocity_fn(x, t), carry), x_init, timesteps, (), method=method,
                           cond_mask=cond_mask, x_cond=x_cond)
    return x


def sample_carrying(
    velocity_fn: CarriedVelocityFn,
    x_init: jax.Array,
    timesteps: jax.Array,
    carry: Any,
    *,
    method: str = "euler",
    cond_mask: jax.Array | None = None,
    x_cond: jax.Array | None = None,
) -> tuple[jax.Array, Any]:
    """`sample` with `carry` threaded through every network evaluation, in call order; returns (x_0, carry)."""
    if method not in _SOLVERS:
        raise ValueError(f"unknown sampler method {method!r}; use one of {SAMPLER_METHODS}.")
    timesteps = jnp.asarray(timesteps, jnp.float32)
    if timesteps.ndim != 1 or timesteps.shape[0] < 2:
        raise ValueError(
            f"timesteps must be a 1-D array of at least 2 noise levels, got shape {timesteps.shape}; "
            "build it with sampling_timesteps(num_steps, shift, start)."
        )
    cond = _Conditioner(x_init, cond_mask, x_cond)
    return _SOLVERS[method](velocity_fn, cond.hold(x_init), timesteps, cond, carry)
