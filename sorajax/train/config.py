"""The `train` and `eval` sections of a trainer's config, as validated structures (defaults here only).

`TrainConfig` is what the one runner and the optimizer read; each model's trainer adds its own
loss settings. Built once where a command starts, so a bad value is refused before any work.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sorajax.config_dataclasses import from_mapping
from sorajax.data.config import Size, check_sizes
from sorajax.memory_estimate import SizeCeiling
from sorajax.models.lora import LoraConfig


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimizer (AdamW, warmup + cosine, clipping) and the run loop's cadence."""

    steps: int = 1000
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    end_lr_fraction: float = 0.1
    weight_decay: float = 0.0
    adam_b1: float = 0.9
    adam_b2: float = 0.99
    grad_clip_norm: float = 1.0
    log_every: int = 25
    save_every: int = 500
    keep_checkpoints: int = 3
    async_checkpoints: bool = True
    # A step whose loss or gradient is NaN/Inf leaves the weights and optimizer untouched; this many
    # in a row stop the run (its last good checkpoint kept).
    max_nonfinite_steps: int = 10
    # > 0: also stop (evaluate, save) after the first step that ends this many seconds into the loop, for
    # runs with a fixed wall budget (the GPU check's world training); the schedule still spans `steps`.
    max_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not self.max_seconds >= 0:
            raise ValueError(f"train.max_seconds must be >= 0 (0: no time limit), got {self.max_seconds}")
        if self.steps < 1:
            raise ValueError(f"train.steps must be >= 1, got {self.steps}: the number of steps to train")
        SizeCeiling.current().limit("train.steps", self.steps, "max_steps", "train fewer steps")
        if not self.learning_rate > 0:
            raise ValueError(f"train.learning_rate must be positive, got {self.learning_rate}")
        for name in ("log_every", "save_every", "keep_checkpoints", "max_nonfinite_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.grad_clip_norm <= 0:
            raise ValueError("train.warmup_steps and weight_decay must be >= 0 and grad_clip_norm > 0, got "
                             f"{self.warmup_steps}, {self.weight_decay}, {self.grad_clip_norm}")
        if not (0 <= self.adam_b1 < 1 and 0 <= self.adam_b2 < 1 and 0 <= self.end_lr_fraction <= 1):
            raise ValueError("train.adam_b1 and adam_b2 must be in [0, 1) and end_lr_fraction in [0, 1], got "
                             f"{self.adam_b1}, {self.adam_b2}, {self.end_lr_fraction}")


@dataclasses.dataclass(frozen=True)
class DiTTrainConfig(TrainConfig):
    ema_decay: float = 0.995
    caption_dropout: float = 0.1
    init_from: str = ""  # fine-tune: another DiT run's weights ('dir' or 'dir:step'), same model config
    lora: LoraConfig = dataclasses.field(default_factory=LoraConfig)  # rank > 0: train adapters of init_from

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.lora, LoraConfig):
            object.__setattr__(self, "lora", LoraConfig.from_mapping(self.lora))
        if self.lora.enabled and not self.init_from:
            raise ValueError(f"train.lora.rank={self.lora.rank} needs a base: set train.init_from to the DiT run "
                             "to adapt ('dir' or 'dir:step'), or train.lora.rank=0 to train from scratch")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0 <= self.caption_dropout <= 1:
            raise ValueError(f"train.caption_dropout must be in [0, 1], got {self.caption_dropout}; typical is 0.1")

    @classmethod
    def from_mapping(cls, values: Any) -> "DiTTrainConfig":
        return from_mapping(cls, values, "train")


@dataclasses.dataclass(frozen=True)
class VAETrainConfig(TrainConfig):
    kl_weight: float = 1e-6
    l2_weight: float = 0.0
    noise_ramp_steps: int = 0  # posterior noise faded in (sorajax.train.vae_step.posterior_noise_scale)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kl_weight < 0 or self.l2_weight < 0 or self.noise_ramp_steps < 0:
            raise ValueError("train.kl_weight, l2_weight and noise_ramp_steps must be >= 0")

    @classmethod
    def from_mapping(cls, values: Any) -> "VAETrainConfig":
        return from_mapping(cls, values, "train")


@dataclasses.dataclass(frozen=True)
class DiTEvalConfig:
    every: int = 500
    num_clips: int = 64  # held-out world clips (a TFDS run holds out data.eval_count records instead)

    def __post_init__(self) -> None:
        if self.every < 1 or self.num_clips < 1:
            raise ValueError(f"eval.every and eval.num_clips must be >= 1, got {self.every}, {self.num_clips}")

    @classmethod
    def from_mapping(cls, values: Any) -> "DiTEvalConfig":
        return from_mapping(cls, values, "eval")


@dataclasses.dataclass(frozen=True)
class VAEEvalConfig:
    every: int = 500
    sizes: tuple[Size, ...] = ((9, 64, 64),)
    batch_size: int = 4
    num_batches: int = 2  # per eval size

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", check_sizes(self.sizes, "eval.sizes"))
        if min(self.every, self.batch_size, self.num_batches) < 1:
            raise ValueError("eval.every, eval.batch_size and eval.num_batches must be >= 1")

    @classmethod
    def from_mapping(cls, values: Any) -> "VAEEvalConfig":
        return from_mapping(cls, values, "eval")
