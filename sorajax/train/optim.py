"""The optimizer every trainer uses: AdamW, linear warmup + cosine decay, global-norm clipping."""

from __future__ import annotations

import optax

from sorajax.train.config import TrainConfig


def learning_rate_schedule(cfg: TrainConfig) -> optax.Schedule:
    """Linear warmup to `learning_rate`, then cosine decay to `end_lr_fraction` of it."""
    warmup = max(int(cfg.warmup_steps), 0)
    total = max(int(cfg.steps), warmup + 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0 if warmup else cfg.learning_rate,
        peak_value=cfg.learning_rate,
        warmup_steps=warmup,
        decay_steps=total,
        end_value=cfg.learning_rate * cfg.end_lr_fraction,
    )


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip_norm),
        optax.adamw(learning_rate_schedule(cfg), b1=cfg.adam_b1, b2=cfg.adam_b2, weight_decay=cfg.weight_decay),
    )
