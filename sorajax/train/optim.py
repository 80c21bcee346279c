"""Optimizer construction shared by every trainer: AdamW, warmup + cosine, clipping."""

from __future__ import annotations

import ml_collections
import optax


def learning_rate_schedule(cfg: ml_collections.ConfigDict) -> optax.Schedule:
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


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW with global-norm clipping; `cfg` is a trainer's `train` config section."""
    if cfg.learning_rate <= 0:
        raise ValueError(f"train.learning_rate must be positive, got {cfg.learning_rate}")
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip_norm),
        optax.adamw(
            learning_rate_schedule(cfg),
            b1=cfg.adam_b1,
            b2=cfg.adam_b2,
            weight_decay=cfg.weight_decay,
        ),
    )
