"""Model-FLOPs utilisation of the DiT train step against the matmul peak measured in the same run.

    python benchmarks/mfu.py [--preset S] [--rows 8] [--seq_len 256] [--dtypes float32 bfloat16]

Peak: the best of 10 square matmuls (``--peak_size``, default 2048) in each dtype on the
same device, same process, measured before and after the step (the higher is used). Step FLOPs: XLA's cost analysis of the compiled train step
(AdamW, EMA, per-token t, caption dropout: the real step). MFU = step FLOPs / step time / peak.
Runs on whatever JAX's default device is (CPU here; a GPU when one is present).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sorajax.host_memory import reexec_with_tunables  # noqa: E402
from sorajax.models.dit import DiT, DiTConfig  # noqa: E402

# Published dense (no sparsity) bf16 tensor-core peaks, FLOP/s, by the device kind JAX reports.
PUBLISHED_BF16_PEAK = {"H100 80GB HBM3": 989e12, "H100 PCIe": 756e12, "H200": 989e12, "A100": 312e12}


def published_peak(kind: str) -> float | None:
    """The vendor's dense bf16 peak for ``kind`` (None where unknown, e.g. a CPU)."""
    return next((peak for name, peak in PUBLISHED_BF16_PEAK.items() if name in kind), None)


def flops_of(compiled) -> float:
    """FLOPs of a compiled computation from XLA's cost analysis (NaN where XLA gives none)."""
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis.get("flops", float("nan")))


def matmul_peak(dtype: str, size: int, repeats: int = 10) -> float:
    """FLOP/s of the best of ``repeats`` ``size``-square matmuls."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (size, size), jnp.float32).astype(dtype)
    matmul = jax.jit(jnp.dot)
    matmul(a, b).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def step_rate(preset: str, dtype: str, rows: int, seq_len: int, repeats: int) -> tuple[float, float]:
    """(FLOPs per train step, best step time in s) for the real step."""
    from dit_throughput import compiled_train_step, packed_batch  # the trainer's stack: only where it is measured

    dit = DiT(DiTConfig.preset(preset, patch_dim=32, text_dim=384, dtype=dtype, attention_impl="auto"))
    state, batch, compiled = compiled_train_step(dit, packed_batch(rows, seq_len))
    jax.block_until_ready(compiled(state, batch))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(state, batch)[1]["loss"])
        best = min(best, time.perf_counter() - start)
    return flops_of(compiled), best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="S")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--peak_size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind}; DiT-{args.preset}, {args.rows} x {args.seq_len} tokens")
    print(f"{'dtype':9s} {'peak GFLOP/s':>13s} {'step GFLOP':>11s} {'step s':>8s} {'GFLOP/s':>9s} {'MFU':>6s}")
    for dtype in args.dtypes:
        before = matmul_peak(dtype, args.peak_size)
        flops, seconds = step_rate(args.preset, dtype, args.rows, args.seq_len, args.repeats)
        peak = max(before, matmul_peak(dtype, args.peak_size))  # best of before/after: robust to a busy machine
        print(f"{dtype:9s} {peak / 1e9:13.1f} {flops / 1e9:11.1f} {seconds:8.3f} {flops / seconds / 1e9:9.1f} "
              f"{flops / seconds / peak:6.1%}")


if __name__ == "__main__":
    reexec_with_tunables()  # time sorajax as its commands run it: malloc tuned for XLA (sorajax.host_memory)
    main()
