"""The diffusion transformer's training step, as a pure function.

One step on a `PackedBatch`: per-sample noise levels (logit-normal, shifted for the sample's token
count) spread over its tokens, conditioning tokens kept clean (t = 0), captions dropped at random
for classifier-free guidance, the rectified-flow loss of the run's prediction kind on the
generated tokens only, AdamW, EMA of the weights. All randomness comes from `state.rng`, so
`jax.jit` with any shardings can wrap it. The denoiser is the same one the sampler calls
(`sorajax.diffusion.sampling.packed_denoiser`).
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

from sorajax.diffusion.flow import add_noise, flow_matching_loss, prediction_target
from sorajax.diffusion.guidance import drop_captions
from sorajax.diffusion.sampling import Denoiser
from sorajax.diffusion.timesteps import TrainingTimeConfig, training_t
from sorajax.models.lora import LoraConfig, init_adapters
from sorajax.patches import PackedBatch


@flax.struct.dataclass
class DiTTrainState:
    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any
    rng: jax.Array


def init_state(model: Any, optimizer: optax.GradientTransformation, example: PackedBatch, seed: int,
               lora: LoraConfig | None = None) -> DiTTrainState:
    """The fresh state (params still in their logical boxes; the runner unboxes them, born sharded).

    `example` gives only shapes (one row is traced); the EMA starts as a copy of the weights. With
    `lora` enabled the trained params are the adapters alone (the DiT's own weights are only traced
    for their shapes and names: the base comes from another run).
    """
    init_rng, state_rng = jax.random.split(jax.random.PRNGKey(seed))
    row = jax.tree.map(lambda x: jnp.zeros((1, *x.shape[1:]), x.dtype), example)

    def dit_params(rng: jax.Array) -> Any:
        return model.init(rng, row.tokens, row.positions, row.segment_ids, row.t, row.text,
                          row.text_segment_ids)["params"]

    if lora is not None and lora.enabled:
        params = init_adapters(jax.eval_shape(dit_params, init_rng), lora, init_rng)
    else:
        params = dit_params(init_rng)
    return DiTTrainState(step=jnp.asarray(0, jnp.int32), params=params, ema_params=jax.tree.map(jnp.copy, params),
                         opt_state=optimizer.init(params), rng=state_rng)


def conditioning_mask(batch: PackedBatch) -> jax.Array:
    """Tokens that are given clean: part of a sample (not padding) but not generated."""
    return (batch.segment_ids > 0) & ~batch.loss_mask


def diffusion_loss(
    denoise: Denoiser, params: Any, batch: PackedBatch, rng: jax.Array, time_config: TrainingTimeConfig,
    caption_dropout: float, prediction: str = "velocity",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    t_rng, noise_rng, drop_rng = jax.random.split(rng, 3)
    tokens = batch.tokens.astype(jnp.float32)
    t = training_t(t_rng, batch.segment_ids, time_config, cond_mask=conditioning_mask(batch))
    noise = jax.random.normal(noise_rng, tokens.shape, jnp.float32)
    text, _ = drop_captions(drop_rng, batch.text, batch.text_segment_ids, caption_dropout)
    pred = denoise(params, add_noise(tokens, noise, t), t, batch.replace(text=text))
    loss, aux = flow_matching_loss(pred, prediction_target(tokens, noise, prediction), batch.loss_mask)
    mean_t = jnp.sum(t * batch.loss_mask) / jnp.maximum(jnp.sum(batch.loss_mask), 1)
    return loss, {"loss": loss, "mean_t": mean_t, "loss_tokens": aux["num_loss_tokens"]}


def own_weights(frozen: Any, trainable: Any) -> Any:
    """The network's weights when all of them train (no frozen part)."""
    del frozen
    return trainable


def make_train_step(
    denoise: Denoiser, optimizer: optax.GradientTransformation, time_config: TrainingTimeConfig,
    caption_dropout: float, ema_decay: float, prediction: str = "velocity",
    weights: Callable[[Any, Any], Any] = own_weights,
) -> Callable[..., tuple[DiTTrainState, dict[str, jax.Array]]]:
    """`train_step(state, batch, frozen=None)`; the denoiser runs with `weights(frozen, state.params)`.

    LoRA passes the base as `frozen` and merges the adapters into it (`sorajax.train.lora_run`): the
    gradient, the optimizer and the EMA see only the adapters.
    """

    def loss_of(trainable: Any, frozen: Any, *args: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        return diffusion_loss(denoise, weights(jax.lax.stop_gradient(frozen), trainable), *args)

    def train_step(state: DiTTrainState, batch: PackedBatch,
                   frozen: Any = None) -> tuple[DiTTrainState, dict[str, jax.Array]]:
        rng, step_rng = jax.random.split(state.rng)
        grad_fn = jax.value_and_grad(loss_of, has_aux=True)
        (_, metrics), grads = grad_fn(state.params, frozen, batch, step_rng, time_config, caption_dropout, prediction)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = optax.incremental_update(params, state.ema_params, step_size=1.0 - ema_decay)
        metrics["grad_norm"] = optax.tree.norm(grads)
        return state.replace(step=state.step + 1, params=params, ema_params=ema, opt_state=opt_state, rng=rng), metrics

    return train_step
