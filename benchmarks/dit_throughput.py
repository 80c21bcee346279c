"""DiT train-step throughput and sampling cost, with FLOPs from XLA's compiled cost analysis.

    python benchmarks/dit_throughput.py [--presets tiny S] [--rows 8] [--seq_len 192] [--dtype float32]
        [--modulations per_block shared]

For each preset: one packed batch of `rows` x `seq_len` tokens (4 samples per row, captions of 48
tokens each), the real train step (AdamW, EMA, per-token t, caption dropout) jitted; prints tokens/s,
step time, FLOPs per step and the achieved FLOP rate; then one guided sampler step (the DiT on 2 x rows
rows for classifier-free guidance) in s/step. All presets run in one process, side by side.
"""

from __future__ import annotations

import argparse
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np
from mfu import flops_of

from sorajax.config_loading import load_config
from sorajax.diffusion.sampling import packed_denoiser
from sorajax.diffusion.timesteps import TrainingTimeConfig
from sorajax.host_memory import reexec_with_tunables
from sorajax.models.dit import DiT, DiTConfig
from sorajax.parallel.context import MeshContext
from sorajax.parallel.rules import DIT_RULES
from sorajax.patches import PackedBatch, packed_batch_axes
from sorajax.train.config import DiTTrainConfig
from sorajax.train.dit_step import init_state, make_train_step
from sorajax.train.optim import make_optimizer
from sorajax.train.runner import guarded_step

PATCH_DIM, TEXT_DIM, SAMPLES_PER_ROW, CAPTION = 32, 384, 4, 48


def packed_batch(rows: int, seq_len: int) -> PackedBatch:
    rng = np.random.default_rng(0)
    per = seq_len // SAMPLES_PER_ROW
    segments = np.repeat(np.arange(1, SAMPLES_PER_ROW + 1), per)
    segments = np.pad(segments, (0, seq_len - segments.size))
    text_segments = np.repeat(np.arange(1, SAMPLES_PER_ROW + 1), CAPTION)
    return PackedBatch(
        tokens=rng.normal(size=(rows, seq_len, PATCH_DIM)).astype(np.float32),
        positions=rng.integers(0, 8, size=(rows, seq_len, 3)).astype(np.int32),
        segment_ids=np.tile(segments, (rows, 1)).astype(np.int32),
        t=np.ones((rows, seq_len), np.float32),
        loss_mask=np.tile(segments > 0, (rows, 1)),
        text=rng.normal(size=(rows, text_segments.size, TEXT_DIM)).astype(np.float32),
        text_segment_ids=np.tile(text_segments, (rows, 1)).astype(np.int32),
    )


def compiled_train_step(dit: DiT, batch: PackedBatch):
    """(state, placed batch, compiled step): the trainer's own step (NaN guard, mesh of this host's devices)."""
    ctx = MeshContext.create(None, DIT_RULES)
    optimizer = make_optimizer(DiTTrainConfig.from_mapping(load_config("configs/dit_tiny.py").train))
    state, shardings = ctx.init(lambda: init_state(dit, optimizer, batch, 0))
    placed = ctx.put(batch, packed_batch_axes)
    step = guarded_step(ctx, make_train_step(packed_denoiser(dit), optimizer, TrainingTimeConfig(), 0.1, 0.999),
                        shardings, donate=False)
    return state, placed, step.lower(state, placed).compile()


def guided_forward(dit: DiT):
    """One sampler step's network work: the DiT on the batch's rows twice (CFG's two branches), jitted."""
    double = lambda x: jnp.concatenate([x, x], axis=0)  # noqa: E731
    return jax.jit(lambda p, b: dit.apply({"params": p}, double(b.tokens), double(b.positions),
                                          double(b.segment_ids), double(b.t), double(b.text),
                                          double(b.text_segment_ids)))


def timed(fn, *args, repeats: int) -> float:
    out = fn(*args)
    jax.block_until_ready(out)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def bench(preset: str, rows: int, seq_len: int, dtype: str, repeats: int, modulation: str = "per_block") -> dict:
    cfg = DiTConfig.preset(preset, patch_dim=PATCH_DIM, text_dim=TEXT_DIM, dtype=dtype, modulation=modulation)
    dit = DiT(cfg)
    state, batch, compiled = compiled_train_step(dit, packed_batch(rows, seq_len))
    params = state.params
    train_flops = flops_of(compiled)
    train_s = timed(lambda s: compiled(s, batch)[1]["loss"], state, repeats=repeats)

    forward = guided_forward(dit).lower(params, batch).compile()
    sample_s = timed(forward, params, batch, repeats=repeats)
    tokens = rows * seq_len
    return dict(preset=preset, modulation=modulation, params=sum(x.size for x in jax.tree.leaves(params)), tokens=tokens,
                train_s=train_s, tokens_per_s=tokens / train_s, train_gflop=train_flops / 1e9,
                gflops=train_flops / train_s / 1e9, sample_s=sample_s, sample_gflop=flops_of(forward) / 1e9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "S"])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=192)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modulations", nargs="+", default=["per_block"], choices=["per_block", "shared"],
                        help="adaLN per block or shared (adaLN-single); several: each preset with each, side by side")
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind}, batch {args.rows} x {args.seq_len} tokens, {args.dtype}")
    header = f"{'preset':6s} {'modulation':10s} {'params':>9s} {'step s':>8s} {'tokens/s':>9s} {'GFLOP/step':>11s} {'GFLOP/s':>8s} {'sample s/step':>14s}"
    print(header)
    for preset, modulation in itertools.product(args.presets, args.modulations):
        r = bench(preset, args.rows, args.seq_len, args.dtype, args.repeats, modulation)
        print(f"{r['preset']:6s} {r['modulation']:10s} {r['params'] / 1e6:8.1f}M {r['train_s']:8.3f} "
              f"{r['tokens_per_s']:9.0f} {r['train_gflop']:11.1f} {r['gflops']:8.1f} {r['sample_s']:14.3f}")


if __name__ == "__main__":
    reexec_with_tunables()  # time sorajax as its commands run it: malloc tuned for XLA (sorajax.host_memory)
    main()
