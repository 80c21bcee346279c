"""Matmul rates of JAX under several XLA_FLAGS settings and of PyTorch, on the same cores, interleaved.

    python benchmarks/cpu_matmul.py [--flags= --flags="--xla_cpu_experimental_ynn_fusion_type= --xla_cpu_use_onednn=true
        --xla_cpu_experimental_onednn_fusion_type=dot" ...]
        [--rounds 5] [--torch_python /work/refenv/bin/python] [--dtype float32]

Why: XLA:CPU runs dots through its own kernels unless flags route them to a library, and the flags must be
set before JAX's backend starts, so each setting gets its own worker process. Every worker (one per
``--flags`` entry, plus PyTorch) times the same shapes; rounds go worker by worker, so load from other
jobs on a shared machine hits all of them alike. Printed: per shape and worker the median over rounds of
each round's best GFLOP/s (and the best overall). The JAX workers import no sorajax, so each runs exactly
the flags it is given; ``--flags=`` (empty) is the plain XLA:CPU baseline.

Shapes are those of a Wan2.1-1.3B block at benchmarks/wan_speed.py's default size (1,950 video tokens,
width 1536, FFN 8960, 12 heads of 128) plus the classic 2048^2 square.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

# name: (lhs shape, rhs shape); a leading batch dim on both is a batched matmul.
SHAPES = {
    "square 2048": ((2048, 2048), (2048, 2048)),
    "ffn up 1950x1536x8960": ((1950, 1536), (1536, 8960)),
    "ffn down 1950x8960x1536": ((1950, 8960), (8960, 1536)),
    "projection 1950x1536x1536": ((1950, 1536), (1536, 1536)),
    "logits 12x1950x128x1950": ((12, 1950, 128), (12, 128, 1950)),
    "values 12x1950x1950x128": ((12, 1950, 1950), (12, 1950, 128)),
}
CALLS_PER_ROUND = 3
# jaxlib 0.12 runs dots as YNNPACK fusions; emptying that list gives XLA's own (Eigen) dots, and these route
# them to oneDNN instead (graph fusions; the older matmul custom calls).
NO_YNN = "--xla_cpu_experimental_ynn_fusion_type="
DEFAULT_FLAGS = ["", NO_YNN, f"{NO_YNN} --xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot",
                 f"{NO_YNN} --xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_custom_call=true"]


def flops(lhs: tuple[int, ...], rhs: tuple[int, ...]) -> float:
    batch = lhs[0] if len(lhs) == 3 else 1
    return 2.0 * batch * lhs[-2] * lhs[-1] * rhs[-1]


def worker(side: str, dtype: str) -> None:
    """Answer each line on stdin ('time') with one JSON line: best seconds of each shape this round."""
    import numpy as np

    rng = np.random.default_rng(0)
    operands = {name: [rng.standard_normal(s, dtype=np.float32) for s in shapes] for name, shapes in SHAPES.items()}
    if side == "torch":
        import torch

        cast = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        calls = {n: (lambda a=torch.from_numpy(a).to(cast), b=torch.from_numpy(b).to(cast): torch.matmul(a, b))
                 for n, (a, b) in operands.items()}
        info = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    else:
        import jax
        import jax.numpy as jnp

        matmul = jax.jit(jnp.matmul)
        calls = {n: (lambda a=jnp.asarray(a, dtype), b=jnp.asarray(b, dtype): matmul(a, b).block_until_ready())
                 for n, (a, b) in operands.items()}
        info = f"jax {jax.__version__}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    for call in calls.values():
        call()  # compile / warm up
    print(json.dumps({"ready": info}), flush=True)
    for _ in sys.stdin:
        best = {}
        for name, call in calls.items():
            times = []
            for _ in range(CALLS_PER_ROUND):
                start = time.perf_counter()
                call()
                times.append(time.perf_counter() - start)
            best[name] = min(times)
        print(json.dumps(best), flush=True)


def start_worker(python: str, side: str, dtype: str, flags: str | None) -> subprocess.Popen:
    env = dict(os.environ)
    if flags is not None:
        env["XLA_FLAGS"] = flags
    cmd = [python, os.path.abspath(__file__), "--worker", side, "--dtype", dtype]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def ask(proc: subprocess.Popen, line: str | None = None) -> dict:
    if line is not None:
        proc.stdin.write(line + "\n")
        proc.stdin.flush()
    reply = proc.stdout.readline()
    if not reply:
        raise SystemExit(f"a matmul worker exited with code {proc.wait()} (its error is printed above)")
    return json.loads(reply)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flags", action="append", default=None,
                        help="XLA_FLAGS of one JAX worker, repeatable, written --flags=VALUE ('--flags=': XLA:CPU's "
                             "own kernels); default: the default, Eigen and the two oneDNN routes")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--torch_python", default="/work/refenv/bin/python", help="'' to leave PyTorch out")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.dtype)
        return
    workers = {f"jax {flags or '(no flags)'}": start_worker(sys.executable, "jax", args.dtype, flags)
               for flags in args.flags or DEFAULT_FLAGS}
    if args.torch_python and shutil.which(args.torch_python):
        workers["torch"] = start_worker(args.torch_python, "torch", args.dtype, None)
    for name, proc in workers.items():
        print(f"{name}: {ask(proc)['ready']}")
    seconds: dict[str, dict[str, list[float]]] = {name: {s: [] for s in SHAPES} for name in workers}
    for _ in range(args.rounds):
        for name, proc in workers.items():
            for shape, s in ask(proc, "time").items():
                seconds[name][shape].append(s)
    width = max(map(len, workers))
    print(f"{args.dtype} GFLOP/s, median of {args.rounds} interleaved rounds (best in brackets)")
    for shape, (lhs, rhs) in SHAPES.items():
        print(shape)
        for name in workers:
            times = seconds[name][shape]
            print(f"  {name:{width}s} {flops(lhs, rhs) / statistics.median(times) / 1e9:7.1f}"
                  f"  ({flops(lhs, rhs) / min(times) / 1e9:.1f})")
    for proc in workers.values():
        proc.stdin.close()
        proc.wait()


if __name__ == "__main__":
    main()
