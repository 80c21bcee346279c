"""Shared tiny model, packed batch and reference (single-device) results for the 8-device cases."""

from __future__ import annotations

import jax
import numpy as np

from sorajax.diffusion.sampling import packed_denoiser
from sorajax.diffusion.timesteps import TrainingTimeConfig
from sorajax.models.dit import DiT, DiTConfig
from sorajax.parallel.context import MeshContext
from sorajax.parallel.mesh import make_mesh
from sorajax.parallel.rules import DIT_RULES
from sorajax.patches import PackedBatch
from sorajax.train.config import TrainConfig
from sorajax.train.dit_step import init_state, make_train_step
from sorajax.train.optim import make_optimizer

ROWS, SEQ_LEN, TEXT_LEN, PATCH_DIM, TEXT_DIM = 8, 32, 12, 16, 24
SEGMENT_LENGTHS = (11, 7, 9)  # three samples per row, then 5 padding tokens


def tiny_config(**overrides) -> DiTConfig:
    fields = dict(patch_dim=PATCH_DIM, text_dim=TEXT_DIM, width=32, depth=1, num_heads=4, attention_impl="xla")
    return DiTConfig.from_dict({**fields, **overrides})


def segment_row(lengths=SEGMENT_LENGTHS, total=SEQ_LEN) -> np.ndarray:
    ids = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths)])
    return np.pad(ids, (0, total - ids.size)).astype(np.int32)


def packed_batch(seed: int = 0) -> PackedBatch:
    rng = np.random.default_rng(seed)
    segments = np.stack([np.roll(segment_row(), 0) for _ in range(ROWS)])
    text_segments = np.tile(np.array([1] * 4 + [2] * 3 + [3] * 3 + [0] * 2, np.int32), (ROWS, 1))
    loss_mask = segments > 0
    loss_mask[:, :3] = False  # a few clean conditioning tokens
    return PackedBatch(
        tokens=rng.normal(size=(ROWS, SEQ_LEN, PATCH_DIM)).astype(np.float32),
        positions=rng.integers(0, 6, size=(ROWS, SEQ_LEN, 3)).astype(np.int32),
        segment_ids=segments,
        t=np.zeros((ROWS, SEQ_LEN), np.float32),
        loss_mask=loss_mask,
        text=rng.normal(size=(ROWS, TEXT_LEN, TEXT_DIM)).astype(np.float32),
        text_segment_ids=text_segments,
    )


def optimizer():
    return make_optimizer(TrainConfig(learning_rate=1e-2, warmup_steps=0, steps=10, end_lr_fraction=1.0,
                                      adam_b1=0.9, adam_b2=0.99, weight_decay=0.0, grad_clip_norm=1.0))


def train_step_fn(dit: DiT, opt):
    return make_train_step(packed_denoiser(dit), opt, TrainingTimeConfig(), caption_dropout=0.25, ema_decay=0.9)


def mesh_context(axes: dict | None = None) -> MeshContext:
    """A mesh of the given axis sizes over every device; None: one device (a 1x1x1x1 mesh)."""
    if axes is None:
        return MeshContext(make_mesh({}, jax.devices()[:1]), DIT_RULES)
    return MeshContext(make_mesh(axes), DIT_RULES)


def dit_state(ctx: MeshContext, dit: DiT, opt, batch: PackedBatch, seed: int = 0):
    """(state, shardings): the trainer's own init, born sharded over `ctx`'s mesh."""
    return ctx.init(lambda: init_state(dit, opt, batch, seed))


def max_abs_diff(a, b) -> float:
    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)
    return max(jax.tree.leaves(diffs))
