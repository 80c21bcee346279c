"""The one sampling loop over a PackedBatch: denoiser -> velocity -> guidance -> ODE solver.

Every caller (the pipeline, sharded sampling on a mesh, the AOT compile, evaluation and the
experiments) samples through :func:`sample_packed`, or builds its velocity with
:func:`packed_velocity` when it must reshape the field first (a tied-window experiment), so the
prediction kind, the null caption and the held tokens mean the same thing everywhere.

- The denoiser is a function ``denoise(params, x_t, t, batch) -> prediction`` (the DiT applied to a
  batch's positions, segments and captions: :func:`packed_denoiser`). Its output is of the kind the
  run was trained for (``config.prediction``: velocity, x0 or epsilon) and is turned into the
  velocity the solvers integrate here, so an x0- or epsilon-trained run samples correctly.
- Classifier-free guidance runs both branches as one batched call on 2B rows; the unconditional
  branch gets `uncond` captions (the null caption: zero embeddings over the same text positions, as
  caption dropout trains it; or a negative prompt). ``guidance=None`` runs the conditional branch alone.
- Tokens the batch does not generate (``~loss_mask``: conditioning and padding) are held at the
  batch's token values and shown to the network with t = 0 at every step.
- A denoiser may carry state from call to call (:func:`packed_carried_denoiser`: the DiT's step
  cache, a mutable variable collection); :func:`sample_packed_carrying` threads it through the solver
  loop and returns it. :func:`sample_packed` is the same loop with no state.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sorajax.config_dataclasses import from_mapping
from sorajax.diffusion.flow import PREDICTION_KINDS, prediction_to_velocity
from sorajax.diffusion.guidance import guided_carried_velocity_fn
from sorajax.diffusion.samplers import SAMPLER_METHODS, CarriedVelocityFn, VelocityFn, sample_carrying
from sorajax.patches import PackedBatch

# denoise(params, x_t [B, L, P], t [B, L], batch) -> prediction [B, L, P]; reads the batch's positions,
# segment ids and captions (never its tokens, t or loss mask).
Denoiser = Callable[[Any, jax.Array, jax.Array, PackedBatch], jax.Array]
# The same carrying state: denoise(params, x_t, t, batch, carry) -> (prediction, carry).
CarriedDenoiser = Callable[[Any, jax.Array, jax.Array, PackedBatch, Any], tuple[jax.Array, Any]]
MAX_STEPS = 1000
# 'sorajax': N + 1 levels from 1 to 0, shifted by the sample's token count (as training shifts them);
# 'wan': Wan's / diffusers' flow grid with one constant shift, the network shown truncated levels.
SCHEDULES = ("sorajax", "wan")
# An epsilon-predicting network's output at t = 1 says nothing about the data (its input IS the noise),
# so its sampling starts just below: the mismatch of starting from pure noise there is ~1e-3 of the signal.
EPSILON_START = 0.999


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    """A run's sampling defaults (its config's `sample` section); every field can be overridden per call."""

    method: str = "dpmpp_2m"
    steps: int = 10
    guidance: float = 4.0
    use_ema: bool = True
    frames: int = 9
    height: int = 64
    width: int = 64
    schedule: str = "sorajax"
    shift: float = 0.0  # > 0: one constant noise-level shift (the 'wan' schedule needs one)
    negative_prompt: str = ""  # the unconditional branch's caption when a call gives none ('' = null caption)
    tile: int | None = None  # decode (and encode) in spatial tiles of this many latent pixels; None: whole frames
    step_cache: float = 0.0  # > 0: the DiT's step cache at this threshold (sorajax.models.dit_step_cache); 0: off

    def __post_init__(self) -> None:
        check_step_cache(self.step_cache, "sample.step_cache")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown sample.schedule {self.schedule!r}: use one of {SCHEDULES}")
        if self.schedule == "wan" and not self.shift > 0:
            raise ValueError(f"sample.schedule='wan' needs sample.shift > 0 (Wan uses 3-12), got {self.shift}")
        if self.tile is not None and self.tile < 1:
            raise ValueError(f"sample.tile must be >= 1 latent pixels or None (whole frames), got {self.tile}")
        if self.method not in SAMPLER_METHODS:
            raise ValueError(f"unknown sampler {self.method!r}: use one of {list(SAMPLER_METHODS)}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"sample.steps must be between 1 and {MAX_STEPS}, got {self.steps}; 10-50 is typical")
        if not 0 <= self.guidance <= 50:
            raise ValueError(f"guidance must be in [0, 50], got {self.guidance}; 1 = no guidance, 3-7 is typical")
        if min(self.frames, self.height, self.width) < 1:
            raise ValueError(f"sample size must be positive, got {self.frames}x{self.height}x{self.width}")

    @classmethod
    def from_mapping(cls, values: Any) -> "SampleConfig":
        return from_mapping(cls, values, "sample")


@dataclasses.dataclass
class SampleRequest:
    """What one call generates: sizes in pixels, the noise seed, and how to sample."""

    frames: int
    height: int
    width: int
    seed: int = 0
    steps: int = 10
    method: str = "dpmpp_2m"
    guidance: float = 4.0
    shift: float | None = None  # None: the run's (token-count shift, or its constant sample.shift)
    step_cache: float = 0.0  # > 0: skip most DiT blocks when block 0's residual changed less than this; 0: off

    def check(self) -> None:
        """The sampler settings, checked before anything is encoded or sampled."""
        check_step_cache(self.step_cache, "step_cache")
        if self.shift is not None and not (np.isfinite(self.shift) and 0 < self.shift <= 100):
            raise ValueError(f"shift must be in (0, 100], got {self.shift}; Wan uses 3-12, 1 = no shift")
        if not 1 <= self.steps <= MAX_STEPS:
            raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {self.steps}; 10-50 is typical")
        if self.method not in SAMPLER_METHODS:
            raise ValueError(f"unknown sampler {self.method!r}: use one of {list(SAMPLER_METHODS)}")
        if not (np.isfinite(self.guidance) and 0 <= self.guidance <= 50):
            raise ValueError(f"guidance must be in [0, 50], got {self.guidance}; 1 = no guidance, 3-7 is typical")

    @classmethod
    def defaults(cls, sample: SampleConfig, seed: int = 0) -> "SampleRequest":
        return cls(frames=sample.frames, height=sample.height, width=sample.width, seed=seed, steps=sample.steps,
                   method=sample.method, guidance=sample.guidance, shift=sample.shift or None,
                   step_cache=sample.step_cache)


def check_step_cache(threshold: float, name: str) -> None:
    if not (np.isfinite(threshold) and 0.0 <= threshold <= 10.0):
        raise ValueError(f"{name} must be in [0, 10], got {threshold}; 0 = off, 0.1-0.3 is typical")


def start_level(prediction: str, strength: float = 1.0) -> float:
    """The noise level sampling starts from: 1 (pure noise), an SDEdit `strength`, below 1 for epsilon."""
    return min(strength, EPSILON_START) if prediction == "epsilon" else strength


def _apply(model: Any, variables: dict[str, Any], x_t: jax.Array, t: jax.Array, batch: PackedBatch, **kwargs: Any):
    return model.apply(variables, x_t, batch.positions, batch.segment_ids, t, batch.text, batch.text_segment_ids,
                       **kwargs)


def packed_denoiser(model: Any) -> Denoiser:
    """The DiT (any linen module with the DiT's call signature) as a denoiser of packed batches."""

    def denoise(params: Any, x_t: jax.Array, t: jax.Array, batch: PackedBatch) -> jax.Array:
        return _apply(model, {"params": params}, x_t, t, batch)

    return denoise


def packed_carried_denoiser(model: Any, collection: str) -> CarriedDenoiser:
    """The model as a denoiser whose mutable variable `collection` (the DiT's step cache) is the carry."""

    def denoise(params: Any, x_t: jax.Array, t: jax.Array, batch: PackedBatch, carry: Any) -> tuple[jax.Array, Any]:
        out, variables = _apply(model, {"params": params, collection: carry}, x_t, t, batch, mutable=[collection])
        return out, variables[collection]

    return denoise


def stateless(denoise: Denoiser) -> CarriedDenoiser:
    """A plain denoiser in the carried form (its carry passes through untouched)."""
    return lambda params, x_t, t, batch, carry: (denoise(params, x_t, t, batch), carry)


def _conditioning_rows(batch: PackedBatch) -> PackedBatch:
    """The batch without its token-sized fields: what both guidance branches concatenate (cheaply)."""
    return batch.replace(tokens=None, t=None, loss_mask=None)


def packed_velocity(denoise: Denoiser, params: Any, batch: PackedBatch, *, prediction: str = "velocity",
                    guidance: float | jax.Array | None = None,
                    uncond: tuple[jax.Array, jax.Array] | None = None) -> VelocityFn:
    """``velocity(x_t, t)`` over the batch's rows: the prediction as a velocity, with CFG unless `guidance` is None.

    `uncond` is (text [B, Lt, D], text segment ids [B, Lt]) of the unconditional branch; None means the
    null caption (zeros over the batch's own text positions).
    """
    carried = packed_carried_velocity(stateless(denoise), params, batch, prediction=prediction, guidance=guidance,
                                      uncond=uncond)
    return lambda x_t, t: carried(x_t, t, ())[0]


def packed_carried_velocity(denoise: CarriedDenoiser, params: Any, batch: PackedBatch, *,
                            prediction: str = "velocity", guidance: float | jax.Array | None = None,
                            uncond: tuple[jax.Array, jax.Array] | None = None) -> CarriedVelocityFn:
    """`packed_velocity` for a carried denoiser: ``velocity(x_t, t, carry) -> (velocity, carry)``."""
    if prediction not in PREDICTION_KINDS:
        raise ValueError(f"unknown prediction kind {prediction!r}; use one of {PREDICTION_KINDS}")

    def velocity(x_t: jax.Array, t: jax.Array, rows: PackedBatch, carry: Any) -> tuple[jax.Array, Any]:
        out, carry = denoise(params, x_t, t, rows, carry)
        return prediction_to_velocity(out, x_t, t, prediction), carry

    cond = _conditioning_rows(batch)
    if guidance is None:
        return lambda x_t, t, carry: velocity(x_t, t, cond, carry)
    text, text_segments = uncond if uncond is not None else (jnp.zeros_like(batch.text), batch.text_segment_ids)
    return guided_carried_velocity_fn(velocity, cond, cond.replace(text=text, text_segment_ids=text_segments),
                                      guidance)


def on_grid(denoise: CarriedDenoiser, grid: jax.Array, network_times: jax.Array) -> CarriedDenoiser:
    """`denoise` shown `network_times[i]` wherever the solver asks for level `grid[i]` (per token).

    Wan's schedulers give the network truncated timesteps while stepping with exact levels
    (`sorajax.diffusion.unipc.wan_network_times`); every solver evaluates on grid levels only.
    """

    def shown(params: Any, x_t: jax.Array, t: jax.Array, batch: PackedBatch, carry: Any) -> tuple[jax.Array, Any]:
        nearest = jnp.argmin(jnp.abs(t[..., None] - grid), axis=-1)
        return denoise(params, x_t, jnp.asarray(network_times)[nearest], batch, carry)

    return shown


def sample_packed(denoise: Denoiser, params: Any, batch: PackedBatch, x_init: jax.Array, timesteps: jax.Array, *,
                  method: str = "euler", prediction: str = "velocity", guidance: float | jax.Array | None = None,
                  uncond: tuple[jax.Array, jax.Array] | None = None,
                  network_times: jax.Array | None = None) -> jax.Array:
    """Tokens [B, L, P]: the batch's generated tokens (``loss_mask``) integrated from `x_init`, the rest held.

    `batch.tokens` holds the values of the tokens that are not generated (conditioning; padding);
    `x_init` is where the generated ones start (noise, or the SDEdit start at ``timesteps[0]``).
    `network_times` (one per level of `timesteps`, plus 0 for held tokens): what the network is shown
    instead of the exact levels (Wan's schedule); None shows the levels themselves.
    """
    tokens, _ = sample_packed_carrying(stateless(denoise), params, batch, x_init, timesteps, (), method=method,
                                       prediction=prediction, guidance=guidance, uncond=uncond,
                                       network_times=network_times)
    return tokens


def sample_packed_carrying(denoise: CarriedDenoiser, params: Any, batch: PackedBatch, x_init: jax.Array,
                           timesteps: jax.Array, carry: Any, *, method: str = "euler", prediction: str = "velocity",
                           guidance: float | jax.Array | None = None,
                           uncond: tuple[jax.Array, jax.Array] | None = None,
                           network_times: jax.Array | None = None) -> tuple[jax.Array, Any]:
    """`sample_packed` with the denoiser's `carry` threaded through every call; returns (tokens, carry).

    Under guidance the denoiser sees 2B rows (conditional, then unconditional), so a carry sized per row
    must hold 2B rows.
    """
    if network_times is not None:
        grid = jnp.concatenate([jnp.asarray(timesteps, jnp.float32), jnp.zeros((1,), jnp.float32)])
        shown = jnp.concatenate([jnp.asarray(network_times, jnp.float32), jnp.zeros((1,), jnp.float32)])
        denoise = on_grid(denoise, grid, shown)
    velocity = packed_carried_velocity(denoise, params, batch, prediction=prediction, guidance=guidance,
                                       uncond=uncond)
    return sample_carrying(velocity, jnp.asarray(x_init, jnp.float32), timesteps, carry, method=method,
                           cond_mask=~jnp.asarray(batch.loss_mask), x_cond=jnp.asarray(batch.tokens, jnp.float32))


def initial_noise(key: jax.Array, shape: tuple[int, ...]) -> np.ndarray:
    """`jax.random.normal(key, shape)` as float32 numpy, drawn as a flat vector of the next power-of-two length.

    Threefry's draws are prefix-stable (each number depends on the key and its flat index), so these are the
    same numbers; but the many latent sizes of a run (four sample sizes, six probe sizes) share one or two
    compiled draws instead of compiling one each (~1 s apiece on a CPU).
    """
    size = int(np.prod(shape))
    length = 1 << max(size - 1, 0).bit_length()
    return np.asarray(jax.random.normal(key, (length,), jnp.float32))[:size].reshape(shape)
