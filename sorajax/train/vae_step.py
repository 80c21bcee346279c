"""The autoencoder's training and evaluation steps, as pure functions.

`train_step(state, batch) -> (state, metrics)` has no side effects and takes all
randomness from `state.rng`, so it can be wrapped in `jax.jit` with any in/out
shardings (data parallel, FSDP) without being rewritten.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from sorajax.eval.image_metrics import psnr
from sorajax.models.vae import CausalVAE, kl_divergence, pixels_from_uint8, smallest_clip_shape


@flax.struct.dataclass
class VAETrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    latent_stats: Any  # per-channel latent mean/std, stored with the weights.
    rng: jax.Array

    def variables(self) -> dict[str, Any]:
        return {"params": self.params, "latent_stats": self.latent_stats}


def init_state(vae: CausalVAE, optimizer: optax.GradientTransformation, seed: int) -> VAETrainState:
    """The fresh state; weights do not depend on the clip size, so the smallest clip traces them."""
    init_rng, sample_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed), 3)
    dummy = jnp.zeros(smallest_clip_shape(vae.config), jnp.float32)
    variables = vae.init({"params": init_rng, "sample": sample_rng}, dummy)
    params = variables["params"]
    return VAETrainState(step=jnp.asarray(0, jnp.int32), params=params, opt_state=optimizer.init(params),
                         latent_stats=variables["latent_stats"], rng=state_rng)


def posterior_noise_scale(step: jax.Array, ramp_steps: int) -> jax.Array:
    """0 -> 1 linearly over `ramp_steps`: the posterior's noise is faded in.

    At init the posterior std is about 1, as large as the latent means; a decoder
    that sees mostly noise learns to ignore its input and predict the mean colour,
    and leaves that basin slowly. Fading the noise in lets it first learn to
    reconstruct, then become robust to the posterior's spread (a proper VAE again
    from `ramp_steps` on).
    """
    if ramp_steps <= 0:
        return jnp.float32(1.0)
    return jnp.clip(step.astype(jnp.float32) / ramp_steps, 0.0, 1.0)


def vae_loss(
    vae: Any, params: Any, latent_stats: Any, video: jax.Array, rng: jax.Array, kl_weight: float, l2_weight: float,
    noise_scale: jax.Array | float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """L1 (+ optional L2) reconstruction plus a small KL term."""
    variables = {"params": params, "latent_stats": latent_stats}
    mean, logvar = vae.apply(variables, video, method="encode")
    z = mean + noise_scale * jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
    recon = vae.apply(variables, z, method="decode").astype(jnp.float32)
    l1 = jnp.mean(jnp.abs(recon - video))
    l2 = jnp.mean((recon - video) ** 2)
    kl = jnp.mean(kl_divergence(mean.astype(jnp.float32), logvar.astype(jnp.float32)))
    loss = l1 + l2_weight * l2 + kl_weight * kl
    return loss, {"loss": loss, "l1": l1, "l2": l2, "kl": kl, "psnr": jnp.mean(psnr(recon, video))}


def make_train_step(
    vae: Any, optimizer: optax.GradientTransformation, kl_weight: float, l2_weight: float = 0.0, noise_ramp_steps: int = 0
) -> Callable:
    def train_step(state: VAETrainState, batch: dict[str, jax.Array]) -> tuple[VAETrainState, dict[str, jax.Array]]:
        video = pixels_from_uint8(batch["video"])
        rng, step_rng = jax.random.split(state.rng)
        grad_fn = jax.value_and_grad(vae_loss, argnums=1, has_aux=True)
        noise_scale = posterior_noise_scale(state.step, noise_ramp_steps)
        (_, metrics), grads = grad_fn(
            vae, state.params, state.latent_stats, video, step_rng, kl_weight, l2_weight, noise_scale
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics["grad_norm"] = optax.tree.norm(grads)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state, rng=rng)
        return new_state, metrics

    return train_step
